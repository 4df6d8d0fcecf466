//! The sandbox's "carry out the call, lose the answer" fault, for every write and in every mode, and its endpoint
//! outage; then what pitstop's SDK layer makes of both: one SendCommand per call (never a retry inside the SDK),
//! and the outcome marked unknown exactly when the request may have been carried out.

mod sandbox_support;

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use pitstop::aws::sdk::{SdkProvider, SdkSettings};
use pitstop::aws::{AwsProvider, CommandRequest};
use pitstop_e2e::sandbox::{CallOutcome, CallRecord, LOSABLE_WRITES, LostAnswer, LostAnswerMode, Sandbox};
use sandbox_support::{eventually, fast_config, send_script, start, target, target_state};

const MODES: [LostAnswerMode; 3] = [LostAnswerMode::Reset, LostAnswerMode::Error500, LostAnswerMode::Hold];

/// The attempt limit of the clients here, and the hold that outlasts it.
const ATTEMPT: Duration = Duration::from_millis(800);
const HOLD: Duration = Duration::from_millis(2500);

fn rule(mode: LostAnswerMode) -> LostAnswer {
    LostAnswer::next(mode, 1).holding(HOLD)
}

fn mode_name(mode: LostAnswerMode) -> &'static str {
    match mode {
        LostAnswerMode::Reset => "reset",
        LostAnswerMode::Error500 => "error500",
        LostAnswerMode::Hold => "hold",
    }
}

/// SDK clients with no retries and a short attempt limit, so each call is one request and a held answer times out.
async fn one_shot_clients(sandbox: &Sandbox) -> (aws_sdk_elasticloadbalancingv2::Client, aws_sdk_ssm::Client) {
    let cfg = sandbox_support::sdk_config(sandbox, false).await;
    let cfg = cfg
        .into_builder()
        .timeout_config(TimeoutConfig::builder().operation_attempt_timeout(ATTEMPT).build())
        .build();
    (
        aws_sdk_elasticloadbalancingv2::Client::new(&cfg),
        aws_sdk_ssm::Client::new(&cfg),
    )
}

fn calls_of(sandbox: &Sandbox, operation: &str) -> Vec<CallRecord> {
    sandbox
        .call_log()
        .records()
        .into_iter()
        .filter(|r| r.operation == operation)
        .collect()
}

fn assert_lost(sandbox: &Sandbox, operation: &str, mode: LostAnswerMode) {
    let calls = calls_of(sandbox, operation);
    let last = calls.last().unwrap_or_else(|| panic!("no {operation} in the call log"));
    assert_eq!(
        last.outcome,
        CallOutcome::AnswerLost {
            mode: mode_name(mode).to_owned()
        },
        "{operation}"
    );
    assert!(
        last.is_effective_write(),
        "a lost answer still means the write was carried out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_is_carried_out_and_its_answer_lost_in_every_mode() {
    let sandbox = start(fast_config().with_instances(1)).await;
    let (elb, ssm) = one_shot_clients(&sandbox).await;
    let arn = sandbox.target_group_arn().to_owned();
    let id = sandbox.instance_ids()[0].clone();
    assert_eq!(
        LOSABLE_WRITES,
        ["DeregisterTargets", "RegisterTargets", "SendCommand", "CancelCommand"],
        "a new write must be added to this test"
    );

    for mode in MODES {
        // DeregisterTargets: the client sees an error, the target drains all the same.
        sandbox
            .faults()
            .set_lost_answer("DeregisterTargets", Some(rule(mode)))
            .expect("rule");
        let err = elb
            .deregister_targets()
            .target_group_arn(&arn)
            .targets(target(&id))
            .send()
            .await
            .expect_err("the answer is lost");
        assert_lost(&sandbox, "DeregisterTargets", mode);
        let state = target_state(&elb, &arn, &id).await;
        assert!(
            state == "draining" || state == "unused",
            "{mode:?}: deregistered although the client saw {err:?}: {state}"
        );
        eventually("the drain to end", Duration::from_secs(20), || async {
            (target_state(&elb, &arn, &id).await == "unused").then_some(())
        })
        .await;

        // RegisterTargets: registered although the client saw an error.
        sandbox
            .faults()
            .set_lost_answer("RegisterTargets", Some(rule(mode)))
            .expect("rule");
        elb.register_targets()
            .target_group_arn(&arn)
            .targets(target(&id))
            .send()
            .await
            .expect_err("the answer is lost");
        assert_lost(&sandbox, "RegisterTargets", mode);
        assert_ne!(target_state(&elb, &arn, &id).await, "unused", "{mode:?}: registered");
        eventually("healthy again", Duration::from_secs(20), || async {
            (target_state(&elb, &arn, &id).await == "healthy").then_some(())
        })
        .await;

        // SendCommand: the command exists and ListCommands finds it by its comment.
        let comment = format!("lost-send-{}", mode_name(mode));
        sandbox
            .faults()
            .set_lost_answer("SendCommand", Some(rule(mode)))
            .expect("rule");
        ssm.send_command()
            .instance_ids(&id)
            .document_name("AWS-RunShellScript")
            .parameters("commands", vec!["sleep 30".to_owned()])
            .comment(&comment)
            .send()
            .await
            .expect_err("the answer is lost");
        assert_lost(&sandbox, "SendCommand", mode);
        let listed = ssm.list_commands().instance_id(&id).send().await.expect("ListCommands");
        let command_id = listed
            .commands()
            .iter()
            .find(|c| c.comment() == Some(comment.as_str()))
            .and_then(|c| c.command_id())
            .unwrap_or_else(|| panic!("{mode:?}: the command was created"))
            .to_owned();

        // CancelCommand: cancelled although the client saw an error.
        sandbox
            .faults()
            .set_lost_answer("CancelCommand", Some(rule(mode)))
            .expect("rule");
        ssm.cancel_command()
            .command_id(&command_id)
            .instance_ids(&id)
            .send()
            .await
            .expect_err("the answer is lost");
        assert_lost(&sandbox, "CancelCommand", mode);
        let status = eventually("the cancel to land", Duration::from_secs(20), || async {
            let out = ssm
                .get_command_invocation()
                .command_id(&command_id)
                .instance_id(&id)
                .send()
                .await
                .ok()?;
            let status = out.status()?.as_str().to_owned();
            (status != "InProgress" && status != "Pending" && status != "Cancelling").then_some(status)
        })
        .await;
        assert_eq!(status, "Cancelled", "{mode:?}");
    }
    assert!(
        sandbox.faults().settings().lose_answers.is_empty(),
        "count rules are used up"
    );
    sandbox.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdks_own_retry_runs_a_command_twice_when_its_answer_is_lost() {
    // Why pitstop turns the SDK's retry off for SendCommand: with it on, one lost answer is two commands.
    let sandbox = start(fast_config().with_instances(1)).await;
    let (_, ssm) = sandbox_support::clients(&sandbox, true).await;
    let id = sandbox.instance_ids()[0].clone();
    sandbox
        .faults()
        .set_lost_answer("SendCommand", Some(LostAnswer::next(LostAnswerMode::Reset, 1)))
        .expect("rule");
    send_script(&ssm, &id, "true", "retried").await;
    let sends = calls_of(&sandbox, "SendCommand");
    assert_eq!(sends.len(), 2, "the standard retry sent it again: {sends:?}");
    assert!(sends.iter().all(CallRecord::is_effective_write));
    sandbox.shutdown().await.expect("shutdown");
}

fn request(id: &str, comment: &str) -> CommandRequest {
    CommandRequest {
        instance_id: id.to_owned(),
        document_name: "AWS-RunShellScript".into(),
        document_version: None,
        parameters: [("commands".to_owned(), vec!["true".to_owned()])].into(),
        timeout: Duration::from_secs(60),
        comment: comment.to_owned(),
        alarms: Vec::new(),
        ignore_alarm_read_failures: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pitstops_send_is_one_request_and_a_lost_answer_is_an_unknown_outcome() {
    let sandbox = start(fast_config().with_instances(1)).await;
    let id = sandbox.instance_ids()[0].clone();
    let provider = SdkProvider::new(SdkSettings {
        attempt_timeout: Some(ATTEMPT),
        endpoint_url: Some(sandbox.aws_endpoint_url()),
        credentials: Some(aws_sdk_ssm::config::SharedCredentialsProvider::new(
            aws_sdk_ssm::config::Credentials::new("test", "test", None, None, "sandbox-tests"),
        )),
        ..SdkSettings::default()
    });
    let apis = provider.for_region(sandbox.region()).await;

    for mode in MODES {
        sandbox.call_log().clear();
        sandbox
            .faults()
            .set_lost_answer("SendCommand", Some(rule(mode)))
            .expect("rule");
        let err = apis
            .commands
            .send(&request(&id, &format!("pitstop-send-{}", mode_name(mode))))
            .await
            .expect_err("the answer is lost");
        assert!(err.outcome_unknown, "{mode:?}: {err}");
        assert_eq!(
            calls_of(&sandbox, "SendCommand").len(),
            1,
            "{mode:?}: SendCommand is never retried inside the SDK"
        );
    }

    // A throttled SendCommand was refused: known not to have happened, and not retried either.
    sandbox.call_log().clear();
    sandbox.faults().set_throttle_rate(1.0).expect("rate");
    let err = apis
        .commands
        .send(&request(&id, "throttled"))
        .await
        .expect_err("throttled");
    assert!(!err.outcome_unknown, "{err}");
    assert_eq!(calls_of(&sandbox, "SendCommand").len(), 1);
    sandbox.faults().set_throttle_rate(0.0).expect("rate");

    // An endpoint that refuses connections never received the request.
    sandbox.refuse_connections(Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = apis.commands.send(&request(&id, "refused")).await.expect_err("refused");
    assert!(!err.outcome_unknown, "connection refused: nothing was sent: {err}");
    // ...and answers again once the outage is over.
    eventually("the endpoint to come back", Duration::from_secs(30), || async {
        apis.commands.send(&request(&id, "after the outage")).await.ok()
    })
    .await;
    sandbox.shutdown().await.expect("shutdown");
}
