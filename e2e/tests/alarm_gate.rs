//! `spec.gates.cloudWatchAlarms` with the real `pitstop run` against the sandbox's CloudWatch (DescribeAlarms over
//! Smithy RPC v2 CBOR, as the SDK speaks it): an alarm that fires mid-plan holds the next instance and the plan
//! goes on by itself once it clears; with `abortInFlight`, it also stops the maintenance command of the instance
//! that is out (CancelCommand) and puts that instance back.

use std::path::Path;
use std::time::Duration;

use pitstop::api::{InstancePhase, MaintenancePlanStatus, PlanPhase};
use pitstop_e2e::experiment::{default_pitstop_binary, pitstop_run_command, read_to_end};
use pitstop_e2e::sandbox::{Sandbox, SandboxConfig};

/// Upper bound on each wait; only keeps a broken run from hanging.
const LIMIT: Duration = Duration::from_secs(120);

const ALARM: &str = "web-5xx";

/// One fleet at a time: two sandboxes under a 2-core machine would measure the machine.
static ONE_FLEET_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn read_status(state_file: &Path) -> Option<MaintenancePlanStatus> {
    let text = std::fs::read_to_string(state_file).ok()?;
    let state: serde_json::Value = serde_json::from_str(&text).ok()?;
    serde_json::from_value(state.get("plans")?.get("alarmed")?.get("status")?.clone()).ok()
}

async fn wait_for(
    state_file: &Path,
    what: &str,
    done: impl Fn(&MaintenancePlanStatus) -> bool,
) -> MaintenancePlanStatus {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let status = read_status(state_file);
        if let Some(status) = status.as_ref().filter(|s| done(s)) {
            return status.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached; last status {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn effective(sandbox: &Sandbox, operation: &str) -> usize {
    sandbox
        .call_log()
        .records()
        .iter()
        .filter(|c| c.operation == operation && c.is_effective_write())
        .count()
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

struct Run {
    child: tokio::process::Child,
    state: std::path::PathBuf,
    progress: tokio::task::JoinHandle<String>,
    final_yaml: tokio::task::JoinHandle<String>,
    _dir: tempfile::TempDir,
}

fn start_run(sandbox: &Sandbox, plan: &str) -> Run {
    let binary = default_pitstop_binary();
    assert!(
        binary.is_file(),
        "{} not found: `cargo build --workspace --bins` first",
        binary.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let plan_path = dir.path().join("plan.yaml");
    let state = dir.path().join("state.json");
    std::fs::write(&plan_path, plan).expect("plan");
    let mut child = pitstop_run_command(&binary, &plan_path, &state, Duration::from_millis(500), sandbox)
        .spawn()
        .expect("pitstop run starts");
    let final_yaml = read_to_end(child.stdout.take().expect("stdout"));
    let progress = read_to_end(child.stderr.take().expect("stderr"));
    Run {
        child,
        state,
        progress,
        final_yaml,
        _dir: dir,
    }
}

impl Run {
    /// Waits for the exit; the exit code, what `pitstop run` printed on stderr, and the final status.
    async fn finish(mut self) -> (Option<i32>, String, MaintenancePlanStatus) {
        let exit = tokio::time::timeout(LIMIT, self.child.wait())
            .await
            .expect("pitstop run finishes")
            .expect("pitstop run exits");
        let progress = self.progress.await.unwrap_or_default();
        let final_yaml = self.final_yaml.await.unwrap_or_default();
        println!("{progress}\n{final_yaml}");
        let status = read_status(&self.state).expect("final status");
        (exit.code(), progress, status)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_fired_mid_plan_stops_new_instances_and_the_plan_resumes_when_it_clears() {
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)");
    sandbox.set_alarm(ALARM, "OK", "").expect("alarm");
    let ids = sandbox.instance_ids();
    let boots_before = sandbox.boot_counts();
    let run = start_run(&sandbox, &plan(&sandbox, false, ""));

    wait_for(&run.state, "the first instance out", |s| {
        s.instances.first().is_some_and(|i| i.out_of_rotation)
    })
    .await;
    sandbox
        .set_alarm(ALARM, "ALARM", "Threshold Crossed: 5xx > 10")
        .expect("alarm fires");

    // The instance in flight is finished and put back; the next one waits, saying why.
    let held = wait_for(&run.state, "an instance held by the alarm", |s| {
        s.instances.iter().any(|i| {
            i.phase == InstancePhase::Pending
                && i.message
                    .as_deref()
                    .is_some_and(|m| m.starts_with("waiting (AlarmFiring)"))
        })
    })
    .await;
    let message = held
        .instances
        .iter()
        .find(|i| i.phase == InstancePhase::Pending)
        .and_then(|i| i.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains(ALARM) && message.contains("Threshold Crossed"),
        "{message}"
    );
    assert_eq!(held.instances[0].phase, InstancePhase::Registered, "{held:#?}");
    assert!(held.instances.iter().all(|i| !i.out_of_rotation), "{held:#?}");
    let out_before = effective(&sandbox, "DeregisterTargets");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        effective(&sandbox, "DeregisterTargets"),
        out_before,
        "nothing went out while the alarm fired"
    );

    sandbox.set_alarm(ALARM, "OK", "").expect("alarm clears");
    let (code, progress, status) = run.finish().await;
    assert_eq!(code, Some(0), "pitstop run failed:\n{progress}");
    assert_eq!(
        progress
            .lines()
            .filter(|l| l.contains("Pending -> Pending: waiting (AlarmFiring)"))
            .count(),
        1,
        "one line when the alarm started holding:\n{progress}"
    );
    assert_eq!(status.phase, PlanPhase::Succeeded, "{status:#?}");
    let boots_after = sandbox.boot_counts();
    for id in &ids {
        assert_eq!(boots_after[id], boots_before[id] + 1, "{id} rebooted once");
    }
    assert_eq!(effective(&sandbox, "DeregisterTargets"), ids.len());
    assert_eq!(effective(&sandbox, "CancelCommand"), 0, "nothing was stopped");
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
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)");
    sandbox.set_alarm(ALARM, "OK", "").expect("alarm");
    let ids = sandbox.instance_ids();
    // A maintenance that runs long enough to be stopped.
    let maintenance =
        "  maintenance:\n    documentName: AWS-RunShellScript\n    parameters:\n      commands: ['sleep 300']\n";
    let run = start_run(&sandbox, &plan(&sandbox, true, maintenance));

    wait_for(&run.state, "the first instance's command running", |s| {
        s.instances
            .first()
            .is_some_and(|i| i.phase == InstancePhase::Rebooting && i.maintenance_command_id.is_some())
    })
    .await;
    sandbox
        .set_alarm(ALARM, "ALARM", "Threshold Crossed")
        .expect("alarm fires");

    let (code, progress, status) = run.finish().await;
    // maxFailures is 0: the aborted instance fails the plan, after it is back.
    assert_eq!(code, Some(1), "a failed plan exits 1:\n{progress}");
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
    assert_eq!(effective(&sandbox, "CancelCommand"), 1, "the command was stopped");
    assert_eq!(effective(&sandbox, "DeregisterTargets"), 1);
    assert_eq!(effective(&sandbox, "RegisterTargets"), 1, "and the instance put back");
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
