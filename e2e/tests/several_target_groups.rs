//! Instances in two target groups (HTTP and HTTPS, say), each a real HAProxy frontend and
//! backend with its own health checks, both under load at once, maintained by the real
//! `pitstop run`: a plan naming both groups reboots every instance with zero failed requests
//! through either frontend; a plan naming only the first group (what pitstop did before it
//! knew of several) reboots instances still serving through the second, and requests fail
//! there, so the test can fail.

use std::time::Duration;

use pitstop::api::{InstancePhase, PlanPhase};
use pitstop_e2e::experiment::{PitstopRun, default_pitstop_binary, pitstop_run_command, read_to_end};
use pitstop_e2e::load::{self, LoadConfig};
use pitstop_e2e::report::LoadResult;
use pitstop_e2e::sandbox::{Sandbox, SandboxConfig, TargetState};

/// Requests per second through each frontend.
const RATE: f64 = 100.0;
/// Upper bound on one `pitstop run` over the fleet; only keeps a broken run from hanging.
const RUN_LIMIT: Duration = Duration::from_secs(180);

/// A plan for every instance of the sandbox, naming `groups` as `targetGroupArns` (or, for
/// one, as `targetGroupArn`, as every plan did before).
fn plan(name: &str, groups: &[String], instances: &[String]) -> String {
    let mut yaml =
        format!("apiVersion: pitstop.dev/v1alpha1\nkind: MaintenancePlan\nmetadata:\n  name: {name}\nspec:\n");
    match groups {
        [one] => yaml.push_str(&format!("  targetGroupArn: {one}\n")),
        several => {
            yaml.push_str("  targetGroupArns:\n");
            for arn in several {
                yaml.push_str(&format!("    - {arn}\n"));
            }
        }
    }
    yaml.push_str("  instances:\n");
    for id in instances {
        yaml.push_str(&format!("    - {id}\n"));
    }
    yaml.push_str("  timeouts:\n    healthySeconds: 60\n");
    // pitstop's own DeregisterTargets in each group is what this file checks; in Standby the
    // group would take the instance out of all its target groups itself.
    yaml.push_str(pitstop_e2e::experiment::IGNORE_AUTO_SCALING);
    yaml
}

/// Runs `pitstop run` on `yaml` while every frontend of the sandbox is under load; returns
/// the run and each frontend's load result, in target group order.
async fn maintain_under_load(sandbox: &Sandbox, dir: &std::path::Path, yaml: &str) -> (PitstopRun, Vec<LoadResult>) {
    let plan_path = dir.join("plan.yaml");
    let state_path = dir.join("state.json");
    std::fs::create_dir_all(dir).expect("out dir");
    std::fs::write(&plan_path, yaml).expect("write the plan");
    let loads: Vec<_> = sandbox
        .frontend_urls()
        .into_iter()
        .map(|url| {
            load::start(LoadConfig {
                url,
                rate_per_s: RATE,
                ..LoadConfig::default()
            })
            .expect("the load starts")
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let binary = default_pitstop_binary();
    assert!(
        binary.is_file(),
        "{} not found: `cargo build --workspace --bins` first",
        binary.display()
    );
    let mut child = pitstop_run_command(&binary, &plan_path, &state_path, Duration::from_millis(500), sandbox)
        .spawn()
        .expect("pitstop run starts");
    let out = read_to_end(child.stdout.take().expect("stdout"));
    let err = read_to_end(child.stderr.take().expect("stderr"));
    let status = tokio::time::timeout(RUN_LIMIT, child.wait())
        .await
        .expect("pitstop run finishes")
        .expect("pitstop run exits");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut results = Vec::new();
    for load in loads {
        results.push(load.stop().await);
    }
    let run = PitstopRun {
        exit_code: status.code(),
        final_yaml: out.await.unwrap_or_default(),
        progress: err.await.unwrap_or_default(),
        peak_rss_kib: None,
    };
    (run, results)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_in_two_groups_are_drained_from_both_with_zero_failed_requests_and_one_group_is_not_enough() {
    let sandbox = Sandbox::start(SandboxConfig::default().with_target_groups(2))
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)");
    let groups = sandbox.target_group_arns();
    assert_eq!(groups.len(), 2);
    for arn in &groups {
        let health = sandbox.target_health_in(arn).await.expect("health");
        assert!(
            health.values().all(|h| h.state == TargetState::Healthy),
            "{arn}: {health:?}"
        );
    }
    let ids = sandbox.instance_ids();
    let out = tempfile::tempdir().expect("temp dir");

    // Both groups named: every instance leaves both before its reboot.
    let boots_before = sandbox.boot_counts();
    let (run, loads) = maintain_under_load(&sandbox, &out.path().join("both"), &plan("both", &groups, &ids)).await;
    assert_eq!(run.exit_code, Some(0), "pitstop run failed:\n{}", run.progress);
    let status = run.final_status().expect("final status");
    assert_eq!(status.phase, PlanPhase::Succeeded, "{}", run.progress);
    // Out of both groups: a done instance's status no longer lists the groups it left (they
    // are working state, dropped to keep the status small), so the sandbox's log says it.
    let deregistered = sandbox
        .call_log()
        .records()
        .into_iter()
        .filter(|c| c.operation == "DeregisterTargets" && c.is_effective_write())
        .fold(std::collections::BTreeMap::<String, usize>::new(), |mut counts, c| {
            for id in c.instance_ids {
                *counts.entry(id).or_default() += 1;
            }
            counts
        });
    for instance in &status.instances {
        assert_eq!(instance.phase, InstancePhase::Registered);
        assert_eq!(
            deregistered.get(&instance.instance_id),
            Some(&2),
            "out of both groups: {instance:?}, {deregistered:?}"
        );
    }
    let boots_after = sandbox.boot_counts();
    for id in &ids {
        assert_eq!(
            boots_after.get(id).copied().unwrap_or(0) - boots_before.get(id).copied().unwrap_or(0),
            1,
            "{id} rebooted once"
        );
    }
    for (arn, load) in groups.iter().zip(&loads) {
        println!("both groups named, through {arn}: {:?}", load.totals);
        assert!(load.totals.sent > 500, "the load ran: {:?}", load.totals);
        assert_eq!(load.totals.failed(), 0, "through {arn}: {:?}", load.totals);
    }

    // Only the first group named: the instances still serve through the second while they
    // reboot, and requests through it fail.
    let (run, loads) = maintain_under_load(
        &sandbox,
        &out.path().join("first-only"),
        &plan("first-only", &groups[..1], &ids),
    )
    .await;
    assert_eq!(run.exit_code, Some(0), "pitstop run failed:\n{}", run.progress);
    for (arn, load) in groups.iter().zip(&loads) {
        println!("only the first group named, through {arn}: {:?}", load.totals);
    }
    assert_eq!(
        loads[0].totals.failed(),
        0,
        "the group that was drained: {:?}",
        loads[0].totals
    );
    assert!(
        loads[1].totals.failed() > 0,
        "rebooting instances still in the second group must fail requests there, or this test proves nothing: {:?}",
        loads[1].totals
    );
    sandbox.shutdown().await.expect("sandbox stops");
}
