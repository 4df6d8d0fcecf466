//! `spec.gates.cloudWatchAlarms` with the real `pitstop run` against the sandbox's CloudWatch (DescribeAlarms over
//! Smithy RPC v2 CBOR, as the SDK speaks it): an alarm that fires mid-plan holds the next instance and the plan
//! goes on by itself once it clears; with `abortInFlight`, it also stops the maintenance command of the instance
//! that is out (CancelCommand) and puts that instance back.

mod pitstop_support;

use std::time::Duration;

use pitstop::api::{InstancePhase, PlanPhase};
use pitstop_e2e::sandbox::{Sandbox, SandboxConfig};
use pitstop_support::{effective_writes, held_at_gate, start_pitstop};

const ALARM: &str = "web-5xx";

/// One fleet at a time: two sandboxes under a 2-core machine would measure the machine.
static ONE_FLEET_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A sandbox fleet whose CloudWatch has [`ALARM`], in `OK`.
async fn fleet_with_quiet_alarm() -> Sandbox {
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)");
    sandbox.set_alarm(ALARM, "OK", "").expect("alarm");
    sandbox
}

/// A plan of every sandbox instance, gated by [`ALARM`]; `extra` is more YAML under `spec:`.
fn plan(sandbox: &Sandbox, abort_in_flight: bool, extra: &str) -> String {
    // Every sandbox instance is in its Auto Scaling group; `Ignore` keeps the calls to the target group's.
    format!(
        "apiVersion: pitstop.dev/v1alpha1\nkind: MaintenancePlan\nmetadata:\n  name: alarmed\nspec:\n  targetGroupArn: {}\n  instances: [{}]\n  gates:\n    cloudWatchAlarms:\n      names: [{ALARM}]\n      abortInFlight: {abort_in_flight}\n  autoScaling:\n    mode: Ignore\n{extra}",
        sandbox.target_group_arn(),
        sandbox.instance_ids().join(", "),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_fired_mid_plan_stops_new_instances_and_the_plan_resumes_when_it_clears() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let sandbox = fleet_with_quiet_alarm().await;
    let ids = sandbox.instance_ids();
    let boots_before = sandbox.boot_counts();
    let run = start_pitstop(&sandbox, &plan(&sandbox, false, ""), None);

    run.wait_for_status("alarmed", "the first instance out", |s| {
        s.instances.first().is_some_and(|i| i.out_of_rotation)
    })
    .await;
    sandbox
        .set_alarm(ALARM, "ALARM", "Threshold Crossed: 5xx > 10")
        .expect("alarm fires");

    // The instance in flight is finished and put back; the next one waits, saying why.
    let held = run
        .wait_for_status("alarmed", "an instance held by the alarm", |s| {
            held_at_gate(s, "AlarmFiring").is_some()
        })
        .await;
    let message = held_at_gate(&held, "AlarmFiring").unwrap_or_default();
    assert!(
        message.contains(ALARM) && message.contains("Threshold Crossed"),
        "{message}"
    );
    assert_eq!(held.instances[0].phase, InstancePhase::Registered, "{held:#?}");
    assert!(held.instances.iter().all(|i| !i.out_of_rotation), "{held:#?}");
    let out_before = effective_writes(&sandbox, "DeregisterTargets");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        effective_writes(&sandbox, "DeregisterTargets"),
        out_before,
        "nothing went out while the alarm fired"
    );

    sandbox.set_alarm(ALARM, "OK", "").expect("alarm clears");
    let finished = run.finish().await;
    let progress = &finished.stderr;
    println!("{progress}");
    assert_eq!(finished.code, Some(0), "pitstop run failed:\n{progress}");
    assert_eq!(
        progress
            .lines()
            .filter(|l| l.contains("Pending -> Pending: waiting (AlarmFiring)"))
            .count(),
        1,
        "one line when the alarm started holding:\n{progress}"
    );
    let status = finished.status("alarmed");
    assert_eq!(status.phase, PlanPhase::Succeeded, "{status:#?}");
    let boots_after = sandbox.boot_counts();
    for id in &ids {
        assert_eq!(boots_after[id], boots_before[id] + 1, "{id} rebooted once");
    }
    assert_eq!(effective_writes(&sandbox, "DeregisterTargets"), ids.len());
    assert_eq!(effective_writes(&sandbox, "CancelCommand"), 0, "nothing was stopped");
    let reads = sandbox
        .call_log()
        .records()
        .iter()
        .filter(|c| c.operation == "DescribeAlarms")
        .count();
    println!(
        "held with {out_before} of {} instances out so far; {reads} DescribeAlarms",
        ids.len()
    );
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_abort_in_flight_an_alarm_cancels_the_running_command_and_puts_the_instance_back() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let sandbox = fleet_with_quiet_alarm().await;
    let ids = sandbox.instance_ids();
    // A maintenance that runs long enough to be stopped.
    let maintenance =
        "  maintenance:\n    documentName: AWS-RunShellScript\n    parameters:\n      commands: ['sleep 300']\n";
    let run = start_pitstop(&sandbox, &plan(&sandbox, true, maintenance), None);

    run.wait_for_status("alarmed", "the first instance's command running", |s| {
        s.instances
            .first()
            .is_some_and(|i| i.phase == InstancePhase::Rebooting && i.maintenance_command_id.is_some())
    })
    .await;
    sandbox
        .set_alarm(ALARM, "ALARM", "Threshold Crossed")
        .expect("alarm fires");

    let finished = run.finish().await;
    let progress = &finished.stderr;
    println!("{progress}");
    // maxFailures is 0: the aborted instance fails the plan, after it is back.
    assert_eq!(finished.code, Some(1), "a failed plan exits 1:\n{progress}");
    let status = finished.status("alarmed");
    assert_eq!(status.phase, PlanPhase::Failed, "{status:#?}");
    let first = &status.instances[0];
    assert_eq!(first.phase, InstancePhase::Failed);
    assert_eq!(first.failure_reason.as_deref(), Some("AbortedByAlarm"), "{first:#?}");
    assert!(!first.out_of_rotation, "put back: {first:#?}");
    let message = first.message.clone().unwrap_or_default();
    assert!(message.contains("maintenance command cancelled"), "{message}");
    assert!(
        status.instances[1..].iter().all(|i| i.phase == InstancePhase::Pending),
        "nothing else started: {status:#?}"
    );
    assert_eq!(
        effective_writes(&sandbox, "CancelCommand"),
        1,
        "the command was stopped"
    );
    assert_eq!(effective_writes(&sandbox, "DeregisterTargets"), 1);
    assert_eq!(
        effective_writes(&sandbox, "RegisterTargets"),
        1,
        "and the instance put back"
    );
    let rotation = sandbox.rotation_states().await.expect("haproxy state");
    assert!(
        rotation.values().all(|r| r.in_rotation()),
        "every instance back in rotation: {rotation:?}"
    );
    // The command carried the alarm, so SSM would stop it too with pitstop away.
    let sent = sandbox
        .call_log()
        .records()
        .into_iter()
        .find(|c| c.operation == "SendCommand" && c.is_effective_write())
        .expect("a SendCommand");
    assert!(
        sent.summary.contains("AlarmConfiguration") && sent.summary.contains(ALARM),
        "{}",
        sent.summary
    );
    assert_eq!(ids.len(), status.instances.len());
    sandbox.shutdown().await.expect("sandbox stops");
}
