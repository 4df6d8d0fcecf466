//! The per-instance state machine, as pure functions: no I/O, the clock passed in.
//!
//! [`wants`] says what to read from AWS for a plan's current state, [`decide`] takes what
//! was read and returns the next status and at most one AWS action, and [`record_sent`] /
//! [`record_action_failed`] fold an action's outcome back into the status.

mod approval;
mod auto_scaling;
mod compact;
mod concurrency;
mod conditions;
mod decide;
mod decision;
mod dry_run;
mod gates;
mod gone;
mod health;
mod hold;
mod instance;
mod not_allowed;
mod observed;
mod outcome;
mod preflight;
mod reboot_script;
mod selection;
mod turn;
mod turn_queue;

pub use approval::{ANNOTATION_APPROVE, AWAITING_APPROVAL, awaits_approval};
pub use auto_scaling::{
    AutoScalingReads, InstanceGroupView, STANDBY_LOOKUP_GRACE, reads as auto_scaling_reads,
    record_not_made as record_auto_scaling_not_made,
};
pub use conditions::{
    CONDITION_ACCEPTED, CONDITION_COMPLETE, CONDITION_FAILED, CONDITION_PROGRESSING, CONDITION_STALLED, set_condition,
};
pub use decide::{PlanView, decide, new_window_open, summarize_again};
pub use decision::{Action, AutoScalingCall, Decision, Requeue, Transition};
pub use gone::record_instance_gone;
pub use health::{CONDITION_READY, CONDITION_RECONCILING, Health, set_health};
pub use hold::{GLOBAL_STOP, is_held};
pub use instance::SEND_LOOKUP_GRACE;
pub use not_allowed::{NOT_ALLOWED, is_refused, lift_refusal, refuse};
pub use observed::Presence;
pub use observed::{
    CommandView, GroupTarget, InstanceObserved, InstanceWants, Observed, Wants, groups_out, in_flight, wants, wants_at,
};
pub use outcome::{record_action_failed, record_send_not_made, record_sent};
pub use reboot_script::reboot_command;
pub use selection::{
    EMPTY_SELECTION, SELECTION_TOO_LARGE, members as selection_members, needs_resolving, resolves_per_run,
    run_instances,
};
pub use turn::{TurnView, WAITING_FOR_TURN, holds_turn, needs_turn};
pub use turn_queue::{TurnQueue, Waiter};

/// Failure reasons written to `status.instances[].failureReason` and used in events.
pub mod reason {
    /// A selected instance was gone when its turn came (terminated, or no longer a
    /// registered target of any of the plan's groups): it is skipped, untouched. Or EC2
    /// terminated the instance while it was out of rotation: its turn ended.
    pub const GONE: &str = "InstanceGone";
    /// A Prometheus alert that `spec.gates.prometheus` counts is firing: the next instance waits.
    pub const ALERT_FIRING: &str = "AlertFiring";
    /// `spec.gates.prometheus` or `spec.gates.cloudWatchAlarms` cannot be read: the next
    /// instance waits (unless `ignoreReadFailures`).
    pub const GATE_UNREADABLE: &str = "GateUnreadable";
    /// A CloudWatch alarm of `spec.gates.cloudWatchAlarms` is in `ALARM`: the next instance
    /// waits.
    pub const ALARM_FIRING: &str = "AlarmFiring";
    /// A CloudWatch alarm of `spec.gates.cloudWatchAlarms` (with `abortInFlight`) went into
    /// `ALARM` while the instance was out: its maintenance was stopped and it was put back.
    pub const ABORTED_BY_ALARM: &str = "AbortedByAlarm";
    /// The instance is not a registered target of the group (of any of the plan's groups).
    pub const NOT_IN_TARGET_GROUP: &str = "NotInTargetGroup";
    /// The instance is registered but not healthy.
    pub const INSTANCE_UNHEALTHY: &str = "InstanceUnhealthy";
    /// Another target of the group is not healthy.
    pub const TARGET_GROUP_UNHEALTHY: &str = "TargetGroupUnhealthy";
    /// Taking the instance out would leave too few healthy targets.
    pub const TOO_FEW_HEALTHY_TARGETS: &str = "TooFewHealthyTargets";
    /// The instance's SSM agent is not online.
    pub const AGENT_NOT_ONLINE: &str = "AgentNotOnline";
    /// Draining took longer than allowed.
    pub const DRAIN_TIMEOUT: &str = "DrainTimeout";
    /// The maintenance command failed.
    pub const MAINTENANCE_FAILED: &str = "MaintenanceFailed";
    /// The maintenance command ran too long.
    pub const MAINTENANCE_TIMEOUT: &str = "MaintenanceTimeout";
    /// The verification command failed.
    pub const VERIFY_FAILED: &str = "VerifyFailed";
    /// The verification command ran too long.
    pub const VERIFY_TIMEOUT: &str = "VerifyTimeout";
    /// The instance did not become healthy in time after registration.
    pub const HEALTHY_TIMEOUT: &str = "HealthyTimeout";
    /// AWS refused a call for this instance (bad document, missing permission...).
    pub const AWS_REJECTED: &str = "AwsRejected";
    /// AWS refused to register the instance again (e.g. it was terminated).
    pub const REGISTER_REJECTED: &str = "RegisterRejected";
    /// The spec became invalid while the instance was out.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The plan was deleted while the instance was out.
    pub const PLAN_DELETED: &str = "PlanDeleted";
}
