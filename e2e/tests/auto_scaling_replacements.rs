//! Why issue 11 exists, shown on the sandbox: an Auto Scaling group with ELB health checks, whose service is slow
//! to start after a reboot, maintained by today's `pitstop run` (which does not tell the group anything, what issue 11
//! calls `autoScaling.mode: Ignore`). pitstop drains, reboots and registers the instance again; the service is still
//! warming up, so the target group reads it `unhealthy`, and the group replaces it: terminated, a spare launched in
//! its place. The test shows the replacement; it does not hide it.
//!
//! The Standby and SuspendProcesses modes that prevent it are not built yet; the sandbox's side of them is tested in
//! `sandbox_autoscaling.rs`.

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
        "apiVersion: pitstop.dev/v1alpha1\nkind: MaintenancePlan\nmetadata:\n  name: asg\nspec:\n  targetGroupArn: {}\n  selector:\n    autoScalingGroupName: {}\n  timeouts:\n    healthySeconds: 60\n",
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
