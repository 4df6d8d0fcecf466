//! What a plan does with instances that belong to an EC2 Auto Scaling group
//! (`spec.autoScaling`), and what it records about each one (`status.instances[].autoScaling`).

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The Auto Scaling processes `SuspendProcesses` mode suspends while an instance is out, in
/// AWS's names.
///
/// - `HealthCheck`: with ELB health checks, a rebooting (or slow-starting) instance would be
///   marked `Unhealthy`;
/// - `ReplaceUnhealthy`: a member marked `Unhealthy` (by anyone) would be terminated and replaced;
/// - `AZRebalance`: the group would terminate an instance to even out its zones while one is out.
///
/// AWS has no `ScaleIn` process: scale-in runs through `Terminate`, and suspending it stops
/// every termination of the group (and lets it grow past MaxSize), so it is not suspended;
/// neither are `AlarmNotification` and `ScheduledActions`, which would stop all scaling.
/// Against scale-in use `Standby` (a Standby instance is never chosen for scale-in).
pub const SUSPENDED_PROCESSES: &[&str] = &["HealthCheck", "ReplaceUnhealthy", "AZRebalance"];

/// How instances that belong to an Auto Scaling group are taken out (`spec.autoScaling`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoScalingSpec {
    /// What pitstop tells an instance's Auto Scaling group while the instance is out. Whether
    /// an instance is a member is read when its turn comes (DescribeAutoScalingInstances;
    /// needs `autoscaling:DescribeAutoScalingInstances`), and the mode that applies to it is
    /// recorded in its status then, so changing this field affects only instances not started
    /// yet. An instance in no group is maintained as before whatever the mode says.
    ///
    /// `Standby` (default): EnterStandby with ShouldDecrementDesiredCapacity (lowering MinSize
    /// by one first when the group is at its minimum, and restoring it afterwards), so the
    /// group neither replaces the instance nor counts it for scale-in; after the maintenance,
    /// ExitStandby and the wait for `InService` and `healthy`. `SuspendProcesses`: suspends
    /// HealthCheck, ReplaceUnhealthy and AZRebalance for the group while the instance is out,
    /// then resumes only the ones pitstop suspended. `Ignore`: tells the group nothing and
    /// reads nothing from Auto Scaling (with ELB health checks the group may replace an
    /// instance that is slow to come back).
    ///
    /// The default is `Standby` because the alternative is a group that may terminate an
    /// instance mid-maintenance. An existing plan needs no change: an instance in no group,
    /// or already in flight when pitstop is upgraded, is maintained as before. The controller
    /// then needs the Auto Scaling permissions in the README; without them a plan stops
    /// before touching an instance, with the Stalled reason `AWSAccessDenied`. `Ignore` needs none.
    #[serde(default)]
    pub mode: AutoScalingMode,
}

impl AutoScalingSpec {
    /// True for the default (not written back).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// `spec.autoScaling.mode`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AutoScalingMode {
    /// EnterStandby (decrementing the desired capacity) while the instance is out.
    #[default]
    Standby,
    /// Suspend HealthCheck, ReplaceUnhealthy and AZRebalance while the instance is out.
    SuspendProcesses,
    /// Tell the group nothing.
    Ignore,
}

/// What pitstop did to an instance's Auto Scaling group, each step written before its call
/// (`status.instances[].autoScaling`), so a restarted controller (or one whose answer was
/// lost) reads the group before it calls again and undoes exactly what was done.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceAutoScaling {
    /// The group the instance belonged to when its turn came.
    pub group_name: String,

    /// `Standby` or `SuspendProcesses`: the mode that applies to this instance (fixed when it started).
    pub mode: AutoScalingMode,

    /// Standby: the group's MinSize before pitstop lowered it by one (the group was at its
    /// minimum, so EnterStandby with a decrement would be refused). Written before
    /// UpdateAutoScalingGroup; MinSize is set back to exactly this once the instance is back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_min_size: Option<i32>,

    /// Standby: MinSize is back at `originalMinSize` (or pitstop gave up on it; see `message`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub min_size_restored: bool,

    /// Standby: when EnterStandby was last asked for, written before the call. While set and
    /// the group still shows the instance `InService`, the call may have happened with its
    /// answer lost: pitstop reads the lifecycle state for a grace period before it asks
    /// again, so the desired capacity is never decremented twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub standby_requested_at: Option<Timestamp>,

    /// Standby: pitstop has asked for EnterStandby at least once (so a member seen in Standby
    /// is in it by pitstop's doing, even when a later attempt was refused).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standby_asked: bool,

    /// Standby: the group showed the instance leaving service after pitstop's EnterStandby.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub entered_standby: bool,

    /// Standby: when ExitStandby was last asked for, written before the call (the same care
    /// as for EnterStandby).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub exit_requested_at: Option<Timestamp>,

    /// Standby: the group showed the instance back (`Pending` or `InService`) after ExitStandby.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exited_standby: bool,

    /// SuspendProcesses: the processes pitstop suspended, i.e. those of HealthCheck,
    /// ReplaceUnhealthy and AZRebalance that were not suspended already. Written before the
    /// call; only these are resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_processes: Option<Vec<String>>,

    /// SuspendProcesses: the processes in `suspendedProcesses` are running again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub processes_resumed: bool,
}

/// Schema of an RFC 3339 timestamp, as the apiserver expects for `date-time` fields.
fn timestamp_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "format": "date-time"})
}
