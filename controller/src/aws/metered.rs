//! A wrapper that reports every AWS call and its outcome (for the controller's metrics),
//! whatever implementation is behind the traits.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use std::collections::BTreeMap;

use super::{
    AgentPing, AlarmState, Alarms, AsgMembership, AutoScaling, AutoScalingGroup, AwsApis, AwsError, AwsErrorKind,
    CommandRequest, Commands, Ec2Instance, FoundCommand, Instances, Invocation, Target, TargetGroups, TargetHealth,
};

/// Receives `(operation, Ok or the error's kind)` for every call.
pub type CallSink = Arc<dyn Fn(&'static str, Result<(), AwsErrorKind>) + Send + Sync>;

/// Wraps every API so each call is reported to `sink`.
pub fn metered(apis: AwsApis, sink: CallSink) -> AwsApis {
    AwsApis {
        target_groups: Arc::new(Metered {
            inner: apis.target_groups,
            sink: sink.clone(),
        }),
        commands: Arc::new(Metered {
            inner: apis.commands,
            sink: sink.clone(),
        }),
        instances: Arc::new(Metered {
            inner: apis.instances,
            sink: sink.clone(),
        }),
        auto_scaling: Arc::new(Metered {
            inner: apis.auto_scaling,
            sink: sink.clone(),
        }),
        alarms: Arc::new(Metered {
            inner: apis.alarms,
            sink,
        }),
    }
}

struct Metered<T: ?Sized> {
    inner: Arc<T>,
    sink: CallSink,
}

impl<T: ?Sized> Metered<T> {
    fn report<V>(&self, operation: &'static str, result: Result<V, AwsError>) -> Result<V, AwsError> {
        (self.sink)(operation, result.as_ref().map(|_| ()).map_err(|e| e.kind));
        result
    }
}

#[async_trait]
impl TargetGroups for Metered<dyn TargetGroups> {
    async fn target_health(&self, arn: &str) -> Result<Vec<TargetHealth>, AwsError> {
        self.report("DescribeTargetHealth", self.inner.target_health(arn).await)
    }

    async fn instance_health(&self, arn: &str, target: &Target) -> Result<TargetHealth, AwsError> {
        self.report("DescribeTargetHealth", self.inner.instance_health(arn, target).await)
    }

    async fn deregistration_delay(&self, arn: &str) -> Result<Duration, AwsError> {
        self.report(
            "DescribeTargetGroupAttributes",
            self.inner.deregistration_delay(arn).await,
        )
    }

    async fn deregister(&self, arn: &str, target: &Target) -> Result<(), AwsError> {
        self.report("DeregisterTargets", self.inner.deregister(arn, target).await)
    }

    async fn register(&self, arn: &str, target: &Target) -> Result<(), AwsError> {
        self.report("RegisterTargets", self.inner.register(arn, target).await)
    }

    async fn tags(&self, arns: &[String]) -> Result<BTreeMap<String, BTreeMap<String, String>>, AwsError> {
        self.report("DescribeTags", self.inner.tags(arns).await)
    }
}

#[async_trait]
impl Alarms for Metered<dyn Alarms> {
    async fn states(&self, names: &[String]) -> Result<BTreeMap<String, AlarmState>, AwsError> {
        self.report("DescribeAlarms", self.inner.states(names).await)
    }
}

#[async_trait]
impl Instances for Metered<dyn Instances> {
    async fn running_with_tags(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Ec2Instance>, AwsError> {
        self.report("DescribeInstances", self.inner.running_with_tags(tags).await)
    }

    async fn zones(&self, instance_ids: &[String]) -> Result<BTreeMap<String, String>, AwsError> {
        self.report("DescribeInstances", self.inner.zones(instance_ids).await)
    }

    async fn tags(&self, instance_ids: &[String]) -> Result<BTreeMap<String, BTreeMap<String, String>>, AwsError> {
        self.report("DescribeInstances", self.inner.tags(instance_ids).await)
    }

    async fn gone(&self, instance_ids: &[String]) -> Result<BTreeMap<String, String>, AwsError> {
        self.report("DescribeInstances", self.inner.gone(instance_ids).await)
    }
}

#[async_trait]
impl AutoScaling for Metered<dyn AutoScaling> {
    async fn group(&self, name: &str) -> Result<AutoScalingGroup, AwsError> {
        self.report("DescribeAutoScalingGroups", self.inner.group(name).await)
    }

    async fn memberships(&self, ids: &[String]) -> Result<BTreeMap<String, AsgMembership>, AwsError> {
        self.report("DescribeAutoScalingInstances", self.inner.memberships(ids).await)
    }

    async fn enter_standby(&self, group: &str, id: &str) -> Result<(), AwsError> {
        self.report("EnterStandby", self.inner.enter_standby(group, id).await)
    }

    async fn exit_standby(&self, group: &str, id: &str) -> Result<(), AwsError> {
        self.report("ExitStandby", self.inner.exit_standby(group, id).await)
    }

    async fn set_min_size(&self, group: &str, min_size: i32) -> Result<(), AwsError> {
        self.report("UpdateAutoScalingGroup", self.inner.set_min_size(group, min_size).await)
    }

    async fn suspend_processes(&self, group: &str, processes: &[String]) -> Result<(), AwsError> {
        self.report("SuspendProcesses", self.inner.suspend_processes(group, processes).await)
    }

    async fn resume_processes(&self, group: &str, processes: &[String]) -> Result<(), AwsError> {
        self.report("ResumeProcesses", self.inner.resume_processes(group, processes).await)
    }
}

#[async_trait]
impl Commands for Metered<dyn Commands> {
    async fn send(&self, request: &CommandRequest) -> Result<String, AwsError> {
        self.report("SendCommand", self.inner.send(request).await)
    }

    async fn invocation(&self, command_id: &str, instance_id: &str) -> Result<Option<Invocation>, AwsError> {
        self.report(
            "GetCommandInvocation",
            self.inner.invocation(command_id, instance_id).await,
        )
    }

    async fn find_by_comment(&self, instance_id: &str, comment: &str) -> Result<Option<FoundCommand>, AwsError> {
        self.report("ListCommands", self.inner.find_by_comment(instance_id, comment).await)
    }

    async fn cancel(&self, command_id: &str, instance_id: &str) -> Result<(), AwsError> {
        self.report("CancelCommand", self.inner.cancel(command_id, instance_id).await)
    }

    async fn agent_ping(&self, instance_id: &str) -> Result<AgentPing, AwsError> {
        self.report("DescribeInstanceInformation", self.inner.agent_ping(instance_id).await)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::aws::fake::FakeAws;

    type Seen = Arc<Mutex<Vec<(&'static str, Result<(), AwsErrorKind>)>>>;

    #[tokio::test]
    async fn every_call_and_its_outcome_is_reported() {
        let arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";
        let fake = FakeAws::new(arn, &["i-0000000a"], jiff::Timestamp::now());
        let seen: Seen = Arc::default();
        let sink_seen = seen.clone();
        let apis = metered(
            fake.apis(),
            Arc::new(move |op, outcome| sink_seen.lock().expect("lock").push((op, outcome))),
        );
        apis.target_groups.target_health(arn).await.expect("health");
        fake.behave(|b| b.fail_next = Some((1, AwsErrorKind::Throttled)));
        assert!(apis.commands.agent_ping("i-0000000a").await.is_err());
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(
            seen,
            [
                ("DescribeTargetHealth", Ok(())),
                ("DescribeInstanceInformation", Err(AwsErrorKind::Throttled))
            ]
        );
    }
}
