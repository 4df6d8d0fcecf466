//! Counts of the AWS API calls pitstop makes, per operation: the benchmark reports calls per
//! instance from them and the metrics endpoint exports them.
//!
//! The counting is done by an SDK interceptor after every attempt, so a call the SDK retried
//! three times counts three times: that is what AWS rate-limits (and bills in API quota), and
//! what a throttling investigation needs to see.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_elasticloadbalancingv2::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{Error as ErasedError, FinalizerInterceptorContextRef};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

use super::errors::is_throttling;

/// The AWS operations pitstop calls, plus `Other` for anything else made through the same
/// clients (tests and tools use them to set up resources).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApiOperation {
    /// ELBv2 DescribeTargetHealth.
    DescribeTargetHealth,
    /// ELBv2 DescribeTargetGroupAttributes.
    DescribeTargetGroupAttributes,
    /// ELBv2 DeregisterTargets.
    DeregisterTargets,
    /// ELBv2 RegisterTargets.
    RegisterTargets,
    /// ELBv2 DescribeTags (a MaintenancePolicy's `targetGroupTags`).
    DescribeTags,
    /// SSM SendCommand.
    SendCommand,
    /// SSM GetCommandInvocation.
    GetCommandInvocation,
    /// SSM ListCommands.
    ListCommands,
    /// SSM CancelCommand.
    CancelCommand,
    /// SSM DescribeInstanceInformation.
    DescribeInstanceInformation,
    /// EC2 DescribeInstances.
    DescribeInstances,
    /// Auto Scaling DescribeAutoScalingGroups.
    DescribeAutoScalingGroups,
    /// Auto Scaling DescribeAutoScalingInstances.
    DescribeAutoScalingInstances,
    /// Auto Scaling EnterStandby.
    EnterStandby,
    /// Auto Scaling ExitStandby.
    ExitStandby,
    /// Auto Scaling UpdateAutoScalingGroup.
    UpdateAutoScalingGroup,
    /// Auto Scaling SuspendProcesses.
    SuspendProcesses,
    /// Auto Scaling ResumeProcesses.
    ResumeProcesses,
    /// CloudWatch DescribeAlarms.
    DescribeAlarms,
    /// Any other operation.
    Other,
}

impl ApiOperation {
    /// Every operation, in a stable order (metrics keep the same label set from the start).
    pub const ALL: [ApiOperation; 20] = [
        Self::DescribeTargetHealth,
        Self::DescribeTargetGroupAttributes,
        Self::DeregisterTargets,
        Self::RegisterTargets,
        Self::DescribeTags,
        Self::SendCommand,
        Self::GetCommandInvocation,
        Self::ListCommands,
        Self::CancelCommand,
        Self::DescribeInstanceInformation,
        Self::DescribeInstances,
        Self::DescribeAutoScalingGroups,
        Self::DescribeAutoScalingInstances,
        Self::EnterStandby,
        Self::ExitStandby,
        Self::UpdateAutoScalingGroup,
        Self::SuspendProcesses,
        Self::ResumeProcesses,
        Self::DescribeAlarms,
        Self::Other,
    ];

    /// The API's name for the operation (`Other` for the rest).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DescribeTargetHealth => "DescribeTargetHealth",
            Self::DescribeTargetGroupAttributes => "DescribeTargetGroupAttributes",
            Self::DeregisterTargets => "DeregisterTargets",
            Self::RegisterTargets => "RegisterTargets",
            Self::DescribeTags => "DescribeTags",
            Self::SendCommand => "SendCommand",
            Self::GetCommandInvocation => "GetCommandInvocation",
            Self::ListCommands => "ListCommands",
            Self::CancelCommand => "CancelCommand",
            Self::DescribeInstanceInformation => "DescribeInstanceInformation",
            Self::DescribeInstances => "DescribeInstances",
            Self::DescribeAutoScalingGroups => "DescribeAutoScalingGroups",
            Self::DescribeAutoScalingInstances => "DescribeAutoScalingInstances",
            Self::EnterStandby => "EnterStandby",
            Self::ExitStandby => "ExitStandby",
            Self::UpdateAutoScalingGroup => "UpdateAutoScalingGroup",
            Self::SuspendProcesses => "SuspendProcesses",
            Self::ResumeProcesses => "ResumeProcesses",
            Self::DescribeAlarms => "DescribeAlarms",
            Self::Other => "Other",
        }
    }

    /// The service the operation belongs to, as metrics label it (`other` for `Other`).
    pub fn service(self) -> &'static str {
        match self {
            Self::DescribeTargetHealth
            | Self::DescribeTargetGroupAttributes
            | Self::DeregisterTargets
            | Self::RegisterTargets
            | Self::DescribeTags => "elasticloadbalancing",
            Self::SendCommand
            | Self::GetCommandInvocation
            | Self::ListCommands
            | Self::CancelCommand
            | Self::DescribeInstanceInformation => "ssm",
            Self::DescribeInstances => "ec2",
            Self::DescribeAutoScalingGroups
            | Self::DescribeAutoScalingInstances
            | Self::EnterStandby
            | Self::ExitStandby
            | Self::UpdateAutoScalingGroup
            | Self::SuspendProcesses
            | Self::ResumeProcesses => "autoscaling",
            Self::DescribeAlarms => "cloudwatch",
            Self::Other => "other",
        }
    }

    /// The operation with this API name; `Other` when pitstop does not call it.
    pub fn from_name(name: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|op| *op != Self::Other && op.as_str() == name)
            .unwrap_or(Self::Other)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ApiOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The counts for one operation at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OperationCounts {
    /// Requests sent (attempts, retries included).
    pub calls: u64,
    /// Requests that failed, for any reason (throttling included).
    pub errors: u64,
    /// Requests that failed because AWS throttled them (a subset of `errors`).
    pub throttled: u64,
}

impl std::ops::AddAssign for OperationCounts {
    fn add_assign(&mut self, other: Self) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.throttled += other.throttled;
    }
}

/// A copy of all counters, taken by [`ApiCallStats::snapshot`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiCallSnapshot {
    /// Counts per operation; every [`ApiOperation`] is present, zero or not.
    pub operations: BTreeMap<ApiOperation, OperationCounts>,
}

impl ApiCallSnapshot {
    /// The counts of one operation.
    pub fn get(&self, operation: ApiOperation) -> OperationCounts {
        self.operations.get(&operation).copied().unwrap_or_default()
    }

    /// The sum over all operations.
    pub fn total(&self) -> OperationCounts {
        let mut total = OperationCounts::default();
        for counts in self.operations.values() {
            total += *counts;
        }
        total
    }
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    errors: AtomicU64,
    throttled: AtomicU64,
}

/// Per-operation counters of AWS API calls, errors and throttled errors, shared by all the
/// clients of one [`SdkProvider`](super::SdkProvider) (every region).
#[derive(Debug, Default)]
pub struct ApiCallStats {
    counters: [Counters; ApiOperation::ALL.len()],
}

impl ApiCallStats {
    /// Zeroed counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one request of `operation`.
    pub fn record(&self, operation: ApiOperation, outcome: CallOutcome) {
        let counters = &self.counters[operation.index()];
        // Relaxed: the counters are independent tallies; nobody derives ordering from them.
        counters.calls.fetch_add(1, Ordering::Relaxed);
        if outcome != CallOutcome::Succeeded {
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        if outcome == CallOutcome::Throttled {
            counters.throttled.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The current counts. Each counter is read atomically, the set is not: a snapshot taken
    /// during a call may count its request but not yet its error.
    pub fn snapshot(&self) -> ApiCallSnapshot {
        let operations = ApiOperation::ALL
            .into_iter()
            .map(|op| {
                let c = &self.counters[op.index()];
                let counts = OperationCounts {
                    calls: c.calls.load(Ordering::Relaxed),
                    errors: c.errors.load(Ordering::Relaxed),
                    throttled: c.throttled.load(Ordering::Relaxed),
                };
                (op, counts)
            })
            .collect();
        ApiCallSnapshot { operations }
    }

    /// The SDK interceptor that feeds these counters; add it to a client's config.
    pub fn interceptor(self: &Arc<Self>) -> StatsInterceptor {
        StatsInterceptor {
            stats: Arc::clone(self),
        }
    }
}

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallOutcome {
    /// AWS answered with a result.
    Succeeded,
    /// AWS throttled it.
    Throttled,
    /// Any other failure: an error answer, a timeout, no connection.
    Failed,
}

/// Counts every attempt of every operation of the client it is added to into an
/// [`ApiCallStats`].
#[derive(Clone, Debug)]
pub struct StatsInterceptor {
    stats: Arc<ApiCallStats>,
}

impl Intercept for StatsInterceptor {
    fn name(&self) -> &'static str {
        "PitstopApiCallStats"
    }

    // After each attempt rather than once per operation: retries are real requests.
    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg
            .load::<Metadata>()
            .map_or(ApiOperation::Other, |m| ApiOperation::from_name(m.name()));
        let status = context.response().map(|r| r.status().as_u16());
        let outcome = match context.output_or_error() {
            Some(Ok(_)) => CallOutcome::Succeeded,
            Some(Err(error)) => {
                let code = error.as_operation_error().and_then(operation_error_code);
                if is_throttling(code, status) {
                    CallOutcome::Throttled
                } else {
                    CallOutcome::Failed
                }
            }
            // No result at all: the attempt failed before it produced one.
            None => CallOutcome::Failed,
        };
        self.stats.record(operation, outcome);
        Ok(())
    }
}

/// The AWS error code of a type-erased operation error. The interceptor only sees the erased
/// error, so it tries the error types of the operations pitstop calls.
fn operation_error_code(error: &ErasedError) -> Option<&str> {
    macro_rules! code_of {
        ($($ty:ty),* $(,)?) => {
            $(
                if let Some(typed) = error.downcast_ref::<$ty>() {
                    return typed.code();
                }
            )*
        };
    }
    use aws_sdk_elasticloadbalancingv2::operation as elb;
    use aws_sdk_ssm::operation as ssm;
    code_of!(
        elb::describe_target_health::DescribeTargetHealthError,
        elb::describe_target_group_attributes::DescribeTargetGroupAttributesError,
        elb::deregister_targets::DeregisterTargetsError,
        elb::register_targets::RegisterTargetsError,
        ssm::send_command::SendCommandError,
        ssm::get_command_invocation::GetCommandInvocationError,
        ssm::list_commands::ListCommandsError,
        ssm::cancel_command::CancelCommandError,
        ssm::describe_instance_information::DescribeInstanceInformationError,
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_round_trip() {
        for op in ApiOperation::ALL {
            if op != ApiOperation::Other {
                assert_eq!(ApiOperation::from_name(op.as_str()), op);
            }
        }
        assert_eq!(ApiOperation::from_name("CreateTargetGroup"), ApiOperation::Other);
        assert_eq!(ApiOperation::from_name("Other"), ApiOperation::Other);
    }

    #[test]
    fn counter_slots_follow_all() {
        for (i, op) in ApiOperation::ALL.into_iter().enumerate() {
            assert_eq!(op.index(), i, "{op}");
        }
    }

    #[test]
    fn record_and_snapshot() {
        let stats = ApiCallStats::new();
        stats.record(ApiOperation::SendCommand, CallOutcome::Succeeded);
        stats.record(ApiOperation::SendCommand, CallOutcome::Throttled);
        stats.record(ApiOperation::ListCommands, CallOutcome::Failed);
        let snap = stats.snapshot();
        assert_eq!(
            snap.get(ApiOperation::SendCommand),
            OperationCounts {
                calls: 2,
                errors: 1,
                throttled: 1
            }
        );
        assert_eq!(
            snap.get(ApiOperation::ListCommands),
            OperationCounts {
                calls: 1,
                errors: 1,
                throttled: 0
            }
        );
        assert_eq!(snap.operations.len(), ApiOperation::ALL.len());
        assert_eq!(
            snap.total(),
            OperationCounts {
                calls: 3,
                errors: 2,
                throttled: 1
            }
        );
    }
}
