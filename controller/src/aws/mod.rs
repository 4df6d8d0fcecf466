//! AWS, in pitstop's own words: small traits, over ELBv2 target groups, SSM commands and
//! EC2 instances. `sdk` implements them with the AWS SDK; `fake` in memory, for the
//! state-machine and reconcile tests.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

pub mod fake;
pub mod metered;
pub mod problem;
pub mod sdk;
pub mod shared_reads;

/// An instance target of a target group, with the port it is registered on (None: the
/// group's default port).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// EC2 instance ID.
    pub instance_id: String,
    /// Port the target is registered on.
    pub port: Option<i32>,
}

/// ELBv2 target health state, as DescribeTargetHealth reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetState {
    /// Registered, initial health checks not yet passed.
    Initial,
    /// Passing health checks and receiving traffic.
    Healthy,
    /// Failing health checks.
    Unhealthy,
    /// Registered, but health checks are not running (e.g. no listener uses the group).
    UnhealthyDraining,
    /// Deregistered; in-flight requests are completing.
    Draining,
    /// Not registered (the API also says `Target.NotRegistered`).
    Unused,
    /// Registered to a group that is not used by a load balancer, or health checks disabled.
    Unavailable,
    /// A state this version of pitstop does not know.
    Unknown,
}

impl TargetState {
    /// Parses the API's state string.
    pub fn parse(s: &str) -> Self {
        match s {
            "initial" => Self::Initial,
            "healthy" => Self::Healthy,
            "unhealthy" => Self::Unhealthy,
            "unhealthy.draining" => Self::UnhealthyDraining,
            "draining" => Self::Draining,
            "unused" => Self::Unused,
            "unavailable" => Self::Unavailable,
            _ => Self::Unknown,
        }
    }

    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::UnhealthyDraining => "unhealthy.draining",
            Self::Draining => "draining",
            Self::Unused => "unused",
            Self::Unavailable => "unavailable",
            Self::Unknown => "unknown",
        }
    }

    /// True while the target is registered (it gets, or may get, traffic).
    pub fn is_registered(self) -> bool {
        matches!(
            self,
            Self::Initial | Self::Healthy | Self::Unhealthy | Self::UnhealthyDraining | Self::Unavailable
        )
    }
}

impl fmt::Display for TargetState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of DescribeTargetHealth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetHealth {
    /// The target.
    pub target: Target,
    /// Its state.
    pub state: TargetState,
    /// The API's reason code, e.g. `Target.NotRegistered`, `Target.FailedHealthChecks`.
    pub reason: Option<String>,
    /// The API's description.
    pub description: Option<String>,
}

/// A running EC2 instance, as DescribeInstances shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ec2Instance {
    /// The instance ID.
    pub instance_id: String,
    /// Its Availability Zone, e.g. `eu-west-1a`.
    pub availability_zone: Option<String>,
}

/// EC2 instances, in the one read pitstop needs.
#[async_trait]
pub trait Instances: Send + Sync {
    /// The running instances carrying every one of `tags` (key and value), in ID order
    /// (DescribeInstances with `tag:KEY` and `instance-state-name=running` filters, every page).
    async fn running_with_tags(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Ec2Instance>, AwsError>;

    /// The Availability Zone of each of `instance_ids` EC2 knows (DescribeInstances with an
    /// `instance-id` filter, every page: an unknown ID is left out, not an error).
    async fn zones(&self, instance_ids: &[String]) -> Result<BTreeMap<String, String>, AwsError>;

    /// The tags of each of `instance_ids` EC2 knows and has not terminated (DescribeInstances
    /// with an `instance-id` filter, every page: an unknown or terminated ID is left out).
    async fn tags(&self, instance_ids: &[String]) -> Result<BTreeMap<String, BTreeMap<String, String>>, AwsError>;

    /// Those of `instance_ids` that EC2 no longer has, each with what EC2 said: its state
    /// (`shutting-down`, `terminated`), or that it does not know the ID (EC2 forgets a
    /// terminated instance after about an hour). DescribeInstances with an `instance-id`
    /// filter, every page.
    async fn gone(&self, instance_ids: &[String]) -> Result<BTreeMap<String, String>, AwsError>;
}

/// A CloudWatch alarm's state, as DescribeAlarms shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlarmState {
    /// `OK`, `ALARM` or `INSUFFICIENT_DATA`.
    pub value: String,
    /// Why it is in that state, in CloudWatch's words.
    pub reason: Option<String>,
}

impl AlarmState {
    /// True in `ALARM`.
    pub fn in_alarm(&self) -> bool {
        self.value == "ALARM"
    }
}

/// CloudWatch alarms, in the one read pitstop needs (`spec.gates.cloudWatchAlarms`).
#[async_trait]
pub trait Alarms: Send + Sync {
    /// The state of each of `names` that exists, metric and composite alarms alike
    /// (DescribeAlarms by name, every page); a name CloudWatch does not know is left out.
    async fn states(&self, names: &[String]) -> Result<BTreeMap<String, AlarmState>, AwsError>;
}

/// A member of an Auto Scaling group, as DescribeAutoScalingGroups lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsgInstance {
    /// The instance ID.
    pub instance_id: String,
    /// Its Availability Zone.
    pub availability_zone: Option<String>,
    /// Its lifecycle state as the API spells it: `InService`, `Pending`, `Standby`,
    /// `Terminating`, ...
    pub lifecycle_state: String,
    /// `Healthy` or `Unhealthy`, as the group sees it.
    pub health_status: String,
}

impl AsgInstance {
    /// True when the group counts the instance as serving (`InService`).
    pub fn in_service(&self) -> bool {
        self.lifecycle_state == "InService"
    }
}

/// An Auto Scaling group, as DescribeAutoScalingGroups shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoScalingGroup {
    /// The group's name.
    pub name: String,
    /// MinSize.
    pub min_size: i32,
    /// MaxSize.
    pub max_size: i32,
    /// DesiredCapacity.
    pub desired_capacity: i32,
    /// Its instances, in ID order.
    pub instances: Vec<AsgInstance>,
    /// The names of its suspended processes (`HealthCheck`, `ReplaceUnhealthy`, ...), sorted.
    pub suspended_processes: Vec<String>,
}

/// The Auto Scaling group an instance belongs to, as DescribeAutoScalingInstances shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsgMembership {
    /// The group's name.
    pub group_name: String,
    /// The instance's lifecycle state in it (`InService`, `Standby`, `EnteringStandby`, ...).
    pub lifecycle_state: String,
    /// `Healthy` or `Unhealthy`, as the group sees it.
    pub health_status: String,
}

/// EC2 Auto Scaling, in the operations pitstop needs.
///
/// The writes serve `spec.autoScaling` (see `machine/auto_scaling.rs`). None of them is
/// idempotent on AWS (a second EnterStandby of the same instance is refused, a second MinSize
/// change applies twice), so a caller that lost an answer must read the state before it
/// repeats one.
#[async_trait]
pub trait AutoScaling: Send + Sync {
    /// The group named `name` (DescribeAutoScalingGroups). A group that does not exist is a
    /// [`AwsErrorKind::NotFound`] error: AWS answers an empty list, which would otherwise read
    /// as a group without instances.
    async fn group(&self, name: &str) -> Result<AutoScalingGroup, AwsError>;

    /// The group of each of `instance_ids` that belongs to one (DescribeAutoScalingInstances,
    /// 50 IDs a call); an instance in no group is left out, not an error.
    async fn memberships(&self, instance_ids: &[String]) -> Result<BTreeMap<String, AsgMembership>, AwsError>;

    /// EnterStandby of one instance with ShouldDecrementDesiredCapacity true (so the group
    /// launches no replacement); AWS refuses it when that would go below MinSize.
    async fn enter_standby(&self, group_name: &str, instance_id: &str) -> Result<(), AwsError>;

    /// ExitStandby of one instance (the group's desired capacity rises by one).
    async fn exit_standby(&self, group_name: &str, instance_id: &str) -> Result<(), AwsError>;

    /// UpdateAutoScalingGroup of MinSize only.
    async fn set_min_size(&self, group_name: &str, min_size: i32) -> Result<(), AwsError>;

    /// SuspendProcesses of these processes (AWS's names: `HealthCheck`, `ReplaceUnhealthy`,
    /// `AZRebalance`, ...). An empty list would suspend every process, so it is refused here.
    async fn suspend_processes(&self, group_name: &str, processes: &[String]) -> Result<(), AwsError>;

    /// ResumeProcesses of these processes; an empty list is refused as for [`Self::suspend_processes`].
    async fn resume_processes(&self, group_name: &str, processes: &[String]) -> Result<(), AwsError>;
}

/// The Auto Scaling operations pitstop calls (for [`iam_action`]).
pub const AUTOSCALING_OPERATIONS: &[&str] = &[
    "DescribeAutoScalingGroups",
    "DescribeAutoScalingInstances",
    "EnterStandby",
    "ExitStandby",
    "UpdateAutoScalingGroup",
    "SuspendProcesses",
    "ResumeProcesses",
];

/// An ELBv2 target group, in the operations pitstop needs.
#[async_trait]
pub trait TargetGroups: Send + Sync {
    /// Health of every target in the group (DescribeTargetHealth without targets).
    async fn target_health(&self, target_group_arn: &str) -> Result<Vec<TargetHealth>, AwsError>;

    /// Health of one instance in the group (DescribeTargetHealth with that target). An
    /// instance that is not registered reads `unused`.
    async fn instance_health(&self, target_group_arn: &str, target: &Target) -> Result<TargetHealth, AwsError>;

    /// The group's `deregistration_delay.timeout_seconds` attribute.
    async fn deregistration_delay(&self, target_group_arn: &str) -> Result<Duration, AwsError>;

    /// DeregisterTargets for one target. Idempotent.
    async fn deregister(&self, target_group_arn: &str, target: &Target) -> Result<(), AwsError>;

    /// RegisterTargets for one target. Idempotent.
    async fn register(&self, target_group_arn: &str, target: &Target) -> Result<(), AwsError>;

    /// The tags of each of `target_group_arns` (DescribeTags, up to 20 ARNs a call).
    async fn tags(&self, target_group_arns: &[String]) -> Result<BTreeMap<String, BTreeMap<String, String>>, AwsError>;
}

/// An SSM Run Command to send to one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandRequest {
    /// The instance.
    pub instance_id: String,
    /// Document name or ARN.
    pub document_name: String,
    /// Document version, if pinned.
    pub document_version: Option<String>,
    /// Document parameters.
    pub parameters: BTreeMap<String, Vec<String>>,
    /// Limit for the whole command, reboots included (`TimeoutSeconds` is the delivery
    /// limit in SSM; pitstop enforces this one itself and sets the script's
    /// `executionTimeout` where the document has one).
    pub timeout: Duration,
    /// The tag that identifies this command after a crash (SSM `Comment`, at most 100
    /// characters); see [`CommandTag`].
    pub comment: String,
    /// CloudWatch alarms that stop the command when one goes into `ALARM` (SSM's
    /// `AlarmConfiguration`); none when empty.
    pub alarms: Vec<String>,
    /// Whether SSM runs the command when it cannot read `alarms` (`IgnorePollAlarmFailure`).
    pub ignore_alarm_read_failures: bool,
}

/// SSM command invocation status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandStatus {
    /// Not yet delivered.
    Pending,
    /// Running on the instance.
    InProgress,
    /// Delivery is being retried (e.g. the instance is rebooting).
    Delayed,
    /// Finished with exit code 0.
    Success,
    /// Cancelled by a CancelCommand.
    Cancelled,
    /// The command or its delivery timed out.
    TimedOut,
    /// Finished with a non-zero exit code, or could not run.
    Failed,
    /// A cancellation is under way.
    Cancelling,
}

impl CommandStatus {
    /// Parses the API's status string (`Status` of GetCommandInvocation); unknown values
    /// count as failed so that nothing waits forever on a status it cannot read.
    pub fn parse(s: &str) -> Self {
        match s {
            "Pending" => Self::Pending,
            "InProgress" => Self::InProgress,
            "Delayed" => Self::Delayed,
            "Success" => Self::Success,
            "Cancelled" => Self::Cancelled,
            "TimedOut" => Self::TimedOut,
            "Cancelling" => Self::Cancelling,
            _ => Self::Failed,
        }
    }

    /// True once the command will not change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Success | Self::Cancelled | Self::TimedOut | Self::Failed)
    }
}

/// What GetCommandInvocation says about a command on one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// Status.
    pub status: CommandStatus,
    /// SSM's finer status (`StatusDetails`, e.g. `DeliveryTimedOut`, `Undeliverable`).
    pub status_details: Option<String>,
    /// Exit code of the script, once known (-1 while running).
    pub response_code: Option<i32>,
    /// The end of standard error, for messages (SSM keeps at most 8000 characters).
    pub stderr_tail: Option<String>,
}

/// A command found by its tag (the crash-recovery look-up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundCommand {
    /// Its command ID.
    pub command_id: String,
}

/// SSM agent ping status of an instance (DescribeInstanceInformation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentPing {
    /// The agent is connected.
    Online,
    /// The agent has not checked in recently (e.g. the instance is rebooting).
    ConnectionLost,
    /// The instance is stopped or terminated.
    Inactive,
    /// SSM does not manage this instance.
    NotManaged,
}

/// SSM Run Command, in the operations pitstop needs.
#[async_trait]
pub trait Commands: Send + Sync {
    /// SendCommand to one instance; returns the command ID.
    async fn send(&self, request: &CommandRequest) -> Result<String, AwsError>;

    /// GetCommandInvocation. `Ok(None)` when SSM answers `InvocationDoesNotExist`, which it
    /// does for a short while right after SendCommand.
    async fn invocation(&self, command_id: &str, instance_id: &str) -> Result<Option<Invocation>, AwsError>;

    /// ListCommands for the instance, newest first, returning the one whose `Comment` equals
    /// `comment` (the look-up a restarted controller makes before sending a command again).
    async fn find_by_comment(&self, instance_id: &str, comment: &str) -> Result<Option<FoundCommand>, AwsError>;

    /// CancelCommand for one instance. Best effort: cancelling a finished command is not an error.
    async fn cancel(&self, command_id: &str, instance_id: &str) -> Result<(), AwsError>;

    /// DescribeInstanceInformation for one instance.
    async fn agent_ping(&self, instance_id: &str) -> Result<AgentPing, AwsError>;
}

/// The tag written into a command's `Comment`, so a command can be found again after a
/// crash between SendCommand and the status write: `pitstop/<plan uid>/<kind>/<attempt>`.
/// The instance is not in the tag because ListCommands is already filtered by instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandTag {
    /// The plan's `metadata.uid`.
    pub plan_uid: String,
    /// Which command of the instance's attempt.
    pub kind: CommandKind,
    /// The instance's attempt number.
    pub attempt: u32,
}

impl CommandTag {
    /// The `Comment` text.
    pub fn comment(&self) -> String {
        format!("pitstop/{}/{}/{}", self.plan_uid, self.kind.as_str(), self.attempt)
    }
}

/// Which of an instance's commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// The maintenance document.
    Maintenance,
    /// The verification document.
    Verify,
}

impl CommandKind {
    /// Lower-case name, as used in tags and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Maintenance => "maintenance",
            Self::Verify => "verify",
        }
    }
}

/// How an AWS call failed, in the categories that decide what pitstop does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AwsErrorKind {
    /// Rate exceeded or throttled: try again soon.
    Throttled,
    /// The target group, instance or document does not exist.
    NotFound,
    /// The request was refused as invalid or not allowed (a spec or IAM problem).
    Rejected,
    /// Network trouble, timeouts, 5xx: try again with backoff.
    Transient,
    /// No usable credentials: none found by the credential chain, or AWS refused the ones it
    /// found (invalid or expired token, bad signature). Someone must fix the setup.
    Credentials,
    /// The credentials are fine but IAM does not allow the action (`AccessDenied`,
    /// `UnauthorizedOperation`); [`AwsError::iam_action`] names it. Someone must fix the policy.
    AccessDenied,
    /// There is no endpoint to call: an unknown region, or an endpoint setting whose host
    /// does not exist. Someone must fix the setup.
    Endpoint,
}

impl AwsErrorKind {
    /// True for the failures that waiting does not fix: the setup (credentials, IAM policy,
    /// region or endpoint) or the plan (a target group, instance or document that does not
    /// exist, a request AWS refuses) must change first.
    pub fn is_permanent(self) -> bool {
        !matches!(self, Self::Throttled | Self::Transient)
    }

    /// True for the failures of the setup rather than of the plan: credentials, IAM, region.
    /// They are never held against an instance: the plan waits until the setup is fixed.
    pub fn is_setup(self) -> bool {
        matches!(self, Self::Credentials | Self::AccessDenied | Self::Endpoint)
    }

    /// Lower-case name, as used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::NotFound => "not_found",
            Self::Rejected => "rejected",
            Self::Transient => "transient",
            Self::Credentials => "credentials",
            Self::AccessDenied => "access_denied",
            Self::Endpoint => "endpoint",
        }
    }
}

impl fmt::Display for AwsErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed AWS call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{operation} failed ({kind}): {message}")]
pub struct AwsError {
    /// The API operation, e.g. `DeregisterTargets`.
    pub operation: &'static str,
    /// Category.
    pub kind: AwsErrorKind,
    /// The service's error code, when it gave one.
    pub code: Option<String>,
    /// What went wrong, for humans.
    pub message: String,
    /// True when the request may have been carried out although the call failed: it was sent
    /// and no answer said it was refused (a timeout, a connection lost after sending, a 5xx
    /// from a front end whose back end may have acted). A write that fails this way must not
    /// be repeated blindly; see [`AwsError::outcome_unknown`].
    pub outcome_unknown: bool,
}

impl AwsError {
    /// Builds an error for a request that was not carried out (refused, or never sent).
    pub fn new(operation: &'static str, kind: AwsErrorKind, code: Option<String>, message: impl Into<String>) -> Self {
        Self {
            operation,
            kind,
            code,
            message: message.into(),
            outcome_unknown: false,
        }
    }

    /// The same error, marked as one whose request may have taken effect (the answer was lost).
    pub fn with_outcome_unknown(mut self) -> Self {
        self.outcome_unknown = true;
        self
    }

    /// The IAM action of the failed call, as AWS names it in policies and in AccessDenied
    /// messages: `elasticloadbalancing:DeregisterTargets`, `ssm:SendCommand`.
    pub fn iam_action(&self) -> String {
        iam_action(self.operation)
    }
}

/// The IAM action of an API operation pitstop calls (the ELBv2 operations start with the
/// words of their resources; EC2 and Auto Scaling are named; everything else pitstop calls is
/// SSM).
pub fn iam_action(operation: &str) -> String {
    const ELBV2: &[&str] = &[
        "DescribeTags",
        "DescribeTargetHealth",
        "DescribeTargetGroupAttributes",
        "DescribeTargetGroups",
        "DeregisterTargets",
        "RegisterTargets",
    ];
    let service = if ELBV2.contains(&operation) {
        "elasticloadbalancing"
    } else if operation == "DescribeInstances" {
        "ec2"
    } else if operation == "DescribeAlarms" {
        "cloudwatch"
    } else if AUTOSCALING_OPERATIONS.contains(&operation) {
        "autoscaling"
    } else {
        "ssm"
    };
    format!("{service}:{operation}")
}

/// The AWS services for one region.
#[derive(Clone)]
pub struct AwsApis {
    /// ELBv2.
    pub target_groups: std::sync::Arc<dyn TargetGroups>,
    /// SSM.
    pub commands: std::sync::Arc<dyn Commands>,
    /// EC2 (only read, for `selector.tags`).
    pub instances: std::sync::Arc<dyn Instances>,
    /// EC2 Auto Scaling: `selector.autoScalingGroupName` and `spec.autoScaling`.
    pub auto_scaling: std::sync::Arc<dyn AutoScaling>,
    /// CloudWatch (only read, for `spec.gates.cloudWatchAlarms`).
    pub alarms: std::sync::Arc<dyn Alarms>,
}

/// Gives the AWS clients for a region; real ones are built once per region and cached.
#[async_trait]
pub trait AwsProvider: Send + Sync {
    /// Clients for `region`.
    async fn for_region(&self, region: &str) -> AwsApis;
}
