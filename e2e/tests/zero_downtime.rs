//! The seed's experiment as a test: a 3-instance fleet behind a real HAProxy, under load.
//! `pitstop run` reboots every instance exactly once with zero failed requests; the same
//! reboots done naively fail requests (so this test can fail); faults drive the Failed paths,
//! where the instance goes back into the target group and the plan stops.

use std::time::Duration;

use pitstop::api::{InstancePhase, PlanPhase};
use pitstop_e2e::experiment::{ExperimentConfig, ExperimentResult, run_on};
use pitstop_e2e::report::RunMode;
use pitstop_e2e::sandbox::{Sandbox, SandboxConfig};

fn config(mode: RunMode, out: &std::path::Path) -> ExperimentConfig {
    let mut config = ExperimentConfig::new(3, 200.0, mode, out.to_path_buf());
    config.sandbox = SandboxConfig::default();
    config.settle = Duration::from_secs(1);
    config
}

fn reboots(result: &ExperimentResult) -> Vec<u64> {
    result.reboots().into_values().collect()
}

/// One fleet at a time: several fleets under load on a 2-core machine would measure the
/// machine, not pitstop. Held for the whole test.
static ONE_FLEET_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pitstop_reboots_each_instance_once_with_zero_failed_requests_and_naive_fails_some() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let out = tempfile::tempdir().expect("temp dir");
    let sandbox = sandbox().await;

    let result = run_on(&sandbox, &config(RunMode::Pitstop, &out.path().join("pitstop")))
        .await
        .expect("pitstop experiment runs");
    let run = result.pitstop.clone().expect("pitstop ran");
    assert_eq!(run.exit_code, Some(0), "pitstop run failed:\n{}", run.progress);
    let status = run.final_status().expect("final status");
    assert_eq!(status.phase, PlanPhase::Succeeded);
    assert!(
        status
            .instances
            .iter()
            .all(|i| i.phase == InstancePhase::Registered && !i.out_of_rotation)
    );
    assert!(
        result.report.load.totals.sent > 1000,
        "the load ran: {:?}",
        result.report.load.totals
    );
    assert_eq!(result.failed_requests(), 0, "{:?}", result.report.load.totals);
    assert_eq!(reboots(&result), [1, 1, 1], "each instance rebooted exactly once");
    assert_eq!(result.max_out_of_rotation, 1, "one instance out of rotation at a time");

    let naive = run_on(&sandbox, &config(RunMode::Naive, &out.path().join("naive")))
        .await
        .expect("naive experiment runs");
    assert_eq!(reboots(&naive), [1, 1, 1]);
    assert!(
        naive.failed_requests() > 0,
        "rebooting in place must fail requests, or this test proves nothing: {:?}",
        naive.report.load.totals
    );
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_maintenance_command_fails_the_plan_and_the_instance_goes_back() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let out = tempfile::tempdir().expect("temp dir");
    let sandbox = sandbox().await;
    let ids = sandbox.instance_ids();
    sandbox
        .faults()
        .set_command_failure(&ids[1], Some(3))
        .expect("fault set");

    let result = run_on(&sandbox, &config(RunMode::Pitstop, out.path()))
        .await
        .expect("experiment runs");
    let run = result.pitstop.clone().expect("pitstop ran");
    assert_eq!(run.exit_code, Some(1), "a failed plan exits 1:\n{}", run.progress);
    let status = run.final_status().expect("final status");
    assert_eq!(status.phase, PlanPhase::Failed);
    let phases: Vec<_> = status.instances.iter().map(|i| i.phase).collect();
    assert_eq!(
        phases,
        [InstancePhase::Registered, InstancePhase::Failed, InstancePhase::Pending]
    );
    assert_eq!(status.instances[1].failure_reason.as_deref(), Some("MaintenanceFailed"));
    assert!(!status.instances[1].out_of_rotation);
    let message = status.instances[1].message.as_deref().unwrap_or_default();
    assert!(
        message.ends_with("(registered again: healthy)"),
        "the plan ends once the health checks have decided: {message}"
    );
    let rotation = sandbox.rotation_states().await.expect("haproxy state");
    assert!(
        rotation.values().all(|r| r.in_rotation()),
        "every instance back in rotation: {rotation:?}"
    );
    assert_eq!(reboots(&result), [1, 0, 0], "the third instance was not touched");
    assert_eq!(result.failed_requests(), 0, "{:?}", result.report.load.totals);
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_unhealthy_after_boot_fails_on_the_health_timeout_and_stays_registered() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let out = tempfile::tempdir().expect("temp dir");
    let sandbox = sandbox().await;
    let ids = sandbox.instance_ids();
    sandbox
        .faults()
        .set_unhealthy_after_boot(&ids[0], true)
        .expect("fault set");

    let mut config = config(RunMode::Pitstop, out.path());
    config.healthy_seconds = 6;
    let result = run_on(&sandbox, &config).await.expect("experiment runs");
    let run = result.pitstop.clone().expect("pitstop ran");
    assert_eq!(run.exit_code, Some(1), "{}", run.progress);
    let status = run.final_status().expect("final status");
    assert_eq!(status.instances[0].phase, InstancePhase::Failed);
    assert_eq!(status.instances[0].failure_reason.as_deref(), Some("HealthyTimeout"));
    assert!(
        !status.instances[0].out_of_rotation,
        "registered; the target group's checks keep traffic off it"
    );
    assert_eq!(status.instances[1].phase, InstancePhase::Pending);
    assert_eq!(reboots(&result), [1, 0, 0]);
    assert_eq!(result.failed_requests(), 0, "{:?}", result.report.load.totals);
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a throttling stress run (about 6 minutes): run by `make chaos`"]
async fn throttled_aws_calls_are_retried_and_the_plan_still_succeeds() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let out = tempfile::tempdir().expect("temp dir");
    let sandbox = sandbox().await;
    sandbox.faults().set_throttle_rate(0.3).expect("fault set");

    let mut config = config(RunMode::Pitstop, out.path());
    // The healthy limit counts from the first RegisterTargets try, which the SDK's adaptive
    // rate limiter can hold for tens of seconds at this rate; this test is about retries,
    // not about that limit.
    config.healthy_seconds = 180;
    let result = run_on(&sandbox, &config).await.expect("experiment runs");
    let run = result.pitstop.clone().expect("pitstop ran");
    assert_eq!(run.exit_code, Some(0), "{}", run.progress);
    let throttled = sandbox
        .call_log()
        .records()
        .iter()
        .filter(|c| c.outcome == pitstop_e2e::sandbox::CallOutcome::Throttled)
        .count();
    assert!(throttled > 0, "the fault threw some calls back");
    assert_eq!(reboots(&result), [1, 1, 1]);
    assert_eq!(result.failed_requests(), 0);
    sandbox.shutdown().await.expect("sandbox stops");
}
