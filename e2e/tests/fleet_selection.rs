//! Plans that select their instances (`selector.targetGroupMembers`) on the sandbox, run by
//! the real `pitstop run`, while the fleet changes under them as an Auto Scaling group
//! changes it:
//!
//! - an instance terminated mid-run (before its turn) is skipped with a reason, untouched,
//!   and the plan succeeds with zero failed requests;
//! - so is one terminated while pitstop has it out of rotation, mid-reboot, once pitstop's
//!   minutely look at EC2 sees it gone (SSM never reports its command finished);
//! - a scheduled plan runs in two windows; an instance replaced between them is not in the
//!   second run, and its replacement is maintained there.

mod pitstop_support;

use std::path::Path;
use std::time::Duration;

use jiff::Timestamp;
use pitstop::api::{InstancePhase, MaintenancePlanStatus, PlanPhase};
use pitstop_e2e::experiment::{default_pitstop_binary, pitstop_run_command, read_to_end};
use pitstop_e2e::load::{self, LoadConfig};
use pitstop_e2e::sandbox::{Sandbox, SandboxConfig, TargetState};

/// Upper bound on waiting for a run; only keeps a broken run from hanging.
const LIMIT: Duration = Duration::from_secs(240);

/// A plan over the members of the sandbox's target group, with `extra` spec lines. Every plan
/// here says `autoScaling.mode: Ignore`: what is checked is pitstop's own target-group calls,
/// and every sandbox instance belongs to its Auto Scaling group (the modes are compared in
/// `auto_scaling_modes.rs`).
fn selected_plan(name: &str, arn: &str, extra: &str) -> String {
    format!(
        "apiVersion: pitstop.dev/v1alpha1\nkind: MaintenancePlan\nmetadata:\n  name: {name}\nspec:\n  targetGroupArn: {arn}\n  selector:\n    targetGroupMembers: true\n  timeouts:\n    healthySeconds: 60\n  autoScaling:\n    mode: Ignore\n{extra}"
    )
}

/// Waits until the plan's recorded status satisfies `done`; panics with the last status after [`LIMIT`].
async fn wait_for_status(
    state_file: &Path,
    name: &str,
    what: &str,
    done: impl Fn(&MaintenancePlanStatus) -> bool,
) -> MaintenancePlanStatus {
    pitstop_support::wait_for_saved_status(state_file, name, what, LIMIT, done).await
}

fn phase_of(status: &MaintenancePlanStatus, id: &str) -> Option<InstancePhase> {
    status.instances.iter().find(|i| i.instance_id == id).map(|i| i.phase)
}

/// Runs `pitstop run` on the plan file with the state file until it exits; returns its exit code.
async fn run_to_end(plan_path: &Path, state_path: &Path, sandbox: &Sandbox) -> Option<i32> {
    let mut child = pitstop_run_command(&binary(), plan_path, state_path, Duration::from_millis(500), sandbox)
        .spawn()
        .expect("pitstop run starts");
    let out_task = read_to_end(child.stdout.take().expect("stdout"));
    let err_task = read_to_end(child.stderr.take().expect("stderr"));
    let exit = tokio::time::timeout(LIMIT, child.wait())
        .await
        .expect("pitstop run finishes")
        .expect("pitstop run exits");
    let _ = out_task.await;
    println!("{}", err_task.await.unwrap_or_default());
    exit.code()
}

fn binary() -> std::path::PathBuf {
    let binary = default_pitstop_binary();
    assert!(
        binary.is_file(),
        "{} not found: `cargo build --workspace --bins` first",
        binary.display()
    );
    binary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_terminated_mid_run_is_skipped_with_a_reason_and_the_plan_succeeds() {
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)");
    let ids = sandbox.instance_ids();
    let out = tempfile::tempdir().expect("temp dir");
    let plan_path = out.path().join("plan.yaml");
    let state_path = out.path().join("state.json");
    std::fs::write(&plan_path, selected_plan("fleet", sandbox.target_group_arn(), "")).expect("plan");
    let boots_before = sandbox.boot_counts();
    let load = load::start(LoadConfig {
        url: sandbox.frontend_url(),
        rate_per_s: 100.0,
        ..LoadConfig::default()
    })
    .expect("the load starts");

    let mut child = pitstop_run_command(&binary(), &plan_path, &state_path, Duration::from_millis(500), &sandbox)
        .spawn()
        .expect("pitstop run starts");
    let out_task = read_to_end(child.stdout.take().expect("stdout"));
    let err_task = read_to_end(child.stderr.take().expect("stderr"));

    // Once the first instance is out, the last one is terminated (its turn has not come).
    let status = wait_for_status(&state_path, "fleet", "the first instance out", |s| {
        s.instances.first().is_some_and(|i| i.out_of_rotation)
    })
    .await;
    assert_eq!(
        status.selection.as_ref().map(|s| s.instances.clone()),
        Some(ids.clone()),
        "every member selected"
    );
    sandbox.terminate_instance(&ids[2]).await.expect("terminate");

    let exit = tokio::time::timeout(LIMIT, child.wait())
        .await
        .expect("pitstop run finishes")
        .expect("pitstop run exits");
    let progress = err_task.await.unwrap_or_default();
    let final_yaml = out_task.await.unwrap_or_default();
    let load = load.stop().await;
    println!("{progress}");
    println!("terminated mid-run, through the frontend: {:?}", load.totals);
    assert_eq!(exit.code(), Some(0), "pitstop run failed:\n{progress}\n{final_yaml}");
    let status = pitstop_support::read_saved_status(&state_path, "fleet").expect("final status");
    assert_eq!(status.phase, PlanPhase::Succeeded, "{status:#?}");
    let gone = status
        .instances
        .iter()
        .find(|i| i.instance_id == ids[2])
        .expect("the terminated instance is still listed");
    assert_eq!(gone.phase, InstancePhase::Skipped, "{gone:?}");
    assert_eq!(gone.failure_reason.as_deref(), Some("InstanceGone"));
    assert!(
        gone.message.as_deref().is_some_and(|m| m.contains("skipped")),
        "{gone:?}"
    );
    let boots_after = sandbox.boot_counts();
    for id in &ids[..2] {
        assert_eq!(phase_of(&status, id), Some(InstancePhase::Registered));
        assert_eq!(boots_after[id], boots_before[id] + 1, "{id} rebooted once");
    }
    assert_eq!(
        boots_after[&ids[2]], boots_before[&ids[2]],
        "the gone instance was not touched"
    );
    assert!(
        sandbox
            .call_log()
            .records()
            .iter()
            .all(|c| !(c.operation == "SendCommand" && c.instance_ids.contains(&ids[2]))),
        "no command to the gone instance"
    );
    assert!(load.totals.sent > 500, "the load ran: {:?}", load.totals);
    assert_eq!(load.totals.failed(), 0, "{:?}", load.totals);
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_terminated_mid_reboot_is_skipped_once_ec2_says_so_and_the_plan_succeeds() {
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)");
    let ids = sandbox.instance_ids();
    let out = tempfile::tempdir().expect("temp dir");
    let plan_path = out.path().join("plan.yaml");
    let state_path = out.path().join("state.json");
    std::fs::write(&plan_path, selected_plan("fleet", sandbox.target_group_arn(), "")).expect("plan");
    let boots_before = sandbox.boot_counts();
    let load = load::start(LoadConfig {
        url: sandbox.frontend_url(),
        rate_per_s: 100.0,
        ..LoadConfig::default()
    })
    .expect("the load starts");
    let mut child = pitstop_run_command(&binary(), &plan_path, &state_path, Duration::from_millis(500), &sandbox)
        .spawn()
        .expect("pitstop run starts");
    let out_task = read_to_end(child.stdout.take().expect("stdout"));
    let err_task = read_to_end(child.stderr.take().expect("stderr"));

    // The first instance's reboot command is out: it is terminated, as an Auto Scaling group
    // replacing it would.
    wait_for_status(&state_path, "fleet", "the first instance's command sent", |s| {
        s.instances
            .first()
            .is_some_and(|i| i.phase == InstancePhase::Rebooting && i.maintenance_command_id.is_some())
    })
    .await;
    let terminated_at = std::time::Instant::now();
    sandbox.terminate_instance(&ids[0]).await.expect("terminate");
    wait_for_status(&state_path, "fleet", "the terminated instance's turn ended", |s| {
        s.instances.first().is_some_and(|i| i.phase == InstancePhase::Skipped)
    })
    .await;
    println!(
        "the turn ended {:.1} s after the termination",
        terminated_at.elapsed().as_secs_f64()
    );

    let exit = tokio::time::timeout(LIMIT, child.wait())
        .await
        .expect("pitstop run finishes")
        .expect("pitstop run exits");
    let progress = err_task.await.unwrap_or_default();
    let final_yaml = out_task.await.unwrap_or_default();
    let load = load.stop().await;
    println!("{progress}");
    println!("terminated mid-reboot, through the frontend: {:?}", load.totals);
    assert_eq!(exit.code(), Some(0), "pitstop run failed:\n{progress}\n{final_yaml}");
    let status = pitstop_support::read_saved_status(&state_path, "fleet").expect("final status");
    assert_eq!(status.phase, PlanPhase::Succeeded, "{status:#?}");
    let gone = &status.instances[0];
    assert_eq!(
        (gone.phase, gone.failure_reason.as_deref(), gone.out_of_rotation),
        (InstancePhase::Skipped, Some("InstanceGone"), false),
        "{gone:?}"
    );
    assert!(
        gone.message.as_deref().is_some_and(|m| m.contains("EC2: terminated")),
        "{gone:?}"
    );
    let boots_after = sandbox.boot_counts();
    for id in &ids[1..] {
        assert_eq!(phase_of(&status, id), Some(InstancePhase::Registered));
        assert_eq!(boots_after[id], boots_before[id] + 1, "{id} rebooted once");
    }
    let calls = sandbox.call_log().records();
    assert!(
        calls
            .iter()
            .all(|c| !(c.operation == "RegisterTargets" && c.instance_ids.contains(&ids[0]))),
        "nothing registers the terminated instance"
    );
    let looks = calls.iter().filter(|c| c.operation == "DescribeInstances").count();
    println!("DescribeInstances calls in the run: {looks}");
    assert!(looks >= 1, "EC2 was asked");
    assert!(load.totals.sent > 500, "the load ran: {:?}", load.totals);
    assert_eq!(load.totals.failed(), 0, "{:?}", load.totals);
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_selected_plan_maintains_the_replacement_in_its_next_window_and_not_the_gone_instance() {
    let sandbox = Sandbox::start(SandboxConfig::default().with_spare_instances(1))
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)");
    let ids = sandbox.instance_ids();
    assert_eq!(ids.len(), 3, "the spare is not in service yet");
    let out = tempfile::tempdir().expect("temp dir");
    let plan_path = out.path().join("plan.yaml");
    let state_path = out.path().join("state.json");
    // A window every minute, open for a minute: each minute starts a run once the last one
    // finished. The plan is the GitOps one: applied once, never edited.
    let schedule = "  schedule:\n    cron: \"* * * * *\"\n    windowMinutes: 1\n";
    std::fs::write(
        &plan_path,
        selected_plan("weekly", sandbox.target_group_arn(), schedule),
    )
    .expect("plan");
    // Start early in a minute, so the first run (about 25 s) ends inside its window and the
    // replacement below comes before the next one opens (checked below, not assumed).
    let second = Timestamp::now().strftime("%S").to_string().parse::<u64>().unwrap_or(0);
    if second > 15 {
        tokio::time::sleep(Duration::from_secs(61 - second)).await;
    }
    let boots_before = sandbox.boot_counts();
    // `pitstop run` ends once its plans have finished; run again with the same state file in
    // a later window, it starts that window's run (as a cron job or CI schedule would).
    let first_exit = run_to_end(&plan_path, &state_path, &sandbox).await;
    assert_eq!(first_exit, Some(0));
    let first = pitstop_support::read_saved_status(&state_path, "weekly").expect("status after the first run");
    assert_eq!(first.phase, PlanPhase::Succeeded, "{first:#?}");
    assert!(first.runs.is_empty(), "one run so far: {first:#?}");
    assert_eq!(first.selection.as_ref().map(|s| s.instances.clone()), Some(ids.clone()));
    let first_window = first.window_start.expect("a window");

    // Between the windows, the Auto Scaling group replaces ids[1].
    let replaced_at = Timestamp::now();
    let new = sandbox.replace_instance(&ids[1]).await.expect("replace");
    assert!(!ids.contains(&new));
    let health = sandbox.target_health().await.expect("health");
    assert_ne!(health[&ids[1]].state, TargetState::Healthy, "the old one is gone");
    let health = sandbox.target_health().await.expect("health");
    assert!(health.contains_key(&new), "the new one is registered");

    // The next window.
    let next_window = first_window + jiff::SignedDuration::from_secs(60);
    while Timestamp::now() < next_window {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let second_exit = run_to_end(&plan_path, &state_path, &sandbox).await;
    assert_eq!(second_exit, Some(0));
    let second_run = pitstop_support::read_saved_status(&state_path, "weekly").expect("status after the second run");
    let selection = second_run.selection.clone().expect("selection");
    assert!(
        selection.resolved_at.is_some_and(|t| t > replaced_at),
        "the second run was resolved before the replacement (its window opened too early); \
         first window {first_window}, replaced at {replaced_at}: {selection:?}"
    );
    assert!(second_run.window_start > Some(first_window));
    assert_eq!(second_run.phase, PlanPhase::Succeeded, "{second_run:#?}");
    let mut expected = vec![ids[0].clone(), ids[2].clone(), new.clone()];
    expected.sort();
    assert_eq!(selection.instances, expected, "the replacement, not the gone instance");
    assert_eq!(phase_of(&second_run, &new), Some(InstancePhase::Registered));
    assert_eq!(phase_of(&second_run, &ids[1]), None);
    assert_eq!(second_run.runs[0].phase, PlanPhase::Succeeded);
    let boots_after = sandbox.boot_counts();
    assert_eq!(
        boots_after[&ids[1]],
        boots_before[&ids[1]] + 1,
        "the gone instance was maintained in the first run only"
    );
    assert_eq!(boots_after[&new], boots_before[&new] + 1, "the replacement, once");
    for id in [&ids[0], &ids[2]] {
        assert_eq!(boots_after[id], boots_before[id] + 2, "{id} in both runs");
    }
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_selector_maintains_the_running_tagged_instances_through_describe_instances() {
    let sandbox = Sandbox::start(SandboxConfig::default().with_spare_instances(1))
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)");
    let ids = sandbox.instance_ids();
    let out = tempfile::tempdir().expect("temp dir");
    let plan_path = out.path().join("plan.yaml");
    let state_path = out.path().join("state.json");
    let yaml = format!(
        "apiVersion: pitstop.dev/v1alpha1\nkind: MaintenancePlan\nmetadata:\n  name: tagged\nspec:\n  targetGroupArn: {}\n  selector:\n    tags:\n      pitstop.dev/fleet: sandbox\n  timeouts:\n    healthySeconds: 60\n  autoScaling:\n    mode: Ignore\n",
        sandbox.target_group_arn()
    );
    std::fs::write(&plan_path, yaml).expect("plan");
    let boots_before = sandbox.boot_counts();
    let exit = run_to_end(&plan_path, &state_path, &sandbox).await;
    assert_eq!(exit, Some(0));
    let status = pitstop_support::read_saved_status(&state_path, "tagged").expect("status");
    assert_eq!(status.phase, PlanPhase::Succeeded, "{status:#?}");
    let selection = status.selection.clone().expect("selection");
    assert_eq!(selection.instances, ids, "the running tagged instances, not the spare");
    assert!(
        selection
            .message
            .as_deref()
            .is_some_and(|m| m.contains("tagged pitstop.dev/fleet=sandbox")),
        "{selection:?}"
    );
    let boots_after = sandbox.boot_counts();
    for (id, before) in &boots_before {
        let expected = if ids.contains(id) { before + 1 } else { *before };
        assert_eq!(boots_after[id], expected, "{id}");
    }
    assert!(
        sandbox
            .call_log()
            .records()
            .iter()
            .any(|c| c.operation == "DescribeInstances"),
        "resolved through EC2"
    );
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_zone_the_real_pitstop_run_finishes_one_zone_before_it_starts_the_next() {
    // Four instances in zones a, b, c, a (the sandbox places them in turn).
    let sandbox = Sandbox::start(SandboxConfig::default().with_instances(4))
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)");
    let ids = sandbox.instance_ids();
    let region = sandbox.region().to_owned();
    let zone_of = |id: &str| {
        let index = ids.iter().position(|i| i == id).unwrap_or(0);
        format!("{region}{}", ["a", "b", "c"][index % 3])
    };
    let out = tempfile::tempdir().expect("temp dir");
    let plan_path = out.path().join("plan.yaml");
    let state_path = out.path().join("state.json");
    let yaml = format!(
        "apiVersion: pitstop.dev/v1alpha1\nkind: MaintenancePlan\nmetadata:\n  name: zoned\nspec:\n  targetGroupArn: {}\n  instances: [{}]\n  order: ByZone\n  timeouts:\n    healthySeconds: 60\n  autoScaling:\n    mode: Ignore\n",
        sandbox.target_group_arn(),
        ids.join(", ")
    );
    std::fs::write(&plan_path, yaml).expect("plan");
    let exit = run_to_end(&plan_path, &state_path, &sandbox).await;
    assert_eq!(exit, Some(0));
    let status = pitstop_support::read_saved_status(&state_path, "zoned").expect("status");
    assert_eq!(status.phase, PlanPhase::Succeeded, "{status:#?}");
    let order: Vec<String> = status.instances.iter().map(|i| i.instance_id.clone()).collect();
    assert_eq!(order, [&ids[0], &ids[3], &ids[1], &ids[2]].map(String::clone));
    for instance in &status.instances {
        assert_eq!(instance.zone.as_deref(), Some(zone_of(&instance.instance_id).as_str()));
    }
    // From the sandbox's call log: every instance of a zone is back before the next zone's
    // first one leaves, and each zone is visited once.
    let mut zones: Vec<String> = Vec::new();
    let mut out_now: Vec<String> = Vec::new();
    for call in sandbox.call_log().records() {
        let Some(id) = call.instance_ids.first() else { continue };
        match call.operation.as_str() {
            "DeregisterTargets" => {
                let zone = zone_of(id);
                assert!(
                    out_now.iter().all(|o| zone_of(o) == zone),
                    "{id} left while {out_now:?} was out"
                );
                if zones.last() != Some(&zone) {
                    assert!(!zones.contains(&zone), "{zone} visited twice");
                    zones.push(zone);
                }
                out_now.push(id.clone());
            }
            "RegisterTargets" => out_now.retain(|o| o != id),
            _ => {}
        }
    }
    println!("zones in the order pitstop visited them: {zones:?}");
    assert_eq!(
        zones,
        [format!("{region}a"), format!("{region}b"), format!("{region}c")]
    );
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_scaling_group_selector_maintains_the_groups_in_service_instances_with_zero_failed_requests() {
    let sandbox = Sandbox::start(
        SandboxConfig::default()
            .with_target_groups(2)
            .with_spare_instances(1)
            .with_auto_scaling_group_name("web-asg"),
    )
    .await
    .expect("sandbox starts (haproxy installed? `make haproxy`)");
    // The group replaces an instance before the run: the plan, which names no instance, must follow it.
    let before = sandbox.instance_ids();
    let new = sandbox.replace_instance(&before[1]).await.expect("replace");
    let members = sandbox.instance_ids();
    assert_eq!(members, [before[0].clone(), before[2].clone(), new.clone()]);
    let groups = sandbox.target_group_arns();
    for arn in &groups {
        // The replacement serves in both groups before the run starts, as the group's InService says.
        let deadline = tokio::time::Instant::now() + LIMIT;
        while sandbox.target_health_in(arn).await.expect("health")[&new].state != TargetState::Healthy {
            assert!(tokio::time::Instant::now() < deadline, "{new} not healthy in {arn}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let out = tempfile::tempdir().expect("temp dir");
    let plan_path = out.path().join("plan.yaml");
    let state_path = out.path().join("state.json");
    let yaml = format!(
        "apiVersion: pitstop.dev/v1alpha1\nkind: MaintenancePlan\nmetadata:\n  name: asg\nspec:\n  targetGroupArns:\n  - {}\n  - {}\n  selector:\n    autoScalingGroupName: web-asg\n  timeouts:\n    healthySeconds: 60\n  autoScaling:\n    mode: Ignore\n",
        groups[0], groups[1]
    );
    std::fs::write(&plan_path, yaml).expect("plan");
    let boots_before = sandbox.boot_counts();
    let loads: Vec<_> = sandbox
        .frontend_urls()
        .into_iter()
        .map(|url| {
            load::start(LoadConfig {
                url,
                rate_per_s: 100.0,
                ..LoadConfig::default()
            })
            .expect("the load starts")
        })
        .collect();
    let exit = run_to_end(&plan_path, &state_path, &sandbox).await;
    let mut totals = Vec::new();
    for load in loads {
        totals.push(load.stop().await.totals);
    }
    assert_eq!(exit, Some(0));
    let status = pitstop_support::read_saved_status(&state_path, "asg").expect("status");
    assert_eq!(status.phase, PlanPhase::Succeeded, "{status:#?}");
    let selection = status.selection.clone().expect("selection");
    assert_eq!(
        selection.instances, members,
        "the group's InService instances, not the gone one"
    );
    assert!(
        selection
            .message
            .as_deref()
            .is_some_and(|m| m.contains("InService in Auto Scaling group web-asg")),
        "{selection:?}"
    );
    let boots_after = sandbox.boot_counts();
    for (id, before) in &boots_before {
        let expected = if members.contains(id) { before + 1 } else { *before };
        assert_eq!(boots_after[id], expected, "{id}");
    }
    for id in &members {
        assert_eq!(phase_of(&status, id), Some(InstancePhase::Registered), "{id}");
    }
    assert_eq!(
        phase_of(&status, &before[1]),
        None,
        "the gone instance is not in the run"
    );
    let log = sandbox.call_log().records();
    assert!(
        log.iter().any(|c| c.operation == "DescribeAutoScalingGroups"),
        "resolved through Auto Scaling"
    );
    for (arn, totals) in groups.iter().zip(&totals) {
        println!("selected by Auto Scaling group, through {arn}: {totals:?}");
        assert!(totals.sent > 500, "the load ran: {totals:?}");
        assert_eq!(totals.failed(), 0, "through {arn}: {totals:?}");
    }
    sandbox.shutdown().await.expect("sandbox stops");
}
