//! The conditions GitOps tools read to tell a running plan from a finished or failed one:
//! `Ready`, `Reconciling` and `Stalled`, each with `observedGeneration`, as kstatus (Flux,
//! `kubectl wait`, cli-utils) defines them. Argo CD reads them through the health check in
//! `deploy/argocd/`.
//!
//! kstatus reads `Reconciling=True` as in progress before it looks at `Stalled`, so the three
//! are always set together, and at most one of `Ready`, `Reconciling` and `Stalled` is true.

use jiff::Timestamp;

use crate::api::Condition;

use super::conditions::{CONDITION_STALLED, set_condition};

/// The plan is where it should be: done, or waiting for its next maintenance window with
/// nothing in flight. `kubectl wait --for=condition=Ready` and Flux's health checks wait for it.
pub const CONDITION_READY: &str = "Ready";
/// The controller is working on the plan (kstatus: in progress).
pub const CONDITION_RECONCILING: &str = "Reconciling";

/// Where a plan stands, as GitOps tools see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Finished, or waiting for its next window with nothing in flight.
    Ready,
    /// Working, or about to: an instance in flight, or the next one due.
    InProgress,
    /// Held by the user (`spec.suspend`): neither working nor broken.
    Paused,
    /// Cannot go on without help: the plan failed, or its AWS calls fail in a way waiting
    /// does not fix.
    Stalled,
}

/// Sets `Ready`, `Reconciling` and `Stalled` for `health`, all three with `reason` and
/// `message` where they are true (`Ready=False` carries them too, for `kubectl describe`).
pub fn set_health(
    conditions: &mut Vec<Condition>,
    health: Health,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let ready = health == Health::Ready;
    set_condition(conditions, CONDITION_READY, ready, reason, message, generation, now);
    let reconciling = health == Health::InProgress;
    let (reconciling_reason, reconciling_message) = if reconciling {
        (reason, message)
    } else {
        ("NotReconciling", "")
    };
    set_condition(
        conditions,
        CONDITION_RECONCILING,
        reconciling,
        reconciling_reason,
        reconciling_message,
        generation,
        now,
    );
    let stalled = health == Health::Stalled;
    let (stalled_reason, stalled_message) = if stalled { (reason, message) } else { ("NotStalled", "") };
    set_condition(
        conditions,
        CONDITION_STALLED,
        stalled,
        stalled_reason,
        stalled_message,
        generation,
        now,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        conditions.iter().find(|c| c.type_ == type_).expect("condition set")
    }

    #[test]
    fn exactly_one_of_the_three_is_true_and_it_carries_the_reason() {
        let now: Timestamp = "2026-12-03T08:00:00Z".parse().expect("timestamp");
        for (health, true_one) in [
            (Health::Ready, Some(CONDITION_READY)),
            (Health::InProgress, Some(CONDITION_RECONCILING)),
            (Health::Paused, None),
            (Health::Stalled, Some(CONDITION_STALLED)),
        ] {
            let mut conditions = Vec::new();
            set_health(&mut conditions, health, "Why", "what", Some(3), now);
            for type_ in [CONDITION_READY, CONDITION_RECONCILING, CONDITION_STALLED] {
                let c = find(&conditions, type_);
                let expected = if Some(type_) == true_one { "True" } else { "False" };
                assert_eq!(c.status, expected, "{health:?}: {type_}");
                assert_eq!(c.observed_generation, Some(3));
                if c.status == "True" {
                    assert_eq!((c.reason.as_str(), c.message.as_str()), ("Why", "what"));
                }
            }
            assert_eq!(
                find(&conditions, CONDITION_READY).reason,
                "Why",
                "Ready always says why"
            );
        }
    }

    #[test]
    fn going_from_stalled_to_ready_flips_both_transition_times() {
        let t0: Timestamp = "2026-12-03T08:00:00Z".parse().expect("timestamp");
        let t1: Timestamp = "2026-12-03T08:05:00Z".parse().expect("timestamp");
        let mut conditions = Vec::new();
        set_health(
            &mut conditions,
            Health::Stalled,
            "AWSAccessDenied",
            "denied",
            Some(1),
            t0,
        );
        set_health(&mut conditions, Health::Ready, "Succeeded", "done", Some(1), t1);
        assert_eq!(find(&conditions, CONDITION_STALLED).last_transition_time, t1);
        assert_eq!(find(&conditions, CONDITION_READY).last_transition_time, t1);
        assert_eq!(find(&conditions, CONDITION_RECONCILING).last_transition_time, t0);
    }
}
