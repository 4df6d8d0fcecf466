//! The pure part of leader election: given the Lease as read, the time and who we are, what
//! to do. No I/O and the clock passed in, so every case is a plain unit test.
//!
//! The rules follow client-go's `tryAcquireOrRenew`: a lease that nobody holds, or whose
//! holder let it run out (`renewTime + leaseDurationSeconds < now`), may be taken; a lease we
//! hold is renewed; otherwise we follow. Whether a write actually wins is not decided here
//! but by the apiserver (resourceVersion on replace, 409 on a racing create).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

/// What a replica should do with the lease it just read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// Nobody holds the lease (absent, released, or expired): take it, writing
    /// `leaseTransitions = transitions`.
    Acquire {
        /// The `leaseTransitions` to write: 0 for a new lease, the old value + 1 on takeover.
        transitions: i32,
    },
    /// We hold the lease: write a fresh `renewTime`.
    Renew,
    /// Another replica holds the lease, valid until `until` (by the lease's own clock).
    Follow {
        /// The current holder.
        holder: String,
        /// When the holder's lease runs out unless renewed.
        until: Timestamp,
    },
}

/// Decides what to do with `current`, the spec of the lease as read (None when the lease
/// does not exist or has no spec).
///
/// `default_duration` stands in for a missing or non-positive `leaseDurationSeconds`; it is
/// our own configured duration, which the other replicas of the same Deployment share.
pub fn decide(current: Option<&LeaseSpec>, now: Timestamp, me: &str, default_duration: Duration) -> LeaseDecision {
    let Some(spec) = current else {
        return LeaseDecision::Acquire { transitions: 0 };
    };
    let transitions = spec.lease_transitions.unwrap_or(0).max(0);
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == me {
        // Ours, even if it ran out meanwhile: nobody else took it, so this is no transition.
        return LeaseDecision::Renew;
    }
    if holder.is_empty() {
        return LeaseDecision::Acquire {
            transitions: transitions.saturating_add(1),
        };
    }
    match held_until(spec, default_duration) {
        Some(until) if now <= until => LeaseDecision::Follow {
            holder: holder.to_owned(),
            until,
        },
        // Run out, or no time at all on it: nobody is renewing it.
        _ => LeaseDecision::Acquire {
            transitions: transitions.saturating_add(1),
        },
    }
}

/// When the holder's claim runs out: `renewTime` (or, never renewed, `acquireTime`) plus the
/// lease duration. None when the lease carries neither time.
pub fn held_until(spec: &LeaseSpec, default_duration: Duration) -> Option<Timestamp> {
    let since = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
    let duration = match spec.lease_duration_seconds {
        Some(seconds) if seconds > 0 => SignedDuration::from_secs(i64::from(seconds)),
        _ => SignedDuration::try_from(default_duration).unwrap_or(SignedDuration::MAX),
    };
    Some(since.saturating_add(duration).unwrap_or(Timestamp::MAX))
}

/// The spec to write when `decision` says we lead: for [`LeaseDecision::Acquire`] a takeover
/// (holder, acquire and renew time, transitions), for [`LeaseDecision::Renew`] a fresh renew
/// time. Fields we do not manage (`strategy`, `preferredHolder`) are kept. None for
/// [`LeaseDecision::Follow`]: nothing to write.
pub fn leading_spec(
    current: Option<&LeaseSpec>,
    decision: &LeaseDecision,
    now: Timestamp,
    me: &str,
    lease_duration: Duration,
) -> Option<LeaseSpec> {
    let mut spec = current.cloned().unwrap_or_default();
    match decision {
        LeaseDecision::Acquire { transitions } => {
            spec.holder_identity = Some(me.to_owned());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(*transitions);
        }
        LeaseDecision::Renew => {
            // A lease we hold but that lacks an acquire time (written by an older version or
            // by hand) gets one, so that it reads as held since now.
            if spec.acquire_time.is_none() {
                spec.acquire_time = Some(MicroTime(now));
            }
            if spec.lease_transitions.is_none() {
                spec.lease_transitions = Some(0);
            }
        }
        LeaseDecision::Follow { .. } => return None,
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(duration_seconds(lease_duration));
    Some(spec)
}

/// The spec that gives the lease up at once, as client-go's `ReleaseOnCancel` writes it: no
/// holder, and a one-second lease renewed now, so that any replica may take it on its next
/// try instead of waiting out the full duration. `leaseTransitions` is kept; the next holder
/// counts its takeover.
pub fn released_spec(current: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
    let mut spec = current.cloned().unwrap_or_default();
    spec.holder_identity = None;
    spec.acquire_time = None;
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(1);
    spec
}

/// `leaseDurationSeconds` for a duration: whole seconds, rounded up (a shorter lease than
/// configured would let others take over before our renew deadline), at least 1.
pub fn duration_seconds(duration: Duration) -> i32 {
    let mut seconds = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        seconds = seconds.saturating_add(1);
    }
    i32::try_from(seconds.max(1)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "pitstop-a";
    const OTHER: &str = "pitstop-b";
    const DURATION: Duration = Duration::from_secs(15);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn held_by(holder: &str, renewed: i64, duration: i32, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            acquire_time: Some(MicroTime(at(renewed - 100))),
            renew_time: Some(MicroTime(at(renewed))),
            lease_duration_seconds: Some(duration),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn absent_lease_is_acquired_with_zero_transitions() {
        assert_eq!(
            decide(None, at(0), ME, DURATION),
            LeaseDecision::Acquire { transitions: 0 }
        );
    }

    #[test]
    fn lease_held_by_another_and_fresh_is_followed_until_renew_plus_duration() {
        let spec = held_by(OTHER, 0, 15, 3);
        assert_eq!(
            decide(Some(&spec), at(10), ME, DURATION),
            LeaseDecision::Follow {
                holder: OTHER.to_owned(),
                until: at(15)
            }
        );
    }

    #[test]
    fn lease_is_still_held_at_the_exact_expiry_instant() {
        // Expired means renewTime + duration < now, strictly; equality still belongs to the
        // holder, the cautious side.
        let spec = held_by(OTHER, 0, 15, 3);
        assert!(matches!(
            decide(Some(&spec), at(15), ME, DURATION),
            LeaseDecision::Follow { .. }
        ));
    }

    #[test]
    fn expired_lease_of_another_is_taken_over_with_one_more_transition() {
        let spec = held_by(OTHER, 0, 15, 3);
        assert_eq!(
            decide(Some(&spec), at(16), ME, DURATION),
            LeaseDecision::Acquire { transitions: 4 }
        );
    }

    #[test]
    fn the_lease_duration_written_on_the_lease_wins_over_ours() {
        let spec = held_by(OTHER, 0, 60, 0);
        assert!(matches!(
            decide(Some(&spec), at(30), ME, DURATION),
            LeaseDecision::Follow { .. }
        ));
    }

    #[test]
    fn missing_or_nonpositive_duration_falls_back_to_ours() {
        for duration in [None, Some(0), Some(-5)] {
            let mut spec = held_by(OTHER, 0, 1, 0);
            spec.lease_duration_seconds = duration;
            assert_eq!(
                decide(Some(&spec), at(10), ME, DURATION),
                LeaseDecision::Follow {
                    holder: OTHER.to_owned(),
                    until: at(15)
                },
                "{duration:?}"
            );
            assert!(matches!(
                decide(Some(&spec), at(16), ME, DURATION),
                LeaseDecision::Acquire { .. }
            ));
        }
    }

    #[test]
    fn never_renewed_lease_counts_from_its_acquire_time() {
        let mut spec = held_by(OTHER, 0, 15, 0);
        spec.renew_time = None;
        spec.acquire_time = Some(MicroTime(at(0)));
        assert!(matches!(
            decide(Some(&spec), at(15), ME, DURATION),
            LeaseDecision::Follow { .. }
        ));
        assert!(matches!(
            decide(Some(&spec), at(16), ME, DURATION),
            LeaseDecision::Acquire { .. }
        ));
    }

    #[test]
    fn lease_with_a_holder_but_no_time_is_free() {
        let spec = LeaseSpec {
            holder_identity: Some(OTHER.to_owned()),
            ..LeaseSpec::default()
        };
        assert_eq!(
            decide(Some(&spec), at(0), ME, DURATION),
            LeaseDecision::Acquire { transitions: 1 }
        );
    }

    #[test]
    fn our_own_lease_is_renewed_fresh_or_expired() {
        let spec = held_by(ME, 0, 15, 2);
        assert_eq!(decide(Some(&spec), at(1), ME, DURATION), LeaseDecision::Renew);
        assert_eq!(decide(Some(&spec), at(1000), ME, DURATION), LeaseDecision::Renew);
    }

    #[test]
    fn released_lease_is_taken_at_once_and_counts_a_transition() {
        let released = released_spec(Some(&held_by(OTHER, 0, 15, 5)), at(1));
        assert_eq!(
            decide(Some(&released), at(1), ME, DURATION),
            LeaseDecision::Acquire { transitions: 6 }
        );
    }

    #[test]
    fn empty_holder_string_means_free() {
        let mut spec = held_by(OTHER, 0, 15, 1);
        spec.holder_identity = Some(String::new());
        assert_eq!(
            decide(Some(&spec), at(1), ME, DURATION),
            LeaseDecision::Acquire { transitions: 2 }
        );
    }

    #[test]
    fn spec_without_any_field_is_free_and_negative_transitions_are_reset() {
        assert_eq!(
            decide(Some(&LeaseSpec::default()), at(0), ME, DURATION),
            LeaseDecision::Acquire { transitions: 1 }
        );
        let mut spec = held_by(OTHER, 0, 15, -7);
        spec.holder_identity = None;
        assert_eq!(
            decide(Some(&spec), at(0), ME, DURATION),
            LeaseDecision::Acquire { transitions: 1 }
        );
    }

    #[test]
    fn transitions_saturate_instead_of_overflowing() {
        let spec = held_by(OTHER, 0, 15, i32::MAX);
        assert_eq!(
            decide(Some(&spec), at(100), ME, DURATION),
            LeaseDecision::Acquire { transitions: i32::MAX }
        );
    }

    #[test]
    fn acquiring_writes_holder_times_duration_and_transitions_and_keeps_other_fields() {
        let mut current = held_by(OTHER, 0, 15, 3);
        current.strategy = Some("OldestEmulationVersion".to_owned());
        current.preferred_holder = Some("someone".to_owned());
        let decision = LeaseDecision::Acquire { transitions: 4 };
        let spec = leading_spec(Some(&current), &decision, at(20), ME, Duration::from_millis(15_500));
        assert_eq!(
            spec,
            Some(LeaseSpec {
                holder_identity: Some(ME.to_owned()),
                acquire_time: Some(MicroTime(at(20))),
                renew_time: Some(MicroTime(at(20))),
                lease_duration_seconds: Some(16),
                lease_transitions: Some(4),
                strategy: Some("OldestEmulationVersion".to_owned()),
                preferred_holder: Some("someone".to_owned()),
            })
        );
    }

    #[test]
    fn renewing_moves_only_the_renew_time_and_duration() {
        let current = held_by(ME, 0, 30, 2);
        let spec = leading_spec(Some(&current), &LeaseDecision::Renew, at(5), ME, DURATION);
        assert_eq!(
            spec,
            Some(LeaseSpec {
                renew_time: Some(MicroTime(at(5))),
                lease_duration_seconds: Some(15),
                ..current
            })
        );
    }

    #[test]
    fn renewing_a_lease_without_acquire_time_fills_it_in() {
        let current = LeaseSpec {
            holder_identity: Some(ME.to_owned()),
            ..LeaseSpec::default()
        };
        let spec = leading_spec(Some(&current), &LeaseDecision::Renew, at(5), ME, DURATION);
        assert_eq!(
            spec.as_ref().and_then(|s| s.acquire_time.clone()),
            Some(MicroTime(at(5)))
        );
        assert_eq!(spec.and_then(|s| s.lease_transitions), Some(0));
    }

    #[test]
    fn creating_writes_a_complete_spec() {
        let decision = decide(None, at(0), ME, DURATION);
        let spec = leading_spec(None, &decision, at(0), ME, DURATION);
        assert_eq!(
            spec,
            Some(LeaseSpec {
                holder_identity: Some(ME.to_owned()),
                acquire_time: Some(MicroTime(at(0))),
                renew_time: Some(MicroTime(at(0))),
                lease_duration_seconds: Some(15),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            })
        );
    }

    #[test]
    fn following_writes_nothing() {
        let decision = LeaseDecision::Follow {
            holder: OTHER.to_owned(),
            until: at(15),
        };
        assert_eq!(leading_spec(None, &decision, at(0), ME, DURATION), None);
    }

    #[test]
    fn releasing_clears_the_holder_keeps_transitions_and_expires_within_a_second() {
        let spec = released_spec(Some(&held_by(ME, 0, 15, 9)), at(3));
        assert_eq!(spec.holder_identity, None);
        assert_eq!(spec.lease_transitions, Some(9));
        assert_eq!(spec.lease_duration_seconds, Some(1));
        assert_eq!(held_until(&spec, DURATION), Some(at(4)));
    }

    #[test]
    fn duration_seconds_round_up_and_clamp() {
        assert_eq!(duration_seconds(Duration::from_secs(15)), 15);
        assert_eq!(duration_seconds(Duration::from_millis(14_001)), 15);
        assert_eq!(duration_seconds(Duration::ZERO), 1);
        assert_eq!(duration_seconds(Duration::from_millis(1)), 1);
        assert_eq!(duration_seconds(Duration::MAX), i32::MAX);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn holder() -> impl Strategy<Value = Option<String>> {
            prop_oneof![
                Just(None),
                Just(Some(String::new())),
                Just(Some(ME.to_owned())),
                Just(Some(OTHER.to_owned())),
            ]
        }

        proptest! {
            /// The safety property: we never decide to take a lease that another replica
            /// holds and that has not run out by its own renew time and duration.
            #[test]
            fn never_acquires_a_live_lease_of_another(
                holder in holder(),
                renewed in -100i64..100,
                duration in prop::option::of(-2i32..60),
                transitions in prop::option::of(-3i32..1000),
                now in -100i64..200,
            ) {
                let spec = LeaseSpec {
                    holder_identity: holder.clone(),
                    renew_time: Some(MicroTime(at(renewed))),
                    lease_duration_seconds: duration,
                    lease_transitions: transitions,
                    ..LeaseSpec::default()
                };
                let decision = decide(Some(&spec), at(now), ME, DURATION);
                let effective = match duration { Some(d) if d > 0 => i64::from(d), _ => 15 };
                let live_other = holder.as_deref() == Some(OTHER) && now <= renewed + effective;
                match &decision {
                    LeaseDecision::Acquire { transitions: written } => {
                        prop_assert!(!live_other);
                        prop_assert!(*written >= 1);
                        prop_assert_eq!(*written, transitions.unwrap_or(0).max(0).saturating_add(1));
                    }
                    LeaseDecision::Renew => prop_assert_eq!(holder.as_deref(), Some(ME)),
                    LeaseDecision::Follow { holder: h, until } => {
                        prop_assert!(live_other);
                        prop_assert_eq!(h.as_str(), OTHER);
                        prop_assert_eq!(*until, at(renewed + effective));
                    }
                }
                // Whatever we write when leading names us and is valid for our duration.
                if let Some(written) = leading_spec(Some(&spec), &decision, at(now), ME, DURATION) {
                    prop_assert_eq!(written.holder_identity.as_deref(), Some(ME));
                    prop_assert_eq!(held_until(&written, DURATION), Some(at(now + 15)));
                    prop_assert_eq!(decide(Some(&written), at(now), OTHER, DURATION),
                        LeaseDecision::Follow { holder: ME.to_owned(), until: at(now + 15) });
                }
            }
        }
    }
}
