//! [`TargetGroups`] over the ELBv2 API.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::types::{TargetDescription, TargetHealthDescription};

use super::errors::{error_code, from_sdk_error};
use super::stats::ApiCallStats;
use crate::aws::{AwsError, AwsErrorKind, Target, TargetGroups, TargetHealth, TargetState};

/// The attribute that holds the deregistration delay.
pub const DEREGISTRATION_DELAY_KEY: &str = "deregistration_delay.timeout_seconds";

/// What ELBv2 uses when a target group has no explicit deregistration delay.
pub const DEFAULT_DEREGISTRATION_DELAY: Duration = Duration::from_secs(300);

/// An ELBv2 client for one region, in pitstop's words.
#[derive(Clone, Debug)]
pub struct SdkTargetGroups {
    client: Client,
}

impl SdkTargetGroups {
    /// Builds the client from `config`, counting its calls into `stats`.
    ///
    /// The config must carry a behavior version (a config made from an
    /// [`SdkConfig`](aws_config::SdkConfig) does); the SDK panics without one.
    pub fn new(config: aws_sdk_elasticloadbalancingv2::config::Builder, stats: &Arc<ApiCallStats>) -> Self {
        Self {
            client: Client::from_conf(config.interceptor(stats.interceptor()).build()),
        }
    }

    /// The underlying SDK client (for set-up in tests and tools; its calls are counted too).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

fn description(target: &Target) -> TargetDescription {
    TargetDescription::builder()
        .id(&target.instance_id)
        .set_port(target.port)
        .build()
}

/// One row of DescribeTargetHealth, or None for a row without a target (the API marks the
/// target as required, so this does not happen; skipping is better than inventing one).
fn to_health(row: &TargetHealthDescription) -> Option<TargetHealth> {
    let target = row.target()?;
    let instance_id = target.id()?;
    let health = row.target_health();
    Some(TargetHealth {
        target: Target {
            instance_id: instance_id.to_owned(),
            port: target.port(),
        },
        state: health
            .and_then(|h| h.state())
            .map_or(TargetState::Unknown, |s| TargetState::parse(s.as_str())),
        reason: health.and_then(|h| h.reason()).map(|r| r.as_str().to_owned()),
        description: health.and_then(|h| h.description()).map(str::to_owned),
    })
}

#[async_trait]
impl TargetGroups for SdkTargetGroups {
    // DescribeTargetHealth has no pagination: it returns every target of the group at once.
    async fn target_health(&self, target_group_arn: &str) -> Result<Vec<TargetHealth>, AwsError> {
        const OP: &str = "DescribeTargetHealth";
        let output = self
            .client
            .describe_target_health()
            .target_group_arn(target_group_arn)
            .send()
            .await
            .map_err(|e| from_sdk_error(OP, &e))?;
        Ok(output
            .target_health_descriptions()
            .iter()
            .filter_map(to_health)
            .collect())
    }

    async fn instance_health(&self, target_group_arn: &str, target: &Target) -> Result<TargetHealth, AwsError> {
        const OP: &str = "DescribeTargetHealth";
        let output = self
            .client
            .describe_target_health()
            .target_group_arn(target_group_arn)
            .targets(description(target))
            .send()
            .await
            .map_err(|e| from_sdk_error(OP, &e))?;
        let row = output
            .target_health_descriptions()
            .iter()
            .filter_map(to_health)
            .find(|h| h.target.instance_id == target.instance_id);
        // AWS answers an unregistered instance with an `unused` row; if a service ever answers
        // with no row at all, that means the same thing.
        Ok(row.unwrap_or_else(|| TargetHealth {
            target: target.clone(),
            state: TargetState::Unused,
            reason: None,
            description: Some("DescribeTargetHealth returned no row for this target".to_owned()),
        }))
    }

    async fn deregistration_delay(&self, target_group_arn: &str) -> Result<Duration, AwsError> {
        const OP: &str = "DescribeTargetGroupAttributes";
        let output = self
            .client
            .describe_target_group_attributes()
            .target_group_arn(target_group_arn)
            .send()
            .await
            .map_err(|e| from_sdk_error(OP, &e))?;
        let value = output
            .attributes()
            .iter()
            .find(|a| a.key() == Some(DEREGISTRATION_DELAY_KEY))
            .and_then(|a| a.value());
        let Some(value) = value else {
            return Ok(DEFAULT_DEREGISTRATION_DELAY);
        };
        value.trim().parse::<u64>().map(Duration::from_secs).map_err(|_| {
            AwsError::new(
                OP,
                AwsErrorKind::Transient,
                None,
                format!("{DEREGISTRATION_DELAY_KEY} is {value:?}, not a number of seconds"),
            )
        })
    }

    async fn deregister(&self, target_group_arn: &str, target: &Target) -> Result<(), AwsError> {
        const OP: &str = "DeregisterTargets";
        let result = self
            .client
            .deregister_targets()
            .target_group_arn(target_group_arn)
            .targets(description(target))
            .send()
            .await;
        let Err(error) = result else {
            return Ok(());
        };
        let mapped = from_sdk_error(OP, &error);
        // AWS accepts deregistering a target that is not registered; some implementations
        // (moto, and AWS itself for an instance it no longer knows) answer `InvalidTarget`
        // instead. A restarted controller repeats a DeregisterTargets whose answer it never
        // recorded, so check whether the goal is met before calling it a failure.
        if error_code(&error) == Some("InvalidTarget") {
            let health = self.instance_health(target_group_arn, target).await;
            if let Ok(health) = health
                && matches!(health.state, TargetState::Unused | TargetState::Draining)
            {
                tracing::debug!(
                    instance = %target.instance_id,
                    state = %health.state,
                    "DeregisterTargets said InvalidTarget, but the target is already out of the group"
                );
                return Ok(());
            }
        }
        Err(mapped)
    }

    async fn register(&self, target_group_arn: &str, target: &Target) -> Result<(), AwsError> {
        const OP: &str = "RegisterTargets";
        self.client
            .register_targets()
            .target_group_arn(target_group_arn)
            .targets(description(target))
            .send()
            .await
            .map_err(|e| from_sdk_error(OP, &e))?;
        Ok(())
    }

    async fn tags(&self, target_group_arns: &[String]) -> Result<BTreeMap<String, BTreeMap<String, String>>, AwsError> {
        const OP: &str = "DescribeTags";
        let mut tags = BTreeMap::new();
        // DescribeTags takes at most 20 resource ARNs.
        for chunk in target_group_arns.chunks(20) {
            let output = self
                .client
                .describe_tags()
                .set_resource_arns(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| from_sdk_error(OP, &e))?;
            for description in output.tag_descriptions() {
                if let Some(arn) = description.resource_arn() {
                    let group_tags = description
                        .tags()
                        .iter()
                        .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
                        .collect();
                    tags.insert(arn.to_owned(), group_tags);
                }
            }
        }
        Ok(tags)
    }
}
