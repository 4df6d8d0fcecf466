//! The AWS SDK implementation of [`TargetGroups`](super::TargetGroups),
//! [`Commands`](super::Commands), [`Instances`](super::Instances) and
//! [`AutoScaling`](super::AutoScaling), [`Alarms`](super::Alarms), and the [`SdkProvider`] that hands them out per region.
//!
//! Configuration comes from the SDK's usual sources (`aws_config::defaults`): the default
//! credential chain (environment, profile, web identity / IRSA, ECS, IMDS) and the endpoint
//! overrides `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>`, which is how tests and the
//! sandbox point pitstop at an emulator. Retries use the SDK's adaptive mode, which on top of
//! backing off slows the client down when AWS throttles it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ssm::config::SharedCredentialsProvider;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use tokio::sync::OnceCell;

use super::{AwsApis, AwsProvider};

pub mod autoscaling_api;
pub mod cloudwatch_api;
pub mod ec2_api;
pub mod elbv2;
pub mod errors;
pub mod http_client;
pub mod ssm;
pub mod stats;

pub use autoscaling_api::SdkAutoScaling;
pub use cloudwatch_api::SdkAlarms;
pub use ec2_api::SdkInstances;
pub use elbv2::SdkTargetGroups;
pub use ssm::SdkCommands;
pub use stats::{ApiCallSnapshot, ApiCallStats, ApiOperation, OperationCounts};

/// Attempts per call when not configured: the SDK's own default. pitstop requeues throttled
/// and transient failures itself, so longer retry chains inside one call buy little and hold
/// up the reconcile.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Limit for one attempt when not configured. The calls pitstop makes answer in well under a
/// second; this only catches a connection that hangs.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest attempt limit pitstop accepts: a SendCommand whose answer never came is looked
/// for by its tag for [`crate::machine::SEND_LOOKUP_GRACE`] from the attempt, which must
/// outlast the attempt itself.
pub const MAX_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// The retry configuration every pitstop client uses: adaptive mode (client-side rate limiting
/// once AWS throttles, on top of backoff) with at most `max_attempts` attempts per call (at
/// least one).
pub fn retry_config(max_attempts: u32) -> RetryConfig {
    // The SDK's default maximum backoff (20 s) would hold a reconcile that long after one
    // throttle; pitstop polls every few seconds anyway and retries the round itself. This caps
    // only the wait before a retry: adaptive mode's client-side rate limiter (shared per
    // service and region in the process) can still delay the next call after heavy
    // throttling, by tens of seconds at 50 % throttling in the sandbox. That slows a round
    // down; every round is repeat-safe. The drain limit, the tightest, counts from the first
    // sight of the target draining, so a held DeregisterTargets does not use it up; the
    // command and healthy limits (minutes) count from the first try of their call.
    RetryConfig::adaptive()
        .with_max_attempts(max_attempts.max(1))
        .with_max_backoff(Duration::from_secs(5))
}

/// How [`SdkProvider`] configures its clients.
#[derive(Clone)]
pub struct SdkSettings {
    /// Attempts per call, the first included (see [`retry_config`]).
    pub max_attempts: u32,
    /// Limit for one attempt; `None` for none.
    pub attempt_timeout: Option<Duration>,
    /// Endpoint for both services, as `AWS_ENDPOINT_URL` would set it (which the SDK already
    /// reads when this is `None`).
    pub endpoint_url: Option<String>,
    /// Credentials to use instead of the default chain (tests and sandboxes with fixed keys).
    pub credentials: Option<SharedCredentialsProvider>,
}

impl Default for SdkSettings {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            attempt_timeout: Some(DEFAULT_ATTEMPT_TIMEOUT),
            endpoint_url: None,
            credentials: None,
        }
    }
}

impl fmt::Debug for SdkSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdkSettings")
            .field("max_attempts", &self.max_attempts)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("endpoint_url", &self.endpoint_url)
            // Only whether they are set: the provider's Debug could show more than a log should.
            .field("credentials", &self.credentials.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// The real [`AwsProvider`]: one ELBv2 and one SSM client per region, built on first use and
/// cached, all counting their calls into one [`ApiCallStats`].
pub struct SdkProvider {
    settings: SdkSettings,
    stats: Arc<ApiCallStats>,
    // Shared by every region's clients: one connection pool, one TLS configuration.
    http_client: SharedHttpClient,
    // One cell per region, so that building one region's clients (which may read profile files
    // or reach IMDS) neither blocks other regions nor happens twice for the same one.
    regions: Mutex<HashMap<String, Arc<OnceCell<AwsApis>>>>,
}

impl SdkProvider {
    /// A provider with these settings; no client is built until a region is asked for.
    pub fn new(settings: SdkSettings) -> Self {
        Self {
            settings,
            stats: Arc::new(ApiCallStats::new()),
            http_client: http_client::https_client(),
            regions: Mutex::new(HashMap::new()),
        }
    }

    /// The call counters shared by all of this provider's clients.
    pub fn stats(&self) -> Arc<ApiCallStats> {
        Arc::clone(&self.stats)
    }

    /// The settings the provider was made with.
    pub fn settings(&self) -> &SdkSettings {
        &self.settings
    }

    /// The shared SDK configuration for `region`, as the provider's clients get it.
    pub async fn sdk_config(&self, region: &str) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .http_client(self.http_client.clone())
            .retry_config(retry_config(self.settings.max_attempts));
        if let Some(timeout) = self.settings.attempt_timeout {
            loader = loader.timeout_config(TimeoutConfig::builder().operation_attempt_timeout(timeout).build());
        }
        if let Some(url) = &self.settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(credentials) = &self.settings.credentials {
            loader = loader.credentials_provider(credentials.clone());
        }
        loader.load().await
    }

    async fn build(&self, region: &str) -> AwsApis {
        let config = self.sdk_config(region).await;
        tracing::debug!(
            region,
            endpoint_url = config.endpoint_url().unwrap_or("(AWS)"),
            "built AWS clients"
        );
        AwsApis {
            target_groups: Arc::new(SdkTargetGroups::new(
                aws_sdk_elasticloadbalancingv2::config::Builder::from(&config),
                &self.stats,
            )),
            commands: Arc::new(SdkCommands::new(
                aws_sdk_ssm::config::Builder::from(&config),
                &self.stats,
            )),
            instances: Arc::new(SdkInstances::new(
                aws_sdk_ec2::config::Builder::from(&config),
                &self.stats,
            )),
            auto_scaling: Arc::new(SdkAutoScaling::new(
                aws_sdk_autoscaling::config::Builder::from(&config),
                &self.stats,
            )),
            alarms: Arc::new(SdkAlarms::new(
                aws_sdk_cloudwatch::config::Builder::from(&config),
                &self.stats,
            )),
        }
    }
}

impl Default for SdkProvider {
    fn default() -> Self {
        Self::new(SdkSettings::default())
    }
}

impl fmt::Debug for SdkProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdkProvider")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl AwsProvider for SdkProvider {
    async fn for_region(&self, region: &str) -> AwsApis {
        let cell = {
            // A panic while holding this lock cannot leave the map half-updated, so a poisoned
            // lock is still good to use.
            let mut regions = self.regions.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(regions.entry(region.to_owned()).or_default())
        };
        cell.get_or_init(|| self.build(region)).await.clone()
    }
}
