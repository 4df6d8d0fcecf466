//! Helpers shared by the sandbox tests: a fast configuration, SDK clients pointed at the sandbox, polling.

#![allow(dead_code)] // Each test file uses a different subset.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
use pitstop_e2e::sandbox::{Sandbox, SandboxConfig, check_haproxy_binary, default_haproxy_binary};

/// The seed's flag-file reboot script: reboots once (`exit 194`), then, run again after the boot, cleans up.
pub const FLAG_FILE_REBOOT: &str =
    r#"marker="$PITSTOP_STATE_DIR/flag"; if [ ! -f "$marker" ]; then touch "$marker"; exit 194; fi; rm "$marker""#;

/// Settings short enough that a whole test file runs in seconds.
pub fn fast_config() -> SandboxConfig {
    SandboxConfig::default()
        .with_instances(3)
        .with_backend_binary(env!("CARGO_BIN_EXE_pitstop-backend"))
        .with_health_interval(Duration::from_millis(300))
        .with_thresholds(2, 2)
        .with_deregistration_delay(Duration::from_secs(1))
        .with_boot_time(Duration::from_millis(800))
        .with_invocation_visibility_delay(Duration::from_millis(300))
}

/// Starts a sandbox, failing the test with the install hint when HAProxy is missing.
pub async fn start(cfg: SandboxConfig) -> Sandbox {
    if let Err(err) = check_haproxy_binary(&cfg.haproxy_binary) {
        panic!("{err} (default looked up: {})", default_haproxy_binary().display());
    }
    match Sandbox::start(cfg).await {
        Ok(sandbox) => sandbox,
        Err(err) => panic!("the sandbox did not start: {err:#}"),
    }
}

/// SDK configuration pointing at the sandbox, with dummy credentials; `retries: false` surfaces every error.
pub async fn sdk_config(sandbox: &Sandbox, retries: bool) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(pitstop::aws::sdk::http_client::https_client())
        .endpoint_url(sandbox.aws_endpoint_url())
        .region(aws_config::Region::new(sandbox.region().to_owned()))
        .credentials_provider(aws_sdk_ssm::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "sandbox-tests",
        ))
        .retry_config(if retries {
            RetryConfig::standard()
        } else {
            RetryConfig::disabled()
        })
        .load()
        .await
}

/// ELBv2 and SSM clients for the sandbox.
pub async fn clients(
    sandbox: &Sandbox,
    retries: bool,
) -> (aws_sdk_elasticloadbalancingv2::Client, aws_sdk_ssm::Client) {
    let cfg = sdk_config(sandbox, retries).await;
    (
        aws_sdk_elasticloadbalancingv2::Client::new(&cfg),
        aws_sdk_ssm::Client::new(&cfg),
    )
}

/// A target description for `id`.
pub fn target(id: &str) -> TargetDescription {
    TargetDescription::builder().id(id).build()
}

/// Polls `probe` until it yields a value; panics with `what` after `limit`. The limit is a safety net against a
/// hang, far above the expected time, not an assertion about timing.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Target state (and reason) per instance, through the SDK; with `ids`, only those targets.
pub async fn target_states(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    arn: &str,
    ids: &[&str],
) -> BTreeMap<String, (String, Option<String>)> {
    let mut request = elb.describe_target_health().target_group_arn(arn);
    for id in ids {
        request = request.targets(target(id));
    }
    let out = request.send().await.expect("DescribeTargetHealth");
    out.target_health_descriptions()
        .iter()
        .map(|d| {
            let id = d.target().and_then(|t| t.id()).unwrap_or_default().to_owned();
            let health = d.target_health();
            let state = health
                .and_then(|h| h.state())
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default();
            let reason = health.and_then(|h| h.reason()).map(|r| r.as_str().to_owned());
            (id, (state, reason))
        })
        .collect()
}

/// State of one target through the SDK.
pub async fn target_state(elb: &aws_sdk_elasticloadbalancingv2::Client, arn: &str, id: &str) -> String {
    target_states(elb, arn, &[id])
        .await
        .remove(id)
        .map(|(state, _)| state)
        .unwrap_or_default()
}

/// Deregisters `id` through the SDK; the call must be accepted.
pub async fn deregister(elb: &aws_sdk_elasticloadbalancingv2::Client, arn: &str, id: &str) {
    elb.deregister_targets()
        .target_group_arn(arn)
        .targets(target(id))
        .send()
        .await
        .expect("deregister");
}

/// Registers `id` through the SDK; the call must be accepted.
pub async fn register(elb: &aws_sdk_elasticloadbalancingv2::Client, arn: &str, id: &str) {
    elb.register_targets()
        .target_group_arn(arn)
        .targets(target(id))
        .send()
        .await
        .expect("register");
}

/// Polls `DescribeTargetHealth` until `id` is in `state`; panics with `what` after `limit`.
pub async fn wait_for_target_state(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    arn: &str,
    id: &str,
    state: &str,
    what: &str,
    limit: Duration,
) {
    eventually(what, limit, || async {
        (target_state(elb, arn, id).await == state).then_some(())
    })
    .await;
}

/// The agent's ping status of one instance through the SDK.
pub async fn ping_status(ssm: &aws_sdk_ssm::Client, id: &str) -> String {
    let filter = aws_sdk_ssm::types::InstanceInformationStringFilter::builder()
        .key("InstanceIds")
        .values(id)
        .build()
        .expect("filter");
    let out = ssm
        .describe_instance_information()
        .filters(filter)
        .send()
        .await
        .expect("DescribeInstanceInformation");
    out.instance_information_list()
        .first()
        .and_then(|i| i.ping_status())
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default()
}

/// Sends an `AWS-RunShellScript` command to one instance; returns its command ID.
pub async fn send_script(ssm: &aws_sdk_ssm::Client, id: &str, script: &str, comment: &str) -> String {
    let out = ssm
        .send_command()
        .instance_ids(id)
        .document_name("AWS-RunShellScript")
        .parameters("commands", vec![script.to_owned()])
        .comment(comment)
        .timeout_seconds(60)
        .send()
        .await
        .expect("SendCommand");
    out.command()
        .and_then(|c| c.command_id())
        .expect("a command ID")
        .to_owned()
}

/// The invocation of `command_id` on `id`, once it has ended (polling through `InvocationDoesNotExist` and
/// `InProgress`).
pub async fn finished_invocation(
    ssm: &aws_sdk_ssm::Client,
    command_id: &str,
    id: &str,
) -> aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput {
    eventually("the command to finish", Duration::from_secs(30), || async {
        let out = ssm
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(id)
            .send()
            .await
            .ok()?;
        let status = out.status()?.as_str().to_owned();
        (!matches!(status.as_str(), "Pending" | "InProgress" | "Delayed" | "Cancelling")).then_some(out)
    })
    .await
}
