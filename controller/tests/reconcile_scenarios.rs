//! The reconcile against a mock apiserver (tower-test) and the in-memory AWS: a plan runs
//! to Succeeded, a failure puts the instance back and stops the plan, deleting a plan
//! mid-run puts its instance back before the finalizer goes, and a malformed plan is
//! reported without stopping the others.

mod reconcile_support;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use pitstop::api::{InstancePhase, MaintenancePlan, PlanPhase};
use pitstop::aws::fake::FakeAws;
use pitstop::aws::{AwsErrorKind, TargetState};
use pitstop::k8s::policy::{NOW_DELAY, THROTTLED_DELAY};
use pitstop::k8s::{Context, ErrorKind, error_policy, reconcile};
use reconcile_support::*;
use serde_json::json;

#[tokio::test]
async fn reconcile_runs_a_plan_of_three_to_succeeded() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        server.insert(plan_json("web", &IDS, json!({})));

        add_finalizer(&mut server, &ctx, &fake, "web").await;
        let run = drive(&mut server, &ctx, &fake, "web", |_| false).await;

        let statuses = run.statuses();
        assert!(
            statuses.len() >= 12,
            "every phase change is written: {}",
            statuses.len()
        );
        for pair in statuses.windows(2) {
            assert_ne!(pair[0], pair[1], "a write that changes nothing is skipped");
        }
        for status in &statuses {
            assert_eq!(status.observed_generation, Some(1));
            assert!(status.conditions.iter().all(|c| c.observed_generation == Some(1)));
            let out = status.instances.iter().filter(|i| i.out_of_rotation).count();
            assert!(out <= 1, "one instance out at a time: {status:?}");
        }
        assert_eq!(plan_phases(&statuses), [PlanPhase::Running, PlanPhase::Succeeded]);
        use InstancePhase::*;
        assert_eq!(
            phases_of(&statuses, IDS[0]),
            [Draining, Rebooting, Verifying, Registered]
        );
        for id in &IDS[1..] {
            assert_eq!(
                phases_of(&statuses, id),
                [Pending, Draining, Rebooting, Verifying, Registered]
            );
        }

        let mut expected = vec![
            event("Normal", "Deregistering", IDS[0]),
            event("Normal", "PlanStarted", "Plan"),
        ];
        for (n, id) in IDS.iter().enumerate() {
            if n > 0 {
                expected.push(event("Normal", "Deregistering", id));
            }
            expected.push(event("Normal", "Drained", id));
            expected.push(event("Normal", "MaintenanceSucceeded", id));
            expected.push(event("Normal", "Healthy", id));
        }
        expected.push(event("Normal", "PlanSucceeded", "Plan"));
        assert_eq!(run.events(), expected);
        let notes: Vec<String> = run
            .calls()
            .filter_map(|c| match c {
                Call::Event(e) => Some(e.note.clone()),
                _ => None,
            })
            .collect();
        assert!(
            notes[0].starts_with(&format!("{}: Pending -> Draining", IDS[0])),
            "{notes:?}"
        );
        assert_eq!(
            notes.last().map(String::as_str),
            Some("plan Running -> Succeeded: all 3 instances maintained and healthy")
        );

        let actions: Vec<&Action> = run.rounds.iter().map(|(a, _)| a).collect();
        assert!(actions.contains(&&Action::requeue(POLL)), "polls while AWS works");
        assert!(
            actions.contains(&&Action::requeue(NOW_DELAY)),
            "comes back at once after a step"
        );
        assert_eq!(actions.last(), Some(&&Action::await_change()), "idle once finished");

        let mut expected_writes = Vec::new();
        for id in IDS {
            for op in ["DeregisterTargets", "SendCommand", "RegisterTargets"] {
                expected_writes.push((op, id.to_owned()));
            }
        }
        assert_eq!(aws_writes(&fake), expected_writes);
        assert_eq!(fake.max_out_at_once(), 1);

        let last = server.status("web").expect("status recorded");
        assert_eq!(last.phase, PlanPhase::Succeeded);
        assert_eq!(last.progress.as_deref(), Some("3/3"));
        assert!(last.finished_at.is_some());
        assert!(
            last.conditions
                .iter()
                .any(|c| c.type_ == "Complete" && c.status == "True"),
            "{:?}",
            last.conditions
        );

        let metrics = ctx.metrics.encode();
        assert!(metrics.contains("pitstop_plans{phase=\"Succeeded\"} 1"), "{metrics}");
        assert!(
            metrics.contains("pitstop_instance_transitions_total{to=\"Registered\",reason=\"Healthy\"} 3"),
            "{metrics}"
        );

        // A finished plan seen again (a resync) writes nothing and calls nothing.
        let calls_before = fake.call_count();
        let action = server.reconcile(&ctx, "web").await.expect("idle round");
        assert_eq!(action, Action::await_change());
        assert_eq!(server.take_calls(), []);
        assert_eq!(fake.call_count(), calls_before);

        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn reconcile_failed_maintenance_registers_the_instance_again_and_stops_the_plan() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let fake = fake_aws();
        fake.behave(|b| b.failing_commands = vec![IDS[1].to_owned()]);
        let (mut server, client) = ApiServer::start();
        let ctx = context(client, &fake);
        server.insert(plan_json("web", &IDS, json!({})));

        add_finalizer(&mut server, &ctx, &fake, "web").await;
        let run = drive(&mut server, &ctx, &fake, "web", |_| false).await;

        let last = server.status("web").expect("status recorded");
        assert_eq!(last.phase, PlanPhase::Failed);
        assert!(
            last.conditions
                .iter()
                .any(|c| c.type_ == "Failed" && c.status == "True")
        );
        let [a, b, c] = &last.instances[..] else {
            panic!("three instances: {last:?}")
        };
        assert_eq!(a.phase, InstancePhase::Registered);
        assert_eq!(b.phase, InstancePhase::Failed);
        assert_eq!(b.failure_reason.as_deref(), Some("MaintenanceFailed"));
        assert!(!b.out_of_rotation, "put back into the group");
        assert_eq!(c.phase, InstancePhase::Pending, "later instances are left alone");

        assert!(
            fake.state(ARN, IDS[1]).is_registered(),
            "the failed instance serves again"
        );
        assert_eq!(fake.state(ARN, IDS[2]), TargetState::Healthy);
        assert!(
            !aws_writes(&fake).iter().any(|(_, id)| id == IDS[2]),
            "no AWS write for the instance after the failure"
        );
        let b_writes: Vec<&str> = aws_writes(&fake)
            .into_iter()
            .filter(|(_, id)| id == IDS[1])
            .map(|(op, _)| op)
            .collect();
        assert_eq!(b_writes, ["DeregisterTargets", "SendCommand", "RegisterTargets"]);

        let events = run.events();
        let tail: Vec<_> = events
            .iter()
            .skip_while(|e| e.1 != "MaintenanceFailed")
            .cloned()
            .collect();
        assert_eq!(
            tail,
            [
                event("Warning", "MaintenanceFailed", IDS[1]),
                event("Normal", "ReturnedToTargetGroup", IDS[1]),
                event("Warning", "PlanFailed", "Plan"),
            ]
        );
        assert_eq!(run.rounds.last().map(|(a, _)| a), Some(&Action::await_change()));
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn reconcile_delete_mid_run_puts_the_instance_back_before_releasing() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        server.insert(plan_json("web", &IDS, json!({})));
        add_finalizer(&mut server, &ctx, &fake, "web").await;

        // Run until the first instance's maintenance command is out.
        let rebooting = |server: &ApiServer| {
            server.status("web").is_some_and(|s| {
                s.instances
                    .iter()
                    .any(|i| i.phase == InstancePhase::Rebooting && i.maintenance_command_id.is_some())
            })
        };
        drive(&mut server, &ctx, &fake, "web", rebooting).await;
        assert_eq!(fake.state(ARN, IDS[0]), TargetState::Unused);
        let writes_before = fake.writes().len();

        server.mark_deleted("web");
        let action = server.reconcile(&ctx, "web").await.expect("clean-up round");
        assert_eq!(action, Action::await_change());

        let new_writes: Vec<(&str, String)> = aws_writes(&fake).split_off(writes_before);
        assert_eq!(
            new_writes,
            [
                ("CancelCommand", IDS[0].to_owned()),
                ("RegisterTargets", IDS[0].to_owned())
            ],
            "the command is cancelled before the instance takes traffic again"
        );
        assert!(fake.state(ARN, IDS[0]).is_registered());

        let calls = server.take_calls();
        let [Call::Event(event), Call::RemoveFinalizer { finalizers, .. }] = &calls[..] else {
            panic!("an event, then the finalizer removal: {calls:?}")
        };
        assert_eq!((event.type_.as_str(), event.reason.as_str()), ("Normal", "PlanDeleted"));
        assert!(
            event.note.contains("cancelled maintenance command cmd-0001") && event.note.contains("port 8080"),
            "{}",
            event.note
        );
        assert!(finalizers.is_empty());
        assert!(server.raw("web").is_none(), "released: the apiserver deleted it");
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn reconcile_delete_waits_for_the_register_call_through_throttling() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        server.insert(plan_json("web", &IDS, json!({})));
        add_finalizer(&mut server, &ctx, &fake, "web").await;
        let draining = |server: &ApiServer| {
            server
                .status("web")
                .is_some_and(|s| s.instances.iter().any(|i| i.phase == InstancePhase::Draining))
        };
        drive(&mut server, &ctx, &fake, "web", draining).await;

        server.mark_deleted("web");
        fake.behave(|b| b.fail_next = Some((1, AwsErrorKind::Throttled)));
        let error = server
            .reconcile(&ctx, "web")
            .await
            .expect_err("RegisterTargets is throttled");
        assert_eq!(error.kind(), ErrorKind::Throttled);
        assert_eq!(
            error_policy(server.plan("web"), &error, ctx.clone()),
            Action::requeue(THROTTLED_DELAY)
        );
        assert_eq!(server.take_calls(), [], "the finalizer stays");
        let metrics = ctx.metrics.encode();
        assert!(
            metrics.contains("pitstop_reconcile_errors_total{kind=\"throttled\"} 1"),
            "{metrics}"
        );
        assert!(!fake.state(ARN, IDS[0]).is_registered());

        let action = server.reconcile(&ctx, "web").await.expect("the retry succeeds");
        assert_eq!(action, Action::await_change());
        assert!(fake.state(ARN, IDS[0]).is_registered());
        let calls = server.take_calls();
        assert!(matches!(calls.last(), Some(Call::RemoveFinalizer { .. })), "{calls:?}");
        assert!(server.raw("web").is_none());
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn reconcile_delete_of_a_plan_that_never_started_releases_it_at_once() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        server.insert(with_finalizer(plan_json("idle", &IDS, json!({}))));
        server.mark_deleted("idle");

        let action = server.reconcile(&ctx, "idle").await.expect("released");
        assert_eq!(action, Action::await_change());
        assert_eq!(
            server.take_calls(),
            [Call::RemoveFinalizer {
                plan: "idle".into(),
                finalizers: vec![]
            }]
        );
        assert_eq!(fake.call_count(), 0, "nothing to undo on AWS");
        assert!(server.raw("idle").is_none());
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn reconcile_delete_leaves_a_failed_instance_out_with_on_failure_leave_out() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let fake = fake_aws();
        fake.behave(|b| b.failing_commands = vec![IDS[0].to_owned()]);
        let (mut server, client) = ApiServer::start();
        let ctx = context(client, &fake);
        server.insert(plan_json("web", &IDS, json!({ "onFailure": "LeaveOut" })));
        add_finalizer(&mut server, &ctx, &fake, "web").await;
        drive(&mut server, &ctx, &fake, "web", |_| false).await;
        let status = server.status("web").expect("status recorded");
        assert_eq!(status.phase, PlanPhase::Failed);
        assert!(status.instances[0].out_of_rotation, "left out as asked");
        let writes_before = fake.writes().len();

        server.mark_deleted("web");
        server.reconcile(&ctx, "web").await.expect("released");
        assert_eq!(
            fake.writes().len(),
            writes_before,
            "no AWS write: the instance stays out"
        );
        assert_eq!(fake.state(ARN, IDS[0]), TargetState::Unused);
        let calls = server.take_calls();
        let [Call::Event(event), Call::RemoveFinalizer { .. }] = &calls[..] else {
            panic!("a warning, then the finalizer removal: {calls:?}")
        };
        assert_eq!(
            (event.type_.as_str(), event.reason.as_str(), event.action.as_str()),
            ("Warning", "LeftOutOfTargetGroup", IDS[0])
        );
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

/// A plan whose `maxFailures` is a string: the kind of object an old CRD without a schema
/// for that field would have let through.
fn malformed_plan() -> serde_json::Value {
    with_finalizer(plan_json("broken", &IDS, json!({ "maxFailures": "three" })))
}

#[tokio::test]
async fn reconcile_malformed_plan_is_reported_and_others_still_run() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        server.insert(malformed_plan());
        server.insert(plan_json("good", &IDS, json!({})));

        let object = server.plan("broken");
        assert!(object.0.is_err(), "the guard catches the bad field");
        let action = server.reconcile(&ctx, "broken").await.expect("reported, not failed");
        assert_eq!(action, Action::await_change(), "not retried until it changes");
        let calls = server.take_calls();
        let [Call::Event(event)] = &calls[..] else {
            panic!("one warning event: {calls:?}")
        };
        assert_eq!(
            (event.type_.as_str(), event.reason.as_str()),
            ("Warning", "InvalidObject")
        );
        assert_eq!(event.plan, "broken");
        assert!(
            event.note.contains("\"three\"") && event.note.contains("u32"),
            "the deserialization error: {}",
            event.note
        );
        assert_eq!(fake.call_count(), 0);

        add_finalizer(&mut server, &ctx, &fake, "good").await;
        let action = server.reconcile(&ctx, "good").await.expect("the good plan runs");
        assert_eq!(action, Action::requeue(POLL));
        assert!(fake.writes().iter().any(|w| w.operation == "DeregisterTargets"));
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn reconcile_malformed_plan_does_not_stop_the_controller_stream() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let fake = fake_aws();
        let (mut server, client) = ApiServer::start();
        let ctx = context(client.clone(), &fake);
        server.insert(malformed_plan());
        server.insert(plan_json("good", &IDS, json!({})));

        let plans: Api<DeserializeGuard<MaintenancePlan>> = Api::all(client);
        let mut results =
            Box::pin(Controller::new(plans, watcher::Config::default()).run(reconcile, error_policy, ctx.clone()));
        let mut reconciled = Vec::new();
        while reconciled.len() < 2 {
            let (plan, action) = results
                .next()
                .await
                .expect("the controller keeps running")
                .expect("both plans reconcile without error");
            assert_eq!(action, Action::await_change());
            reconciled.push(plan.name);
        }
        drop(results);
        server.check_alive().await;
        reconciled.sort();
        assert_eq!(reconciled, ["broken", "good"]);

        let calls = server.take_calls();
        assert_eq!(calls.first(), Some(&Call::List));
        assert!(
            calls
                .iter()
                .any(|c| matches!(c, Call::Event(e) if e.plan == "broken" && e.reason == "InvalidObject")),
            "{calls:?}"
        );
        assert!(
            calls
                .iter()
                .any(|c| matches!(c, Call::AddFinalizer { plan, .. } if plan == "good")),
            "{calls:?}"
        );
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn reconcile_invalid_spec_fails_the_plan_without_calling_aws() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        // Well-formed, but the region contradicts the target group's: AWS cannot be asked.
        server.insert(with_finalizer(plan_json(
            "wrong",
            &IDS,
            json!({ "region": "us-east-1" }),
        )));

        let action = server.reconcile(&ctx, "wrong").await.expect("recorded, not an error");
        assert_eq!(action, Action::await_change());
        let calls = server.take_calls();
        let [Call::ApplyStatus { status, .. }, Call::Event(event)] = &calls[..] else {
            panic!("a status write, then a warning: {calls:?}")
        };
        assert_eq!(status.phase, PlanPhase::Failed);
        assert!(
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Accepted" && c.status == "False" && c.message.contains("region"))
        );
        assert_eq!((event.type_.as_str(), event.reason.as_str()), ("Warning", "PlanFailed"));
        assert_eq!(fake.call_count(), 0);

        // Seen again, nothing changes and nothing is written.
        server.reconcile(&ctx, "wrong").await.expect("idle");
        assert_eq!(server.take_calls(), []);
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

/// A plan "web" whose first round started its first instance, and the plan as it was read
/// before that round (what a lagging watch still serves).
async fn first_instance_started() -> (FakeAws, ApiServer, Arc<Context>, Arc<DeserializeGuard<MaintenancePlan>>) {
    let (fake, mut server, ctx) = scenario();
    server.insert(plan_json("web", &IDS, json!({})));
    add_finalizer(&mut server, &ctx, &fake, "web").await;
    let before = server.plan("web");
    server.reconcile(&ctx, "web").await.expect("first instance starts");
    (fake, server, ctx, before)
}

#[tokio::test]
async fn a_late_version_of_an_earlier_write_does_not_hide_the_last_one() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx, before) = first_instance_started().await;
        let first_write = server.plan("web");
        // The watch lags: the next round is on `before` and writes the drain clock.
        fake.set_now(fake.now() + Duration::from_secs(1));
        server
            .reconcile_object(&ctx, before)
            .await
            .expect("round on a stale object");
        server.take_calls();

        // Now the watch delivers the first write, not yet the second: the second is newer,
        // so this round decides from it and has nothing to write.
        fake.set_now(fake.now() + Duration::from_secs(1));
        let action = server
            .reconcile_object(&ctx, first_write)
            .await
            .expect("round on the first write");
        assert_eq!(action, Action::requeue(POLL), "still draining");
        assert_eq!(server.take_calls(), [], "the drain clock is not started again");
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_round_decided_from_an_outdated_plan_writes_nothing_and_calls_no_aws_write() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx, before) = first_instance_started().await;
        let writes = fake.writes().len();
        let status = server.status("web").expect("status recorded");
        assert_eq!(status.instances[0].phase, InstancePhase::Draining);

        // A round that does not know of that write (another controller's cache, say) decides
        // from the plan as it was: its instance is draining, so it would fail it as not
        // healthy. The write is conditional on the outdated version and refused.
        let unaware = context(ctx.client.clone(), &fake);
        fake.set_now(fake.now() + Duration::from_secs(1));
        let error = server
            .reconcile_object(&unaware, before)
            .await
            .expect_err("a round on an outdated plan");
        assert_eq!(error.kind(), ErrorKind::Conflict, "{error}");
        assert_eq!(server.status("web"), Some(status), "the newer status stays");
        assert_eq!(fake.writes().len(), writes, "no AWS write");
        drop(unaware);
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn reconcile_on_a_stale_object_decides_from_the_status_it_wrote() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx, before) = first_instance_started().await;
        assert!(fake.writes().iter().any(|w| w.operation == "DeregisterTargets"));
        server.take_calls();

        // The watch has not delivered the write yet: the cache still serves `before`, with
        // no status. Deciding from that would run the preflight again on an instance that
        // is draining, and fail it.
        fake.set_now(fake.now() + Duration::from_secs(1));
        let action = server
            .reconcile_object(&ctx, before.clone())
            .await
            .expect("round on a stale object");
        assert_eq!(action, Action::requeue(POLL), "still draining");
        let calls = server.take_calls();
        assert!(
            matches!(calls.as_slice(), [Call::ApplyStatus { .. }]),
            "only the start of the drain clock is written: {calls:?}"
        );
        let status = server.status("web").expect("status recorded");
        assert_eq!(status.instances[0].phase, InstancePhase::Draining);
        assert_eq!(status.instances[0].draining_since, Some(fake.now()));

        fake.set_now(fake.now() + Duration::from_secs(1));
        let action = server
            .reconcile_object(&ctx, before)
            .await
            .expect("another round on the stale object");
        assert_eq!(action, Action::requeue(POLL), "still draining");
        assert_eq!(server.take_calls(), [], "nothing new to write");
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}
