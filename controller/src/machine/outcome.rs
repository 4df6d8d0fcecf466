//! Folding the outcome of an action back into the status.

use jiff::Timestamp;

use crate::api::{MaintenancePlanSpec, MaintenancePlanStatus};
use crate::aws::{AwsError, AwsErrorKind, CommandKind};

use super::decision::{Action, Transition};
use super::instance::fail;
use super::reason;

/// Records the ID SendCommand returned. Called right after the call, so the ID is written
/// before anything else happens; if that write is lost, the tag look-up finds the command.
pub fn record_sent(status: &mut MaintenancePlanStatus, instance_id: &str, kind: CommandKind, command_id: &str) {
    if let Some(instance) = status.instances.iter_mut().find(|i| i.instance_id == instance_id) {
        let slot = match kind {
            CommandKind::Maintenance => &mut instance.maintenance_command_id,
            CommandKind::Verify => &mut instance.verify_command_id,
        };
        *slot = Some(command_id.to_owned());
        instance.send_attempted_at = None;
    }
}

/// Records that a SendCommand certainly did not take effect (AWS refused it, or it never
/// reached AWS), so the next round may send it again at once instead of first looking for
/// it through [`super::SEND_LOOKUP_GRACE`]. Returns whether the status changed. Any other
/// action, and a failure whose outcome is unknown, change nothing.
pub fn record_send_not_made(status: &mut MaintenancePlanStatus, action: &Action, error: &AwsError) -> bool {
    let Action::Send { request, .. } = action else {
        return false;
    };
    if error.outcome_unknown {
        return false;
    }
    status
        .instances
        .iter_mut()
        .find(|i| i.instance_id == request.instance_id)
        .and_then(|instance| instance.send_attempted_at.take())
        .is_some()
}

/// Records an action AWS refused for good (`Rejected` or `NotFound`): the instance fails,
/// and the return path puts it back where it can. Throttling and transient errors change
/// nothing here: the same action is chosen again on the next round. Nor do failures of the
/// setup (credentials, IAM, endpoint): they are not the instance's fault, and failing it
/// would fail the plan over something fixed without touching it; the plan waits instead,
/// and says why on its status.
pub fn record_action_failed(
    spec: &MaintenancePlanSpec,
    status: &mut MaintenancePlanStatus,
    action: &Action,
    error: &AwsError,
    now: Timestamp,
) -> Option<Transition> {
    if matches!(error.kind, AwsErrorKind::Throttled | AwsErrorKind::Transient) || error.kind.is_setup() {
        return None;
    }
    let instance = status
        .instances
        .iter_mut()
        .find(|i| i.instance_id == action.instance_id())?;
    let message = format!("AWS refused {}: {}", action.name(), error.message);
    match action {
        // Cancelling is best effort: the command is past its limit either way.
        Action::Cancel { .. } => None,
        Action::Register { .. } => {
            // Nothing more can be done from here (e.g. the instance was terminated); stop
            // retrying and say so, leaving outOfRotation true because that is the truth.
            let transition = fail(spec, instance, reason::REGISTER_REJECTED, message, now);
            instance.failure_reason = Some(reason::REGISTER_REJECTED.to_owned());
            Some(transition)
        }
        Action::Deregister { .. } | Action::Send { .. } => {
            Some(fail(spec, instance, reason::AWS_REJECTED, message, now))
        }
        Action::AutoScaling { call, .. } => super::auto_scaling::refused(spec, instance, call, message, now),
    }
}
