//! When `pitstop run` stops on an AWS failure, no instance may silently stay out of its
//! target group: the ones the status says are out get their command cancelled and are
//! registered again, as deleting a plan does in a cluster. What cannot be put back is named,
//! with its ID, in the run's last line.

use crate::api::{MaintenancePlanSpec, MaintenancePlanStatus};
use crate::aws::{AwsApis, AwsErrorKind, TargetState};
use crate::k8s::cleanup::{LeftOutReason, cleanup_for};
use crate::machine::GroupTarget;

/// What [`put_back_after_failure`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutBack {
    /// One note per instance that was out: put back, or still out and why.
    pub notes: Vec<String>,
    /// Whether an instance is still out of its target group.
    pub still_out: bool,
}

/// Puts back every instance the status has out of its target group.
pub async fn put_back_after_failure(
    apis: &AwsApis,
    plan_uid: &str,
    spec: &MaintenancePlanSpec,
    status: Option<&MaintenancePlanStatus>,
) -> PutBack {
    let cleanup = cleanup_for(plan_uid, spec, status);
    let mut notes = Vec::new();
    let mut still_out = false;
    for instance in &cleanup.returns {
        let id = instance.instance_id.as_str();
        // The status is written ahead of DeregisterTargets: if that call is what failed,
        // the instance never left and there is nothing to say about it (unless its Auto
        // Scaling group was changed before: MinSize lowered, processes suspended).
        if instance.cancel.is_none() && instance.auto_scaling.is_none() && healthy_in_all(apis, &instance.groups).await
        {
            continue;
        }
        if let Some(command) = &instance.cancel {
            let command_id = match &command.command_id {
                Some(id) => Some(id.clone()),
                None => apis
                    .commands
                    .find_by_comment(id, &command.comment)
                    .await
                    .ok()
                    .flatten()
                    .map(|found| found.command_id),
            };
            if let Some(command_id) = command_id
                && let Err(error) = apis.commands.cancel(&command_id, id).await
            {
                // Registering while a reboot may still come would cut traffic to a target
                // the load balancer thinks is serving: better out than half-in.
                still_out = true;
                notes.push(format!(
                    "{id} is still out of {}: its command {command_id} could not be cancelled ({})",
                    group_list(&instance.groups),
                    error.message
                ));
                continue;
            }
        }
        if let Some(record) = &instance.auto_scaling {
            match crate::k8s::auto_scaling_undo::undo(apis, id, record).await {
                Ok(done) => notes.extend(done.into_iter().map(|d| format!("{id}: {d}"))),
                Err(error) => {
                    still_out = true;
                    notes.push(format!(
                        "{id}: its Auto Scaling group {} is not as it was ({}); see status.instances[].autoScaling \
                         and undo it by hand or run again",
                        record.group_name, error.message
                    ));
                }
            }
        }
        for group in &instance.groups {
            let arn = group.target_group_arn.as_str();
            match apis.target_groups.register(arn, &group.target).await {
                Ok(()) if instance.groups.len() == 1 => {
                    notes.push(format!("{id} was out of the target group and is registered again"));
                }
                Ok(()) => notes.push(format!("{id} was out of target group {arn} and is registered again")),
                Err(error) if error.kind == AwsErrorKind::NotFound => {
                    notes.push(format!(
                        "{id} was out of {arn}; nothing to register it to ({})",
                        error.message
                    ));
                }
                Err(error) => {
                    still_out = true;
                    notes.push(format!(
                        "{id} is still out of target group {arn}: RegisterTargets failed ({}); register it by hand or run again",
                        error.message
                    ));
                }
            }
        }
    }
    for left in &cleanup.left_out {
        still_out = true;
        let why = match left.why {
            LeftOutReason::OnFailureLeaveOut => "it failed and the plan says onFailure: LeaveOut",
            LeftOutReason::RegisterRejected => "AWS refused to register it again",
        };
        notes.push(format!(
            "{} is still out of {}: {why}",
            left.instance_id,
            group_list_of(spec)
        ));
    }
    PutBack { notes, still_out }
}

/// Whether the instance is `healthy` in every group it was to leave (so it never left).
async fn healthy_in_all(apis: &AwsApis, groups: &[GroupTarget]) -> bool {
    for group in groups {
        match apis
            .target_groups
            .instance_health(&group.target_group_arn, &group.target)
            .await
        {
            Ok(health) if matches!(health.state, TargetState::Healthy) => {}
            _ => return false,
        }
    }
    true
}

fn group_list(groups: &[GroupTarget]) -> String {
    let arns: Vec<&str> = groups.iter().map(|g| g.target_group_arn.as_str()).collect();
    match arns.as_slice() {
        [one] => format!("target group {one}"),
        many => format!("target groups {}", many.join(", ")),
    }
}

fn group_list_of(spec: &MaintenancePlanSpec) -> String {
    let arns = spec.target_groups_in_lock_order();
    match arns.as_slice() {
        [one] => format!("target group {one}"),
        many => format!("target groups {}", many.join(", ")),
    }
}
