//! The clean-up behind the finalizer: a plan deleted mid-run first puts its instance back.

use kube::runtime::events::EventType;

use crate::aws::{AwsApis, AwsError, AwsErrorKind};
use crate::machine::GroupTarget;

use super::cleanup::{Cleanup, LeftOutReason, Return};
use super::error::Error;
use super::events::{PlanEvents, REASON_LEFT_OUT, REASON_PLAN_DELETED};

/// The finalizer pitstop puts on every plan it works on, so that deleting a plan with an
/// instance out of the target group cannot leave that instance out.
pub const FINALIZER: &str = "pitstop.dev/return-instances";

/// Undoes what the plan has under way on AWS: cancels a command that may still run and
/// registers the instance again, for every instance to return; reports those that stay
/// out. Returns once every RegisterTargets call has succeeded (or found the target group
/// or instance gone); any other failure keeps the finalizer, and the error policy retries.
pub async fn clean_up(apis: &AwsApis, cleanup: &Cleanup, events: &PlanEvents) -> Result<(), Error> {
    for instance in &cleanup.returns {
        put_back(apis, instance, events).await?;
    }
    for left in &cleanup.left_out {
        let message = match left.why {
            LeftOutReason::OnFailureLeaveOut => {
                "the plan was deleted; the instance failed and stays out of the target group as onFailure: LeaveOut asks"
            }
            LeftOutReason::RegisterRejected => {
                "the plan was deleted; AWS had refused to register the instance again, so it stays out of the target group"
            }
        };
        tracing::warn!(instance = %left.instance_id, "{message}");
        events
            .instance(EventType::Warning, REASON_LEFT_OUT, &left.instance_id, message)
            .await;
    }
    Ok(())
}

async fn put_back(apis: &AwsApis, instance: &Return, events: &PlanEvents) -> Result<(), Error> {
    let instance_id = instance.instance_id.as_str();
    let failed = |source: AwsError| Error::Cleanup {
        instance_id: instance_id.to_owned(),
        source,
    };
    let mut done = Vec::new();
    if let Some(command) = &instance.cancel {
        let command_id = match &command.command_id {
            Some(id) => Some(id.clone()),
            None => apis
                .commands
                .find_by_comment(instance_id, &command.comment)
                .await
                .or_else(best_effort)
                .map_err(failed)?
                .map(|found| found.command_id),
        };
        if let Some(command_id) = command_id {
            // Cancel before registering: a reboot that comes after the instance is back in
            // the group is exactly the outage pitstop exists to prevent.
            let cancelled = apis
                .commands
                .cancel(&command_id, instance_id)
                .await
                .map(Some)
                .or_else(best_effort)
                .map_err(failed)?;
            if cancelled.is_some() {
                done.push(format!("cancelled {} command {command_id}", command.kind.as_str()));
            }
        }
    }
    // Out of Standby (the group registers it in its own target groups), MinSize and the
    // processes as they were.
    if let Some(record) = &instance.auto_scaling {
        done.extend(
            super::auto_scaling_undo::undo(apis, instance_id, record)
                .await
                .map_err(failed)?,
        );
    }
    // Into every group it was taken out of; a repeat of one already done is harmless.
    for group in &instance.groups {
        register_again(apis, group, instance_id, &mut done, events)
            .await
            .map_err(failed)?;
    }
    let message = format!(
        "the plan was deleted while the instance was out of rotation; {}",
        done.join(", ")
    );
    tracing::info!(instance = %instance_id, "{message}");
    events
        .instance(EventType::Normal, REASON_PLAN_DELETED, instance_id, &message)
        .await;
    Ok(())
}

/// RegisterTargets of the instance in one of its groups; a group or instance that is gone
/// counts as done.
async fn register_again(
    apis: &AwsApis,
    group: &GroupTarget,
    instance_id: &str,
    done: &mut Vec<String>,
    events: &PlanEvents,
) -> Result<(), AwsError> {
    match apis
        .target_groups
        .register(&group.target_group_arn, &group.target)
        .await
    {
        Ok(()) => {
            let port = group.target.port.map(|p| format!(" on port {p}")).unwrap_or_default();
            done.push(format!("registered it again in {}{port}", group.target_group_arn));
        }
        // The target group or the instance is gone: nothing is left to put back.
        Err(error) if error.kind == AwsErrorKind::NotFound => {
            done.push(format!("nothing to register: {}", error.message));
        }
        Err(error) => {
            if error.kind == AwsErrorKind::Rejected || error.kind.is_setup() {
                // Retrying will not help by itself; say so where the user looks.
                let message = format!(
                    "the plan was deleted but AWS refuses to register the instance again ({}); \
                     the plan is kept until it can be, or until its finalizer {} is removed by hand",
                    error.message, FINALIZER
                );
                events
                    .instance(EventType::Warning, REASON_PLAN_DELETED, instance_id, &message)
                    .await;
            }
            return Err(error);
        }
    }
    Ok(())
}

/// Cancelling and looking up commands is best effort: only throttling and transient
/// failures are worth another try; a command or instance SSM does not know is done with.
fn best_effort<T>(error: AwsError) -> Result<Option<T>, AwsError> {
    match error.kind {
        // Without credentials or an endpoint the register that follows cannot work either:
        // retried until the setup is fixed.
        AwsErrorKind::Throttled | AwsErrorKind::Transient | AwsErrorKind::Credentials | AwsErrorKind::Endpoint => {
            Err(error)
        }
        // A policy that allows RegisterTargets but not the SSM calls must not keep the
        // instance out.
        AwsErrorKind::NotFound | AwsErrorKind::Rejected | AwsErrorKind::AccessDenied => {
            tracing::debug!(%error, "ignored during clean-up");
            Ok(None)
        }
    }
}
