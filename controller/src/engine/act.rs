//! Making the one AWS call a decision asks for.

use crate::aws::{AwsApis, AwsError, CommandKind};
use crate::machine::{Action, AutoScalingCall};

/// What an action returned that the status must remember.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ActOutcome {
    /// Nothing to remember.
    Done,
    /// SendCommand returned this command ID.
    Sent {
        /// Which command.
        kind: CommandKind,
        /// The instance.
        instance_id: String,
        /// The ID.
        command_id: String,
    },
}

/// Makes the call.
pub async fn act(apis: &AwsApis, action: &Action) -> Result<ActOutcome, AwsError> {
    match action {
        Action::Deregister {
            target_group_arn,
            target,
        } => {
            apis.target_groups.deregister(target_group_arn, target).await?;
        }
        Action::Register {
            target_group_arn,
            target,
        } => {
            apis.target_groups.register(target_group_arn, target).await?;
        }
        Action::Send { kind, request } => {
            let command_id = apis.commands.send(request).await?;
            return Ok(ActOutcome::Sent {
                kind: *kind,
                instance_id: request.instance_id.clone(),
                command_id,
            });
        }
        Action::Cancel {
            command_id,
            instance_id,
        } => {
            apis.commands.cancel(command_id, instance_id).await?;
        }
        Action::AutoScaling {
            group_name,
            instance_id,
            call,
        } => {
            let api = &apis.auto_scaling;
            match call {
                AutoScalingCall::EnterStandby => api.enter_standby(group_name, instance_id).await?,
                AutoScalingCall::ExitStandby => api.exit_standby(group_name, instance_id).await?,
                AutoScalingCall::SetMinSize(size) => api.set_min_size(group_name, *size).await?,
                AutoScalingCall::SuspendProcesses(processes) => api.suspend_processes(group_name, processes).await?,
                AutoScalingCall::ResumeProcesses(processes) => api.resume_processes(group_name, processes).await?,
            }
        }
    }
    Ok(ActOutcome::Done)
}
