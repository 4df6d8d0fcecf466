//! The sandbox's fault switches, set from Rust and over `/_sandbox/faults`, seen through the AWS SDK.

mod sandbox_support;

use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::error::ProvideErrorMetadata as _;
use aws_sdk_ssm::types::CommandInvocationStatus;
use pitstop_e2e::sandbox::{CallOutcome, FaultSettings, OperationalState, Power, http_get, http_request};
use sandbox_support::{
    FLAG_FILE_REBOOT, clients, eventually, fast_config, finished_invocation, ping_status, send_script, start,
    target_state, target_states,
};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_returning_instance_times_the_command_out_and_comes_back_when_healed() {
    let sandbox = start(fast_config().with_instances(2)).await;
    let (elb, ssm) = clients(&sandbox, false).await;
    let arn = sandbox.target_group_arn().to_owned();
    let id = sandbox.instance_ids()[0].clone();
    sandbox.faults().set_never_return(&id, true).expect("known instance");

    let sent = ssm
        .send_command()
        .instance_ids(&id)
        .document_name("AWS-RunShellScript")
        .parameters("commands", vec![FLAG_FILE_REBOOT.to_owned()])
        .parameters("executionTimeout", vec!["3".to_owned()])
        .timeout_seconds(30)
        .send()
        .await
        .expect("SendCommand");
    let command_id = sent
        .command()
        .and_then(|c| c.command_id())
        .expect("command ID")
        .to_owned();

    eventually("the instance to be lost", LIMIT, || async {
        (sandbox.power(&id) == Some(Power::Lost)).then_some(())
    })
    .await;
    assert_eq!(ping_status(&ssm, &id).await, "ConnectionLost");
    let invocation = eventually("the invocation to be readable", LIMIT, || async {
        ssm.get_command_invocation()
            .command_id(&command_id)
            .instance_id(&id)
            .send()
            .await
            .ok()
    })
    .await;
    assert_eq!(invocation.status(), Some(&CommandInvocationStatus::InProgress));

    let invocation = finished_invocation(&ssm, &command_id, &id).await;
    assert_eq!(invocation.status(), Some(&CommandInvocationStatus::TimedOut));
    assert_eq!(sandbox.boot_count(&id), Some(1), "it never came back");
    eventually("the registered, dead target to be unhealthy", LIMIT, || async {
        (target_state(&elb, &arn, &id).await == "unhealthy").then_some(())
    })
    .await;

    // A command for the lost instance is never delivered: it times out after its TimeoutSeconds.
    let undelivered = ssm
        .send_command()
        .instance_ids(&id)
        .document_name("AWS-RunShellScript")
        .parameters("commands", vec!["true".to_owned()])
        .timeout_seconds(1)
        .send()
        .await
        .expect("SendCommand");
    let undelivered = undelivered
        .command()
        .and_then(|c| c.command_id())
        .expect("command ID")
        .to_owned();
    let invocation = finished_invocation(&ssm, &undelivered, &id).await;
    assert_eq!(invocation.status(), Some(&CommandInvocationStatus::TimedOut));
    assert_eq!(invocation.status_details(), Some("Delivery Timed Out"));

    sandbox.faults().set_never_return(&id, false).expect("known instance");
    eventually("the healed instance to boot", LIMIT, || async {
        (ping_status(&ssm, &id).await == "Online").then_some(())
    })
    .await;
    assert_eq!(sandbox.boot_count(&id), Some(2));
    eventually("the target to be healthy again", LIMIT, || async {
        (target_state(&elb, &arn, &id).await == "healthy").then_some(())
    })
    .await;
    sandbox.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_after_boot_fails_the_health_check_until_switched_off() {
    let sandbox = start(fast_config().with_instances(2)).await;
    let (elb, ssm) = clients(&sandbox, false).await;
    let arn = sandbox.target_group_arn().to_owned();
    let id = sandbox.instance_ids()[1].clone();
    sandbox
        .faults()
        .set_unhealthy_after_boot(&id, true)
        .expect("known instance");
    assert_eq!(
        target_state(&elb, &arn, &id).await,
        "healthy",
        "the switch waits for the next boot"
    );

    let command_id = send_script(&ssm, &id, FLAG_FILE_REBOOT, "reboot into a bad state").await;
    let invocation = finished_invocation(&ssm, &command_id, &id).await;
    assert_eq!(
        invocation.status(),
        Some(&CommandInvocationStatus::Success),
        "the agent itself is fine"
    );
    assert_eq!(sandbox.boot_count(&id), Some(2));

    let reason = eventually("the check to fail on the 503", LIMIT, || async {
        let (state, reason) = target_states(&elb, &arn, &[&id]).await.remove(&id)?;
        (state == "unhealthy" && reason.as_deref() == Some("Target.ResponseCodeMismatch")).then_some(reason)
    })
    .await;
    assert_eq!(reason.as_deref(), Some("Target.ResponseCodeMismatch"));
    let server = &sandbox.rotation_states().await.expect("HAProxy state")[&id];
    assert_eq!(
        (server.operational, server.check_status.as_str(), server.check_code),
        (OperationalState::Down, "L7STS", Some(503))
    );
    // The backend itself runs and answers; only its health check fails.
    let response = http_get(sandbox.frontend_addr(), "/")
        .await
        .expect("GET through HAProxy");
    assert_eq!(response.status, 200);
    assert!(!response.body.contains(&id), "an unhealthy target gets no traffic");

    sandbox
        .faults()
        .set_unhealthy_after_boot(&id, false)
        .expect("known instance");
    eventually("the target to recover", LIMIT, || async {
        (target_state(&elb, &arn, &id).await == "healthy").then_some(())
    })
    .await;
    assert_eq!(sandbox.boot_count(&id), Some(2), "healing needs no reboot");
    sandbox.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_failure_fails_commands_on_that_instance_only() {
    let sandbox = start(fast_config().with_instances(2)).await;
    let (_, ssm) = clients(&sandbox, false).await;
    let ids = sandbox.instance_ids();
    sandbox
        .faults()
        .set_command_failure(&ids[0], Some(7))
        .expect("known instance");

    let script = r#"touch "$PITSTOP_STATE_DIR/ran""#;
    for (id, expected_status, expected_code) in [
        (&ids[0], CommandInvocationStatus::Failed, 7),
        (&ids[1], CommandInvocationStatus::Success, 0),
    ] {
        let command_id = send_script(&ssm, id, script, "touch").await;
        let invocation = finished_invocation(&ssm, &command_id, id).await;
        assert_eq!(invocation.status(), Some(&expected_status), "{id}");
        assert_eq!(invocation.response_code(), expected_code, "{id}");
    }
    let ran = |id: &str| sandbox.instance_home(id).expect("home").join("ran").exists();
    assert!(!ran(&ids[0]), "the failing command did not run its script");
    assert!(ran(&ids[1]));

    sandbox
        .faults()
        .set_command_failure(&ids[0], None)
        .expect("known instance");
    let command_id = send_script(&ssm, &ids[0], script, "touch again").await;
    let invocation = finished_invocation(&ssm, &command_id, &ids[0]).await;
    assert_eq!(invocation.status(), Some(&CommandInvocationStatus::Success));
    sandbox.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_surfaces_as_sdk_error_codes_when_retries_are_off() {
    let sandbox = start(fast_config().with_instances(1)).await;
    let (elb, ssm) = clients(&sandbox, false).await;
    let arn = sandbox.target_group_arn().to_owned();
    let id = sandbox.instance_ids()[0].clone();
    sandbox.faults().set_throttle_rate(1.0).expect("valid rate");

    let err = elb
        .describe_target_health()
        .target_group_arn(&arn)
        .send()
        .await
        .expect_err("throttled");
    assert_eq!(err.code(), Some("Throttling"));
    let err = ssm.describe_instance_information().send().await.expect_err("throttled");
    assert_eq!(err.code(), Some("ThrottlingException"));
    let err = elb
        .deregister_targets()
        .target_group_arn(&arn)
        .targets(sandbox_support::target(&id))
        .send()
        .await
        .expect_err("throttled");
    assert_eq!(err.code(), Some("Throttling"));
    assert_eq!(
        target_state_direct(&sandbox, &id).await,
        "healthy",
        "a throttled write changes nothing"
    );

    let records = sandbox.call_log().records();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|r| r.outcome == CallOutcome::Throttled));
    assert!(records.iter().all(|r| !r.is_effective_write()));

    sandbox.faults().set_throttle_rate(0.0).expect("valid rate");
    elb.describe_target_health()
        .target_group_arn(&arn)
        .send()
        .await
        .expect("not throttled");
    sandbox.shutdown().await.expect("shutdown");
}

async fn target_state_direct(sandbox: &pitstop_e2e::sandbox::Sandbox, id: &str) -> &'static str {
    let health = sandbox.target_health().await.expect("target health");
    health.get(id).map(|h| h.state.as_str()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_paths_set_faults_and_show_calls() {
    let sandbox = start(fast_config().with_instances(1)).await;
    let (elb, _) = clients(&sandbox, false).await;
    let arn = sandbox.target_group_arn().to_owned();
    let id = sandbox.instance_ids()[0].clone();
    let admin = sandbox.aws_endpoint_addr();

    let body = serde_json::json!({ "throttle_rate": 1.0, "command_failures": { id.clone(): 5 } }).to_string();
    let response = http_request(
        admin,
        "POST",
        "/_sandbox/faults",
        Some(("application/json", body.as_bytes())),
    )
    .await
    .expect("POST faults");
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(sandbox.faults().settings().command_failures.get(&id), Some(&5));
    let err = elb
        .describe_target_health()
        .target_group_arn(&arn)
        .send()
        .await
        .expect_err("throttled");
    assert_eq!(err.code(), Some("Throttling"));

    let bad = br#"{"never_return": ["i-00000000000000bad"]}"#;
    let response = http_request(admin, "POST", "/_sandbox/faults", Some(("application/json", bad)))
        .await
        .expect("POST");
    assert_eq!(response.status, 400, "unknown instances are refused");

    let response = http_get(admin, "/_sandbox/faults").await.expect("GET faults");
    let settings: FaultSettings = serde_json::from_str(&response.body).expect("fault JSON");
    assert_eq!(settings.throttle_rate, 1.0);

    let response = http_request(admin, "POST", "/_sandbox/faults", Some(("application/json", b"{}")))
        .await
        .expect("POST");
    assert_eq!(response.status, 200);
    assert_eq!(
        sandbox.faults().settings(),
        FaultSettings::default(),
        "an empty body switches everything off"
    );
    elb.describe_target_health()
        .target_group_arn(&arn)
        .send()
        .await
        .expect("not throttled");

    let response = http_get(admin, "/_sandbox/calls").await.expect("GET calls");
    let calls: Vec<serde_json::Value> = serde_json::from_str(&response.body).expect("calls JSON");
    let outcomes: Vec<&str> = calls.iter().filter_map(|c| c["outcome"]["kind"].as_str()).collect();
    assert_eq!(outcomes, vec!["throttled", "ok"]);
    assert!(
        calls
            .iter()
            .all(|c| c["operation"] == "DescribeTargetHealth" && c["write"] == false)
    );

    let response = http_get(admin, "/_sandbox/state").await.expect("GET state");
    let state: serde_json::Value = serde_json::from_str(&response.body).expect("state JSON");
    assert_eq!(state["instances"][0]["boot_count"], 1);
    assert_eq!(state["instances"][0]["target"]["state"], "healthy");
    sandbox.shutdown().await.expect("shutdown");
}
