//! `maxUnavailable` end to end: the real `pitstop run` binary takes several instances of a
//! real HAProxy's backend out at once, under load, and never more than the bound, in all and
//! per Availability Zone. What was out when is HAProxy's own view, sampled throughout by the
//! sandbox; the figures are printed, no timing is asserted.
//!
//! Build the binaries first (`cargo build --workspace --bins`; `make test` does).

use std::collections::BTreeMap;
use std::time::Duration;

use pitstop::api::{InstancePhase, PlanPhase};
use pitstop_e2e::experiment::{ExperimentConfig, ExperimentResult, run_on};
use pitstop_e2e::report::RunMode;
use pitstop_e2e::sandbox::Sandbox;

/// One fleet at a time: two fleets under load on a 2-core machine would measure the machine.
static ONE_FLEET_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(instances: usize, extra_spec: &str, out: &std::path::Path) -> ExperimentConfig {
    let mut config = ExperimentConfig::new(instances, 300.0, RunMode::Pitstop, out.to_path_buf());
    config.settle = Duration::from_secs(1);
    config.extra_spec = extra_spec.to_owned();
    config
}

/// Runs the experiment and checks what every run must show: the plan succeeded, each
/// instance rebooted exactly once, and not one request failed.
async fn run_and_check(sandbox: &Sandbox, config: &ExperimentConfig) -> ExperimentResult {
    let result = run_on(sandbox, config).await.expect("experiment runs");
    let run = result.pitstop.clone().expect("pitstop ran");
    assert_eq!(run.exit_code, Some(0), "pitstop run failed:\n{}", run.progress);
    let status = run.final_status().expect("final status");
    assert_eq!(status.phase, PlanPhase::Succeeded, "{status:?}");
    assert!(
        status
            .instances
            .iter()
            .all(|i| i.phase == InstancePhase::Registered && !i.out_of_rotation),
        "{status:?}"
    );
    let reboots = result.reboots();
    assert!(
        reboots.values().all(|n| *n == 1),
        "each instance rebooted once: {reboots:?}"
    );
    assert!(
        result.sent_requests() > 1000,
        "the load ran: {:?}",
        result.report.load.totals
    );
    assert_eq!(result.failed_requests(), 0, "{:?}", result.report.load.totals);
    eprintln!(
        "{} instances, {}: {} requests, 0 failed; at most {} out at once; {:.1} s (one at a time needs at least {:.1} s)",
        config.sandbox.instances,
        config.extra_spec.trim().replace('\n', ","),
        result.sent_requests(),
        result.max_out_of_rotation,
        result.process_time.as_secs_f64(),
        result.minimum_time.as_secs_f64()
    );
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_instances_at_max_unavailable_three_never_have_more_than_three_out_and_drop_nothing() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let out = tempfile::tempdir().expect("temp dir");
    let config = config(10, "  maxUnavailable: 3\n", out.path());
    let sandbox = Sandbox::start(config.sandbox.clone())
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)");

    let result = run_and_check(&sandbox, &config).await;

    assert!(
        result.max_out_of_rotation <= 3,
        "HAProxy saw {} out at once",
        result.max_out_of_rotation
    );
    assert!(
        result.max_out_of_rotation >= 2,
        "the wave never had two out: maxUnavailable did nothing ({} at most)",
        result.max_out_of_rotation
    );
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_zone_limit_keeps_one_instance_per_zone_out_while_three_zones_go_at_once() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let out = tempfile::tempdir().expect("temp dir");
    // Six instances in zones a, b, c, a, b, c (the sandbox places them in turn), listed zone
    // by zone (a, a, b, b, c, c): a bound of 3 alone would take two of zone a and one of b
    // first; the per-zone limit takes one of each.
    let mut config = config(6, "  maxUnavailable: 3\n  maxUnavailablePerZone: 1\n", out.path());
    let sandbox = Sandbox::start(config.sandbox.clone())
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)");
    let ids = sandbox.instance_ids();
    let region = sandbox.region().to_owned();
    let zone_of: BTreeMap<String, String> = ids
        .iter()
        .enumerate()
        .map(|(index, id)| (id.clone(), format!("{region}{}", ["a", "b", "c"][index % 3])))
        .collect();
    let mut by_zone = ids.clone();
    by_zone.sort_by_key(|id| zone_of[id].clone());
    config.instance_order = Some(by_zone);

    let result = run_and_check(&sandbox, &config).await;

    let mut most_in_a_zone = 0;
    for snapshot in sandbox.rotation_history() {
        let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
        for id in snapshot.out_of_rotation() {
            *per_zone.entry(zone_of[&id].as_str()).or_default() += 1;
        }
        let most = per_zone.values().copied().max().unwrap_or(0);
        assert!(
            most <= 1,
            "two instances of one zone out at once at {:?}: {:?}",
            snapshot.elapsed,
            snapshot.out_of_rotation()
        );
        most_in_a_zone = most_in_a_zone.max(most);
    }
    assert_eq!(most_in_a_zone, 1, "HAProxy's history saw instances out");
    assert!(
        (2..=3).contains(&result.max_out_of_rotation),
        "zones went at once, within the bound: {} at most",
        result.max_out_of_rotation
    );
    sandbox.shutdown().await.expect("sandbox stops");
}
