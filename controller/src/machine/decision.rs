//! What [`super::decide`] returns.

use std::time::Duration;

use crate::api::{InstancePhase, MaintenancePlanStatus};
use crate::aws::{CommandKind, CommandRequest, Target};

/// The next status, and what to do on AWS to get there.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to record. Written before the action runs (write-ahead), so that a crash
    /// in between leaves a status from which the same action is chosen again.
    pub status: MaintenancePlanStatus,
    /// At most one AWS call.
    pub action: Option<Action>,
    /// When to look again.
    pub requeue: Requeue,
    /// Phase changes made by this decision, for events and metrics.
    pub transitions: Vec<Transition>,
}

/// An AWS call chosen by the state machine. Every action is safe to repeat: the target-group
/// calls are idempotent, and a command is only sent after the tag look-up found none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Take the instance out of one target group.
    Deregister {
        /// The target group.
        target_group_arn: String,
        /// The target.
        target: Target,
    },
    /// Put the instance back into one target group.
    Register {
        /// The target group.
        target_group_arn: String,
        /// The target.
        target: Target,
    },
    /// Send an SSM command; its ID is then folded in with [`super::record_sent`].
    Send {
        /// Which command of the instance.
        kind: CommandKind,
        /// The request.
        request: CommandRequest,
    },
    /// Cancel a command that ran past its limit.
    Cancel {
        /// Command ID.
        command_id: String,
        /// Instance.
        instance_id: String,
    },
    /// An Auto Scaling call for the instance's group (`spec.autoScaling`). None of them is
    /// idempotent on AWS, so each is written ahead in the instance's `autoScaling` status and,
    /// after a lost answer, the group is read before it is asked again.
    AutoScaling {
        /// The group.
        group_name: String,
        /// The instance the call is made for.
        instance_id: String,
        /// The call.
        call: AutoScalingCall,
    },
}

/// One Auto Scaling write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AutoScalingCall {
    /// EnterStandby of the instance, with ShouldDecrementDesiredCapacity.
    EnterStandby,
    /// ExitStandby of the instance.
    ExitStandby,
    /// UpdateAutoScalingGroup of MinSize to this (an absolute value, so a repeat is harmless).
    SetMinSize(i32),
    /// SuspendProcesses of these.
    SuspendProcesses(Vec<String>),
    /// ResumeProcesses of these.
    ResumeProcesses(Vec<String>),
}

impl AutoScalingCall {
    /// The API operation.
    pub fn name(&self) -> &'static str {
        match self {
            Self::EnterStandby => "EnterStandby",
            Self::ExitStandby => "ExitStandby",
            Self::SetMinSize(_) => "UpdateAutoScalingGroup",
            Self::SuspendProcesses(_) => "SuspendProcesses",
            Self::ResumeProcesses(_) => "ResumeProcesses",
        }
    }
}

impl Action {
    /// The instance the action is about.
    pub fn instance_id(&self) -> &str {
        match self {
            Self::Deregister { target, .. } | Self::Register { target, .. } => &target.instance_id,
            Self::Send { request, .. } => &request.instance_id,
            Self::Cancel { instance_id, .. } | Self::AutoScaling { instance_id, .. } => instance_id,
        }
    }

    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Deregister { .. } => "DeregisterTargets",
            Self::Register { .. } => "RegisterTargets",
            Self::Send { .. } => "SendCommand",
            Self::Cancel { .. } => "CancelCommand",
            Self::AutoScaling { call, .. } => call.name(),
        }
    }
}

/// When the plan should be looked at again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// Right away: the status moved and the next step needs no waiting.
    Now,
    /// After the poll interval: waiting on AWS (draining, a command, health checks).
    Poll,
    /// After this long, e.g. a timeout that is further away than a poll.
    After(Duration),
    /// Only when the plan changes: it is finished.
    Idle,
}

/// A phase change of one instance, or of the plan (`instance_id` None).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The instance, or None for the plan.
    pub instance_id: Option<String>,
    /// Phase before, as written in the status.
    pub from: String,
    /// Phase after.
    pub to: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// True for failures (a Warning event).
    pub warning: bool,
}

impl Transition {
    /// A transition of one instance.
    pub fn instance(
        instance_id: &str,
        from: InstancePhase,
        to: InstancePhase,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            instance_id: Some(instance_id.to_owned()),
            from: from.as_str().to_owned(),
            to: to.as_str().to_owned(),
            reason: reason.to_owned(),
            message: message.into(),
            warning: to == InstancePhase::Failed,
        }
    }
}
