//! Issue 11's comparison, side by side on the sandbox: the same Auto Scaling group with ELB health checks and a
//! service that is slow to start after its reboot, under load, maintained by a real `pitstop run` three ways
//! (`spec.autoScaling.mode`):
//!
//! - `Standby` (the default): no instance replaced, no failed request, the group's sizes as before (MinSize was
//!   lowered by one around each Standby and restored);
//! - `SuspendProcesses`: the same, and the processes as before (one suspended beforehand by someone else stays so);
//! - `Ignore`: the group replaces instances pitstop rebooted (shown, not hidden).
//!
//! The group's health check grace period (10 s) is longer than the service's warm-up (6 s): it protects an
//! instance that comes back into service through ExitStandby, as on AWS, and does nothing for one the group never
//! saw leave.

mod sandbox_support;

use std::time::Duration;

use pitstop_e2e::experiment::{default_pitstop_binary, pitstop_run_command, read_to_end};
use pitstop_e2e::load::LoadConfig;
use pitstop_e2e::report::Counts;
use pitstop_e2e::sandbox::{CallOutcome, LostAnswer, LostAnswerMode, Power, Sandbox, SandboxConfig};

/// Upper bound of one run: three instances, each drained, rebooted, warmed up and healthy again.
const LIMIT: Duration = Duration::from_secs(180);

/// What one maintained fleet showed.
#[derive(Debug)]
struct Outcome {
    /// `pitstop run`'s exit code (None: stopped at the limit).
    exit: Option<i32>,
    /// Its progress output.
    progress: String,
    /// The instances the group replaced.
    replaced: Vec<String>,
    /// The load's totals.
    totals: Counts,
    /// Effective Auto Scaling writes, as (operation, summary).
    writes: Vec<(String, String)>,
    /// MinSize, DesiredCapacity, MaxSize after the run.
    sizes: (i32, i32, i32),
    /// The group's suspended processes after the run, sorted.
    suspended: Vec<String>,
    /// Lifecycle states of the members after the run.
    lifecycles: Vec<String>,
    /// Each original instance's boots during the run (None: no longer running).
    reboots: Vec<Option<u64>>,
}

/// How `pitstop run` is disturbed in [`maintain`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disturbance {
    /// Not at all.
    None,
    /// The first EnterStandby is carried out and its connection reset before the answer.
    LostEnterStandbyAnswer,
    /// `pitstop run` is killed (SIGKILL) once the first instance is in Standby, and run again on its state file.
    KilledInStandby,
}

/// Maintains a fresh fleet with `mode` (None: the field left out), with `suspended_before` suspended by someone
/// else first.
async fn maintain(mode: Option<&str>, suspended_before: &[&str]) -> Outcome {
    maintain_disturbed(mode, suspended_before, Disturbance::None).await
}

async fn maintain_disturbed(mode: Option<&str>, suspended_before: &[&str], disturbance: Disturbance) -> Outcome {
    let sandbox = Sandbox::start(
        SandboxConfig::default()
            .with_spare_instances(3)
            .with_elb_health_check(Duration::from_secs(10))
            .with_app_warmup(Duration::from_secs(6)),
    )
    .await
    .expect("sandbox starts (haproxy installed? `make haproxy`)");
    let binary = default_pitstop_binary();
    assert!(
        binary.is_file(),
        "{} not found: `cargo build --workspace --bins` first",
        binary.display()
    );
    let ids = sandbox.instance_ids();
    let name = sandbox.auto_scaling_group_name().to_owned();
    let asg = aws_sdk_autoscaling::Client::new(&sandbox_support::sdk_config(&sandbox, true).await);
    if !suspended_before.is_empty() {
        let mut call = asg.suspend_processes().auto_scaling_group_name(&name);
        for process in suspended_before {
            call = call.scaling_processes(*process);
        }
        call.send().await.expect("SuspendProcesses by someone else");
    }
    let out = tempfile::tempdir().expect("temp dir");
    let plan_path = out.path().join("plan.yaml");
    let state_path = out.path().join("state.json");
    let auto_scaling = mode
        .map(|m| format!("  autoScaling:\n    mode: {m}\n"))
        .unwrap_or_default();
    std::fs::write(
        &plan_path,
        format!(
            "apiVersion: pitstop.dev/v1alpha1\nkind: MaintenancePlan\nmetadata:\n  name: asg\nspec:\n  targetGroupArn: {}\n  selector:\n    autoScalingGroupName: {name}\n  timeouts:\n    healthySeconds: 60\n{auto_scaling}",
            sandbox.target_group_arn()
        ),
    )
    .expect("plan");
    let boots_before = sandbox.boot_counts();
    let load = pitstop_e2e::load::start(LoadConfig {
        url: sandbox.frontend_url(),
        rate_per_s: 100.0,
        ..LoadConfig::default()
    })
    .expect("the load starts");
    if disturbance == Disturbance::LostEnterStandbyAnswer {
        sandbox
            .faults()
            .set_lost_answer("EnterStandby", Some(LostAnswer::next(LostAnswerMode::Reset, 1)))
            .expect("fault set");
    }
    let mut killed_progress = String::new();
    if disturbance == Disturbance::KilledInStandby {
        let mut first = pitstop_run_command(&binary, &plan_path, &state_path, Duration::from_millis(500), &sandbox)
            .spawn()
            .expect("pitstop run starts");
        let first_err = read_to_end(first.stderr.take().expect("stderr"));
        let deadline = tokio::time::Instant::now() + LIMIT;
        while !in_standby(&asg, &ids[0]).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the first instance never entered Standby"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        first.start_kill().expect("kill -9");
        let _ = first.wait().await;
        killed_progress = first_err.await.unwrap_or_default();
        println!("killed in Standby:\n{killed_progress}");
    }
    let mut child = pitstop_run_command(&binary, &plan_path, &state_path, Duration::from_millis(500), &sandbox)
        .spawn()
        .expect("pitstop run starts");
    let out_task = read_to_end(child.stdout.take().expect("stdout"));
    let err_task = read_to_end(child.stderr.take().expect("stderr"));
    let exit = match tokio::time::timeout(LIMIT, child.wait()).await {
        Ok(status) => status.expect("pitstop run exits").code(),
        Err(_) => {
            // A plan whose instance the group took away may never finish; stop it.
            let _ = child.start_kill();
            let _ = child.wait().await;
            None
        }
    };
    let progress = killed_progress + &err_task.await.unwrap_or_default();
    let _ = out_task.await;
    let totals = load.stop().await.totals;
    let lost = sandbox
        .call_log()
        .records()
        .iter()
        .filter(|c| c.operation == "EnterStandby" && matches!(c.outcome, CallOutcome::AnswerLost { .. }))
        .count();
    if disturbance == Disturbance::LostEnterStandbyAnswer {
        assert_eq!(lost, 1, "the fault fired");
    }
    // Three of the group's health-check rounds after the run: nothing marked meanwhile is replaced later either.
    tokio::time::sleep(sandbox.config().health_interval * 3).await;
    let replaced = sandbox.auto_scaling_replacements();
    let group = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&name)
        .send()
        .await
        .expect("DescribeAutoScalingGroups");
    let group = group.auto_scaling_groups().first().expect("the group").clone();
    let mut suspended: Vec<String> = group
        .suspended_processes()
        .iter()
        .filter_map(|p| p.process_name().map(str::to_owned))
        .collect();
    suspended.sort();
    let lifecycles = group
        .instances()
        .iter()
        .map(|i| i.lifecycle_state().map(|s| s.as_str().to_owned()).unwrap_or_default())
        .collect();
    let writes = sandbox
        .call_log()
        .writes()
        .into_iter()
        .filter(|r| r.is_effective_write())
        .filter(|r| {
            [
                "EnterStandby",
                "ExitStandby",
                "UpdateAutoScalingGroup",
                "SuspendProcesses",
                "ResumeProcesses",
            ]
            .contains(&r.operation.as_str())
        })
        .map(|r| (r.operation, r.summary))
        .collect();
    let boots_after = sandbox.boot_counts();
    let reboots = ids
        .iter()
        .map(|id| (sandbox.power(id) == Some(Power::Running)).then(|| boots_after[id].saturating_sub(boots_before[id])))
        .collect();
    let outcome = Outcome {
        exit,
        progress,
        replaced,
        totals,
        writes,
        sizes: (
            group.min_size().unwrap_or_default(),
            group.desired_capacity().unwrap_or_default(),
            group.max_size().unwrap_or_default(),
        ),
        suspended,
        lifecycles,
        reboots,
    };
    println!("{}", outcome.progress);
    println!(
        "mode {mode:?} ({disturbance:?}): exit {:?}; replaced {:?}; requests {} sent, {} failed; Auto Scaling writes \
         {:?}; sizes {:?}; suspended {:?}",
        outcome.exit,
        outcome.replaced,
        outcome.totals.sent,
        outcome.totals.failed(),
        outcome.writes,
        outcome.sizes,
        outcome.suspended
    );
    sandbox.shutdown().await.expect("sandbox stops");
    outcome
}

/// Whether the group shows `id` in Standby.
async fn in_standby(asg: &aws_sdk_autoscaling::Client, id: &str) -> bool {
    asg.describe_auto_scaling_instances()
        .instance_ids(id)
        .send()
        .await
        .ok()
        .and_then(|out| {
            out.auto_scaling_instances()
                .first()
                .map(|i| i.lifecycle_state() == Some("Standby"))
        })
        .unwrap_or(false)
}

/// What every Standby run must show, however it was disturbed: one Standby and one reboot per instance, nothing
/// replaced, no failed request, the group as it was.
fn assert_standby_done_once(outcome: &Outcome) {
    assert_eq!(outcome.exit, Some(0), "{}", outcome.progress);
    assert!(outcome.replaced.is_empty(), "{outcome:?}");
    assert_eq!(outcome.reboots, [Some(1); 3], "{outcome:?}");
    assert!(outcome.totals.sent > 500, "the load ran: {:?}", outcome.totals);
    assert_eq!(outcome.totals.failed(), 0, "{:?}", outcome.totals);
    assert_eq!(count(outcome, "EnterStandby"), 3, "{:?}", outcome.writes);
    assert_eq!(count(outcome, "ExitStandby"), 3, "{:?}", outcome.writes);
    assert_eq!(outcome.sizes, (3, 3, 6), "{outcome:?}");
    assert_eq!(outcome.lifecycles, ["InService"; 3], "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_enter_standby_answer_still_means_one_standby_per_instance_and_the_sizes_restored() {
    let outcome = maintain_disturbed(None, &[], Disturbance::LostEnterStandbyAnswer).await;
    assert_standby_done_once(&outcome);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pitstop_killed_while_an_instance_is_in_standby_finishes_it_once_when_run_again() {
    let outcome = maintain_disturbed(None, &[], Disturbance::KilledInStandby).await;
    assert_standby_done_once(&outcome);
}

fn count(outcome: &Outcome, operation: &str) -> usize {
    outcome.writes.iter().filter(|(op, _)| op == operation).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_the_default_replaces_nothing_fails_no_request_and_restores_the_sizes() {
    let outcome = maintain(None, &[]).await;
    assert_standby_done_once(&outcome);
    // Each instance: MinSize lowered (the group is at it), EnterStandby, ExitStandby, MinSize restored.
    assert_eq!(count(&outcome, "UpdateAutoScalingGroup"), 6, "{:?}", outcome.writes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_processes_replaces_nothing_fails_no_request_and_resumes_only_its_own() {
    let outcome = maintain(Some("SuspendProcesses"), &["AZRebalance"]).await;
    assert_eq!(outcome.exit, Some(0), "{}", outcome.progress);
    assert!(outcome.replaced.is_empty(), "{outcome:?}");
    assert_eq!(outcome.reboots, [Some(1); 3], "{outcome:?}");
    assert!(outcome.totals.sent > 500, "the load ran: {:?}", outcome.totals);
    assert_eq!(outcome.totals.failed(), 0, "{:?}", outcome.totals);
    // pitstop's own calls name the two processes that were running (the first SuspendProcesses is the test's).
    let ours = "ScalingProcesses.member.1=HealthCheck&ScalingProcesses.member.2=ReplaceUnhealthy";
    let pitstops: Vec<&(String, String)> = outcome.writes.iter().skip(1).collect();
    assert_eq!(pitstops.len(), 6, "{pitstops:?}");
    for pair in pitstops.chunks(2) {
        assert_eq!(pair[0].0, "SuspendProcesses", "{pitstops:?}");
        assert_eq!(pair[1].0, "ResumeProcesses", "{pitstops:?}");
        assert!(pair.iter().all(|(_, summary)| summary.ends_with(ours)), "{pitstops:?}");
    }
    assert_eq!(count(&outcome, "EnterStandby"), 0, "{:?}", outcome.writes);
    // AZRebalance was suspended by someone else before the run: it stays suspended.
    assert_eq!(outcome.suspended, ["AZRebalance"], "{outcome:?}");
    assert_eq!(outcome.sizes, (3, 3, 6), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignore_lets_the_group_replace_instances_pitstop_rebooted() {
    let outcome = maintain(Some("Ignore"), &[]).await;
    assert!(!outcome.replaced.is_empty(), "{outcome:?}");
    assert!(
        outcome.writes.is_empty(),
        "Ignore tells the group nothing: {:?}",
        outcome.writes
    );
}
