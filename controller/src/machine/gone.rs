//! An instance EC2 terminated while pitstop had it out of rotation: an Auto Scaling group
//! replacing it mid-reboot, or someone terminating it by hand. Pure.
//!
//! Nothing else would notice. SSM never reports a command on a terminated instance as
//! finished, so the turn would wait out the command's limit (30 minutes by default), and
//! RegisterTargets then refuses the instance. So while an instance is in flight pitstop asks
//! EC2 about once a minute whether it still has it (one DescribeInstances), and asks at once
//! when RegisterTargets refuses it. A gone instance ends its turn: there is nothing to put
//! back, and the plan goes on with the next instance.

use std::time::Duration;

use jiff::Timestamp;

use crate::api::{InstancePhase, InstanceStatus, MaintenancePlanSpec, MaintenancePlanStatus};

use super::decision::Transition;
use super::reason;

/// How often EC2 is asked about the instance in flight: a reboot takes minutes, so a
/// minute's delay in noticing costs little, and it keeps the reads to a few per instance.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);

/// Whether the instance in flight is due a look at EC2: a minute after it was last looked
/// at, or after its phase began.
pub(super) fn check_due(instance: &InstanceStatus, now: Timestamp) -> bool {
    instance
        .ec2_checked_at
        .or(instance.phase_since)
        .is_none_or(|at| now.duration_since(at) >= jiff::SignedDuration::try_from(CHECK_EVERY).unwrap_or_default())
}

/// Ends the turn of an instance EC2 no longer has (`said`: what EC2 said of it). It is no
/// longer out of rotation, as nothing is left to register. A selected instance is skipped, as
/// one gone before its turn is; one the plan lists by ID fails (it counts against
/// `maxFailures`), as a listed instance that is not there fails before its turn. One that had
/// failed already (and was on its way back) keeps its failure and says what became of it.
pub(super) fn end_turn(
    spec: &MaintenancePlanSpec,
    instance: &mut InstanceStatus,
    said: &str,
    now: Timestamp,
) -> Transition {
    let from = instance.phase;
    instance.out_of_rotation = false;
    instance.phase_since = Some(now);
    if from == InstancePhase::Failed {
        let message = format!(
            "{}; then gone (EC2: {said}): nothing to put back",
            instance.message.as_deref().unwrap_or("failed")
        );
        instance.message = Some(message.clone());
        return Transition::instance(&instance.instance_id, from, from, reason::GONE, message);
    }
    let (phase, outcome) = if spec.selector.is_some() {
        (InstancePhase::Skipped, "skipped")
    } else {
        (InstancePhase::Failed, "failed, as it is listed in spec.instances")
    };
    let message = format!(
        "gone while out of rotation (EC2: {said}; it was {}): nothing to put back; {outcome}",
        phase_name(from)
    );
    instance.phase = phase;
    instance.failure_reason = Some(reason::GONE.to_owned());
    instance.message = Some(message.clone());
    let mut transition = Transition::instance(&instance.instance_id, from, phase, reason::GONE, message);
    transition.warning = true;
    transition
}

/// After RegisterTargets refused `instance_id` and EC2 said it is gone (`said`): ends its
/// turn (see [`end_turn`]) instead of leaving it `RegisterRejected`. None when the status has
/// no such instance in flight.
pub fn record_instance_gone(
    spec: &MaintenancePlanSpec,
    status: &mut MaintenancePlanStatus,
    instance_id: &str,
    said: &str,
    now: Timestamp,
) -> Option<Transition> {
    let instance = status
        .instances
        .iter_mut()
        .find(|i| i.instance_id == instance_id && i.out_of_rotation)?;
    instance.ec2_checked_at = Some(now);
    Some(end_turn(spec, instance, said, now))
}

/// The phase as the status spells it.
fn phase_name(phase: InstancePhase) -> String {
    serde_json::to_value(phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{phase:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_flight(phase_since: Timestamp, checked: Option<Timestamp>) -> InstanceStatus {
        InstanceStatus {
            instance_id: "i-a".to_owned(),
            phase: InstancePhase::Rebooting,
            phase_since: Some(phase_since),
            ec2_checked_at: checked,
            out_of_rotation: true,
            ..InstanceStatus::default()
        }
    }

    #[test]
    fn ec2_is_asked_a_minute_after_the_phase_began_and_then_once_a_minute() {
        let start: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let at = |s: i64| start + jiff::SignedDuration::from_secs(s);
        assert!(!check_due(&in_flight(start, None), at(59)));
        assert!(check_due(&in_flight(start, None), at(60)));
        assert!(!check_due(&in_flight(start, Some(at(60))), at(119)));
        assert!(check_due(&in_flight(start, Some(at(60))), at(120)));
    }

    #[test]
    fn a_gone_instance_is_no_longer_out_and_a_listed_one_fails() {
        let now: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let spec = MaintenancePlanSpec::default();
        let mut instance = in_flight(now, None);
        let transition = end_turn(&spec, &mut instance, "terminated", now);
        assert_eq!(instance.phase, InstancePhase::Failed);
        assert!(!instance.out_of_rotation);
        assert_eq!(instance.failure_reason.as_deref(), Some(reason::GONE));
        assert!(transition.warning);
        let message = instance.message.unwrap();
        assert!(message.contains("EC2: terminated; it was Rebooting"), "{message}");
    }
}
