//! The plan's status while its AWS calls fail: condition `Stalled` with a reason per cause
//! (`AWSCredentials`, `AWSAccessDenied`, `AWSEndpoint`, `AWSNotFound`, `AWSRejected`,
//! `AWSUnreachable`, `AWSThrottled`) and `status.message` saying in one sentence what failed,
//! where, why and the usual fix. The condition goes away on the first round AWS answers.
//!
//! `Stalled` is the kstatus condition for "cannot make progress without help": `kubectl
//! wait --for=condition=Stalled`, Flux and kstatus-aware tools read it. A failure that may
//! pass by itself (a network blip, one 503) is not shown until it has lasted
//! [`TRANSIENT_SHOWN_AFTER`] rounds in a row.

use jiff::Timestamp;
use kube::runtime::events::EventType;

use crate::api::MaintenancePlanStatus;
use crate::aws::problem::{describe, reason};
use crate::aws::{AwsError, AwsErrorKind};
use crate::engine::StatusStore;
pub use crate::machine::CONDITION_STALLED;
use crate::machine::{Health, set_health};

use super::events::PlanEvents;

/// Failed rounds in a row before a failure that may pass by itself shows on the status.
pub const TRANSIENT_SHOWN_AFTER: u32 = 2;

/// Prefix of the reasons this module sets (and so may clear).
const AWS_REASON_PREFIX: &str = "AWS";

/// Whether a failure of `kind`, after `failures_before` failed rounds in a row, is shown.
pub fn shown(kind: AwsErrorKind, failures_before: u32) -> bool {
    match kind {
        // Throttling is retried within seconds and is what AWS's token buckets are for.
        AwsErrorKind::Throttled => false,
        AwsErrorKind::Transient => failures_before.saturating_add(1) >= TRANSIENT_SHOWN_AFTER,
        _ => true,
    }
}

/// What [`mark`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marked {
    /// The status differs from before (it must be written).
    pub changed: bool,
    /// The cause is new: the condition was not there, or had another reason (an Event is due).
    pub new_cause: bool,
}

/// Sets `Stalled=True` (with `Ready` and `Reconciling` false, as kstatus wants them) and the
/// message for `error`, a call in `region`.
pub fn mark(
    status: &mut MaintenancePlanStatus,
    error: &AwsError,
    region: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Marked {
    let before = status.clone();
    let reason = reason(error.kind);
    let new_cause = !status
        .conditions
        .iter()
        .any(|c| c.type_ == CONDITION_STALLED && c.status == "True" && c.reason == reason);
    let message = describe(error, region);
    set_health(
        &mut status.conditions,
        Health::Stalled,
        reason,
        &message,
        generation,
        now,
    );
    status.message = Some(message);
    Marked {
        changed: *status != before,
        new_cause,
    }
}

/// Removes a `Stalled=True` this module set; returns whether there was one.
pub fn clear(status: &mut MaintenancePlanStatus) -> bool {
    let before = status.conditions.len();
    status
        .conditions
        .retain(|c| !(c.type_ == CONDITION_STALLED && c.status == "True" && c.reason.starts_with(AWS_REASON_PREFIX)));
    status.conditions.len() != before
}

/// Where a failed round of a plan stands, for [`show_failure`].
pub struct FailedRound<'a> {
    /// The status as recorded (None for a plan never written).
    pub recorded: Option<&'a MaintenancePlanStatus>,
    /// The call that failed.
    pub error: &'a AwsError,
    /// The region it was made in.
    pub region: &'a str,
    /// The plan's `metadata.generation`.
    pub generation: Option<i64>,
    /// Failed rounds in a row before this one.
    pub failures_before: u32,
    /// Now.
    pub now: Timestamp,
}

/// Puts a failed round's AWS error on the plan's status, and publishes a Warning Event the
/// first time this cause shows. Best effort: the round already failed, and a status that
/// cannot be written now is written by a later round; the failure is logged.
pub async fn show_failure<S: StatusStore>(store: &mut S, events: &PlanEvents, round: FailedRound<'_>) {
    if !shown(round.error.kind, round.failures_before) {
        return;
    }
    let mut status = round.recorded.cloned().unwrap_or_default();
    let marked = mark(&mut status, round.error, round.region, round.generation, round.now);
    if marked.changed
        && let Err(error) = store.save(&status).await
    {
        tracing::warn!(error = %error, "could not record the AWS failure on the status");
        return;
    }
    if marked.new_cause {
        let message = status.message.as_deref().unwrap_or_default();
        events.plan(EventType::Warning, reason(round.error.kind), message).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).unwrap_or_default()
    }

    #[test]
    fn a_repeat_of_the_same_cause_is_not_new_and_changes_nothing() {
        let mut status = MaintenancePlanStatus::default();
        let denied = AwsError::new(
            "DeregisterTargets",
            AwsErrorKind::AccessDenied,
            Some("AccessDenied".into()),
            "not allowed",
        );
        let first = mark(&mut status, &denied, "eu-west-1", Some(1), at(10));
        assert_eq!(
            first,
            Marked {
                changed: true,
                new_cause: true
            }
        );
        let again = mark(&mut status, &denied, "eu-west-1", Some(1), at(20));
        assert_eq!(
            again,
            Marked {
                changed: false,
                new_cause: false
            }
        );
        let condition = status
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_STALLED)
            .expect("Stalled");
        assert_eq!(condition.reason, "AWSAccessDenied");
        assert_eq!(condition.last_transition_time, at(10));
        assert!(
            status
                .message
                .as_deref()
                .is_some_and(|m| m.contains("elasticloadbalancing:DeregisterTargets"))
        );

        let down = AwsError::new("DescribeTargetHealth", AwsErrorKind::Transient, None, "timed out");
        assert!(mark(&mut status, &down, "eu-west-1", Some(1), at(30)).new_cause);
        assert!(
            status
                .conditions
                .iter()
                .all(|c| (c.type_ == CONDITION_STALLED) == (c.status == "True")),
            "Ready and Reconciling are false while stalled: {:?}",
            status.conditions
        );
        assert!(clear(&mut status));
        assert!(!status.conditions.iter().any(|c| c.type_ == CONDITION_STALLED));
        assert!(!clear(&mut status));
    }

    #[test]
    fn blips_are_not_shown() {
        assert!(!shown(AwsErrorKind::Transient, 0));
        assert!(shown(AwsErrorKind::Transient, 1));
        assert!(!shown(AwsErrorKind::Throttled, 10));
        assert!(shown(AwsErrorKind::Credentials, 0));
        assert!(shown(AwsErrorKind::AccessDenied, 0));
    }
}
