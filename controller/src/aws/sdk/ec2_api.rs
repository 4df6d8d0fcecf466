//! [`Instances`] over the EC2 API: the DescribeInstances reads of `selector.tags`,
//! `order: ByZone` and a policy's `instanceTags`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::Filter;

use super::errors::from_sdk_error;
use super::stats::ApiCallStats;
use crate::aws::{AwsError, Ec2Instance, Instances};

/// An EC2 client for one region, in pitstop's words.
#[derive(Clone, Debug)]
pub struct SdkInstances {
    client: Client,
}

impl SdkInstances {
    /// Builds the client from `config`, counting its calls into `stats`.
    ///
    /// The config must carry a behavior version (a config made from an
    /// [`SdkConfig`](aws_config::SdkConfig) does); the SDK panics without one.
    pub fn new(config: aws_sdk_ec2::config::Builder, stats: &Arc<ApiCallStats>) -> Self {
        Self {
            client: Client::from_conf(config.interceptor(stats.interceptor()).build()),
        }
    }

    /// The underlying SDK client (for set-up in tests and tools; its calls are counted too).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// The filters of a tag query: every tag as `tag:KEY = VALUE`, and running instances only.
pub fn tag_filters(tags: &BTreeMap<String, String>) -> Vec<Filter> {
    tags.iter()
        .map(|(key, value)| Filter::builder().name(format!("tag:{key}")).values(value).build())
        .chain(std::iter::once(
            Filter::builder().name("instance-state-name").values("running").build(),
        ))
        .collect()
}

#[async_trait]
impl Instances for SdkInstances {
    async fn running_with_tags(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Ec2Instance>, AwsError> {
        const OP: &str = "DescribeInstances";
        let mut found = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            let output = self
                .client
                .describe_instances()
                .set_filters(Some(tag_filters(tags)))
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| from_sdk_error(OP, &e))?;
            for instance in output.reservations().iter().flat_map(|r| r.instances()) {
                let running = instance
                    .state()
                    .and_then(|s| s.name())
                    .is_some_and(|n| n.as_str() == "running");
                // The filter asks for running ones; an emulator that ignores it must not make
                // pitstop pick a stopped or terminated instance.
                if let (Some(id), true) = (instance.instance_id(), running) {
                    found.push(Ec2Instance {
                        instance_id: id.to_owned(),
                        availability_zone: instance
                            .placement()
                            .and_then(|p| p.availability_zone())
                            .map(str::to_owned),
                    });
                }
            }
            match output.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => break,
            }
        }
        found.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        found.dedup_by(|a, b| a.instance_id == b.instance_id);
        Ok(found)
    }

    async fn zones(&self, instance_ids: &[String]) -> Result<BTreeMap<String, String>, AwsError> {
        let mut zones = BTreeMap::new();
        for instance in self.by_ids(instance_ids).await? {
            if let (Some(id), Some(zone)) = (
                instance.instance_id(),
                instance.placement().and_then(|p| p.availability_zone()),
            ) {
                zones.insert(id.to_owned(), zone.to_owned());
            }
        }
        Ok(zones)
    }

    async fn tags(&self, instance_ids: &[String]) -> Result<BTreeMap<String, BTreeMap<String, String>>, AwsError> {
        let mut tags = BTreeMap::new();
        for instance in self.by_ids(instance_ids).await? {
            if let (Some(id), None) = (instance.instance_id(), ending_state(&instance)) {
                let instance_tags = instance
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned())))
                    .collect();
                tags.insert(id.to_owned(), instance_tags);
            }
        }
        Ok(tags)
    }

    async fn gone(&self, instance_ids: &[String]) -> Result<BTreeMap<String, String>, AwsError> {
        let found = self.by_ids(instance_ids).await?;
        Ok(instance_ids
            .iter()
            .filter_map(|id| {
                let said = match found.iter().find(|i| i.instance_id() == Some(id.as_str())) {
                    Some(instance) => ending_state(instance)?.to_owned(),
                    None => "not known to EC2".to_owned(),
                };
                Some((id.clone(), said))
            })
            .collect())
    }
}

/// The state of an instance that is terminated or on its way there, or None.
fn ending_state(instance: &aws_sdk_ec2::types::Instance) -> Option<&str> {
    instance
        .state()
        .and_then(|s| s.name())
        .map(|n| n.as_str())
        .filter(|n| matches!(*n, "shutting-down" | "terminated"))
}

impl SdkInstances {
    /// DescribeInstances of `instance_ids` (an `instance-id` filter, so that an unknown ID is
    /// left out rather than failing the call), every page.
    async fn by_ids(&self, instance_ids: &[String]) -> Result<Vec<aws_sdk_ec2::types::Instance>, AwsError> {
        const OP: &str = "DescribeInstances";
        let mut found = Vec::new();
        // Up to 200 values per filter.
        for chunk in instance_ids.chunks(200) {
            let filter = Filter::builder()
                .name("instance-id")
                .set_values(Some(chunk.to_vec()))
                .build();
            let mut next_token: Option<String> = None;
            loop {
                let output = self
                    .client
                    .describe_instances()
                    .filters(filter.clone())
                    .set_next_token(next_token.take())
                    .send()
                    .await
                    .map_err(|e| from_sdk_error(OP, &e))?;
                found.extend(output.reservations().iter().flat_map(|r| r.instances()).cloned());
                match output.next_token() {
                    Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                    _ => break,
                }
            }
        }
        Ok(found)
    }
}
