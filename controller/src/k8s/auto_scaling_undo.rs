//! Undoing what pitstop did to an instance's Auto Scaling group when its plan goes away
//! mid-instance (a deleted plan, `pitstop run` stopping on an AWS failure): out of Standby,
//! MinSize back at the recorded original, the processes pitstop suspended resumed.
//!
//! The state machine does the same step by step with a status write between calls; here the
//! group is read first and each call is made only when the read says it is still needed, so a
//! repeated clean-up (the error policy retries it) never asks twice for what is done.

use crate::api::{AutoScalingMode, InstanceAutoScaling, InstanceStatus};
use crate::aws::{AwsApis, AwsError, AwsErrorKind};

/// Whether the record has something to undo (an instance still in Standby that pitstop is
/// to take out, a MinSize not restored, processes not resumed), also once the instance is
/// back in its target groups.
pub fn pending(instance: &InstanceStatus) -> bool {
    instance.auto_scaling.as_ref().is_some_and(|record| {
        in_standby_by_pitstop(record)
            || (record.original_min_size.is_some() && !record.min_size_restored)
            || (record.suspended_processes.as_ref().is_some_and(|p| !p.is_empty()) && !record.processes_resumed)
    })
}

fn in_standby_by_pitstop(record: &InstanceAutoScaling) -> bool {
    record.mode == AutoScalingMode::Standby && record.standby_asked && !record.exited_standby
}

/// Undoes `record` for `instance_id`; returns what was done, in words. An error (throttled,
/// refused, the instance still entering Standby) leaves the rest for the next try.
pub async fn undo(apis: &AwsApis, instance_id: &str, record: &InstanceAutoScaling) -> Result<Vec<String>, AwsError> {
    let group_name = record.group_name.as_str();
    let mut done = Vec::new();
    if in_standby_by_pitstop(record) {
        let ids = [instance_id.to_owned()];
        let lifecycle = apis
            .auto_scaling
            .memberships(&ids)
            .await?
            .remove(instance_id)
            .map(|m| m.lifecycle_state);
        match lifecycle.as_deref() {
            Some("Standby") => {
                apis.auto_scaling.exit_standby(group_name, instance_id).await?;
                done.push(format!("took it out of Standby in Auto Scaling group {group_name}"));
            }
            Some("EnteringStandby") => {
                // ExitStandby is refused until it is in Standby: the next try takes it out.
                return Err(AwsError::new(
                    "ExitStandby",
                    AwsErrorKind::Transient,
                    None,
                    format!("{instance_id} is still entering Standby in Auto Scaling group {group_name}"),
                ));
            }
            // Back in service already, never entered, or no longer a member: nothing to exit.
            _ => {}
        }
    }
    let group = match apis.auto_scaling.group(group_name).await {
        Ok(group) => group,
        // The group is gone: nothing of it to restore.
        Err(error) if error.kind == AwsErrorKind::NotFound => return Ok(done),
        Err(error) => return Err(error),
    };
    if let Some(original) = record.original_min_size.filter(|_| !record.min_size_restored)
        && group.min_size != original
    {
        apis.auto_scaling.set_min_size(group_name, original).await?;
        done.push(format!("restored MinSize of {group_name} to {original}"));
    }
    if let Some(ours) = record
        .suspended_processes
        .as_ref()
        .filter(|_| !record.processes_resumed)
        && ours.iter().any(|p| group.suspended_processes.contains(p))
    {
        apis.auto_scaling.resume_processes(group_name, ours).await?;
        done.push(format!("resumed {} in {group_name}", ours.join(", ")));
    }
    Ok(done)
}
