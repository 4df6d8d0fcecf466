//! The controls a user has over a plan, through the reconcile against a mock apiserver
//! (tower-test) and the in-memory AWS on a clock the test moves: preflight gates that wait
//! and then fail an instance untouched (or let it go once they open), a maintenance window
//! that closes mid-plan and a next one that finishes it, suspend and resume, a dry run that
//! changes nothing, and retries of a failed maintenance command.

mod reconcile_support;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;
use pitstop::api::{InstancePhase, MaintenancePlanStatus, PlanPhase};
use pitstop::aws::TargetState;
use pitstop::aws::fake::FakeAws;
use pitstop::k8s::target_group_lock::lease_name;
use reconcile_support::*;
use serde_json::{Value, json};

fn at(time: &str) -> Timestamp {
    time.parse().expect("valid timestamp")
}

fn status_of(server: &ApiServer, name: &str) -> MaintenancePlanStatus {
    server.status(name).expect("status recorded")
}

fn phase_of(server: &ApiServer, name: &str, instance: &str) -> Option<InstancePhase> {
    server
        .status(name)?
        .instances
        .iter()
        .find(|i| i.instance_id == instance)
        .map(|i| i.phase)
}

/// The AWS writes made for one instance, by operation.
fn writes_for(fake: &FakeAws, instance: &str) -> Vec<&'static str> {
    fake.writes()
        .into_iter()
        .filter(|w| w.instance_id == instance)
        .map(|w| w.operation)
        .collect()
}

/// The comments (tags) of the commands sent to one instance, in order.
fn command_tags(fake: &FakeAws, instance: &str) -> Vec<String> {
    fake.writes()
        .into_iter()
        .filter(|w| w.operation == "SendCommand" && w.instance_id == instance)
        .filter_map(|w| w.comment)
        .collect()
}

/// Replaces the stored plan's spec fields given, and bumps `metadata.generation`, as an
/// edit through the apiserver does; the status stays as the controller last wrote it.
fn edit_spec(server: &ApiServer, name: &str, change: Value) {
    let mut object = server.raw(name).expect("the plan exists");
    if let (Some(spec), Some(change)) = (object["spec"].as_object_mut(), change.as_object()) {
        for (key, value) in change {
            spec.insert(key.clone(), value.clone());
        }
    }
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
    object["metadata"]["generation"] = json!(generation + 1);
    server.insert(object);
}

/// The writes of one instance taken out, maintained once and put back.
fn full_cycle() -> Vec<&'static str> {
    vec!["DeregisterTargets", "SendCommand", "RegisterTargets"]
}

/// A closed gate (another target unhealthy, `never_healthy`) holds the first instance; after
/// `gateTimeoutSeconds` of fake time it fails with the gate's reason, never deregistered,
/// and the plan stops with the second instance untouched.
async fn gate_times_out(preflight: Value, reason: &str, because: &str) {
    let fake = fake_aws();
    fake.set_now(at("2026-01-01T10:00:00Z"));
    fake.behave(|b| b.never_healthy = vec![IDS[2].to_owned()]);
    let (mut server, client) = ApiServer::start();
    let ctx = context(client, &fake);
    server.insert(plan_json("web", &IDS[..2], json!({ "preflight": preflight })));
    add_finalizer(&mut server, &ctx, &fake, "web").await;
    let t0 = fake.now();

    let action = server.reconcile(&ctx, "web").await.expect("the plan waits at the gate");
    assert_eq!(action, Action::requeue(POLL), "it looks again at the next poll");
    let waiting = status_of(&server, "web");
    assert_eq!(waiting.phase, PlanPhase::Pending, "{waiting:?}");
    let first = &waiting.instances[0];
    assert_eq!(first.phase, InstancePhase::Pending);
    assert_eq!(first.waiting_since, Some(t0));
    let expected = format!("waiting ({reason}): {because}");
    assert_eq!(first.message.as_deref(), Some(expected.as_str()));
    assert_eq!(
        waiting.message.as_deref(),
        Some(format!("waiting to start: {}: {expected}", IDS[0]).as_str())
    );
    assert_eq!(waiting.current_instance.as_deref(), Some(IDS[0]));
    assert_eq!(fake.writes(), [], "nothing written to AWS while the gate is closed");
    assert_eq!(
        server.lease_holder(&lease_name(ARN)).as_deref(),
        Some("default/web"),
        "a plan waiting at a gate keeps the target group"
    );

    // The gate stays closed: polls until gateTimeoutSeconds of fake time have passed.
    let (_, action) = rounds(&mut server, &ctx, &fake, "web", |_| false).await;
    assert_eq!(action, Action::await_change(), "the plan ends");
    let last = status_of(&server, "web");
    let failed = &last.instances[0];
    assert_eq!(failed.phase, InstancePhase::Failed, "{last:?}");
    assert_eq!(failed.failure_reason.as_deref(), Some(reason));
    assert_eq!(
        failed.message.as_deref(),
        Some(format!("gate still closed after 60s: {because}").as_str())
    );
    assert!(!failed.out_of_rotation);
    assert_eq!(failed.attempt, 0, "no try was made");
    let failed_at = failed.phase_since.expect("phase_since set");
    let waited = failed_at.duration_since(t0);
    assert!(
        waited >= SignedDuration::from_secs(60)
            && waited < SignedDuration::from_secs(60) + SignedDuration::try_from(POLL).expect("small"),
        "failed once gateTimeoutSeconds had passed on the fake clock, not before: {waited}"
    );
    assert_eq!(
        last.instances[1].phase,
        InstancePhase::Pending,
        "the next one is untouched"
    );
    assert_eq!(last.phase, PlanPhase::Failed);
    assert!(
        last.conditions
            .iter()
            .any(|c| c.type_ == "Failed" && c.status == "True" && c.reason == reason),
        "{:?}",
        last.conditions
    );
    assert_eq!(fake.writes(), [], "never deregistered, nothing sent");
    assert_eq!(fake.state(ARN, IDS[0]), TargetState::Healthy);
    assert_eq!(server.lease_holder(&lease_name(ARN)).as_deref(), Some(""), "given back");
    server.stop(ctx).await;
}

#[tokio::test]
async fn an_unhealthy_target_group_holds_the_instance_then_fails_it_untouched_after_the_gate_timeout() {
    tokio::time::timeout(
        TEST_TIMEOUT,
        gate_times_out(
            json!({ "requireHealthyTargetGroup": true, "gateTimeoutSeconds": 60 }),
            "TargetGroupUnhealthy",
            &format!(
                "the target group is not all healthy ({} is unhealthy); requireHealthyTargetGroup is on",
                IDS[2]
            ),
        ),
    )
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn too_few_healthy_targets_hold_the_instance_then_fail_it_untouched_after_the_gate_timeout() {
    tokio::time::timeout(
        TEST_TIMEOUT,
        gate_times_out(
            json!({ "requireHealthyTargetGroup": false, "minHealthyTargets": 2, "gateTimeoutSeconds": 60 }),
            "TooFewHealthyTargets",
            &format!(
                "taking {} out would leave 1 healthy target(s); at least 2 must remain (preflight.minHealthyTargets)",
                IDS[0]
            ),
        ),
    )
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_gate_that_opens_before_its_timeout_lets_the_instance_go() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let fake = fake_aws();
        fake.behave(|b| b.never_healthy = vec![IDS[2].to_owned()]);
        let (mut server, client) = ApiServer::start();
        let ctx = context(client, &fake);
        let preflight = json!({ "requireHealthyTargetGroup": false, "minHealthyTargets": 2, "gateTimeoutSeconds": 60 });
        server.insert(plan_json("web", &IDS[..1], json!({ "preflight": preflight })));
        add_finalizer(&mut server, &ctx, &fake, "web").await;
        let t0 = fake.now();

        // 40 s of a closed gate: waiting, nothing written to AWS.
        let deadline = t0 + SignedDuration::from_secs(40);
        let (_, action) = rounds(&mut server, &ctx, &fake, "web", |_| fake.now() >= deadline).await;
        assert_eq!(action, Action::requeue(POLL));
        let waiting = status_of(&server, "web");
        assert_eq!(waiting.instances[0].phase, InstancePhase::Pending, "{waiting:?}");
        assert_eq!(waiting.instances[0].waiting_since, Some(t0));
        assert!(
            waiting.instances[0]
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with("waiting (TooFewHealthyTargets)")),
            "{waiting:?}"
        );
        assert_eq!(fake.writes(), []);

        // The third target recovers: the gate opens within its timeout.
        fake.behave(|b| b.never_healthy.clear());
        let opened = fake.now() + POLL;
        fake.set_now(opened);
        let (run, action) = rounds(&mut server, &ctx, &fake, "web", |_| false).await;
        assert_eq!(action, Action::await_change());

        let last = status_of(&server, "web");
        assert_eq!(last.phase, PlanPhase::Succeeded, "{last:?}");
        let instance = &last.instances[0];
        assert_eq!(instance.phase, InstancePhase::Registered);
        assert_eq!(instance.waiting_since, None, "the wait is over");
        assert_eq!(instance.failure_reason, None);
        use InstancePhase::*;
        assert_eq!(
            phases_of(&run.statuses(), IDS[0]),
            [Draining, Rebooting, Verifying, Registered]
        );
        assert_eq!(writes_for(&fake, IDS[0]), full_cycle());
        assert_eq!(
            fake.writes().first().map(|w| w.at),
            Some(opened),
            "deregistered in the first round after the gate opened"
        );
        assert_eq!(fake.state(ARN, IDS[0]), TargetState::Healthy);
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_window_that_closes_mid_plan_finishes_the_instance_out_and_the_next_window_finishes_the_plan() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let fake = fake_aws();
        // Daily at 22:00 UTC for 10 minutes.
        let schedule = json!({ "schedule": { "cron": "0 22 * * *", "timeZone": "UTC", "windowMinutes": 10 } });
        let window_start = at("2026-01-01T22:00:00Z");
        let window_end = at("2026-01-01T22:10:00Z");
        let next_window = at("2026-01-02T22:00:00Z");
        fake.set_now(window_start);
        let (mut server, client) = ApiServer::start();
        let ctx = context(client, &fake);
        server.insert(plan_json("web", &IDS, schedule));
        add_finalizer(&mut server, &ctx, &fake, "web").await;

        // Inside the window: the first instance is done, the second one goes out.
        let second_out = |server: &ApiServer| {
            server.status("web").is_some_and(|s| {
                s.instances[1].phase == InstancePhase::Rebooting && s.instances[1].maintenance_command_id.is_some()
            })
        };
        let (run, _) = rounds(&mut server, &ctx, &fake, "web", second_out).await;
        assert!(fake.now() < window_end, "all of that inside the window: {}", fake.now());
        let open = status_of(&server, "web");
        assert_eq!(open.phase, PlanPhase::Running);
        assert_eq!(open.instances[0].phase, InstancePhase::Registered);
        assert_eq!(open.window_start, Some(window_start));
        assert_eq!(open.window_end, Some(window_end));
        assert_eq!(open.next_window, Some(next_window));
        assert!(run.statuses().iter().all(|s| s.window_end == Some(window_end)));

        // The window closes while the second instance is out: it is finished and put back.
        fake.set_now(window_end + SignedDuration::from_secs(1));
        let (run, action) = rounds(&mut server, &ctx, &fake, "web", |_| false).await;
        let closed = status_of(&server, "web");
        assert_eq!(closed.instances[1].phase, InstancePhase::Registered, "{closed:?}");
        assert!(!closed.instances[1].out_of_rotation);
        assert_eq!(fake.state(ARN, IDS[1]), TargetState::Healthy, "serving again");
        assert_eq!(writes_for(&fake, IDS[1]), full_cycle());
        use InstancePhase::*;
        assert_eq!(
            phases_of(&run.statuses(), IDS[1]),
            [Verifying, Registered],
            "its command had succeeded: verified, registered again, healthy"
        );
        assert!(
            run.statuses()
                .iter()
                .all(|s| s.window_end.is_none() && s.next_window == Some(next_window)),
            "window closed in every status written after its end"
        );
        // ...and nothing else starts until the next window.
        assert_eq!(closed.phase, PlanPhase::Running);
        assert_eq!(closed.instances[2].phase, InstancePhase::Pending);
        assert_eq!(closed.current_instance, None);
        assert_eq!(closed.progress.as_deref(), Some("2/3"));
        assert_eq!(
            closed.message.as_deref(),
            Some(format!("2/3 instances done; waiting for the maintenance window at {next_window}").as_str())
        );
        let wait: Duration = fake
            .now()
            .duration_until(next_window)
            .try_into()
            .expect("the next window is ahead");
        assert_eq!(action, Action::requeue(wait), "comes back when the next window opens");
        assert_eq!(writes_for(&fake, IDS[2]), Vec::<&str>::new());
        assert_eq!(
            server.lease_holder(&lease_name(ARN)).as_deref(),
            Some(""),
            "group given back"
        );

        // Between windows, later rounds change nothing and read nothing.
        let writes_before = fake.writes().len();
        let calls_before = fake.call_count();
        for time in ["2026-01-02T03:00:00Z", "2026-01-02T21:59:59Z"] {
            fake.set_now(at(time));
            server.reconcile(&ctx, "web").await.expect("closed-window round");
            assert_eq!(phase_of(&server, "web", IDS[2]), Some(InstancePhase::Pending));
        }
        assert_eq!(fake.writes().len(), writes_before, "no AWS write between windows");
        assert_eq!(fake.call_count(), calls_before, "no AWS read either");
        server.take_calls();

        // The next window: the remaining instance runs and the plan succeeds.
        fake.set_now(next_window);
        let (run, action) = rounds(&mut server, &ctx, &fake, "web", |_| false).await;
        assert_eq!(action, Action::await_change());
        let done = status_of(&server, "web");
        assert_eq!(done.phase, PlanPhase::Succeeded, "{done:?}");
        assert_eq!(done.progress.as_deref(), Some("3/3"));
        assert_eq!(done.window_start, Some(next_window));
        assert!(done.instances.iter().all(|i| i.phase == InstancePhase::Registered));
        assert_eq!(
            phases_of(&run.statuses(), IDS[2]),
            [Draining, Rebooting, Verifying, Registered],
            "taken out in the first round of the window"
        );
        assert_eq!(
            fake.writes().iter().find(|w| w.instance_id == IDS[2]).map(|w| w.at),
            Some(next_window),
            "as soon as it opened"
        );
        for id in IDS {
            assert_eq!(writes_for(&fake, id), full_cycle(), "{id} maintained once");
        }
        assert!(
            fake.writes()
                .iter()
                .filter(|w| w.instance_id == IDS[2])
                .all(|w| w.at >= next_window),
            "the third instance only in the next window: {:?}",
            fake.writes()
        );
        assert!(
            fake.writes()
                .iter()
                .filter(|w| w.operation == "DeregisterTargets")
                .all(|w| w.at < window_end || w.at >= next_window),
            "nothing taken out while the window was closed: {:?}",
            fake.writes()
        );
        assert_eq!(fake.max_out_at_once(), 1);
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn suspend_mid_plan_finishes_the_instance_out_and_resume_goes_on_where_it_stopped() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        server.insert(plan_json("web", &IDS, json!({})));
        add_finalizer(&mut server, &ctx, &fake, "web").await;

        let second_out = |server: &ApiServer| {
            server.status("web").is_some_and(|s| {
                s.instances[1].phase == InstancePhase::Rebooting && s.instances[1].maintenance_command_id.is_some()
            })
        };
        rounds(&mut server, &ctx, &fake, "web", second_out).await;
        assert_eq!(phase_of(&server, "web", IDS[0]), Some(InstancePhase::Registered));

        edit_spec(&server, "web", json!({ "suspend": true }));
        let (run, action) = rounds(&mut server, &ctx, &fake, "web", |_| false).await;
        assert_eq!(action, Action::await_change(), "a suspended plan waits for a change");
        let statuses = run.statuses();
        use InstancePhase::*;
        assert_eq!(phases_of(&statuses, IDS[1]), [Rebooting, Verifying, Registered]);
        assert_eq!(
            plan_phases(&statuses),
            [PlanPhase::Running, PlanPhase::Suspended],
            "Running while the instance in flight is finished, Suspended after"
        );
        assert!(statuses.iter().all(|s| s.observed_generation == Some(2)));
        let suspended = status_of(&server, "web");
        assert_eq!(suspended.phase, PlanPhase::Suspended);
        assert_eq!(suspended.instances[1].phase, InstancePhase::Registered);
        assert!(!suspended.instances[1].out_of_rotation);
        assert_eq!(
            suspended.instances[2].phase,
            InstancePhase::Pending,
            "nothing else starts"
        );
        assert_eq!(suspended.current_instance, None);
        assert_eq!(
            suspended.message.as_deref(),
            Some("suspended after 2/3 instances; set spec.suspend to false to go on")
        );
        assert!(
            suspended
                .conditions
                .iter()
                .any(|c| c.type_ == "Progressing" && c.status == "False" && c.reason == "Suspended"),
            "{:?}",
            suspended.conditions
        );
        assert!(run.events().contains(&event("Normal", "PlanSuspended", "Plan")));
        assert_eq!(fake.state(ARN, IDS[1]), TargetState::Healthy);
        assert_eq!(writes_for(&fake, IDS[2]), Vec::<&str>::new());
        assert_eq!(
            server.lease_holder(&lease_name(ARN)).as_deref(),
            Some(""),
            "group given back"
        );

        // Seen again while suspended (a resync, time passing): nothing happens.
        let calls_before = fake.call_count();
        fake.set_now(fake.now() + SignedDuration::from_hours(1));
        let action = server.reconcile(&ctx, "web").await.expect("suspended round");
        assert_eq!(action, Action::await_change());
        assert_eq!(server.take_calls(), []);
        assert_eq!(fake.call_count(), calls_before, "no AWS call while suspended");

        edit_spec(&server, "web", json!({ "suspend": false }));
        let (run, action) = rounds(&mut server, &ctx, &fake, "web", |_| false).await;
        assert_eq!(action, Action::await_change());
        let statuses = run.statuses();
        assert_eq!(plan_phases(&statuses), [PlanPhase::Running, PlanPhase::Succeeded]);
        assert_eq!(
            phases_of(&statuses, IDS[2]),
            [Draining, Rebooting, Verifying, Registered],
            "the first round after the resume takes the third instance out"
        );
        let done = status_of(&server, "web");
        assert_eq!(done.phase, PlanPhase::Succeeded);
        assert_eq!(done.observed_generation, Some(3));
        assert!(done.instances.iter().all(|i| i.phase == InstancePhase::Registered));
        for id in IDS {
            assert_eq!(writes_for(&fake, id), full_cycle(), "{id} maintained exactly once");
            assert_eq!(command_tags(&fake, id), ["pitstop/uid-web/maintenance/1"]);
        }
        assert_eq!(fake.max_out_at_once(), 1);
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_dry_run_reports_per_instance_and_writes_nothing_to_aws() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        server.insert(plan_json("web", &IDS, json!({ "dryRun": true })));
        add_finalizer(&mut server, &ctx, &fake, "web").await;

        let (run, action) = rounds(&mut server, &ctx, &fake, "web", |_| false).await;
        assert_eq!(action, Action::await_change());
        let done = status_of(&server, "web");
        assert_eq!(done.phase, PlanPhase::Succeeded, "{done:?}");
        assert_eq!(
            done.message.as_deref(),
            Some("dry run: all 3 instances would be maintained; nothing was changed")
        );
        assert!(
            done.conditions
                .iter()
                .any(|c| c.type_ == "Complete" && c.status == "True" && c.reason == "DryRunDone"),
            "{:?}",
            done.conditions
        );
        for instance in &done.instances {
            assert_eq!(instance.phase, InstancePhase::Pending, "untouched: {instance:?}");
            assert!(!instance.out_of_rotation);
            assert_eq!(instance.attempt, 0);
            assert_eq!(
                instance.dry_run.as_deref(),
                Some(
                    "would deregister (port 8080), wait for the drain, run the graceful reboot \
                     (AWS-RunShellScript, exit 194), register again and wait for healthy; gates open"
                )
            );
        }
        assert!(
            run.statuses()
                .iter()
                .all(|s| s.instances.iter().all(|i| !i.out_of_rotation))
        );
        assert_eq!(fake.writes(), [], "no Deregister, Register, SendCommand or Cancel");
        for id in IDS {
            assert_eq!(fake.state(ARN, id), TargetState::Healthy);
        }
        assert!(
            !server
                .take_lease_calls()
                .iter()
                .any(|c| matches!(c, LeaseCall::Create { .. } | LeaseCall::Replace { .. })),
            "a dry run never takes the target group"
        );
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_dry_run_with_a_closed_gate_reports_the_block_and_still_writes_nothing() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let fake = fake_aws();
        fake.behave(|b| b.never_healthy = vec![IDS[2].to_owned()]);
        let (mut server, client) = ApiServer::start();
        let ctx = context(client, &fake);
        server.insert(plan_json("web", &IDS, json!({ "dryRun": true })));
        add_finalizer(&mut server, &ctx, &fake, "web").await;

        let (_, action) = rounds(&mut server, &ctx, &fake, "web", |_| false).await;
        assert_eq!(action, Action::await_change());
        let done = status_of(&server, "web");
        assert_eq!(done.phase, PlanPhase::Failed, "{done:?}");
        assert_eq!(
            done.message.as_deref(),
            Some("dry run: 3 of 3 instances would be blocked; nothing was changed")
        );
        let results: Vec<&str> = done
            .instances
            .iter()
            .map(|i| i.dry_run.as_deref().unwrap_or_default())
            .collect();
        assert!(results[0].starts_with("blocked (TargetGroupUnhealthy):"), "{results:?}");
        assert!(results[1].starts_with("blocked (TargetGroupUnhealthy):"), "{results:?}");
        assert_eq!(
            results[2],
            format!(
                "blocked (InstanceUnhealthy): {} is unhealthy in the target group, not healthy",
                IDS[2]
            )
        );
        assert!(done.instances.iter().all(|i| i.phase == InstancePhase::Pending));
        assert_eq!(fake.writes(), []);
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

/// A plan "web" of two instances with `maxAttempts`, driven until the first instance's
/// maintenance command is sent: that command will fail, any later one will succeed.
async fn first_command_fails(max_attempts: u32) -> (FakeAws, ApiServer, std::sync::Arc<pitstop::k8s::Context>) {
    let (fake, mut server, ctx) = scenario();
    fake.behave(|b| b.failing_commands = vec![IDS[0].to_owned()]);
    server.insert(plan_json("web", &IDS[..2], json!({ "maxAttempts": max_attempts })));
    add_finalizer(&mut server, &ctx, &fake, "web").await;
    let sent = |server: &ApiServer| {
        server
            .status("web")
            .is_some_and(|s| s.instances[0].maintenance_command_id.is_some())
    };
    rounds(&mut server, &ctx, &fake, "web", sent).await;
    fake.behave(|b| b.failing_commands.clear());
    (fake, server, ctx)
}

#[tokio::test]
async fn a_failed_maintenance_is_tried_again_with_a_new_tag_and_the_plan_succeeds() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = first_command_fails(2).await;

        // It fails: a second try is set 10 s out, with the instance still out.
        let (run, action) = rounds(&mut server, &ctx, &fake, "web", |_| false).await;
        let retrying = status_of(&server, "web");
        let first = &retrying.instances[0];
        assert_eq!(first.phase, InstancePhase::Rebooting, "{retrying:?}");
        assert_eq!(first.attempt, 2);
        assert_eq!(first.first_attempt, 1);
        assert_eq!(first.maintenance_command_id, None, "the next try sends a new command");
        assert!(first.out_of_rotation, "still out between tries");
        let next_try = first.next_attempt_at.expect("a next try is set");
        assert!(
            first
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with(&format!("try 2 of 2 at {next_try} after MaintenanceFailed"))),
            "{first:?}"
        );
        assert!(run.events().contains(&event("Warning", "Retrying", IDS[0])));
        let wait: Duration = fake.now().duration_until(next_try).try_into().expect("ahead");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(10), "{wait:?}");
        assert_eq!(action, Action::requeue(wait), "comes back when the backoff is over");
        assert_eq!(fake.state(ARN, IDS[0]), TargetState::Unused);

        // Not before the backoff is over.
        let sends = command_tags(&fake, IDS[0]).len();
        server.reconcile(&ctx, "web").await.expect("round during the backoff");
        assert_eq!(
            command_tags(&fake, IDS[0]).len(),
            sends,
            "no command during the backoff"
        );

        fake.set_now(next_try);
        let (run, action) = rounds(&mut server, &ctx, &fake, "web", |_| false).await;
        assert_eq!(action, Action::await_change());
        let done = status_of(&server, "web");
        assert_eq!(done.phase, PlanPhase::Succeeded, "{done:?}");
        assert_eq!(done.instances[0].phase, InstancePhase::Registered);
        assert_eq!(done.instances[0].attempt, 2);
        assert_eq!(done.instances[0].failure_reason, None);
        assert_eq!(done.instances[1].phase, InstancePhase::Registered);
        assert_eq!(done.instances[1].attempt, 1);
        assert_eq!(
            command_tags(&fake, IDS[0]),
            ["pitstop/uid-web/maintenance/1", "pitstop/uid-web/maintenance/2"]
        );
        assert_eq!(
            writes_for(&fake, IDS[0]),
            ["DeregisterTargets", "SendCommand", "SendCommand", "RegisterTargets"],
            "out once, two tries, back once"
        );
        let second_send = fake
            .writes()
            .into_iter()
            .filter(|w| w.operation == "SendCommand" && w.instance_id == IDS[0])
            .nth(1)
            .expect("two sends");
        assert!(second_send.at >= next_try, "sent after the backoff");
        assert_eq!(writes_for(&fake, IDS[1]), full_cycle());
        assert!(!run.events().iter().any(|e| e.1 == "PlanFailed"));
        assert_eq!(fake.max_out_at_once(), 1);
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn with_one_attempt_a_failed_maintenance_fails_the_instance_and_registers_it_again() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = first_command_fails(1).await;
        let (run, action) = rounds(&mut server, &ctx, &fake, "web", |_| false).await;
        assert_eq!(action, Action::await_change());

        let done = status_of(&server, "web");
        assert_eq!(done.phase, PlanPhase::Failed, "{done:?}");
        let first = &done.instances[0];
        assert_eq!(first.phase, InstancePhase::Failed);
        assert_eq!(first.failure_reason.as_deref(), Some("MaintenanceFailed"));
        assert_eq!(first.attempt, 1, "no second try");
        assert_eq!(first.next_attempt_at, None);
        assert!(!first.out_of_rotation, "registered again");
        assert_eq!(done.instances[1].phase, InstancePhase::Pending);
        assert_eq!(command_tags(&fake, IDS[0]), ["pitstop/uid-web/maintenance/1"]);
        assert_eq!(writes_for(&fake, IDS[0]), full_cycle());
        assert_eq!(writes_for(&fake, IDS[1]), Vec::<&str>::new());
        assert!(fake.state(ARN, IDS[0]).is_registered());
        assert!(!run.events().iter().any(|e| e.1 == "Retrying"));
        assert!(run.events().contains(&event("Warning", "MaintenanceFailed", IDS[0])));
        assert!(run.events().contains(&event("Normal", "ReturnedToTargetGroup", IDS[0])));
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

// A gate's timeout counts only while the plan is trying to start the instance: time spent
// suspended, or between windows, does not count (and neither does waiting for another
// plan's turn), so the gate gets its whole timeout again on resume or in the next window.

#[tokio::test]
async fn time_suspended_does_not_count_against_the_gate_timeout() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let fake = fake_aws();
        fake.behave(|b| b.never_healthy = vec![IDS[2].to_owned()]);
        let (mut server, client) = ApiServer::start();
        let ctx = context(client, &fake);
        let preflight = json!({ "gateTimeoutSeconds": 60 });
        server.insert(plan_json("web", &IDS[..1], json!({ "preflight": preflight })));
        add_finalizer(&mut server, &ctx, &fake, "web").await;
        let t0 = fake.now();
        server.reconcile(&ctx, "web").await.expect("waits at the gate");
        assert_eq!(status_of(&server, "web").instances[0].waiting_since, Some(t0));

        // Suspended 10 s into the wait, for an hour.
        fake.set_now(t0 + SignedDuration::from_secs(10));
        edit_spec(&server, "web", json!({ "suspend": true }));
        let action = server.reconcile(&ctx, "web").await.expect("suspended");
        assert_eq!(action, Action::await_change());
        assert_eq!(status_of(&server, "web").phase, PlanPhase::Suspended);

        let resumed = t0 + SignedDuration::from_hours(1);
        fake.set_now(resumed);
        edit_spec(&server, "web", json!({ "suspend": false }));
        server.reconcile(&ctx, "web").await.expect("resumed");
        let status = status_of(&server, "web");
        let first = &status.instances[0];
        assert_eq!(
            first.phase,
            InstancePhase::Pending,
            "the gate was waited for 10 s, not 60 s: {first:?}"
        );
        assert!(
            first
                .waiting_since
                .is_some_and(|since| since >= resumed - SignedDuration::from_secs(10))
        );

        server.take_calls();
        let (_, action) = rounds(&mut server, &ctx, &fake, "web", |_| false).await;
        assert_eq!(action, Action::await_change());
        let first = &status_of(&server, "web").instances[0];
        assert_eq!(first.failure_reason.as_deref(), Some("TargetGroupUnhealthy"));
        assert!(
            first
                .phase_since
                .is_some_and(|t| t >= resumed + SignedDuration::from_secs(50))
        );
        assert_eq!(fake.writes(), []);
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn time_between_windows_does_not_count_against_the_gate_timeout() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let fake = fake_aws();
        fake.behave(|b| b.never_healthy = vec![IDS[2].to_owned()]);
        let (mut server, client) = ApiServer::start();
        let ctx = context(client, &fake);
        let spec = json!({
            "schedule": { "cron": "0 22 * * *", "timeZone": "UTC", "windowMinutes": 10 },
            "preflight": { "gateTimeoutSeconds": 120 },
        });
        server.insert(plan_json("web", &IDS[..1], spec));
        add_finalizer(&mut server, &ctx, &fake, "web").await;

        // The gate closes the last minute of the window; the window ends 60 s into the wait.
        let window_end = at("2026-01-01T22:10:00Z");
        fake.set_now(at("2026-01-01T22:09:00Z"));
        let (_, action) = rounds(&mut server, &ctx, &fake, "web", |_| false).await;
        let closed = status_of(&server, "web");
        assert!(fake.now() >= window_end);
        assert_eq!(closed.window_end, None, "{closed:?}");
        assert_eq!(closed.instances[0].phase, InstancePhase::Pending);
        let next_window = at("2026-01-02T22:00:00Z");
        let wait: Duration = fake.now().duration_until(next_window).try_into().expect("ahead");
        assert_eq!(action, Action::requeue(wait));

        fake.set_now(next_window);
        server.reconcile(&ctx, "web").await.expect("the next window");
        let first = &status_of(&server, "web").instances[0];
        assert_eq!(
            first.phase,
            InstancePhase::Pending,
            "60 s of the 120 s were waited in the last window: {first:?}"
        );
        assert_eq!(fake.writes(), []);
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}
