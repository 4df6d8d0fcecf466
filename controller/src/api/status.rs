//! What pitstop has done and seen. The status is the controller's only memory: everything a
//! restarted controller needs to carry on (command IDs, when a drain began, whether the
//! instance is out of rotation) is written here before or right after it happens.

use std::collections::BTreeMap;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a MaintenancePlan.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenancePlanStatus {
    /// Phase of the plan: Pending (not started), Running, Suspended, Succeeded, or Failed.
    #[serde(default)]
    pub phase: PlanPhase,

    /// The `metadata.generation` of the spec this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// When the plan took its first instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub started_at: Option<Timestamp>,

    /// When the plan reached Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub finished_at: Option<Timestamp>,

    /// The instance being worked on now, if any (with several out, the first of them in
    /// the plan's order; each one's phase is in `instances`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_instance: Option<String>,

    /// With `spec.maxUnavailable`, the most instances this run takes out at once: the spec's
    /// value, a percentage resolved against the target group's registered targets when an
    /// instance last started. Unset: one at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<u32>,

    /// Instances finished (Registered or Failed) out of all instances, e.g. `2/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,

    /// A one-line, human-readable account of where the plan stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// Set while the controller holds every plan before its next instance (the global stop:
    /// an annotation on the controller's stop ConfigMap): why, and how to lift it. An
    /// instance already out is finished and put back; the plan then waits as if suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,

    /// With `approval: Manual`: the ID of the current run, new for every run; the annotation
    /// `pitstop.dev/approve=<runId>` on the plan approves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,

    /// With `approval: Manual`: the run ID the plan's annotation approved (the current run's,
    /// once approved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_run: Option<String>,

    /// With a schedule: when the window of the current (or last) run opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub window_start: Option<Timestamp>,

    /// With a schedule: when the window open now closes (unset while closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub window_end: Option<Timestamp>,

    /// With a schedule: when the next window opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub next_window: Option<Timestamp>,

    /// With a schedule: the last runs, newest first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunRecord>,

    /// With `spec.selector` or `order: ByZone`: the run's instances, in order, as resolved when
    /// the current (or last) run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<SelectionStatus>,

    /// One entry per instance of the run (the spec's list, or the selection), in its order.
    // Atomic, not a map keyed by instanceId: pitstop writes the list whole every round, and
    // a map's server-side-apply bookkeeping (managedFields, one entry per field per
    // instance) would add about half again to the stored object of a 1000-instance plan.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub instances: Vec<InstanceStatus>,

    /// Standard conditions, one per `type`: Accepted, Progressing, Complete, Failed; and the
    /// kstatus three that Flux, Argo CD (with pitstop's health check) and `kubectl wait` read,
    /// at most one of them True: Ready (finished, or a scheduled plan waiting for its window),
    /// Reconciling (working), Stalled (failed, refused, or AWS calls failing: reason
    /// AWSCredentials, AWSAccessDenied, AWSEndpoint, AWSNotFound, AWSRejected or
    /// AWSUnreachable, cleared when AWS answers again).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The outcome of one finished run of a scheduled plan.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// When the run's window opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub window_start: Option<Timestamp>,
    /// When the run took its first instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub started_at: Option<Timestamp>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub finished_at: Option<Timestamp>,
    /// Succeeded or Failed.
    pub phase: PlanPhase,
    /// Instances finished out of all, e.g. `3/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// The run's last message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The instances a selector matched for a run (`status.selection`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelectionStatus {
    /// When the selector was resolved for the current (or last) run. Unset: it is resolved
    /// again when the next run starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub resolved_at: Option<Timestamp>,

    /// The instance IDs the selector matched, in the order they are maintained (none when it
    /// matched more than a plan takes; see `matched`).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub instances: Vec<String>,

    /// How many instances the selector matched. More than 1000 (the most one plan takes)
    /// fails the run with `SelectionTooLarge` before any instance is touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<u32>,

    /// The highest attempt number the plan's instances had used when the selection was made:
    /// an instance new to the run starts from here, so a command tag is never reused, even by
    /// an instance that left the selection and came back.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt_floor: u32,

    /// What the selector matched, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// With `order: ByZone`: each instance's Availability Zone, as EC2 showed it when the run
    /// started.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub zones: BTreeMap<String, String>,
}

/// One target group an instance is taken out of, and the port it is registered on there.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetGroupRegistration {
    /// ARN of the target group.
    pub target_group_arn: String,
    /// The port the instance was registered on in this group (unset: the group's own port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// Phase of a plan as a whole.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PlanPhase {
    /// Accepted, no instance taken yet.
    #[default]
    Pending,
    /// An instance is being worked on, or the next one is about to be.
    Running,
    /// Every instance finished, with no more failures than `maxFailures`.
    Succeeded,
    /// The spec is invalid, or more instances failed than `maxFailures` allows.
    Failed,
    /// `spec.suspend` is true and no instance is in flight.
    Suspended,
}

impl PlanPhase {
    /// True for Succeeded and Failed: nothing more will happen.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// Progress of one instance.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// The EC2 instance ID.
    pub instance_id: String,

    /// Pending, Draining (deregistered, connections draining), Rebooting (maintenance
    /// running), Verifying (verification, re-registration and the wait for `healthy`),
    /// Registered (done and healthy), Failed, or Skipped (gone before its turn).
    #[serde(default)]
    pub phase: InstancePhase,

    /// When the instance entered its current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub phase_since: Option<Timestamp>,

    /// Which try this is (maintenance and verification of one instance), starting at 1 and
    /// counting across runs of the plan, so that every try's SSM command tag is unique.
    #[serde(default)]
    pub attempt: u32,

    /// The attempt this run of the plan started the instance with (`maxAttempts` counts
    /// the tries from here).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub first_attempt: u32,

    /// True while pitstop has the instance out of the target group: it deregistered it and
    /// has not registered it again (or, after a failure, registered it again but the
    /// health checks have not yet decided). A restarted controller uses this to put it back.
    #[serde(default)]
    pub out_of_rotation: bool,

    /// The port the instance was registered on, kept so it is registered again on the same
    /// (with several target groups: its port in the first group of `targetGroups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,

    /// Every target group pitstop takes (or took) the instance out of this try, with its
    /// port in each: the groups it was registered in when it started, written before the
    /// first DeregisterTargets, so a restarted controller puts it back into each of them.
    /// Empty for an instance started by an older pitstop: then the plan's one target group
    /// and `port` apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["targetGroupArn"]))]
    pub target_groups: Vec<TargetGroupRegistration>,

    /// With `order: ByZone`: the instance's Availability Zone when the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,

    /// What pitstop did to the instance's Auto Scaling group (`spec.autoScaling`), step by
    /// step, each written before its call. Unset: the instance is in no group, or the mode is
    /// `Ignore`, or it was started by a pitstop without this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_scaling: Option<super::auto_scaling::InstanceAutoScaling>,

    /// The drain limit that applies to this instance, in seconds (from `timeouts.drainSeconds`
    /// or the target group's deregistration delay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout_seconds: Option<u32>,

    /// When the target group first showed the instance draining, i.e. DeregisterTargets had
    /// taken effect. The drain limit counts from here, so a DeregisterTargets call held back
    /// by throttling does not use it up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub draining_since: Option<Timestamp>,

    /// SSM command ID of the maintenance command, recorded as soon as SendCommand returns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_command_id: Option<String>,

    /// When the maintenance command was first asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub maintenance_started_at: Option<Timestamp>,

    /// When SendCommand was last tried for the command the instance waits on (maintenance
    /// while Rebooting, verification while Verifying), written before the call. While it is
    /// set and no command ID is known, the command may exist although its answer was lost
    /// (a timeout, a connection reset): pitstop looks for it by its tag for a grace period
    /// before it sends again, so an answer that never arrived never runs a document twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub send_attempted_at: Option<Timestamp>,

    /// SSM command ID of the verification command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_command_id: Option<String>,

    /// When the verification command was first asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub verify_started_at: Option<Timestamp>,

    /// While a preflight gate is closed: when the wait for it began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub waiting_since: Option<Timestamp>,

    /// After a failed try (see `maxAttempts`): when the next try may start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub next_attempt_at: Option<Timestamp>,

    /// With `dryRun`: what pitstop would do with this instance, or what would stop it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<String>,

    /// While the instance is in flight: when pitstop last asked EC2 whether it still exists
    /// (DescribeInstances, about once a minute). An instance terminated while out of rotation
    /// (an Auto Scaling replacement, say) then ends its turn with reason `InstanceGone`
    /// instead of waiting out its command's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub ec2_checked_at: Option<Timestamp>,

    /// When RegisterTargets was first asked for; the wait for `healthy` counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub registered_at: Option<Timestamp>,

    /// Why the instance failed (or was skipped), once it has: a short CamelCase reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,

    /// A human-readable account of the last thing that happened to the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Phase of one instance.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum InstancePhase {
    /// Not started.
    #[default]
    Pending,
    /// Deregistered; waiting for in-flight requests to finish (target state `draining`).
    Draining,
    /// The maintenance command is running (it may reboot the instance).
    Rebooting,
    /// Verification, re-registration, and the wait for the target to become `healthy`.
    Verifying,
    /// Maintenance done and the instance serves traffic again.
    Registered,
    /// Maintenance or a check failed; see `failureReason` and `message`.
    Failed,
    /// Not maintained, untouched: the instance was gone when its turn came (selected plans
    /// only: terminated, or no longer a registered target of the plan's groups); see
    /// `failureReason` and `message`. Does not count against `maxFailures`.
    Skipped,
}

impl InstancePhase {
    /// Registered, Failed and Skipped are final for an instance.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Registered | Self::Failed | Self::Skipped)
    }

    /// Name as written in the status and in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Draining => "Draining",
            Self::Rebooting => "Rebooting",
            Self::Verifying => "Verifying",
            Self::Registered => "Registered",
            Self::Failed => "Failed",
            Self::Skipped => "Skipped",
        }
    }
}

impl std::fmt::Display for InstancePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A standard Kubernetes condition (same fields as `metav1.Condition`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type: Accepted, Progressing, Complete or Failed.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When `status` last changed.
    #[schemars(schema_with = "timestamp_schema")]
    pub last_transition_time: Timestamp,
    /// A CamelCase reason for the last transition.
    pub reason: String,
    /// A human-readable message.
    #[serde(default)]
    pub message: String,
}

/// Schema of an RFC 3339 timestamp, as the apiserver expects for `date-time` fields.
fn timestamp_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "string", "format": "date-time"})
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}
