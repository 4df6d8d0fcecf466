//! `spec.autoScaling.mode` for instances that belong to an Auto Scaling group, reconciled
//! against the mock apiserver (tower-test) and the in-memory AWS.
//!
//! Standby (the default): MinSize lowered by one when the group is at it, EnterStandby,
//! maintenance, ExitStandby, MinSize restored; a lost EnterStandby or ExitStandby answer, or
//! a controller killed between the write-ahead status and the call, never makes the call twice.
//! SuspendProcesses: only the processes that were running are suspended, and only those are
//! resumed. Ignore: the group is told nothing.

mod reconcile_support;

use std::time::Duration;

use kube::runtime::controller::Action;
use pitstop::api::{InstancePhase, MaintenancePlanSpec, MaintenancePlanStatus, PlanPhase};
use pitstop::aws::AutoScalingGroup;
use pitstop::aws::fake::FakeAws;
use pitstop::engine::{StatusStore, step};
use pitstop::k8s::policy::NOW_DELAY;
use pitstop::machine::PlanView;
use reconcile_support::*;
use serde_json::{Value, json};

const GROUP: &str = "web-asg";

/// The fake with the three instances InService in one group at its minimum (MinSize =
/// DesiredCapacity = MaxSize = 3), so EnterStandby needs MinSize lowered first.
fn fleet() -> (FakeAws, ApiServer, std::sync::Arc<pitstop::k8s::Context>) {
    let (fake, server, ctx) = scenario();
    fake.set_auto_scaling_group(
        GROUP,
        &[
            (IDS[0], "eu-west-1a", "InService"),
            (IDS[1], "eu-west-1b", "InService"),
            (IDS[2], "eu-west-1c", "InService"),
        ],
    );
    (fake, server, ctx)
}

fn group(fake: &FakeAws) -> AutoScalingGroup {
    fake.auto_scaling_group(GROUP).expect("the group exists")
}

fn lifecycles(fake: &FakeAws) -> Vec<String> {
    group(fake).instances.into_iter().map(|i| i.lifecycle_state).collect()
}

/// The Auto Scaling writes as (operation, detail).
fn asg_writes(fake: &FakeAws) -> Vec<(String, String)> {
    fake.auto_scaling_writes()
        .into_iter()
        .map(|(op, _, detail)| (op.to_owned(), detail))
        .collect()
}

fn count(fake: &FakeAws, operation: &str, detail: &str) -> usize {
    asg_writes(fake)
        .iter()
        .filter(|(op, d)| op == operation && d == detail)
        .count()
}

fn sends_to(fake: &FakeAws, id: &str) -> usize {
    fake.writes()
        .iter()
        .filter(|w| w.operation == "SendCommand" && w.instance_id == id)
        .count()
}

fn finished(server: &ApiServer) -> bool {
    server.status("web").is_some_and(|s| s.phase.is_finished())
}

fn plan(spec_extra: Value) -> Value {
    with_finalizer(plan_json("web", &IDS, spec_extra))
}

/// Reconciles until the plan finishes, moving the clock as `rounds` does; a round that fails
/// (a lost answer) is followed by another a second later, as the error policy's short requeue.
/// `before` runs before each round, to script AWS.
async fn run_to_the_end(
    server: &mut ApiServer,
    ctx: &std::sync::Arc<pitstop::k8s::Context>,
    fake: &FakeAws,
    mut before: impl FnMut(&FakeAws),
) -> MaintenancePlanStatus {
    for _ in 0..400 {
        before(fake);
        let step = match server.reconcile(ctx, "web").await {
            Ok(action) if action == Action::requeue(POLL) => POLL,
            Ok(action) if action == Action::requeue(NOW_DELAY) => Duration::from_secs(1),
            Ok(_) if finished(server) => break,
            Ok(action) => panic!("unexpected requeue {action:?}"),
            Err(_) => Duration::from_secs(1),
        };
        if finished(server) {
            break;
        }
        fake.set_now(fake.now() + step);
    }
    let status = server.status("web").expect("status written");
    assert!(status.phase.is_finished(), "{status:#?}");
    status
}

/// Every member goes Standby → maintenance → back, with MinSize restored exactly once per
/// instance; the group ends as it began.
fn assert_each_went_through_standby_once(fake: &FakeAws) {
    let writes = asg_writes(fake);
    for id in IDS {
        assert_eq!(count(fake, "EnterStandby", id), 1, "{id}: {writes:?}");
        assert_eq!(count(fake, "ExitStandby", id), 1, "{id}: {writes:?}");
        assert_eq!(sends_to(fake, id), 1, "{id} rebooted once");
    }
    assert_eq!(count(fake, "UpdateAutoScalingGroup", "MinSize=2"), 3, "{writes:?}");
    assert_eq!(count(fake, "UpdateAutoScalingGroup", "MinSize=3"), 3, "{writes:?}");
    let group = group(fake);
    assert_eq!(
        (group.min_size, group.desired_capacity, group.max_size),
        (3, 3, 3),
        "{writes:?}"
    );
    assert_eq!(lifecycles(fake), ["InService"; 3]);
}

#[tokio::test]
async fn standby_is_the_default_for_members_and_restores_min_size_after_each_instance() {
    let (fake, mut server, ctx) = fleet();
    server.insert(plan(json!({})));
    let status = run_to_the_end(&mut server, &ctx, &fake, |_| {}).await;
    assert_eq!(status.phase, PlanPhase::Succeeded, "{status:#?}");
    assert_each_went_through_standby_once(&fake);
    // The order for one instance: MinSize lowered, Standby, then out of the target group,
    // the reboot, back into the group's service, then MinSize restored.
    let first: Vec<(String, String)> = asg_writes(&fake).into_iter().take(4).collect();
    assert_eq!(
        first,
        [
            ("UpdateAutoScalingGroup".to_owned(), "MinSize=2".to_owned()),
            ("EnterStandby".to_owned(), IDS[0].to_owned()),
            ("ExitStandby".to_owned(), IDS[0].to_owned()),
            ("UpdateAutoScalingGroup".to_owned(), "MinSize=3".to_owned()),
        ]
    );
    // The reboot was sent to an instance out of the target group and in Standby.
    for write in fake.writes().iter().filter(|w| w.operation == "SendCommand") {
        assert_eq!(write.state_before, pitstop::aws::TargetState::Unused, "{write:?}");
    }
    let record = status.instances[0].auto_scaling.clone().expect("the record stays");
    assert_eq!(record.group_name, GROUP);
    assert_eq!(record.original_min_size, Some(3));
    assert!(record.min_size_restored && record.entered_standby && record.exited_standby);
}

#[tokio::test]
async fn a_group_above_its_minimum_keeps_its_min_size() {
    let (fake, mut server, ctx) = fleet();
    fake.apis()
        .auto_scaling
        .set_min_size(GROUP, 1)
        .await
        .expect("MinSize 1");
    server.insert(plan(json!({})));
    let status = run_to_the_end(&mut server, &ctx, &fake, |_| {}).await;
    assert_eq!(status.phase, PlanPhase::Succeeded);
    let writes = asg_writes(&fake);
    // The test's own MinSize=1 is the only size change.
    assert_eq!(
        writes.iter().filter(|(op, _)| op == "UpdateAutoScalingGroup").count(),
        1,
        "{writes:?}"
    );
    assert_eq!(writes.iter().filter(|(op, _)| op == "EnterStandby").count(), 3);
    assert_eq!(group(&fake).min_size, 1);
}

#[tokio::test]
async fn a_lost_enter_standby_answer_is_followed_by_reading_never_by_a_second_enter_standby() {
    let (fake, mut server, ctx) = fleet();
    server.insert(plan(json!({})));
    let mut armed = false;
    let status = run_to_the_end(&mut server, &ctx, &fake, |fake| {
        // Right after the first MinSize change, the next write is the first EnterStandby:
        // AWS carries it out and the answer is lost; the group shows the change only 30 s later.
        if !armed && count(fake, "UpdateAutoScalingGroup", "MinSize=2") == 1 {
            fake.behave(|b| {
                b.lose_next_answers = 1;
                b.auto_scaling_lag = Duration::from_secs(30);
            });
            armed = true;
        }
    })
    .await;
    assert!(armed);
    assert_eq!(status.phase, PlanPhase::Succeeded, "{status:#?}");
    assert_each_went_through_standby_once(&fake);
}

#[tokio::test]
async fn a_lost_exit_standby_answer_is_followed_by_reading_never_by_a_second_exit_standby() {
    let (fake, mut server, ctx) = fleet();
    server.insert(plan(json!({})));
    let mut armed = false;
    let status = run_to_the_end(&mut server, &ctx, &fake, |fake| {
        // Once the first maintenance command was sent, the next write is the ExitStandby; the
        // group shows it only 30 s later.
        if !armed && sends_to(fake, IDS[0]) == 1 {
            fake.behave(|b| {
                b.lose_next_answers = 1;
                b.auto_scaling_lag = Duration::from_secs(30);
            });
            armed = true;
        }
    })
    .await;
    assert!(armed);
    assert_eq!(status.phase, PlanPhase::Succeeded, "{status:#?}");
    assert_each_went_through_standby_once(&fake);
}

#[tokio::test]
async fn a_lost_min_size_answer_is_not_repeated_once_the_group_shows_it() {
    let (fake, mut server, ctx) = fleet();
    server.insert(plan(json!({})));
    let mut armed = false;
    let status = run_to_the_end(&mut server, &ctx, &fake, |fake| {
        // The first ExitStandby is followed by the registration and then the MinSize restore;
        // lose the restore's answer (the registration's would be repeated harmlessly anyway).
        if !armed && count(fake, "ExitStandby", IDS[0]) == 1 && fake.state(ARN, IDS[0]).is_registered() {
            fake.behave(|b| b.lose_next_answers = 1);
            armed = true;
        }
    })
    .await;
    assert!(armed);
    assert_eq!(status.phase, PlanPhase::Succeeded, "{status:#?}");
    assert_each_went_through_standby_once(&fake);
}

#[tokio::test]
async fn a_failed_maintenance_still_leaves_standby_and_restores_min_size() {
    let (fake, mut server, ctx) = fleet();
    fake.behave(|b| b.failing_commands = vec![IDS[0].to_owned()]);
    server.insert(plan(json!({})));
    let status = run_to_the_end(&mut server, &ctx, &fake, |_| {}).await;
    assert_eq!(status.phase, PlanPhase::Failed);
    assert_eq!(status.instances[0].phase, InstancePhase::Failed);
    assert!(!status.instances[0].out_of_rotation, "{:#?}", status.instances[0]);
    assert_eq!(count(&fake, "EnterStandby", IDS[0]), 1);
    assert_eq!(count(&fake, "ExitStandby", IDS[0]), 1);
    assert_eq!(count(&fake, "UpdateAutoScalingGroup", "MinSize=3"), 1);
    let group = group(&fake);
    assert_eq!((group.min_size, group.desired_capacity), (3, 3));
    assert_eq!(lifecycles(&fake), ["InService"; 3]);
    assert!(fake.state(ARN, IDS[0]).is_registered());
    // maxFailures 0: the others were not touched.
    assert_eq!(count(&fake, "EnterStandby", IDS[1]), 0);
}

#[tokio::test]
async fn on_failure_leave_out_leaves_the_instance_in_standby() {
    let (fake, mut server, ctx) = fleet();
    fake.behave(|b| b.failing_commands = vec![IDS[0].to_owned()]);
    server.insert(plan(json!({ "onFailure": "LeaveOut" })));
    let status = run_to_the_end(&mut server, &ctx, &fake, |_| {}).await;
    assert_eq!(status.phase, PlanPhase::Failed);
    assert!(status.instances[0].out_of_rotation);
    assert_eq!(count(&fake, "ExitStandby", IDS[0]), 0);
    // In Standby with the capacity decremented: MinSize stays lowered, or restoring it would
    // make the group launch an instance in its place.
    assert_eq!(lifecycles(&fake)[0], "Standby");
    let group = group(&fake);
    assert_eq!((group.min_size, group.desired_capacity), (2, 2));
    let record = status.instances[0].auto_scaling.clone().expect("record");
    assert_eq!(
        record.original_min_size,
        Some(3),
        "the original stays on record for a human"
    );
}

#[tokio::test]
async fn suspend_processes_suspends_only_running_ones_and_resumes_only_those() {
    let (fake, mut server, ctx) = fleet();
    // Someone suspended AZRebalance before: it must stay suspended.
    fake.apis()
        .auto_scaling
        .suspend_processes(GROUP, &["AZRebalance".to_owned()])
        .await
        .expect("suspend");
    server.insert(plan(json!({ "autoScaling": { "mode": "SuspendProcesses" } })));
    let status = run_to_the_end(&mut server, &ctx, &fake, |_| {}).await;
    assert_eq!(status.phase, PlanPhase::Succeeded, "{status:#?}");
    let writes = asg_writes(&fake);
    let ours = "HealthCheck,ReplaceUnhealthy";
    assert_eq!(count(&fake, "SuspendProcesses", ours), 3, "{writes:?}");
    assert_eq!(count(&fake, "ResumeProcesses", ours), 3, "{writes:?}");
    assert!(!writes.iter().any(|(op, _)| op.contains("Standby")), "{writes:?}");
    assert_eq!(group(&fake).suspended_processes, ["AZRebalance"]);
    for id in IDS {
        assert_eq!(sends_to(&fake, id), 1);
    }
    // Each instance was out of the target group only while the processes were suspended.
    let record = status.instances[0].auto_scaling.clone().expect("record");
    assert_eq!(
        record.suspended_processes,
        Some(vec!["HealthCheck".to_owned(), "ReplaceUnhealthy".to_owned()])
    );
    assert!(record.processes_resumed);
}

#[tokio::test]
async fn suspend_processes_resumes_even_when_the_instance_is_left_out() {
    let (fake, mut server, ctx) = fleet();
    fake.behave(|b| b.failing_commands = vec![IDS[0].to_owned()]);
    server.insert(plan(
        json!({ "autoScaling": { "mode": "SuspendProcesses" }, "onFailure": "LeaveOut" }),
    ));
    let status = run_to_the_end(&mut server, &ctx, &fake, |_| {}).await;
    assert_eq!(status.phase, PlanPhase::Failed);
    assert!(status.instances[0].out_of_rotation);
    assert!(group(&fake).suspended_processes.is_empty(), "{:?}", asg_writes(&fake));
}

#[tokio::test]
async fn ignore_tells_the_group_nothing() {
    let (fake, mut server, ctx) = fleet();
    server.insert(plan(json!({ "autoScaling": { "mode": "Ignore" } })));
    let status = run_to_the_end(&mut server, &ctx, &fake, |_| {}).await;
    assert_eq!(status.phase, PlanPhase::Succeeded);
    assert!(asg_writes(&fake).is_empty(), "{:?}", asg_writes(&fake));
    assert!(status.instances.iter().all(|i| i.auto_scaling.is_none()));
}

#[tokio::test]
async fn an_instance_in_no_group_is_maintained_as_before() {
    let (fake, mut server, ctx) = scenario();
    server.insert(plan(json!({})));
    let status = run_to_the_end(&mut server, &ctx, &fake, |_| {}).await;
    assert_eq!(status.phase, PlanPhase::Succeeded);
    assert!(fake.auto_scaling_writes().is_empty());
    assert!(status.instances.iter().all(|i| i.auto_scaling.is_none()));
}

/// A store that lands every write except that it "kills" the controller right after the
/// write that records an EnterStandby request (the write-ahead), before the call is made.
struct KilledAfterStandbyRecord {
    durable: Option<MaintenancePlanStatus>,
    killed: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("killed (-9)")]
struct Killed;

#[async_trait::async_trait]
impl StatusStore for KilledAfterStandbyRecord {
    type Error = Killed;

    async fn save(&mut self, status: &MaintenancePlanStatus) -> Result<(), Killed> {
        self.durable = Some(status.clone());
        let requested = status.instances.iter().any(|i| {
            i.auto_scaling
                .as_ref()
                .is_some_and(|r| r.standby_requested_at.is_some())
        });
        if requested && !self.killed {
            self.killed = true;
            return Err(Killed);
        }
        Ok(())
    }
}

#[tokio::test]
async fn killed_between_the_standby_record_and_the_call_the_restarted_controller_enters_standby_once() {
    let fake = fake_aws();
    fake.set_auto_scaling_group(
        GROUP,
        &[(IDS[0], "eu-west-1a", "InService"), (IDS[1], "eu-west-1a", "InService")],
    );
    let spec: MaintenancePlanSpec =
        serde_json::from_value(json!({ "targetGroupArn": ARN, "instances": [IDS[0]] })).expect("spec");
    let apis = fake.apis();
    let mut store = KilledAfterStandbyRecord {
        durable: None,
        killed: false,
    };
    for _ in 0..400 {
        let recorded = store.durable.clone();
        if recorded.as_ref().is_some_and(|s| s.phase.is_finished()) {
            break;
        }
        let view = PlanView {
            uid: "uid-web",
            generation: Some(1),
            spec: &spec,
            status: recorded.as_ref(),
        };
        // Every round starts from the durable status alone, as a restarted controller does.
        let _ = step(
            &apis,
            view,
            fake.now(),
            &pitstop::machine::TurnView::default(),
            &pitstop::gates::GateReaders::http(None),
            &mut store,
        )
        .await;
        fake.set_now(fake.now() + Duration::from_secs(5));
    }
    assert!(store.killed);
    let status = store.durable.expect("status");
    assert_eq!(status.phase, PlanPhase::Succeeded, "{status:#?}");
    assert_eq!(count(&fake, "EnterStandby", IDS[0]), 1, "{:?}", asg_writes(&fake));
    assert_eq!(count(&fake, "ExitStandby", IDS[0]), 1);
    assert_eq!(sends_to(&fake, IDS[0]), 1);
    let group = group(&fake);
    assert_eq!((group.min_size, group.desired_capacity), (2, 2));
    assert_eq!(lifecycles(&fake), ["InService"; 2]);
}

/// Reconciles until `done` says so (at most 100 rounds), moving the clock as `run_to_the_end`.
async fn run_until(
    server: &mut ApiServer,
    ctx: &std::sync::Arc<pitstop::k8s::Context>,
    fake: &FakeAws,
    done: impl Fn(&MaintenancePlanStatus) -> bool,
) {
    for _ in 0..100 {
        let step = match server.reconcile(ctx, "web").await {
            Ok(action) if action == Action::requeue(NOW_DELAY) => Duration::from_secs(1),
            _ => POLL,
        };
        if server.status("web").is_some_and(|s| done(&s)) {
            return;
        }
        fake.set_now(fake.now() + step);
    }
    panic!("never reached: {:#?}", server.status("web"));
}

#[tokio::test]
async fn a_plan_deleted_while_its_instance_is_in_standby_takes_it_out_and_restores_min_size() {
    let (fake, mut server, ctx) = fleet();
    server.insert(plan(json!({})));
    run_until(&mut server, &ctx, &fake, |s| {
        s.instances[0].phase == InstancePhase::Rebooting
    })
    .await;
    assert_eq!(lifecycles(&fake)[0], "Standby");
    assert_eq!((group(&fake).min_size, group(&fake).desired_capacity), (2, 2));

    server.mark_deleted("web");
    server.reconcile(&ctx, "web").await.expect("the clean-up round");
    assert!(server.raw("web").is_none(), "the finalizer is gone, and so the plan");
    assert_eq!(lifecycles(&fake), ["InService"; 3], "{:?}", asg_writes(&fake));
    let group = group(&fake);
    assert_eq!(
        (group.min_size, group.desired_capacity),
        (3, 3),
        "{:?}",
        asg_writes(&fake)
    );
    assert!(fake.state(ARN, IDS[0]).is_registered());
    assert_eq!(count(&fake, "ExitStandby", IDS[0]), 1);
}

#[tokio::test]
async fn a_plan_deleted_while_its_processes_are_suspended_resumes_them() {
    let (fake, mut server, ctx) = fleet();
    server.insert(plan(json!({ "autoScaling": { "mode": "SuspendProcesses" } })));
    run_until(&mut server, &ctx, &fake, |s| {
        s.instances[0].phase == InstancePhase::Rebooting
    })
    .await;
    assert_eq!(
        group(&fake).suspended_processes,
        ["AZRebalance", "HealthCheck", "ReplaceUnhealthy"]
    );

    server.mark_deleted("web");
    server.reconcile(&ctx, "web").await.expect("the clean-up round");
    assert!(server.raw("web").is_none());
    assert!(group(&fake).suspended_processes.is_empty(), "{:?}", asg_writes(&fake));
    assert!(fake.state(ARN, IDS[0]).is_registered());
}

#[tokio::test]
async fn a_member_that_never_gets_in_service_fails_on_the_drain_limit_and_the_group_is_untouched() {
    let (fake, mut server, ctx) = scenario();
    // Held by a lifecycle hook, yet a healthy target: EnterStandby would be refused.
    fake.set_auto_scaling_group(
        GROUP,
        &[
            (IDS[0], "eu-west-1a", "Pending:Wait"),
            (IDS[1], "eu-west-1b", "InService"),
            (IDS[2], "eu-west-1c", "InService"),
        ],
    );
    server.insert(plan(json!({ "timeouts": { "drainSeconds": 30 } })));
    let status = run_to_the_end(&mut server, &ctx, &fake, |_| {}).await;
    assert_eq!(status.phase, PlanPhase::Failed);
    let first = &status.instances[0];
    assert_eq!(first.failure_reason.as_deref(), Some("DrainTimeout"), "{first:#?}");
    assert!(!first.out_of_rotation);
    assert!(asg_writes(&fake).is_empty(), "{:?}", asg_writes(&fake));
    assert!(fake.state(ARN, IDS[0]).is_registered());
    assert_eq!(sends_to(&fake, IDS[0]), 0);
}
