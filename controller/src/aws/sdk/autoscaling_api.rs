//! [`AutoScaling`] over the EC2 Auto Scaling API: the read `selector.autoScalingGroupName`
//! needs, and the membership read and the writes of `spec.autoScaling`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_autoscaling::Client;

use super::errors::from_sdk_error;
use super::stats::ApiCallStats;
use crate::aws::{AsgInstance, AsgMembership, AutoScaling, AutoScalingGroup, AwsError, AwsErrorKind};

/// The SDK's retries off, for the calls AWS refuses when repeated (EnterStandby, ExitStandby).
fn one_attempt() -> aws_sdk_autoscaling::config::Builder {
    aws_sdk_autoscaling::config::Builder::default().retry_config(aws_config::retry::RetryConfig::disabled())
}

/// Refuses an empty process list: to AWS it means every process.
fn named_processes(operation: &'static str, processes: &[String]) -> Result<(), AwsError> {
    if processes.is_empty() {
        return Err(AwsError::new(
            operation,
            AwsErrorKind::Rejected,
            None,
            "no process named: AWS would take that as every process of the group",
        ));
    }
    Ok(())
}

/// An Auto Scaling client for one region, in pitstop's words.
#[derive(Clone, Debug)]
pub struct SdkAutoScaling {
    client: Client,
}

impl SdkAutoScaling {
    /// Builds the client from `config`, counting its calls into `stats`.
    ///
    /// The config must carry a behavior version (a config made from an
    /// [`SdkConfig`](aws_config::SdkConfig) does); the SDK panics without one.
    pub fn new(config: aws_sdk_autoscaling::config::Builder, stats: &Arc<ApiCallStats>) -> Self {
        Self {
            client: Client::from_conf(config.interceptor(stats.interceptor()).build()),
        }
    }

    /// The underlying SDK client (for set-up in tests and tools; its calls are counted too).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

#[async_trait]
impl AutoScaling for SdkAutoScaling {
    async fn group(&self, name: &str) -> Result<AutoScalingGroup, AwsError> {
        const OP: &str = "DescribeAutoScalingGroups";
        // One name asks for one group: a single page, whatever its size (the instances are not paged).
        let output = self
            .client
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| from_sdk_error(OP, &e))?;
        let Some(group) = output
            .auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(name))
        else {
            return Err(AwsError::new(
                OP,
                AwsErrorKind::NotFound,
                None,
                format!("there is no Auto Scaling group named {name:?} in this account and region"),
            ));
        };
        let mut instances: Vec<AsgInstance> = group
            .instances()
            .iter()
            .filter_map(|i| {
                Some(AsgInstance {
                    instance_id: i.instance_id()?.to_owned(),
                    availability_zone: i.availability_zone().map(str::to_owned),
                    lifecycle_state: i.lifecycle_state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                    health_status: i.health_status().unwrap_or_default().to_owned(),
                })
            })
            .collect();
        instances.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        let mut suspended_processes: Vec<String> = group
            .suspended_processes()
            .iter()
            .filter_map(|p| p.process_name().map(str::to_owned))
            .collect();
        suspended_processes.sort();
        Ok(AutoScalingGroup {
            name: name.to_owned(),
            min_size: group.min_size().unwrap_or_default(),
            max_size: group.max_size().unwrap_or_default(),
            desired_capacity: group.desired_capacity().unwrap_or_default(),
            instances,
            suspended_processes,
        })
    }

    async fn memberships(&self, instance_ids: &[String]) -> Result<BTreeMap<String, AsgMembership>, AwsError> {
        const OP: &str = "DescribeAutoScalingInstances";
        let mut found = BTreeMap::new();
        // At most 50 IDs a call; with IDs given the answer is one page.
        for chunk in instance_ids.chunks(50) {
            let output = self
                .client
                .describe_auto_scaling_instances()
                .set_instance_ids(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| from_sdk_error(OP, &e))?;
            for instance in output.auto_scaling_instances() {
                if let (Some(id), Some(group)) = (instance.instance_id(), instance.auto_scaling_group_name()) {
                    found.insert(
                        id.to_owned(),
                        AsgMembership {
                            group_name: group.to_owned(),
                            lifecycle_state: instance.lifecycle_state().unwrap_or_default().to_owned(),
                            health_status: instance.health_status().unwrap_or_default().to_owned(),
                        },
                    );
                }
            }
        }
        Ok(found)
    }

    async fn enter_standby(&self, group_name: &str, instance_id: &str) -> Result<(), AwsError> {
        self.client
            .enter_standby()
            .auto_scaling_group_name(group_name)
            .instance_ids(instance_id)
            .should_decrement_desired_capacity(true)
            .customize()
            // A retry after a lost answer would be refused (the instance is no longer
            // InService) and read as a failure. One attempt; the state machine reads the
            // lifecycle state before it asks again.
            .config_override(one_attempt())
            .send()
            .await
            .map_err(|e| from_sdk_error("EnterStandby", &e))?;
        Ok(())
    }

    async fn exit_standby(&self, group_name: &str, instance_id: &str) -> Result<(), AwsError> {
        self.client
            .exit_standby()
            .auto_scaling_group_name(group_name)
            .instance_ids(instance_id)
            .customize()
            // As for EnterStandby: the state machine reads before it asks again.
            .config_override(one_attempt())
            .send()
            .await
            .map_err(|e| from_sdk_error("ExitStandby", &e))?;
        Ok(())
    }

    async fn set_min_size(&self, group_name: &str, min_size: i32) -> Result<(), AwsError> {
        self.client
            .update_auto_scaling_group()
            .auto_scaling_group_name(group_name)
            .min_size(min_size)
            .send()
            .await
            .map_err(|e| from_sdk_error("UpdateAutoScalingGroup", &e))?;
        Ok(())
    }

    async fn suspend_processes(&self, group_name: &str, processes: &[String]) -> Result<(), AwsError> {
        named_processes("SuspendProcesses", processes)?;
        self.client
            .suspend_processes()
            .auto_scaling_group_name(group_name)
            .set_scaling_processes(Some(processes.to_vec()))
            .send()
            .await
            .map_err(|e| from_sdk_error("SuspendProcesses", &e))?;
        Ok(())
    }

    async fn resume_processes(&self, group_name: &str, processes: &[String]) -> Result<(), AwsError> {
        named_processes("ResumeProcesses", processes)?;
        self.client
            .resume_processes()
            .auto_scaling_group_name(group_name)
            .set_scaling_processes(Some(processes.to_vec()))
            .send()
            .await
            .map_err(|e| from_sdk_error("ResumeProcesses", &e))?;
        Ok(())
    }
}
