//! `spec.gates.prometheus` with a real Prometheus server (Debian's package) and the real `pitstop run`: an alert
//! that fires mid-plan holds the next instance (the one in flight is finished and put back), and the plan goes on
//! by itself once the alert clears.

use std::path::Path;
use std::time::Duration;

use pitstop::api::{InstancePhase, MaintenancePlanStatus, PlanPhase};
use pitstop_e2e::experiment::{default_pitstop_binary, pitstop_run_command, read_to_end};
use pitstop_e2e::prometheus::{ALERT_NAME, TestPrometheus};
use pitstop_e2e::sandbox::{Sandbox, SandboxConfig};

/// Upper bound on each wait; only keeps a broken run from hanging.
const LIMIT: Duration = Duration::from_secs(120);

fn read_status(state_file: &Path) -> Option<MaintenancePlanStatus> {
    let text = std::fs::read_to_string(state_file).ok()?;
    let state: serde_json::Value = serde_json::from_str(&text).ok()?;
    serde_json::from_value(state.get("plans")?.get("gated")?.get("status")?.clone()).ok()
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

fn deregistrations(sandbox: &Sandbox) -> usize {
    sandbox
        .call_log()
        .records()
        .iter()
        .filter(|c| c.operation == "DeregisterTargets" && c.is_effective_write())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_alert_holds_the_next_instance_and_the_plan_goes_on_when_it_clears() {
    let prometheus = TestPrometheus::start()
        .await
        .expect("prometheus starts (`make prometheus`)");
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)");
    let ids = sandbox.instance_ids();
    let binary = default_pitstop_binary();
    assert!(
        binary.is_file(),
        "{} not found: `cargo build --workspace --bins` first",
        binary.display()
    );
    let out = tempfile::tempdir().expect("temp dir");
    let plan_path = out.path().join("plan.yaml");
    let state_path = out.path().join("state.json");
    // Every sandbox instance is in its Auto Scaling group; `Ignore` keeps the calls to the target group's, which
    // the test counts.
    let plan = format!(
        "apiVersion: pitstop.dev/v1alpha1\nkind: MaintenancePlan\nmetadata:\n  name: gated\nspec:\n  targetGroupArn: {}\n  instances: [{}]\n  gates:\n    prometheus:\n      url: {}\n      alertNames: ['PitstopTest.*']\n      matchers: ['severity=\"page\"']\n  autoScaling:\n    mode: Ignore\n",
        sandbox.target_group_arn(),
        ids.join(", "),
        prometheus.url()
    );
    std::fs::write(&plan_path, plan).expect("plan");
    let boots_before = sandbox.boot_counts();
    let mut child = pitstop_run_command(&binary, &plan_path, &state_path, Duration::from_millis(500), &sandbox)
        .spawn()
        .expect("pitstop run starts");
    let out_task = read_to_end(child.stdout.take().expect("stdout"));
    let err_task = read_to_end(child.stderr.take().expect("stderr"));

    // The alert fires while the first instance is out.
    wait_for(&state_path, "the first instance out", |s| {
        s.instances.first().is_some_and(|i| i.out_of_rotation)
    })
    .await;
    prometheus.set_alarm(true);
    prometheus.wait_firing(true, LIMIT).await.expect("the alert fires");

    // The instance in flight is finished; the next one waits, saying why, and nothing else goes out.
    let held = wait_for(&state_path, "an instance held by the alert", |s| {
        s.instances.iter().any(|i| {
            i.phase == InstancePhase::Pending
                && i.message
                    .as_deref()
                    .is_some_and(|m| m.starts_with("waiting (AlertFiring)"))
        })
    })
    .await;
    let waiting = held
        .instances
        .iter()
        .find(|i| i.phase == InstancePhase::Pending)
        .expect("a held instance");
    let message = waiting.message.clone().unwrap_or_default();
    assert!(
        message.contains(ALERT_NAME) && message.contains("severity=\"page\""),
        "{message}"
    );
    assert!(
        held.instances.iter().all(|i| !i.out_of_rotation),
        "the one in flight went back: {held:#?}"
    );
    let out_before = deregistrations(&sandbox);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        deregistrations(&sandbox),
        out_before,
        "nothing went out while the alert fired"
    );
    let still = read_status(&state_path).expect("status");
    assert!(
        still.instances.iter().any(|i| i.phase == InstancePhase::Pending),
        "{still:#?}"
    );

    // It clears: the plan goes on by itself.
    prometheus.set_alarm(false);
    prometheus.wait_firing(false, LIMIT).await.expect("the alert clears");
    let exit = tokio::time::timeout(LIMIT, child.wait())
        .await
        .expect("pitstop run finishes")
        .expect("pitstop run exits");
    let progress = err_task.await.unwrap_or_default();
    let final_yaml = out_task.await.unwrap_or_default();
    println!("{progress}");
    println!(
        "held with {out_before} of {} instances out so far: {message}",
        ids.len()
    );
    assert_eq!(exit.code(), Some(0), "pitstop run failed:\n{progress}\n{final_yaml}");
    assert!(
        progress
            .lines()
            .filter(|l| l.contains("Pending -> Pending: waiting (AlertFiring)"))
            .count()
            == 1,
        "one line when the alert started holding:\n{progress}"
    );
    let status = read_status(&state_path).expect("final status");
    assert_eq!(status.phase, PlanPhase::Succeeded, "{status:#?}");
    let boots_after = sandbox.boot_counts();
    for id in &ids {
        assert_eq!(boots_after[id], boots_before[id] + 1, "{id} rebooted once");
    }
    assert_eq!(deregistrations(&sandbox), ids.len());
    sandbox.shutdown().await.expect("sandbox stops");
}
