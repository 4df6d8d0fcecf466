//! One instance out of a target group at a time, across plans: the reconcile against a mock
//! apiserver (tower-test) that stores `coordination.k8s.io/v1` Leases with the apiserver's
//! optimistic concurrency, and the in-memory AWS.
//!
//! Two plans on one group interleave instance by instance and never have two out; a lease
//! left by a deleted or finished plan is taken over at once, an expired one of a plan with
//! nothing out too, but never the lease of a plan with an instance out; the lease outlives a
//! controller restart; a plan waiting at a gate keeps the group, and so does a plan whose
//! failed instance is registered again but not yet passing health checks; a deleted plan
//! gives it back. Turns are fair: the plan that gives the group back does not take it again
//! while another plan waits (its instances and the waiter's alternate, a,b,a,b, even when
//! it asks again long before the waiter's next poll), the waiter is the plan the lease
//! watch wakes, and waiters that are gone or stopped asking do not block.

mod reconcile_support;

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::controller::Action;
use pitstop::api::{InstancePhase, MaintenancePlanStatus, PlanPhase};
use pitstop::aws::TargetState;
use pitstop::aws::fake::FakeAws;
use pitstop::k8s::Context;
use pitstop::k8s::policy::NOW_DELAY;
use pitstop::k8s::target_group_lock::{TARGET_GROUP_LEASE, lease_name, next_waiter};
use pitstop::machine::{CONDITION_PROGRESSING, WAITING_FOR_TURN};
use reconcile_support::*;
use serde_json::{Value, json};

fn lease() -> String {
    lease_name(ARN)
}

/// A Lease on the test target group as another controller (or an older run) left it.
fn foreign_lease(holder: &str, holder_uid: &str, renewed: Timestamp) -> Value {
    let time = renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": lease(),
            "namespace": NAMESPACE,
            "annotations": { "pitstop.dev/plan-uid": holder_uid },
        },
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": TARGET_GROUP_LEASE.as_secs(),
            "acquireTime": time,
            "renewTime": time,
            "leaseTransitions": 0,
        },
    })
}

fn deregistered(fake: &FakeAws) -> Vec<String> {
    fake.writes()
        .into_iter()
        .filter(|w| w.operation == "DeregisterTargets")
        .map(|w| w.instance_id)
        .collect()
}

fn out_of_rotation(status: &MaintenancePlanStatus) -> bool {
    status.instances.iter().any(|i| i.out_of_rotation)
}

fn events_of(calls: &[Call], reason: &str) -> Vec<EventCall> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Event(e) if e.reason == reason => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn finished(server: &ApiServer, name: &str) -> bool {
    server.status(name).is_some_and(|s| s.phase.is_finished())
}

/// Reconciles the plans in turn, one round each per tick of the clock, until all are
/// finished; after every round, checks that the group never has two instances out and that
/// a plan with an instance out holds the group's lease. Returns every call made.
async fn round_robin(server: &mut ApiServer, ctx: &Arc<Context>, fake: &FakeAws, names: &[&str]) -> Vec<Call> {
    let mut calls = Vec::new();
    for _ in 0..400 {
        for name in names {
            if finished(server, name) {
                continue;
            }
            server.reconcile(ctx, name).await.expect("the round succeeds");
            calls.extend(server.take_calls());
            let out = IDS
                .iter()
                .filter(|id| fake.state(ARN, id) != TargetState::Healthy)
                .count();
            assert!(out <= 1, "{out} instances of the group out at once");
            for other in names {
                if server.status(other).as_ref().is_some_and(out_of_rotation) {
                    assert_eq!(
                        server.lease_holder(&lease()).as_deref(),
                        Some(format!("{NAMESPACE}/{other}").as_str()),
                        "a plan with an instance out holds the group"
                    );
                }
            }
        }
        if names.iter().all(|name| finished(server, name)) {
            return calls;
        }
        fake.set_now(fake.now() + POLL);
    }
    panic!("the plans did not finish in 400 rounds");
}

#[tokio::test]
async fn two_plans_on_one_target_group_interleave_and_never_have_two_out() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        server.insert(with_finalizer(plan_json("first", &IDS[..2], json!({}))));
        server.insert(with_finalizer(plan_json("second", &IDS[2..], json!({}))));

        server.reconcile(&ctx, "first").await.expect("the first plan starts");
        assert_eq!(deregistered(&fake), [IDS[0]]);
        assert_eq!(server.lease_holder(&lease()).as_deref(), Some("default/first"));
        server.take_calls();

        // The second plan waits, and says so in its status and its Progressing condition.
        let action = server.reconcile(&ctx, "second").await.expect("the second plan waits");
        assert_eq!(action, Action::requeue(POLL));
        let calls = server.take_calls();
        assert_eq!(
            calls
                .iter()
                .filter(|c| matches!(c, Call::GetPlan(p) if p == "first"))
                .count(),
            1,
            "the holder is looked up: {calls:?}"
        );
        let waiting = server.status("second").expect("status written");
        assert_eq!(waiting.phase, PlanPhase::Pending);
        let expected = format!("{WAITING_FOR_TURN} default/first");
        assert_eq!(waiting.instances[0].message.as_deref(), Some(expected.as_str()));
        assert_eq!(waiting.instances[0].waiting_since, None, "no gate timer runs meanwhile");
        let progressing = waiting
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_PROGRESSING)
            .expect("a Progressing condition");
        assert_eq!(progressing.reason, "WaitingForTargetGroup");
        assert!(progressing.message.contains(&expected), "{}", progressing.message);
        assert_eq!(events_of(&calls, "WaitingForTargetGroup").len(), 1);
        assert_eq!(deregistered(&fake), [IDS[0]], "nothing of the second plan went out");

        let rest = round_robin(&mut server, &ctx, &fake, &["first", "second"]).await;
        assert_eq!(server.status("first").map(|s| s.phase), Some(PlanPhase::Succeeded));
        assert_eq!(server.status("second").map(|s| s.phase), Some(PlanPhase::Succeeded));
        // Turns are per instance: the second plan's instance went between the first's two.
        assert_eq!(deregistered(&fake), [IDS[0], IDS[2], IDS[1]]);
        assert_eq!(fake.max_out_at_once(), 1);
        assert_eq!(
            events_of(&rest, "WaitingForTargetGroup")
                .iter()
                .map(|e| e.plan.as_str())
                .collect::<Vec<_>>(),
            ["first"],
            "the first plan waited for the second's instance, once; the second's wait was told already"
        );
        assert_eq!(
            server.lease_holder(&lease()).as_deref(),
            Some(""),
            "given back after the last instance"
        );
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

/// Plans on one group, reconciled once per tick, read the group's health at most once per tick
/// between them, changes pitstop makes to the group included (a plan sees its own
/// DeregisterTargets or RegisterTargets in the shared view without a read). Plans waiting for the group's turn read nothing;
/// those that read in the same tick are the one whose turn it is and those that need no turn:
/// here three dry runs of the whole group, and a fourth plan maintaining one instance.
#[tokio::test]
async fn plans_on_one_group_share_one_health_read_per_tick() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        let rehearsals = ["rehearsal-1", "rehearsal-2", "rehearsal-3"];
        for name in rehearsals {
            server.insert(with_finalizer(plan_json(name, &IDS, json!({ "dryRun": true }))));
        }
        server.insert(with_finalizer(plan_json("real", &IDS[..1], json!({}))));
        let names = [rehearsals.as_slice(), &["real"]].concat();
        let mut ticks = 0;
        let mut most_reads = 0;
        let mut reads_total = 0;
        while !names.iter().all(|name| finished(&server, name)) {
            assert!(ticks < 400, "the plans did not finish in 400 ticks");
            let reads_before = fake.calls_of("DescribeTargetHealth");
            let writes_before = fake.writes().iter().filter(|w| w.target_group_arn.is_some()).count();
            for name in &names {
                if !finished(&server, name) {
                    server.reconcile(&ctx, name).await.expect("the round succeeds");
                }
            }
            server.take_calls();
            let reads = fake.calls_of("DescribeTargetHealth") - reads_before;
            let writes = fake.writes().iter().filter(|w| w.target_group_arn.is_some()).count() - writes_before;
            // pitstop's own changes are written into the shared view: they cost no read.
            assert!(
                reads <= 1,
                "tick {ticks}: {reads} DescribeTargetHealth for one group with {writes} changes to it"
            );
            most_reads = most_reads.max(reads);
            reads_total += reads;
            fake.set_now(fake.now() + POLL);
            ticks += 1;
        }
        println!(
            "{} plans, {ticks} ticks: {reads_total} DescribeTargetHealth, at most {most_reads} in one tick",
            names.len()
        );
        assert!(
            names
                .iter()
                .all(|name| server.status(name).is_some_and(|s| s.phase.is_finished()))
        );
        assert_eq!(server.status("real").map(|s| s.phase), Some(PlanPhase::Succeeded));
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

/// A failed instance registered again is `initial` (no traffic) until its health checks
/// pass; its plan keeps the group until then, so the other plan's instance does not go out
/// while it is not serving, even when that plan's gates would let it (here they are off).
#[tokio::test]
async fn a_failed_instance_keeps_the_group_until_its_health_checks_decide() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        fake.behave(|b| b.failing_commands = vec![IDS[0].to_owned()]);
        let no_gates = json!({ "preflight": { "requireHealthyTargetGroup": false, "minHealthyTargets": 0 } });
        server.insert(with_finalizer(plan_json("first", &IDS[..2], json!({}))));
        server.insert(with_finalizer(plan_json("second", &IDS[2..], no_gates)));

        round_robin(&mut server, &ctx, &fake, &["first", "second"]).await;
        let first = server.status("first").expect("status");
        assert_eq!(first.phase, PlanPhase::Failed);
        assert_eq!(first.instances[0].failure_reason.as_deref(), Some("MaintenanceFailed"));
        assert_eq!(first.instances[1].phase, InstancePhase::Pending, "untouched");
        assert_eq!(server.status("second").map(|s| s.phase), Some(PlanPhase::Succeeded));
        assert_eq!(deregistered(&fake), [IDS[0], IDS[2]]);
        assert_eq!(fake.max_out_at_once(), 1);
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_lease_left_by_a_deleted_plan_is_taken_over() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        // Fresh, but its plan is gone (deleted with its finalizer removed by hand).
        server.insert_lease(foreign_lease("default/gone", "uid-gone", fake.now()));
        server.insert(with_finalizer(plan_json("web", &IDS[..1], json!({}))));

        server.reconcile(&ctx, "web").await.expect("the round succeeds");
        let calls = server.take_calls();
        let takeovers = events_of(&calls, "TookOverTargetGroup");
        assert_eq!(takeovers.len(), 1, "{calls:?}");
        assert_eq!(takeovers[0].type_, "Warning");
        assert!(
            takeovers[0].note.contains("default/gone") && takeovers[0].note.contains("was deleted"),
            "{}",
            takeovers[0].note
        );
        assert_eq!(deregistered(&fake), [IDS[0]]);
        let stored = server.lease(&lease()).expect("the lease");
        assert_eq!(stored["spec"]["holderIdentity"], "default/web");
        assert_eq!(stored["spec"]["leaseTransitions"], 1);
        assert_eq!(stored["metadata"]["annotations"]["pitstop.dev/plan-uid"], "uid-web");
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_lease_naming_a_recreated_plan_counts_as_deleted() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        // "old" exists, but it is another object than the one that took the lease.
        server.insert(with_finalizer(plan_json("old", &IDS[1..2], json!({}))));
        server.insert_lease(foreign_lease("default/old", "uid-of-an-earlier-old", fake.now()));
        server.insert(with_finalizer(plan_json("web", &IDS[..1], json!({}))));

        server.reconcile(&ctx, "web").await.expect("the round succeeds");
        let note = &events_of(&server.take_calls(), "TookOverTargetGroup")[0].note;
        assert!(note.contains("was deleted"), "{note}");
        assert_eq!(deregistered(&fake), [IDS[0]]);
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_lease_left_by_a_finished_plan_is_taken_over() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        let mut done = with_finalizer(plan_json("done", &IDS[1..2], json!({})));
        done["status"] = json!({ "phase": "Succeeded", "instances": [
            { "instanceId": IDS[1], "phase": "Registered", "attempt": 1 }
        ] });
        server.insert(done);
        server.insert_lease(foreign_lease("default/done", "uid-done", fake.now()));
        server.insert(with_finalizer(plan_json("web", &IDS[..1], json!({}))));

        server.reconcile(&ctx, "web").await.expect("the round succeeds");
        let note = &events_of(&server.take_calls(), "TookOverTargetGroup")[0].note;
        assert!(note.contains("default/done") && note.contains("has finished"), "{note}");
        assert_eq!(deregistered(&fake), [IDS[0]]);
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn an_expired_lease_of_a_plan_with_nothing_out_is_taken_over_a_fresh_one_is_not() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        // The holder exists and has nothing out (say its controller stopped right after
        // taking the lease): only the lease's age can free the group.
        server.insert(with_finalizer(plan_json("idle", &IDS[1..2], json!({}))));
        server.insert_lease(foreign_lease("default/idle", "uid-idle", fake.now()));
        server.insert(with_finalizer(plan_json("web", &IDS[..1], json!({}))));

        server.reconcile(&ctx, "web").await.expect("the round succeeds");
        assert_eq!(deregistered(&fake), Vec::<String>::new(), "a fresh lease blocks");
        assert_eq!(server.lease_holder(&lease()).as_deref(), Some("default/idle"));

        let lease_seconds = i64::try_from(TARGET_GROUP_LEASE.as_secs()).expect("small");
        fake.set_now(fake.now() + SignedDuration::from_secs(lease_seconds));
        server.reconcile(&ctx, "web").await.expect("the round succeeds");
        assert_eq!(
            deregistered(&fake),
            Vec::<String>::new(),
            "still held at the expiry instant"
        );

        fake.set_now(fake.now() + SignedDuration::from_secs(1));
        server.reconcile(&ctx, "web").await.expect("the round succeeds");
        let note = &events_of(&server.take_calls(), "TookOverTargetGroup")[0].note;
        assert!(note.contains("let its lease expire"), "{note}");
        assert_eq!(deregistered(&fake), [IDS[0]]);
        assert_eq!(server.lease_holder(&lease()).as_deref(), Some("default/web"));
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn the_lease_of_a_plan_with_an_instance_out_is_never_taken_over_even_expired() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        server.insert(with_finalizer(plan_json("first", &IDS[..1], json!({}))));
        server.insert(with_finalizer(plan_json("second", &IDS[1..2], json!({}))));
        server.reconcile(&ctx, "first").await.expect("the first plan starts");
        assert_eq!(deregistered(&fake), [IDS[0]]);

        // The controller was away for twice the lease's length; the first plan did not renew.
        fake.set_now(fake.now() + SignedDuration::try_from(TARGET_GROUP_LEASE * 2).expect("small"));
        server.take_calls();
        server.reconcile(&ctx, "second").await.expect("the second plan waits");
        assert_eq!(deregistered(&fake), [IDS[0]], "no second instance out");
        assert_eq!(server.lease_holder(&lease()).as_deref(), Some("default/first"));
        assert!(
            events_of(&server.take_calls(), "TookOverTargetGroup").is_empty(),
            "no takeover"
        );

        // The holder's next round renews its lease and goes on.
        server.take_lease_calls();
        server.reconcile(&ctx, "first").await.expect("the first plan goes on");
        assert!(
            server
                .take_lease_calls()
                .iter()
                .any(|c| matches!(c, LeaseCall::Replace { holder, .. } if holder == "default/first")),
            "renewed"
        );
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn the_lease_outlives_a_controller_restart_and_is_given_back_after_it() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let fake = fake_aws();
        let (mut server, client) = ApiServer::start();
        let before = context(client.clone(), &fake);
        server.insert(with_finalizer(plan_json("first", &IDS[..1], json!({}))));
        server.insert(with_finalizer(plan_json("second", &IDS[1..2], json!({}))));
        server.reconcile(&before, "first").await.expect("the first plan starts");
        drop(before);

        // A new controller process: it remembers nothing; the apiserver has the lease.
        let ctx = context(client, &fake);
        server.reconcile(&ctx, "second").await.expect("the second plan waits");
        assert_eq!(deregistered(&fake), [IDS[0]]);
        let second = server.status("second").expect("status written");
        assert_eq!(
            second.instances[0].message.as_deref(),
            Some(format!("{WAITING_FOR_TURN} default/first").as_str())
        );

        server.take_calls();
        drive(&mut server, &ctx, &fake, "first", |_| false).await;
        assert_eq!(server.status("first").map(|s| s.phase), Some(PlanPhase::Succeeded));
        assert_eq!(
            server.lease_holder(&lease()).as_deref(),
            Some(""),
            "given back by the new process, which never took it"
        );
        server.reconcile(&ctx, "second").await.expect("its turn");
        assert_eq!(deregistered(&fake), [IDS[0], IDS[1]]);
        assert_eq!(fake.max_out_at_once(), 1);
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_plan_waiting_at_a_gate_keeps_the_group_and_the_other_waits_without_a_gate_timer() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        // Three targets, one unregistered behind pitstop's back: taking another out would
        // leave one healthy, fewer than the two the first plan asks for.
        fake.set_registered(ARN, IDS[2], false);
        let gate = json!({ "preflight": { "minHealthyTargets": 2, "gateTimeoutSeconds": 60 } });
        server.insert(with_finalizer(plan_json("first", &IDS[..1], gate)));
        server.insert(with_finalizer(plan_json("second", &IDS[1..2], json!({}))));

        server
            .reconcile(&ctx, "first")
            .await
            .expect("the first plan waits at its gate");
        let first = server.status("first").expect("status written");
        assert!(first.instances[0].waiting_since.is_some(), "{first:?}");
        assert_eq!(server.lease_holder(&lease()).as_deref(), Some("default/first"));

        fake.set_now(fake.now() + POLL);
        server
            .reconcile(&ctx, "second")
            .await
            .expect("the second plan waits its turn");
        let second = server.status("second").expect("status written");
        assert_eq!(second.instances[0].waiting_since, None);
        assert!(
            second.instances[0]
                .message
                .as_deref()
                .is_some_and(|m| m.starts_with(WAITING_FOR_TURN)),
            "{second:?}"
        );

        // The gate stays closed: the first plan fails its instance, untouched, and gives
        // the group back; then the second plan (no gate of its own) goes.
        for _ in 0..20 {
            fake.set_now(fake.now() + POLL);
            server.reconcile(&ctx, "first").await.expect("round");
            if finished(&server, "first") {
                break;
            }
        }
        let first = server.status("first").expect("status written");
        assert_eq!(first.phase, PlanPhase::Failed);
        assert_eq!(first.instances[0].phase, InstancePhase::Failed);
        assert_eq!(
            deregistered(&fake),
            Vec::<String>::new(),
            "nothing went out while gated"
        );
        assert_eq!(server.lease_holder(&lease()).as_deref(), Some(""));
        server.reconcile(&ctx, "second").await.expect("its turn");
        assert_eq!(deregistered(&fake), [IDS[1]]);
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_plan_deleted_with_an_instance_out_puts_it_back_then_gives_the_group_back() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        server.insert(with_finalizer(plan_json("web", &IDS[..2], json!({}))));
        server.reconcile(&ctx, "web").await.expect("the plan starts");
        assert_eq!(server.lease_holder(&lease()).as_deref(), Some("default/web"));

        server.mark_deleted("web");
        server.reconcile(&ctx, "web").await.expect("the clean-up round");
        assert!(server.raw("web").is_none(), "the finalizer is gone, and so the plan");
        assert!(
            matches!(fake.state(ARN, IDS[0]), TargetState::Initial | TargetState::Healthy),
            "put back"
        );
        assert_eq!(server.lease_holder(&lease()).as_deref(), Some(""));
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

/// Four instances, so that two plans of two can show whether they alternate.
const FOUR: [&str; 4] = [
    "i-0000000000000000a",
    "i-0000000000000000b",
    "i-0000000000000000c",
    "i-0000000000000000d",
];

/// When the controller would look at a plan again after this action (None: not until it
/// changes). The delays come from the engine's requeue; anything else counts as a poll.
fn delay_of(action: &Action) -> Option<SignedDuration> {
    if *action == Action::await_change() {
        return None;
    }
    let delay = if *action == Action::requeue(NOW_DELAY) {
        NOW_DELAY
    } else {
        POLL
    };
    SignedDuration::try_from(delay).ok()
}

/// The plan (`default/name`) that the lease watch would wake now, from the stored lease.
fn woken(server: &ApiServer, now: Timestamp, ctx: &Context) -> Option<String> {
    let lease: Lease = serde_json::from_value(server.lease(&lease())?).expect("a valid Lease");
    // The mapper uses the wall clock in the controller; here the scenario's clock.
    next_waiter(&lease, now, ctx.locks.waiter_stale_after())
}

/// Plays the controller's schedule on the fake clock: every plan starts at once; after a
/// round a plan comes back when its action says (500 ms after a `Now`, a poll interval
/// otherwise), or, with `wake`, as soon as the lease watch names it. The plan that is due
/// first goes first (the earlier plan on a tie). Checks after every round that the group
/// never has two out; returns once every plan has finished.
async fn play_schedule(server: &mut ApiServer, ctx: &Arc<Context>, fake: &FakeAws, names: &[&str], wake: bool) {
    let mut due: Vec<Option<Timestamp>> = vec![Some(fake.now()); names.len()];
    for _ in 0..2000 {
        let Some((index, at)) = due
            .iter()
            .enumerate()
            .filter_map(|(i, d)| d.map(|d| (i, d)))
            .min_by_key(|(i, d)| (*d, *i))
        else {
            return;
        };
        if at > fake.now() {
            fake.set_now(at);
        }
        let now = fake.now();
        let action = server.reconcile(ctx, names[index]).await.expect("the round succeeds");
        let out = FOUR
            .iter()
            .filter(|id| fake.state(ARN, id) != TargetState::Healthy)
            .count();
        assert!(out <= 1, "{out} instances of the group out at once");
        due[index] = if finished(server, names[index]) {
            None
        } else {
            delay_of(&action).map(|d| now + d)
        };
        if wake && let Some(plan) = woken(server, now, ctx) {
            let woken_index = names
                .iter()
                .position(|name| format!("{NAMESPACE}/{name}") == plan)
                .expect("a waiter of this scenario");
            due[woken_index] = Some(now);
        }
    }
    panic!("the plans did not finish in 2000 rounds");
}

fn four_instance_scenario() -> (FakeAws, ApiServer, Arc<Context>) {
    let fake = FakeAws::new(ARN, &FOUR, "2026-01-01T00:00:00Z".parse().expect("valid timestamp"));
    let (server, client) = ApiServer::start();
    let ctx = context(client, &fake);
    (fake, server, ctx)
}

/// The finding of issue 15: the holder gives the group back when its instance is Registered
/// and asks again 500 ms later for its next, while the waiting plan only looks again at its
/// poll. Without a queue the holder won every time (a,a,b,b).
#[tokio::test]
async fn the_plan_that_gives_the_group_back_goes_behind_the_plan_that_waits() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        for wake in [false, true] {
            let (fake, mut server, ctx) = four_instance_scenario();
            server.insert(with_finalizer(plan_json("first", &FOUR[..2], json!({}))));
            server.insert(with_finalizer(plan_json("second", &FOUR[2..], json!({}))));
            play_schedule(&mut server, &ctx, &fake, &["first", "second"], wake).await;
            assert_eq!(server.status("first").map(|s| s.phase), Some(PlanPhase::Succeeded));
            assert_eq!(server.status("second").map(|s| s.phase), Some(PlanPhase::Succeeded));
            assert_eq!(
                deregistered(&fake),
                [FOUR[0], FOUR[2], FOUR[1], FOUR[3]],
                "a,b,a,b (lease watch waking the waiter: {wake})"
            );
            assert_eq!(fake.max_out_at_once(), 1);
            let stored = server.lease(&lease()).expect("the lease");
            assert_eq!(stored["spec"]["holderIdentity"].as_str().unwrap_or_default(), "");
            assert!(
                stored["metadata"]["annotations"].get("pitstop.dev/waiting").is_none(),
                "nobody waits at the end: {stored}"
            );
            server.stop(ctx).await;
        }
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_waiting_plan_is_on_the_lease_and_is_the_one_woken_when_the_group_is_given_back() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = four_instance_scenario();
        server.insert(with_finalizer(plan_json("first", &FOUR[..2], json!({}))));
        server.insert(with_finalizer(plan_json("second", &FOUR[2..], json!({}))));
        server.reconcile(&ctx, "first").await.expect("the first plan starts");
        server.reconcile(&ctx, "second").await.expect("the second plan waits");
        let stored = server.lease(&lease()).expect("the lease");
        let waiting: Value = serde_json::from_str(
            stored["metadata"]["annotations"]["pitstop.dev/waiting"]
                .as_str()
                .expect("the queue annotation"),
        )
        .expect("JSON");
        assert_eq!(waiting[0]["plan"], "default/second", "{waiting}");
        assert_eq!(waiting[0]["uid"], "uid-second");
        assert_eq!(
            woken(&server, fake.now(), &ctx),
            None,
            "nobody to wake while the group is held"
        );

        // The first plan's instance comes back: the group is given back, and the watch wakes
        // the second plan; the first plan asking again is told to wait for it.
        for _ in 0..100 {
            fake.set_now(fake.now() + POLL);
            // The waiter polls meanwhile, as it does in the controller (keeping its place fresh).
            server.reconcile(&ctx, "second").await.expect("still waiting");
            server.reconcile(&ctx, "first").await.expect("round");
            if server.lease_holder(&lease()).as_deref() == Some("") {
                break;
            }
        }
        assert_eq!(woken(&server, fake.now(), &ctx).as_deref(), Some("default/second"));
        server.reconcile(&ctx, "first").await.expect("asks again");
        let first = server.status("first").expect("status");
        assert_eq!(
            first.instances[1].message.as_deref(),
            Some(format!("{WAITING_FOR_TURN} default/second (next in line)").as_str())
        );
        assert_eq!(deregistered(&fake), [FOUR[0]]);
        server.reconcile(&ctx, "second").await.expect("its turn");
        assert_eq!(deregistered(&fake), [FOUR[0], FOUR[2]]);
        assert_eq!(server.lease_holder(&lease()).as_deref(), Some("default/second"));
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

/// A free group's lease naming waiters as the controller left them.
fn free_lease_with_waiters(waiters: Value, renewed: Timestamp) -> Value {
    let mut lease = foreign_lease("", "", renewed);
    lease["metadata"]["annotations"] = json!({ "pitstop.dev/waiting": waiters.to_string() });
    lease["metadata"]["labels"] = json!({ "app.kubernetes.io/managed-by": "pitstop" });
    lease
}

#[tokio::test]
async fn waiters_that_are_gone_finished_or_stopped_asking_do_not_block() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        let mut done = with_finalizer(plan_json("done", &IDS[1..2], json!({})));
        done["status"] = json!({ "phase": "Succeeded", "instances": [
            { "instanceId": IDS[1], "phase": "Registered", "attempt": 1 }
        ] });
        server.insert(done);
        // Exists and idle, but last asked long ago (its controller went away).
        server.insert(with_finalizer(plan_json("quiet", &IDS[2..], json!({}))));
        let now = fake.now();
        let long_ago =
            now - SignedDuration::try_from(ctx.locks.waiter_stale_after() + Duration::from_secs(1)).expect("small");
        let stamp = |t: Timestamp| t.to_string();
        server.insert_lease(free_lease_with_waiters(
            json!([
                { "plan": "default/gone", "uid": "uid-gone", "asked": stamp(now) },
                { "plan": "default/done", "uid": "uid-done", "asked": stamp(now) },
                { "plan": "default/quiet", "uid": "uid-quiet", "asked": stamp(long_ago) },
            ]),
            now,
        ));
        server.insert(with_finalizer(plan_json("web", &IDS[..1], json!({}))));

        server.reconcile(&ctx, "web").await.expect("the round succeeds");
        assert_eq!(deregistered(&fake), [IDS[0]], "nobody live was ahead");
        let stored = server.lease(&lease()).expect("the lease");
        assert_eq!(stored["spec"]["holderIdentity"], "default/web");
        assert!(
            stored["metadata"]["annotations"].get("pitstop.dev/waiting").is_none(),
            "the dead waiters were dropped: {stored}"
        );
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_live_waiter_recorded_before_a_restart_still_goes_first() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        server.insert(with_finalizer(plan_json("second", &IDS[2..], json!({}))));
        server.insert_lease(free_lease_with_waiters(
            json!([{ "plan": "default/second", "uid": "uid-second", "asked": fake.now().to_string() }]),
            fake.now(),
        ));
        server.insert(with_finalizer(plan_json("first", &IDS[..1], json!({}))));

        server.reconcile(&ctx, "first").await.expect("the round succeeds");
        assert_eq!(deregistered(&fake), Vec::<String>::new(), "the waiter goes first");
        server.reconcile(&ctx, "second").await.expect("its turn");
        assert_eq!(deregistered(&fake), [IDS[2]]);

        // A plan that stops asking (suspended) leaves the line at once.
        let suspended = plan_json("first", &IDS[..1], json!({ "suspend": true }));
        server.insert(with_finalizer(suspended));
        server.reconcile(&ctx, "first").await.expect("suspended");
        let stored = server.lease(&lease()).expect("the lease");
        assert!(
            stored["metadata"]["annotations"].get("pitstop.dev/waiting").is_none(),
            "{stored}"
        );
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}
