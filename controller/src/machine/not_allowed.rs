//! The status of a plan its namespace's MaintenancePolicy does not allow, and the way back
//! once a policy allows it. Pure, like the rest of the machine.

use jiff::Timestamp;

use crate::api::{InstancePhase, MaintenancePlanSpec, MaintenancePlanStatus, PlanPhase};

use super::conditions::{
    CONDITION_ACCEPTED, CONDITION_COMPLETE, CONDITION_FAILED, CONDITION_PROGRESSING, set_condition,
};
use super::decision::Transition;
use super::health::{Health, set_health};

/// Reason of the conditions, the plan transition and the Warning of a refused plan.
pub const NOT_ALLOWED: &str = "NotAllowed";

/// The status of a plan refused by policy: Failed, with `message` (what was refused, by which
/// policy) as its summary and in its conditions. Instances keep their entries (one already
/// done stays done); nothing is in flight, since a plan is only refused between instances.
/// Also the plan transition, a Warning, when the phase changes.
pub fn refuse(
    spec: &MaintenancePlanSpec,
    recorded: Option<&MaintenancePlanStatus>,
    generation: Option<i64>,
    message: &str,
    now: Timestamp,
) -> (MaintenancePlanStatus, Option<Transition>) {
    let mut status = recorded.cloned().unwrap_or_default();
    let before = status.phase;
    status.observed_generation = generation;
    status.phase = PlanPhase::Failed;
    status.current_instance = None;
    if !is_refused(&status) || status.finished_at.is_none() {
        status.finished_at = Some(now);
    }
    for id in &spec.instances {
        if !status.instances.iter().any(|i| &i.instance_id == id) {
            status.instances.push(crate::api::InstanceStatus {
                instance_id: id.clone(),
                ..Default::default()
            });
        }
    }
    let done = status.instances.iter().filter(|i| i.phase.is_finished()).count();
    status.progress = Some(format!("{done}/{}", status.instances.len()));
    status.message = Some(message.to_owned());
    let conditions = &mut status.conditions;
    set_condition(
        conditions,
        CONDITION_ACCEPTED,
        false,
        NOT_ALLOWED,
        message,
        generation,
        now,
    );
    set_condition(
        conditions,
        CONDITION_PROGRESSING,
        false,
        NOT_ALLOWED,
        message,
        generation,
        now,
    );
    set_condition(
        conditions,
        CONDITION_COMPLETE,
        false,
        "NotFinished",
        "",
        generation,
        now,
    );
    set_condition(
        conditions,
        CONDITION_FAILED,
        true,
        NOT_ALLOWED,
        message,
        generation,
        now,
    );
    set_health(conditions, Health::Stalled, NOT_ALLOWED, message, generation, now);
    let transition = (before != PlanPhase::Failed).then(|| Transition {
        instance_id: None,
        from: format!("{before:?}"),
        to: format!("{:?}", PlanPhase::Failed),
        reason: NOT_ALLOWED.to_owned(),
        message: message.to_owned(),
        warning: true,
    });
    (status, transition)
}

/// Whether the status is that of a plan refused by policy.
pub fn is_refused(status: &MaintenancePlanStatus) -> bool {
    status.phase == PlanPhase::Failed
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == CONDITION_FAILED && c.status == "True" && c.reason == NOT_ALLOWED)
}

/// The status from which a plan refused by policy, now allowed, goes on: not finished any
/// more (Pending, or Running if some instance was done before the refusal), so the state
/// machine takes the next instance as if the refusal had been a pause. Anything else is
/// returned unchanged.
pub fn lift_refusal(status: &MaintenancePlanStatus) -> MaintenancePlanStatus {
    let mut status = status.clone();
    if is_refused(&status) {
        let started = status.instances.iter().any(|i| i.phase != InstancePhase::Pending);
        status.phase = if started {
            PlanPhase::Running
        } else {
            PlanPhase::Pending
        };
        status.finished_at = None;
        status.conditions.retain(|c| c.type_ != CONDITION_FAILED);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARN: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";

    fn spec() -> MaintenancePlanSpec {
        MaintenancePlanSpec {
            target_group_arn: ARN.to_owned(),
            instances: vec!["i-0000000000000000a".into(), "i-0000000000000000b".into()],
            ..MaintenancePlanSpec::default()
        }
    }

    fn at(time: &str) -> Timestamp {
        time.parse().expect("valid timestamp")
    }

    #[test]
    fn a_new_plan_refused_is_failed_with_the_sentence_everywhere() {
        let now = at("2026-01-01T00:00:00Z");
        let (status, transition) = refuse(&spec(), None, Some(1), "not allowed by MaintenancePolicy a (x)", now);
        assert_eq!(status.phase, PlanPhase::Failed);
        assert_eq!(status.observed_generation, Some(1));
        assert_eq!(
            status.message.as_deref(),
            Some("not allowed by MaintenancePolicy a (x)")
        );
        assert_eq!(status.progress.as_deref(), Some("0/2"));
        assert!(is_refused(&status));
        let failed = status
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_FAILED)
            .expect("Failed");
        assert_eq!((failed.status.as_str(), failed.reason.as_str()), ("True", NOT_ALLOWED));
        let transition = transition.expect("Pending -> Failed");
        assert!(transition.warning);
        assert_eq!(transition.reason, NOT_ALLOWED);

        // Refused again: the same bytes (no write), no second Warning.
        let (again, transition) = refuse(
            &spec(),
            Some(&status),
            Some(1),
            "not allowed by MaintenancePolicy a (x)",
            at("2026-01-01T00:05:00Z"),
        );
        assert_eq!(again, status);
        assert!(transition.is_none());
    }

    #[test]
    fn lifting_a_refusal_lets_the_plan_go_on_where_it_stopped() {
        let now = at("2026-01-01T00:00:00Z");
        let (mut status, _) = refuse(&spec(), None, Some(1), "no", now);
        let lifted = lift_refusal(&status);
        assert_eq!(lifted.phase, PlanPhase::Pending);
        assert_eq!(lifted.finished_at, None);
        assert!(!is_refused(&lifted));

        status.instances[0].phase = InstancePhase::Registered;
        assert_eq!(lift_refusal(&status).phase, PlanPhase::Running);

        // Any other failure stays as it is.
        let mut failed = MaintenancePlanStatus {
            phase: PlanPhase::Failed,
            ..Default::default()
        };
        failed.conditions.clear();
        assert_eq!(lift_refusal(&failed), failed);
    }
}
