//! What an instance keeps in the status once it is done. Pure.
//!
//! The status is written whole on every round and must fit in one etcd request (1.5 MiB)
//! for the largest plan the API accepts ([`crate::api::MAX_INSTANCES`] instances in ten
//! target groups). While an instance is in flight its entry carries the working state a
//! restarted controller needs to finish it: every group it left (with full ARNs and ports),
//! the drain limit, when it started draining, when a send was tried. Once it is done and back
//! in rotation none of that is read again, so it is dropped, and the human-readable message
//! is bounded (its full text went to the instance's Event and the log when it was written).

use crate::api::InstanceStatus;

/// Longest `message` a finished instance keeps, in characters.
pub const FINISHED_MESSAGE_CHARS: usize = 200;

/// Drops the working state of every instance that is finished and not out of rotation.
pub fn compact_finished(instances: &mut [InstanceStatus]) {
    for instance in instances
        .iter_mut()
        .filter(|i| i.phase.is_finished() && !i.out_of_rotation)
    {
        instance.target_groups.clear();
        instance.drain_timeout_seconds = None;
        instance.draining_since = None;
        instance.send_attempted_at = None;
        instance.waiting_since = None;
        instance.next_attempt_at = None;
        instance.ec2_checked_at = None;
        super::auto_scaling::compact(instance);
        if let Some(message) = instance.message.as_mut() {
            shorten(message, FINISHED_MESSAGE_CHARS);
        }
    }
}

/// Cuts `message` to at most `max` characters, keeping its start (what happened) and its end
/// (how it ended, e.g. the tail of a command's stderr and whether it was registered again).
fn shorten(message: &mut String, max: usize) {
    const GAP: &str = " … ";
    let length = message.chars().count();
    if length <= max {
        return;
    }
    let keep = max.saturating_sub(GAP.chars().count());
    let head = keep * 2 / 3;
    let tail = keep - head;
    let start: String = message.chars().take(head).collect();
    let end: String = message.chars().skip(length - tail).collect();
    *message = format!("{start}{GAP}{end}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{InstancePhase, TargetGroupRegistration};

    fn entry(phase: InstancePhase, out_of_rotation: bool, message: &str) -> InstanceStatus {
        InstanceStatus {
            instance_id: "i-0123456789abcdef0".to_owned(),
            phase,
            out_of_rotation,
            port: Some(8080),
            target_groups: vec![TargetGroupRegistration {
                target_group_arn:
                    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef".to_owned(),
                port: Some(8080),
            }],
            drain_timeout_seconds: Some(30),
            draining_since: Some(jiff::Timestamp::UNIX_EPOCH),
            maintenance_command_id: Some("0b5f2a2e-3c1d-4e8f-9a7b-6c5d4e3f2a1b".to_owned()),
            message: Some(message.to_owned()),
            ..InstanceStatus::default()
        }
    }

    #[test]
    fn a_finished_instance_back_in_rotation_keeps_its_record_but_not_its_working_state() {
        let mut instances = [entry(InstancePhase::Registered, false, "healthy again")];
        compact_finished(&mut instances);
        let [done] = &instances;
        assert!(done.target_groups.is_empty());
        assert_eq!((done.drain_timeout_seconds, done.draining_since), (None, None));
        assert_eq!(done.port, Some(8080));
        assert!(done.maintenance_command_id.is_some(), "what ran stays on record");
        assert_eq!(done.message.as_deref(), Some("healthy again"));
    }

    #[test]
    fn an_instance_in_flight_or_left_out_keeps_everything_a_restart_needs() {
        let long = "x".repeat(1000);
        let mut instances = [
            entry(InstancePhase::Rebooting, true, &long),
            entry(InstancePhase::Failed, true, &long),
        ];
        let before = instances.clone();
        compact_finished(&mut instances);
        assert_eq!(instances, before);
    }

    #[test]
    fn a_long_message_keeps_its_start_and_its_end() {
        let stderr = "E".repeat(500);
        let message =
            format!("maintenance command c1 ended Failed, exit code 1: {stderr}END (registered again: healthy)");
        let mut instances = [entry(InstancePhase::Failed, false, &message)];
        compact_finished(&mut instances);
        let kept = instances[0].message.clone().unwrap_or_default();
        assert_eq!(kept.chars().count(), FINISHED_MESSAGE_CHARS, "{kept}");
        assert!(
            kept.starts_with("maintenance command c1 ended Failed, exit code 1: "),
            "{kept}"
        );
        assert!(kept.ends_with("END (registered again: healthy)"), "{kept}");
        assert!(kept.contains(" … "), "{kept}");
    }
}
