//! [`Alarms`] over the CloudWatch API: the DescribeAlarms read of `spec.gates.cloudWatchAlarms`.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_cloudwatch::Client;
use aws_sdk_cloudwatch::types::AlarmType;

use super::errors::from_sdk_error;
use super::stats::ApiCallStats;
use crate::aws::{AlarmState, Alarms, AwsError};

/// A CloudWatch client for one region, in pitstop's words.
#[derive(Clone, Debug)]
pub struct SdkAlarms {
    client: Client,
}

impl SdkAlarms {
    /// Builds the client from `config`, counting its calls into `stats`.
    ///
    /// The config must carry a behavior version (a config made from an
    /// [`SdkConfig`](aws_config::SdkConfig) does); the SDK panics without one.
    pub fn new(config: aws_sdk_cloudwatch::config::Builder, stats: &Arc<ApiCallStats>) -> Self {
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
impl Alarms for SdkAlarms {
    async fn states(&self, names: &[String]) -> Result<BTreeMap<String, AlarmState>, AwsError> {
        const OP: &str = "DescribeAlarms";
        let mut states = BTreeMap::new();
        if names.is_empty() {
            // No names means every alarm of the account to DescribeAlarms.
            return Ok(states);
        }
        let mut next_token: Option<String> = None;
        loop {
            // Without AlarmTypes, DescribeAlarms leaves composite alarms out.
            let output = self
                .client
                .describe_alarms()
                .set_alarm_names(Some(names.to_vec()))
                .alarm_types(AlarmType::MetricAlarm)
                .alarm_types(AlarmType::CompositeAlarm)
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| from_sdk_error(OP, &e))?;
            let metric = output
                .metric_alarms()
                .iter()
                .map(|a| (a.alarm_name(), a.state_value(), a.state_reason()));
            let composite = output
                .composite_alarms()
                .iter()
                .map(|a| (a.alarm_name(), a.state_value(), a.state_reason()));
            for (name, value, reason) in metric.chain(composite) {
                if let (Some(name), Some(value)) = (name, value) {
                    states.insert(
                        name.to_owned(),
                        AlarmState {
                            value: value.as_str().to_owned(),
                            reason: reason.map(str::to_owned),
                        },
                    );
                }
            }
            match output.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => return Ok(states),
            }
        }
    }
}
