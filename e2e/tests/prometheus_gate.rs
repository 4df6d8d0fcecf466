//! `spec.gates.prometheus` with a real Prometheus server (Debian's package) and the real `pitstop run`: an alert
//! that fires mid-plan holds the next instance (the one in flight is finished and put back), and the plan goes on
//! by itself once the alert clears.

mod pitstop_support;

use std::time::Duration;

use pitstop::api::{InstancePhase, PlanPhase};
use pitstop_e2e::prometheus::{ALERT_NAME, TestPrometheus};
use pitstop_e2e::sandbox::{Sandbox, SandboxConfig};
use pitstop_support::{effective_writes, held_at_gate, start_pitstop};

/// Upper bound on the waits for Prometheus; only keeps a broken run from hanging.
const LIMIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_alert_holds_the_next_instance_and_the_plan_goes_on_when_it_clears() {
    let prometheus = TestPrometheus::start()
        .await
        .expect("prometheus starts (`make prometheus`)");
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)");
    let ids = sandbox.instance_ids();
    // Every sandbox instance is in its Auto Scaling group; `Ignore` keeps the calls to the target group's, which
    // the test counts.
    let plan = format!(
        "apiVersion: pitstop.dev/v1alpha1\nkind: MaintenancePlan\nmetadata:\n  name: gated\nspec:\n  targetGroupArn: {}\n  instances: [{}]\n  gates:\n    prometheus:\n      url: {}\n      alertNames: ['PitstopTest.*']\n      matchers: ['severity=\"page\"']\n  autoScaling:\n    mode: Ignore\n",
        sandbox.target_group_arn(),
        ids.join(", "),
        prometheus.url()
    );
    let boots_before = sandbox.boot_counts();
    let run = start_pitstop(&sandbox, &plan, None);

    // The alert fires while the first instance is out.
    run.wait_for_status("gated", "the first instance out", |s| {
        s.instances.first().is_some_and(|i| i.out_of_rotation)
    })
    .await;
    prometheus.set_alarm(true);
    prometheus.wait_firing(true, LIMIT).await.expect("the alert fires");

    // The instance in flight is finished; the next one waits, saying why, and nothing else goes out.
    let held = run
        .wait_for_status("gated", "an instance held by the alert", |s| {
            held_at_gate(s, "AlertFiring").is_some()
        })
        .await;
    let message = held_at_gate(&held, "AlertFiring").unwrap_or_default();
    assert!(
        message.contains(ALERT_NAME) && message.contains("severity=\"page\""),
        "{message}"
    );
    assert!(
        held.instances.iter().all(|i| !i.out_of_rotation),
        "the one in flight went back: {held:#?}"
    );
    let out_before = effective_writes(&sandbox, "DeregisterTargets");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        effective_writes(&sandbox, "DeregisterTargets"),
        out_before,
        "nothing went out while the alert fired"
    );
    let still = run.saved_status("gated").expect("status");
    assert!(
        still.instances.iter().any(|i| i.phase == InstancePhase::Pending),
        "{still:#?}"
    );

    // It clears: the plan goes on by itself.
    prometheus.set_alarm(false);
    prometheus.wait_firing(false, LIMIT).await.expect("the alert clears");
    let finished = run.finish().await;
    let progress = &finished.stderr;
    println!("{progress}");
    println!(
        "held with {out_before} of {} instances out so far: {message}",
        ids.len()
    );
    assert_eq!(finished.code, Some(0), "pitstop run failed:\n{progress}");
    assert!(
        progress
            .lines()
            .filter(|l| l.contains("Pending -> Pending: waiting (AlertFiring)"))
            .count()
            == 1,
        "one line when the alert started holding:\n{progress}"
    );
    let status = finished.status("gated");
    assert_eq!(status.phase, PlanPhase::Succeeded, "{status:#?}");
    let boots_after = sandbox.boot_counts();
    for id in &ids {
        assert_eq!(boots_after[id], boots_before[id] + 1, "{id} rebooted once");
    }
    assert_eq!(effective_writes(&sandbox, "DeregisterTargets"), ids.len());
    sandbox.shutdown().await.expect("sandbox stops");
}
