//! Why issue 11 exists, shown on the sandbox: an Auto Scaling group with ELB health checks, whose service is slow
//! to start after a reboot, maintained by `pitstop run` with `autoScaling.mode: Ignore` (the group is told
//! nothing, as before issue 11). pitstop drains, reboots and registers the instance again; the service is still
//! warming up, so the target group reads it `unhealthy`, and the group replaces it: terminated, a spare launched in
//! its place. The test shows the replacement; it does not hide it.
//!
//! The Standby and SuspendProcesses modes that prevent it are compared with Ignore in `auto_scaling_modes.rs`; the
//! sandbox's side of them is tested in `sandbox_autoscaling.rs`.

mod sandbox_support;

use std::time::Duration;

use pitstop_e2e::experiment::{default_pitstop_binary, pitstop_run_command, read_to_end};
use pitstop_e2e::sandbox::{Power, Sandbox, SandboxConfig};

/// Upper bound of the run: the plan may never finish once its instance is gone, so it is stopped here.
const LIMIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_standby_the_group_replaces_an_instance_that_is_slow_to_start_after_its_reboot() {
    let sandbox = Sandbox::start(
        SandboxConfig::default()
            .with_spare_instances(3)
            .with_elb_health_check(Duration::from_secs(1))
            .with_app_warmup(Duration::from_secs(6)),
    )
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
    let yaml = format!(
        "apiVersion: pitstop.dev/v1alpha1\nkind: MaintenancePlan\nmetadata:\n  name: asg\nspec:\n  targetGroupArn: {}\n  selector:\n    autoScalingGroupName: {}\n  timeouts:\n    healthySeconds: 60\n  autoScaling:\n    mode: Ignore\n",
        sandbox.target_group_arn(),
        sandbox.auto_scaling_group_name()
    );
    std::fs::write(&plan_path, yaml).expect("plan");
    let mut child = pitstop_run_command(&binary, &plan_path, &state_path, Duration::from_millis(500), &sandbox)
        .spawn()
        .expect("pitstop run starts");
    let out_task = read_to_end(child.stdout.take().expect("stdout"));
    let err_task = read_to_end(child.stderr.take().expect("stderr"));

    // Until the group has replaced an instance pitstop rebooted, or pitstop has finished.
    let deadline = tokio::time::Instant::now() + LIMIT;
    let exit = loop {
        if let Some(status) = child.try_wait().expect("pitstop run") {
            break Some(status);
        }
        if !sandbox.auto_scaling_replacements().is_empty() || tokio::time::Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let replaced = sandbox.auto_scaling_replacements();
    if exit.is_none() {
        // The plan cannot finish an instance the group took away; stop it (kill_on_drop does the same).
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    let progress = err_task.await.unwrap_or_default();
    let _ = out_task.await;
    println!("{progress}");
    println!("pitstop run exit: {exit:?}; replaced by the group: {replaced:?}");
    assert!(
        !replaced.is_empty(),
        "the group replaced none of the instances pitstop rebooted (exit {exit:?}):\n{progress}"
    );
    let gone = &replaced[0];
    assert!(ids.contains(gone), "{gone} was one of the fleet's instances");
    assert!(
        sandbox.boot_count(gone).unwrap_or(0) >= 2,
        "{gone} was rebooted by pitstop before the group replaced it"
    );
    // The replacement finishes in the background (drain, then power off): wait for it.
    let until = tokio::time::Instant::now() + LIMIT;
    while sandbox.power(gone) != Some(Power::Terminated) {
        assert!(tokio::time::Instant::now() < until, "{gone} not terminated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sandbox.shutdown().await.expect("sandbox stops");
}

/// The same fleet with the processes the `SuspendProcesses` mode suspends, suspended by hand around an `Ignore` run:
/// the group replaces nothing, every member is maintained, and no request fails. (The mode itself, which does this
/// crash-safely and resumes only what it suspended, is in `auto_scaling_modes.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_health_check_and_replace_unhealthy_suspended_the_group_replaces_nothing() {
    let sandbox = Sandbox::start(
        SandboxConfig::default()
            .with_spare_instances(3)
            .with_elb_health_check(Duration::from_secs(1))
            .with_app_warmup(Duration::from_secs(6)),
    )
    .await
    .expect("sandbox starts (haproxy installed? `make haproxy`)");
    let ids = sandbox.instance_ids();
    let asg = aws_sdk_autoscaling::Client::new(&sandbox_support::sdk_config(&sandbox, true).await);
    let name = sandbox.auto_scaling_group_name().to_owned();
    asg.suspend_processes()
        .auto_scaling_group_name(&name)
        .scaling_processes("HealthCheck")
        .scaling_processes("ReplaceUnhealthy")
        .send()
        .await
        .expect("SuspendProcesses");
    let out = tempfile::tempdir().expect("temp dir");
    let plan_path = out.path().join("plan.yaml");
    let state_path = out.path().join("state.json");
    std::fs::write(
        &plan_path,
        format!(
            "apiVersion: pitstop.dev/v1alpha1\nkind: MaintenancePlan\nmetadata:\n  name: asg\nspec:\n  targetGroupArn: {}\n  selector:\n    autoScalingGroupName: {name}\n  timeouts:\n    healthySeconds: 60\n  autoScaling:\n    mode: Ignore\n",
            sandbox.target_group_arn()
        ),
    )
    .expect("plan");
    let boots_before = sandbox.boot_counts();
    let load = pitstop_e2e::load::start(pitstop_e2e::load::LoadConfig {
        url: sandbox.frontend_url(),
        rate_per_s: 100.0,
        ..pitstop_e2e::load::LoadConfig::default()
    })
    .expect("the load starts");
    let mut child = pitstop_run_command(
        &default_pitstop_binary(),
        &plan_path,
        &state_path,
        Duration::from_millis(500),
        &sandbox,
    )
    .spawn()
    .expect("pitstop run starts");
    let out_task = read_to_end(child.stdout.take().expect("stdout"));
    let err_task = read_to_end(child.stderr.take().expect("stderr"));
    let exit = tokio::time::timeout(LIMIT * 2, child.wait())
        .await
        .expect("pitstop run finishes")
        .expect("pitstop run exits");
    let progress = err_task.await.unwrap_or_default();
    let _ = out_task.await;
    let totals = load.stop().await.totals;
    asg.resume_processes()
        .auto_scaling_group_name(&name)
        .scaling_processes("HealthCheck")
        .scaling_processes("ReplaceUnhealthy")
        .send()
        .await
        .expect("ResumeProcesses");
    println!("{progress}");
    println!("processes suspended around the run: {totals:?}");
    assert_eq!(exit.code(), Some(0), "{progress}");
    assert!(sandbox.auto_scaling_replacements().is_empty());
    for id in &ids {
        assert_eq!(sandbox.power(id), Some(Power::Running), "{id}");
        assert_eq!(sandbox.boot_counts()[id], boots_before[id] + 1, "{id} rebooted once");
    }
    // Resumed with nothing marked Unhealthy: three of the group's health-check rounds (one a health-check
    // interval) replace nothing afterwards either.
    tokio::time::sleep(sandbox.config().health_interval * 3).await;
    assert!(sandbox.auto_scaling_replacements().is_empty());
    assert!(totals.sent > 500, "the load ran: {totals:?}");
    assert_eq!(totals.failed(), 0, "{totals:?}");
    sandbox.shutdown().await.expect("sandbox stops");
}
