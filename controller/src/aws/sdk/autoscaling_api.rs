//! [`AutoScaling`] over the EC2 Auto Scaling API: the one read `selector.autoScalingGroupName`
//! needs.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_autoscaling::Client;

use super::errors::from_sdk_error;
use super::stats::ApiCallStats;
use crate::aws::{AsgInstance, AutoScaling, AutoScalingGroup, AwsError, AwsErrorKind};

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
}
