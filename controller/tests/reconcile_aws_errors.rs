//! A plan whose AWS calls fail says so on its status, where `kubectl get/describe` look:
//! condition `Stalled` with a reason per cause, a one-sentence `status.message` naming the
//! operation, region and cause, and one Warning Event per cause (not per retry). Failures
//! that waiting does not fix back off long. The condition goes away when AWS answers again,
//! and nothing is taken out of rotation while reads fail.

mod reconcile_support;

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use pitstop::api::{InstancePhase, MaintenancePlanStatus};
use pitstop::aws::AwsErrorKind;
use pitstop::aws::fake::FakeAws;
use pitstop::k8s::aws_condition::CONDITION_STALLED;
use pitstop::k8s::{Context, ErrorKind, error_policy};
use reconcile_support::*;
use serde_json::json;

/// The `Stalled=True` condition's (status, reason, message), if there is one.
fn stalled(status: Option<&MaintenancePlanStatus>) -> Option<(String, String, String)> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_STALLED && c.status == "True")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The Warning Events among `calls`, as (reason, note).
fn warnings(calls: &[Call]) -> Vec<(String, String)> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Event(e) if e.type_ == "Warning" => Some((e.reason.clone(), e.note.clone())),
            _ => None,
        })
        .collect()
}

fn status_writes(calls: &[Call]) -> Vec<&MaintenancePlanStatus> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::ApplyStatus { status, .. } => Some(status.as_ref()),
            _ => None,
        })
        .collect()
}

/// One failed round, handed to the error policy as the controller does; returns the
/// policy's action and the calls the round made.
async fn failed_round(server: &mut ApiServer, ctx: &Arc<Context>, expected: ErrorKind) -> (Action, Vec<Call>) {
    let error = server.reconcile(ctx, "web").await.expect_err("AWS fails");
    assert_eq!(error.kind(), expected, "{error}");
    let action = error_policy(server.plan("web"), &error, ctx.clone());
    (action, server.take_calls())
}

/// A started plan (finalizer in place), nothing out yet.
async fn started(fake: &FakeAws, server: &mut ApiServer, ctx: &Arc<Context>) {
    server.insert(plan_json("web", &IDS, json!({})));
    add_finalizer(server, ctx, fake, "web").await;
}

#[tokio::test]
async fn aws_unreachable_shows_once_it_lasts_and_clears_when_aws_answers() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        started(&fake, &mut server, &ctx).await;
        fake.behave(|b| b.fail_next = Some((u32::MAX, AwsErrorKind::Transient)));

        // A blip is not shown.
        let (action, calls) = failed_round(&mut server, &ctx, ErrorKind::Aws).await;
        assert_eq!(action, Action::requeue(Duration::from_secs(5)));
        assert_eq!(calls, [], "nothing written for the first failure");

        // It lasts: shown, with one Event.
        let (action, calls) = failed_round(&mut server, &ctx, ErrorKind::Aws).await;
        assert_eq!(action, Action::requeue(Duration::from_secs(10)), "ordinary backoff");
        let (state, reason, message) = stalled(server.status("web").as_ref()).expect("Stalled is set");
        assert_eq!((state.as_str(), reason.as_str()), ("True", "AWSUnreachable"));
        assert_eq!(
            message,
            "AWS unreachable: DescribeTargetHealth in eu-west-1 failed (injected by the fake); retrying"
        );
        assert_eq!(server.status("web").and_then(|s| s.message), Some(message.clone()));
        assert_eq!(warnings(&calls), [("AWSUnreachable".to_owned(), message.clone())]);

        // It goes on: no new Event, no new write.
        for _ in 0..3 {
            let (_, calls) = failed_round(&mut server, &ctx, ErrorKind::Aws).await;
            assert_eq!(calls, [], "a retry of the same cause changes nothing");
        }
        assert_eq!(aws_writes(&fake), [], "nothing taken out of rotation while reads fail");

        // AWS answers: the condition goes, the plan goes on.
        fake.behave(|b| b.fail_next = None);
        server.reconcile(&ctx, "web").await.expect("AWS answers");
        let status = server.status("web").expect("a status");
        assert_eq!(stalled(Some(&status)), None, "cleared: {status:?}");
        assert!(
            status.message.as_deref().is_some_and(|m| !m.contains("AWS")),
            "{:?}",
            status.message
        );
        assert_eq!(aws_writes(&fake), [("DeregisterTargets", IDS[0].to_owned())]);
        let calls = server.take_calls();
        for status in status_writes(&calls) {
            assert!(!format!("{status:?}").contains("DispatchFailure("));
        }
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn no_credentials_stall_the_plan_at_once_with_the_usual_fix() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        started(&fake, &mut server, &ctx).await;
        fake.behave(|b| b.fail_next = Some((u32::MAX, AwsErrorKind::Credentials)));

        let (action, calls) = failed_round(&mut server, &ctx, ErrorKind::AwsPermanent).await;
        assert_eq!(action, Action::requeue(Duration::from_secs(60)), "long backoff");
        let (state, reason, message) = stalled(server.status("web").as_ref()).expect("Stalled is set");
        assert_eq!((state.as_str(), reason.as_str()), ("True", "AWSCredentials"));
        assert!(
            message.starts_with(
                "no AWS credentials for DescribeTargetHealth in eu-west-1 (injected by the fake): set AWS_PROFILE"
            ),
            "{message}"
        );
        assert_eq!(warnings(&calls), [("AWSCredentials".to_owned(), message)]);

        let (action, calls) = failed_round(&mut server, &ctx, ErrorKind::AwsPermanent).await;
        assert_eq!(action, Action::requeue(Duration::from_secs(120)));
        assert_eq!(calls, [], "one Event per cause, not per retry");
        assert_eq!(aws_writes(&fake), []);

        // Another cause is another Event.
        fake.behave(|b| b.fail_next = Some((u32::MAX, AwsErrorKind::Transient)));
        let (_, calls) = failed_round(&mut server, &ctx, ErrorKind::Aws).await;
        assert_eq!(warnings(&calls).len(), 1, "{calls:?}");
        assert_eq!(
            stalled(server.status("web").as_ref()).map(|s| s.1),
            Some("AWSUnreachable".to_owned())
        );

        fake.behave(|b| b.fail_next = None);
        server.reconcile(&ctx, "web").await.expect("AWS answers");
        assert_eq!(stalled(server.status("web").as_ref()), None);
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_denied_deregister_names_the_iam_action_and_fails_no_instance() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        started(&fake, &mut server, &ctx).await;
        fake.behave(|b| b.denied_operations = vec!["DeregisterTargets"]);

        let (action, calls) = failed_round(&mut server, &ctx, ErrorKind::AwsPermanent).await;
        assert_eq!(action, Action::requeue(Duration::from_secs(60)), "long backoff");
        let status = server.status("web").expect("a status");
        let (state, reason, message) = stalled(Some(&status)).expect("Stalled is set");
        assert_eq!((state.as_str(), reason.as_str()), ("True", "AWSAccessDenied"));
        assert!(
            message
                .starts_with("AWS denied elasticloadbalancing:DeregisterTargets in eu-west-1 (AccessDenied (HTTP 403)"),
            "{message}"
        );
        assert!(
            message.ends_with(
                "allow elasticloadbalancing:DeregisterTargets in the IAM policy of the identity pitstop runs as"
            ),
            "{message}"
        );
        let warned = warnings(&calls);
        assert_eq!(warned, [("AWSAccessDenied".to_owned(), message.clone())]);
        assert!(
            status.instances.iter().all(|i| i.phase != InstancePhase::Failed),
            "a denied action is the setup's fault, not the instance's: {status:?}"
        );

        for _ in 0..2 {
            let (_, calls) = failed_round(&mut server, &ctx, ErrorKind::AwsPermanent).await;
            // Nothing written either: in a cluster every status write wakes the controller
            // through its watch, and a retry that writes would skip the backoff.
            assert_eq!(calls, [], "a retry of the same cause changes nothing");
        }
        assert!(fake.state(ARN, IDS[0]).is_registered(), "the instance never left");

        // The policy is fixed: the plan goes on without being touched.
        fake.behave(|b| b.denied_operations.clear());
        server.reconcile(&ctx, "web").await.expect("allowed now");
        assert_eq!(stalled(server.status("web").as_ref()), None);
        assert!(!fake.state(ARN, IDS[0]).is_registered(), "deregistered now");
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn an_iam_policy_without_describe_instances_never_holds_an_instance_out() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        // A policy written before pitstop looked at EC2 during a turn; reboots long enough
        // for that look to come due twice per instance.
        fake.behave(|b| {
            b.denied_operations = vec!["DescribeInstances"];
            b.command_time = Duration::from_secs(150);
        });
        server.insert(with_finalizer(plan_json("web", &IDS, json!({}))));
        drive(&mut server, &ctx, &fake, "web", |s| {
            s.status("web").is_some_and(|st| st.phase.is_finished())
        })
        .await;
        let status = server.status("web").expect("a status");
        assert!(
            status.instances.iter().all(|i| i.phase == InstancePhase::Registered),
            "every instance maintained: {status:?}"
        );
        assert_eq!(stalled(Some(&status)), None, "the safety net's failure stalls nothing");
        for id in IDS {
            assert!(fake.state(ARN, id).is_registered(), "{id} is back");
        }
        // Tried a minute into each reboot (and each minute after), never every round.
        let looks = fake.calls_of("DescribeInstances");
        assert!((3..=9).contains(&looks), "{looks} DescribeInstances calls");
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}
