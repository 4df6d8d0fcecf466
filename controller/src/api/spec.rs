//! The desired state a user declares: which instances, which target group, what to run.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::auto_scaling::AutoScalingSpec;
use super::gates::Gates;
use super::notify::Notify;
use super::status::MaintenancePlanStatus;

/// Pattern of an ELBv2 target-group ARN, shared by the CRD schema and the in-process validation.
pub const TARGET_GROUP_ARN_PATTERN: &str =
    r"^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:targetgroup/[A-Za-z0-9-]{1,32}/[0-9a-f]{16}$";

/// Most target groups a plan may name (`targetGroupArns`): CodeDeploy's limit too.
pub const MAX_TARGET_GROUPS: usize = 10;

/// Longest target group ARN accepted (real ones are at most about 110 characters); bounds
/// the cost of the CEL rules that compare them.
pub const MAX_TARGET_GROUP_ARN_LENGTH: usize = 256;

/// Most instances one plan maintains (`instances`, or what a selector finds): as many as an
/// Application Load Balancer may have targets, and few enough that the plan and its status
/// stay far below etcd's 1.5 MiB limit on one write (at most about 575 KB at this size, with
/// ten target groups and every instance failed; see `e2e/src/largest_plan.rs`). A larger
/// fleet is split across plans.
pub const MAX_INSTANCES: usize = 1000;

/// Pattern of an EC2 instance ID: `i-` followed by 8 or 17 lowercase hex digits.
pub const INSTANCE_ID_PATTERN: &str = r"^i-([0-9a-f]{8}|[0-9a-f]{17})$";

/// A MaintenancePlan takes EC2 instances out of an ELBv2 target group one at a time,
/// runs maintenance on each through AWS Systems Manager, and puts each back once the
/// load balancer reports it healthy, so that clients never hit an instance that is down.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "pitstop.dev",
    version = "v1alpha1",
    kind = "MaintenancePlan",
    plural = "maintenanceplans",
    shortname = "mp",
    namespaced,
    status = "MaintenancePlanStatus",
    doc = "A MaintenancePlan: EC2 instances to take out of an ELBv2 target group one at a time, maintain through AWS Systems Manager, and put back once healthy.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase","description":"Phase of the plan as a whole"}"#,
    printcolumn = r#"{"name":"Progress","type":"string","jsonPath":".status.progress","description":"Instances finished out of all instances"}"#,
    printcolumn = r#"{"name":"Current","type":"string","jsonPath":".status.currentInstance","description":"Instance being worked on"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.targetGroupArn) != has(self.targetGroupArns)",
        "message": "set exactly one of targetGroupArn and targetGroupArns"
    },
    {
        "rule": "!has(oldSelf.targetGroupArns) || (has(self.targetGroupArns) && self.targetGroupArns == oldSelf.targetGroupArns)",
        "message": "targetGroupArns is immutable (and cannot be swapped for targetGroupArn): an instance in flight must go back to the groups it left"
    },
    {
        "rule": "!has(oldSelf.targetGroupArn) || (has(self.targetGroupArn) && self.targetGroupArn == oldSelf.targetGroupArn)",
        "message": "targetGroupArn is immutable (and cannot be swapped for targetGroupArns): an instance in flight must go back to the group it left"
    },
    {
        "rule": "has(self.instances) != has(self.selector)",
        "message": "set exactly one of instances and selector"
    }
]))]
pub struct MaintenancePlanSpec {
    /// ARN of the ELBv2 (ALB or NLB) target group the instances serve traffic through,
    /// e.g. `arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef`.
    /// Each instance is deregistered from this group before its maintenance and registered
    /// again afterwards. Set this or `targetGroupArns`, not both.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(regex(pattern = TARGET_GROUP_ARN_PATTERN), length(max = MAX_TARGET_GROUP_ARN_LENGTH))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "targetGroupArn is immutable: an instance in flight must go back to the group it left"}]))]
    pub target_group_arn: String,

    /// ARNs of every ELBv2 target group the instances serve traffic through (up to 10, as
    /// CodeDeploy accepts), e.g. one for HTTP and one for HTTPS, or an ALB's and an NLB's.
    /// Each instance is taken out of every listed group it is registered in (on its own port
    /// in each), maintained once all of them show it `unused`, registered in all of them
    /// again, and counts as healthy only when it is `healthy` in all. The preflight gates
    /// apply to each group. An instance registered in none of them fails `NotInTargetGroup`
    /// untouched. Set this or `targetGroupArn`, not both; immutable like it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(min = 1, max = MAX_TARGET_GROUPS),
        inner(regex(pattern = TARGET_GROUP_ARN_PATTERN), length(max = MAX_TARGET_GROUP_ARN_LENGTH))
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub target_group_arns: Vec<String>,

    /// AWS region of the target groups and the instances. Defaults to the region named in
    /// the target group ARNs (a target group can only be addressed in its own region, so
    /// all of a plan's groups are in one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "region is immutable"}]))]
    pub region: Option<String>,

    /// EC2 instance IDs to maintain, in order, one at a time (see `maxUnavailable`). Each must be a registered,
    /// healthy target of the target group when its turn comes (one that is not fails
    /// `NotInTargetGroup`). No duplicates, at most 1000. Set this or `selector`, not both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = MAX_INSTANCES), inner(regex(pattern = INSTANCE_ID_PATTERN)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub instances: Vec<String>,

    /// Which instances to maintain, as a query instead of a list: resolved when each run
    /// starts (when the plan is applied, at each schedule window, at a new generation of a
    /// finished plan) and recorded in `status.selection`, so the run is stable and a restarted
    /// controller never resolves it again mid-run. Instances are maintained in ID order. One
    /// that is gone when its turn comes (terminated, or no longer in the target groups) is
    /// `Skipped` with a reason: it does not count against `maxFailures`. A selection that
    /// matches nothing fails the run with reason `EmptySelection`. Set this or `instances`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<FleetSelector>,

    /// The SSM document to run on each instance while it is out of rotation. When omitted,
    /// pitstop runs a graceful reboot: `AWS-RunShellScript` with a script that writes a
    /// marker file and exits 194 (the SSM agent reboots the instance and runs the script
    /// again), then removes the marker and succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<CommandSpec>,

    /// An optional SSM document run after maintenance and before the instance is
    /// registered again, e.g. `curl -fsS http://localhost:8080/`. A failure here counts as a
    /// failed instance (see `onFailure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<CommandSpec>,

    /// Checks made before an instance is taken out of rotation. If they fail, the instance
    /// is not touched.
    #[serde(default)]
    pub preflight: Preflight,

    /// How long each step may take before the instance counts as failed.
    #[serde(default)]
    pub timeouts: Timeouts,

    /// What to do with an instance whose maintenance or verification failed after it was
    /// taken out of rotation: `Register` (default) puts it back and lets the target group's
    /// health checks decide whether it gets traffic (it counts as out, keeping the target
    /// group's turn, until they have: `healthy`, `unhealthy`, or still `initial` after
    /// `timeouts.healthySeconds`); `LeaveOut` leaves it deregistered for
    /// a human to look at, and stops the plan there whatever `maxFailures` says (another
    /// instance taken out would make two out of rotation at once).
    #[serde(default)]
    pub on_failure: OnFailure,

    /// How many instances may fail before the plan stops. With the default 0, the first
    /// failed instance fails the plan and the instances after it stay Pending, untouched.
    #[serde(default)]
    pub max_failures: u32,

    /// How many times maintenance (and verification) may be tried on one instance while it
    /// is out of rotation before it counts as failed. Tries are spaced by a backoff that
    /// starts at 10 s and doubles, up to 5 minutes. Defaults to 1 (no retry).
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1, max = 10))]
    pub max_attempts: u32,

    /// How many of the plan's instances may be out of rotation at once: a count (`3`) or a
    /// percentage of the target group's registered targets (`"25%"`, rounded down, at least
    /// one), resolved when an instance starts. Defaults to 1, one at a time. Each instance of
    /// a wave drains, runs its maintenance and returns on its own; the next one starts as soon
    /// as one is back. The bound holds across plans on the same target group (one plan holds
    /// the group's turn while it has instances out; while another plan waits, the holder does
    /// not refill its wave, so the turn passes once the wave is back) and across controller
    /// restarts (every instance out is written ahead in the status). The
    /// preflight gates still apply to each instance: with the default
    /// `requireHealthyTargetGroup`, the plan's own instances out do not close the gate, any
    /// other unhealthy target does. Above one it needs `autoScaling.mode: Ignore` (Standby and
    /// SuspendProcesses protect one instance of a group at a time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<super::MaxUnavailable>,

    /// With `maxUnavailable` above one, the most instances out at once in any one
    /// Availability Zone (from EC2, read when the run starts and recorded per instance in
    /// `status.instances[].zone`). An instance whose zone is full waits; a later one in
    /// another zone may go first. Unset: no limit per zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_unavailable_per_zone: Option<u32>,

    /// Seconds to wait after an instance is healthy again before the next one is taken out
    /// (a bake time, as CodeDeploy's or system-upgrade-controller's). Defaults to 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(max = 86400))]
    pub settle_seconds: u32,

    /// Pause the plan between instances: the instance in flight is finished (and put back),
    /// no other is started until this is false again. The plan then goes on where it stopped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,

    /// Recurring maintenance windows. Without a schedule a plan runs once, when applied. With
    /// one, each window starts a new run of all the instances (a run cut short by the end of
    /// a window goes on in the next); no instance is taken out while the window is closed,
    /// and one in flight when it closes is finished and put back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,

    /// Rehearse the plan: run the read-only checks for every instance (registered and
    /// healthy in the target group, the gates, the SSM agent online) and report in the status
    /// what would be done, changing nothing on AWS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,

    /// The order instances are maintained in: `Listed` (default: the list's order, or a
    /// selector's ID order) or `ByZone`: one Availability Zone after the other, zones in name
    /// order (from EC2 DescribeInstances when the run starts, recorded per instance in
    /// `status.instances[].zone`), so a bad patch stays inside one zone. With `ByZone` the
    /// run's instances and their order are fixed when the run starts, as with a selector.
    #[serde(default, skip_serializing_if = "Order::is_listed")]
    pub order: Order,

    /// `Automatic` (default): a run starts as soon as it may. `Manual`: each run (a new plan,
    /// a new generation of a finished one, each schedule window) waits, with the Progressing
    /// reason `AwaitingApproval`, until the plan carries the annotation
    /// `pitstop.dev/approve=<status.runId>`. The run ID is new for every run, so an annotation
    /// kept in Git never approves a later run by accident. Dry runs need no approval.
    #[serde(default, skip_serializing_if = "Approval::is_automatic")]
    pub approval: Approval,
    /// What pitstop tells an instance's EC2 Auto Scaling group while the instance is out, so
    /// the group does not replace it or scale it in meanwhile. See `autoScaling.mode`.
    #[serde(default, skip_serializing_if = "AutoScalingSpec::is_default")]
    pub auto_scaling: AutoScalingSpec,

    /// Signals from outside the target group (Prometheus alerts) that hold the next instance
    /// while they are not quiet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gates: Option<Gates>,

    /// A webhook told what happens to the plan (runs started and finished, instances
    /// maintained or failed, gates that hold it), its URL read from a Secret in the plan's
    /// namespace. Best effort: it never holds maintenance up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
}

/// Whether a run needs someone's approval before its first instance (`spec.approval`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Approval {
    /// Runs start on their own.
    #[default]
    Automatic,
    /// Each run waits for the `pitstop.dev/approve=<runId>` annotation.
    Manual,
}

impl Approval {
    /// True for the default.
    pub fn is_automatic(&self) -> bool {
        *self == Self::Automatic
    }
}

/// The order of a plan's instances (`spec.order`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Order {
    /// As listed (`instances`), or in ID order (a selector).
    #[default]
    Listed,
    /// One Availability Zone after the other, zones in name order, instances in their usual
    /// order within a zone (an instance EC2 does not know goes last).
    ByZone,
}

impl Order {
    /// True for the default.
    pub fn is_listed(&self) -> bool {
        *self == Self::Listed
    }
}

impl MaintenancePlanSpec {
    /// The target groups of the plan, as listed: `targetGroupArns`, else `targetGroupArn`
    /// (empty only for a spec that names none, which validation rejects).
    pub fn target_groups(&self) -> Vec<&str> {
        if self.target_group_arns.is_empty() {
            std::iter::once(self.target_group_arn.as_str())
                .filter(|arn| !arn.is_empty())
                .collect()
        } else {
            self.target_group_arns.iter().map(String::as_str).collect()
        }
    }

    /// The target groups in the fixed order their turns are taken in (sorted, no
    /// duplicates), so that two plans sharing groups can never wait for each other in a circle.
    pub fn target_groups_in_lock_order(&self) -> Vec<&str> {
        let mut groups = self.target_groups();
        groups.sort_unstable();
        groups.dedup();
        groups
    }
}

/// A query for the instances of a plan (`spec.selector`): exactly one of its fields.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "((has(self.targetGroupMembers) && self.targetGroupMembers) ? 1 : 0) + ((has(self.tags) && size(self.tags) > 0) ? 1 : 0) + (has(self.autoScalingGroupName) ? 1 : 0) == 1",
        "message": "the selector must select one way: set exactly one of targetGroupMembers: true, tags and autoScalingGroupName"
    }
]))]
pub struct FleetSelector {
    /// Every registered target of the plan's target groups (in any of them; a target that is
    /// draining or unused is not a member), as the load balancer sees the fleet, e.g. an Auto
    /// Scaling group's instances attached to the groups.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub target_group_members: bool,

    /// EC2 tags, key to value: the running instances that carry all of them (EC2
    /// DescribeInstances; needs `ec2:DescribeInstances`), e.g. `{app: web, env: prod}`. An
    /// instance selected this way that is not a registered target of any of the plan's groups
    /// when its turn comes is skipped, untouched.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 50))]
    pub tags: BTreeMap<String, String>,

    /// The name of an EC2 Auto Scaling group: its instances whose lifecycle state is
    /// `InService` when the run starts (DescribeAutoScalingGroups; needs
    /// `autoscaling:DescribeAutoScalingGroups`), so a weekly plan follows the group as it
    /// replaces instances. Instances in `Pending`, `Standby`, `Terminating` or a lifecycle hook
    /// are left out. A group that does not exist stops the plan with a clear condition. An
    /// instance selected this way that is not a registered target of any of the plan's groups
    /// when its turn comes is skipped, untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub auto_scaling_group_name: Option<String>,
}

impl FleetSelector {
    /// How many ways the selector selects (valid: exactly one).
    pub fn ways(&self) -> usize {
        usize::from(self.target_group_members)
            + usize::from(!self.tags.is_empty())
            + usize::from(self.auto_scaling_group_name.is_some())
    }
}

fn default_max_attempts() -> u32 {
    1
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

impl Default for MaintenancePlanSpec {
    /// An empty spec (not valid: it names no target group or instance); for building specs
    /// field by field.
    fn default() -> Self {
        Self {
            approval: Approval::Automatic,
            target_group_arn: String::new(),
            target_group_arns: Vec::new(),
            region: None,
            instances: Vec::new(),
            selector: None,
            maintenance: None,
            verify: None,
            preflight: Preflight::default(),
            timeouts: Timeouts::default(),
            on_failure: OnFailure::default(),
            max_failures: 0,
            max_attempts: default_max_attempts(),
            max_unavailable: None,
            max_unavailable_per_zone: None,
            settle_seconds: 0,
            suspend: false,
            schedule: None,
            dry_run: false,
            order: Order::Listed,
            auto_scaling: AutoScalingSpec::default(),
            gates: None,
            notify: None,
        }
    }
}

/// When maintenance may happen: windows that open at each match of a cron expression, in a
/// time zone, and stay open for a while.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// When each window opens: a cron expression of five fields (minute, hour, day of
    /// month, month, day of week) read in `timeZone`, e.g. `0 22 * * SUN` for Sundays at 22:00.
    #[schemars(length(min = 9, max = 128))]
    pub cron: String,

    /// IANA time zone of the cron expression, e.g. `Europe/London` (daylight saving time
    /// included). Defaults to `UTC`.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,

    /// How long each window stays open, in minutes. Defaults to 240.
    #[serde(default = "default_window_minutes")]
    #[schemars(range(min = 1, max = 10080))]
    pub window_minutes: u32,
}

fn default_time_zone() -> String {
    "UTC".to_owned()
}

fn default_window_minutes() -> u32 {
    240
}

/// An SSM document to run on an instance, with its parameters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandSpec {
    /// Name or ARN of the SSM Command document. Defaults to `AWS-RunShellScript`.
    #[serde(default = "default_document_name")]
    #[schemars(length(min = 3, max = 256))]
    pub document_name: String,

    /// Version of the document to run (`$LATEST`, `$DEFAULT` or a number). Defaults to the
    /// document's default version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_version: Option<String>,

    /// Parameters passed to the document, each a list of strings, e.g.
    /// `commands: ["yum -y update", "exit 194"]` for `AWS-RunShellScript`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, Vec<String>>,

    /// How long the command may take, from sending it until SSM reports a final status,
    /// reboots included. Defaults to 1800 s for maintenance and 300 s for verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30, max = 172800))]
    pub timeout_seconds: Option<u32>,
}

fn default_document_name() -> String {
    "AWS-RunShellScript".to_owned()
}

/// Gates checked before an instance is taken out of rotation, as the seed runbook's
/// `AssertTargetGroupHealthBefore` and `AssertInstanceIsInTargetGroup` steps do.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Preflight {
    /// Require every target of the group to be `healthy` before an instance is taken out.
    /// Defaults to true.
    #[serde(default = "default_true")]
    pub require_healthy_target_group: bool,

    /// The fewest healthy targets that must remain in the group while an instance is out.
    /// When unset, one healthy target must remain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_healthy_targets: Option<u32>,

    /// The smallest share of the group's registered targets (in percent) that must stay
    /// healthy while an instance is out, checked before each instance leaves, as CodeDeploy's
    /// minimum healthy hosts. Applies together with `minHealthyTargets`; the stricter wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub min_healthy_percent: Option<u32>,

    /// Require the instance's SSM agent to report `Online` before it is taken out, so that
    /// an instance SSM cannot reach is never drained for nothing. Defaults to true.
    #[serde(default = "default_true")]
    pub require_agent_online: bool,

    /// How long to wait for a closed gate (an unhealthy target, too few healthy targets, an
    /// agent offline) to open before the instance counts as failed, untouched. An instance
    /// that is not in the target group at all fails at once. Time spent suspended, outside
    /// the schedule's window or waiting for another plan on the target group does not
    /// count. Defaults to 600 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 86400))]
    pub gate_timeout_seconds: Option<u32>,
}

impl Default for Preflight {
    fn default() -> Self {
        Self {
            require_healthy_target_group: true,
            min_healthy_targets: None,
            min_healthy_percent: None,
            require_agent_online: true,
            gate_timeout_seconds: None,
        }
    }
}

fn default_true() -> bool {
    true
}

/// Time limits for the steps that wait on the load balancer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// How long draining may take, from the first time the target group shows the instance
    /// draining (a DeregisterTargets call slowed by throttling does not count). Defaults to
    /// the target group's `deregistration_delay.timeout_seconds` plus 60 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 7200))]
    pub drain_seconds: Option<u32>,

    /// How long the instance may take to become `healthy` after RegisterTargets.
    /// Defaults to 600 s. It also bounds the wait for the health checks' verdict on a
    /// failed instance registered again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 7200))]
    pub healthy_seconds: Option<u32>,
}

/// What happens to an instance whose maintenance failed after it left the target group.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OnFailure {
    /// Register the instance again and let the target group's health checks decide.
    #[default]
    Register,
    /// Leave the instance deregistered.
    LeaveOut,
}
