//! The fleet-safety features of `pitstop run`, end to end: the real `pitstop` binary against
//! the sandbox (real HAProxy, real backend processes, the AWS-compatible endpoint).
//!
//! Two plans sharing a target group take turns instance by instance and never have two
//! instances out at once; a dry run writes
//! nothing; a failed try is retried while the instance is still out; a closed preflight gate
//! fails the instance after its timeout without touching anything; a suspended plan starts
//! nothing. Every check reads what the sandbox saw (HAProxy's states, boot counters, the AWS
//! call log), not only what pitstop says about itself.
//!
//! Build the binaries first (`cargo build --workspace --bins`; `make test` does).

mod pitstop_support;
mod sandbox_support;

use std::time::Duration;

use pitstop::api::{InstancePhase, PlanPhase};
use pitstop_e2e::sandbox::{Sandbox, SandboxConfig};

use pitstop_support::{
    assert_all_in_rotation, describe_writes, instance, phases, plan, reboots_since, run_pitstop, start_pitstop,
};
use sandbox_support::{FLAG_FILE_REBOOT, clients, eventually, finished_invocation, send_script, target_state};

/// One fleet at a time: a 2-core machine running two fleets would measure the machine.
/// Held for the whole test.
static ONE_FLEET_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Upper bound on waiting for something the sandbox or pitstop is about to do.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)")
}

/// Two plans of two instances each on one group: they take turns instance by instance
/// (a,b,a,b), as the DeregisterTargets calls the sandbox received show. Before turns were
/// fair, the plan that gave the group back took it again for its next instance (a,a,b,b).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_plans_on_one_target_group_take_turns_and_both_complete() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let sandbox = Sandbox::start(SandboxConfig::default().with_instances(4))
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)");
    let ids = sandbox.instance_ids();
    let yaml = format!(
        "{}---\n{}",
        plan(&sandbox, "plan-a", &ids[0..2], ""),
        plan(&sandbox, "plan-b", &ids[2..4], "")
    );
    let before = sandbox.boot_counts();
    sandbox.reset_rotation_history();
    sandbox.call_log().clear();

    let run = run_pitstop(&sandbox, &yaml).await;

    assert_eq!(run.code, Some(0), "both plans succeed; stderr:\n{}", run.stderr);
    assert_eq!(run.plans.len(), 2, "both plans printed");
    for name in ["plan-a", "plan-b"] {
        let status = run.status(name);
        assert_eq!(status.phase, PlanPhase::Succeeded, "{name}: {status:?}");
        assert!(
            status
                .instances
                .iter()
                .all(|i| i.phase == InstancePhase::Registered && !i.out_of_rotation),
            "{name}: {status:?}"
        );
    }
    assert_eq!(phases(run.status("plan-a")).len(), 2);
    assert_eq!(phases(run.status("plan-b")).len(), 2);
    let writes = sandbox.call_log().writes();
    let deregistered: Vec<&str> = writes
        .iter()
        .filter(|w| w.operation == "DeregisterTargets")
        .flat_map(|w| w.instance_ids.iter().map(String::as_str))
        .collect();
    let plan_of = |id: &str| if ids[0..2].iter().any(|a| a == id) { "a" } else { "b" };
    let order: Vec<&str> = deregistered.iter().map(|id| plan_of(id)).collect();
    println!("instances taken out, by plan: {}", order.join(","));
    assert_eq!(
        order,
        ["a", "b", "a", "b"],
        "the plans alternate: {:?}",
        describe_writes(&writes)
    );
    assert!(
        sandbox.rotation_history().len() > 1,
        "HAProxy's states were sampled while instances went out and back"
    );
    assert_eq!(
        sandbox.max_out_of_rotation(),
        1,
        "one instance out of the group at a time, across both plans: {:?}",
        sandbox.rotation_history()
    );
    assert_eq!(
        reboots_since(&sandbox, &before).into_values().collect::<Vec<_>>(),
        [1, 1, 1, 1],
        "each instance rebooted exactly once"
    );
    assert!(
        run.stderr.contains("plan-b: waiting for plan-a"),
        "plan-b queued behind plan-a:\n{}",
        run.stderr
    );
    assert_all_in_rotation(&sandbox).await;
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reports_what_it_would_do_and_writes_nothing() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let sandbox = sandbox().await;
    let ids = sandbox.instance_ids();
    let yaml = plan(&sandbox, "rehearsal", &ids, "  dryRun: true\n");
    let before = sandbox.boot_counts();
    sandbox.call_log().clear();

    let run = run_pitstop(&sandbox, &yaml).await;

    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    let status = run.status("rehearsal");
    assert_eq!(status.phase, PlanPhase::Succeeded, "{status:?}");
    assert_eq!(status.instances.len(), ids.len());
    for i in &status.instances {
        let result = i.dry_run.as_deref().unwrap_or_default();
        assert!(
            result.starts_with("would deregister"),
            "{}: dryRun result {result:?}",
            i.instance_id
        );
        assert!(!i.out_of_rotation, "{i:?}");
    }
    let calls = sandbox.call_log().records();
    assert!(
        calls.iter().any(|c| c.operation == "DescribeTargetHealth"),
        "the dry run did read the target group: {calls:?}"
    );
    let writes = sandbox.call_log().writes();
    assert!(
        writes.is_empty(),
        "a dry run makes no write call: {:?}",
        describe_writes(&writes)
    );
    assert_eq!(sandbox.boot_counts(), before, "no instance rebooted");
    assert_all_in_rotation(&sandbox).await;
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_try_is_retried_while_the_instance_is_out_and_the_second_try_succeeds() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let sandbox = sandbox().await;
    let id = sandbox.instance_ids()[0].clone();
    sandbox.faults().set_command_failure(&id, Some(1)).expect("fault set");
    let yaml = plan(&sandbox, "retry", std::slice::from_ref(&id), "  maxAttempts: 2\n");
    let before = sandbox.boot_counts();
    sandbox.call_log().clear();
    sandbox.reset_rotation_history();

    let running = start_pitstop(&sandbox, &yaml, None);
    // The first try has failed once the status says attempt 2 (the retry waits 10 s first).
    let waiting = eventually("the first try to fail and a second to be scheduled", WAIT_LIMIT, || {
        let status = running.saved_status("retry");
        async move {
            let status = status?;
            let me = status.instances.first()?;
            (me.attempt == 2).then(|| me.clone())
        }
    })
    .await;
    let sends_after_first_try = sandbox
        .call_log()
        .writes()
        .iter()
        .filter(|w| w.operation == "SendCommand" && w.instance_ids.contains(&id))
        .count();
    sandbox.faults().set_command_failure(&id, None).expect("fault cleared");
    let run = running.finish().await;

    assert_eq!(
        waiting.phase,
        InstancePhase::Rebooting,
        "it waits for the retry out of rotation: {waiting:?}"
    );
    assert!(waiting.out_of_rotation, "{waiting:?}");
    assert!(waiting.next_attempt_at.is_some(), "{waiting:?}");
    assert_eq!(sends_after_first_try, 1, "one command for the first try");
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    let status = run.status("retry");
    assert_eq!(status.phase, PlanPhase::Succeeded, "{status:?}");
    let me = instance(status, &id);
    assert_eq!(me.phase, InstancePhase::Registered, "{me:?}");
    assert_eq!(me.attempt, 2, "{me:?}");
    assert!(!me.out_of_rotation, "{me:?}");
    let writes = sandbox.call_log().writes();
    let sends: Vec<_> = writes
        .iter()
        .filter(|w| w.operation == "SendCommand" && w.instance_ids.contains(&id))
        .collect();
    assert_eq!(sends.len(), 2, "one command per try: {:?}", describe_writes(&writes));
    assert_eq!(
        writes.iter().filter(|w| w.operation == "DeregisterTargets").count(),
        1,
        "taken out once, retried while out: {:?}",
        describe_writes(&writes)
    );
    assert_eq!(
        reboots_since(&sandbox, &before).get(&id),
        Some(&1),
        "the failed try ran nothing; the second rebooted it once"
    );
    assert_eq!(sandbox.max_out_of_rotation(), 1);
    assert_all_in_rotation(&sandbox).await;
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_gate_holds_the_instance_then_fails_it_untouched() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let sandbox = sandbox().await;
    let ids = sandbox.instance_ids();
    let (first, sick) = (ids[0].clone(), ids[2].clone());
    // Make another target unhealthy with the switches the sandbox offers: its health check
    // fails from its next boot, and a reboot (a plain SSM command, sent here, not by pitstop)
    // gives it that boot.
    sandbox
        .faults()
        .set_unhealthy_after_boot(&sick, true)
        .expect("fault set");
    let (elb, ssm) = clients(&sandbox, true).await;
    let command_id = send_script(&ssm, &sick, FLAG_FILE_REBOOT, "make a target unhealthy").await;
    finished_invocation(&ssm, &command_id, &sick).await;
    let arn = sandbox.target_group_arn().to_owned();
    eventually("the other target to read unhealthy", WAIT_LIMIT, || async {
        (target_state(&elb, &arn, &sick).await == "unhealthy").then_some(())
    })
    .await;

    let yaml = plan(
        &sandbox,
        "gated",
        &ids[0..2],
        "  preflight:\n    gateTimeoutSeconds: 5\n",
    );
    let before = sandbox.boot_counts();
    sandbox.call_log().clear();
    sandbox.reset_rotation_history();

    let run = run_pitstop(&sandbox, &yaml).await;

    assert_eq!(run.code, Some(1), "a failed plan exits 1; stderr:\n{}", run.stderr);
    let status = run.status("gated");
    assert_eq!(status.phase, PlanPhase::Failed, "{status:?}");
    let me = instance(status, &first);
    assert_eq!(me.phase, InstancePhase::Failed, "{me:?}");
    assert_eq!(me.failure_reason.as_deref(), Some("TargetGroupUnhealthy"), "{me:?}");
    assert!(!me.out_of_rotation, "{me:?}");
    assert!(
        me.message.as_deref().is_some_and(|m| m.contains(&sick)),
        "the message names the unhealthy target: {me:?}"
    );
    assert_eq!(
        instance(status, &ids[1]).phase,
        InstancePhase::Pending,
        "the next instance is not touched"
    );
    let writes = sandbox.call_log().writes();
    assert!(
        writes.is_empty(),
        "a closed gate changes nothing: {:?}",
        describe_writes(&writes)
    );
    assert!(
        sandbox.call_log().count("DescribeTargetHealth") > 1,
        "the gate was looked at more than once while it waited"
    );
    assert_eq!(sandbox.boot_counts(), before, "no instance rebooted");
    // The sick target is out of rotation (HAProxy marks it down); no other ever was.
    let history = sandbox.rotation_history();
    assert!(!history.is_empty(), "HAProxy's states were sampled");
    for snapshot in &history {
        assert!(
            snapshot.out_of_rotation().iter().all(|out| *out == sick),
            "nothing but the unhealthy target was out of rotation: {snapshot:?}"
        );
    }
    assert_eq!(
        target_state(&elb, &arn, &first).await,
        "healthy",
        "the gated instance still serves"
    );
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_plan_starts_nothing_and_ends_suspended() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let sandbox = sandbox().await;
    let ids = sandbox.instance_ids();
    let yaml = plan(&sandbox, "paused", &ids, "  suspend: true\n");
    let before = sandbox.boot_counts();
    sandbox.call_log().clear();

    let run = run_pitstop(&sandbox, &yaml).await;

    let status = run.status("paused");
    assert_eq!(status.phase, PlanPhase::Suspended, "{status:?}");
    assert!(
        status.instances.iter().all(|i| i.phase == InstancePhase::Pending),
        "{status:?}"
    );
    // A suspended plan has its own exit code (3): nothing failed, nothing finished.
    assert_eq!(
        run.code,
        Some(3),
        "pitstop run's exit code for a suspended plan; stderr:\n{}",
        run.stderr
    );
    let writes = sandbox.call_log().writes();
    assert!(
        writes.is_empty(),
        "a suspended plan changes nothing: {:?}",
        describe_writes(&writes)
    );
    assert_eq!(sandbox.boot_counts(), before, "no instance rebooted");
    assert_all_in_rotation(&sandbox).await;
    sandbox.shutdown().await.expect("sandbox stops");
}

/// Rehearse with `dryRun: true`, then run for real with the same state file: the changed
/// spec is a new generation, so the real run maintains the instances (it once returned the
/// dry run's finished status and did nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_run_after_a_dry_run_with_the_same_state_file_maintains_the_instances() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let sandbox = sandbox().await;
    let ids = sandbox.instance_ids();
    let dir = tempfile::tempdir().expect("temp dir");
    let state_file = dir.path().join("state.json");
    let rehearsal = plan(&sandbox, "web", &ids[0..1], "  dryRun: true\n");
    let dry = start_pitstop(&sandbox, &rehearsal, Some(&state_file)).finish().await;
    assert_eq!(dry.code, Some(0), "stderr:\n{}", dry.stderr);
    let before = sandbox.boot_counts();

    let real = start_pitstop(&sandbox, &plan(&sandbox, "web", &ids[0..1], ""), Some(&state_file))
        .finish()
        .await;

    let status = real.status("web");
    assert_eq!(
        instance(status, &ids[0]).phase,
        InstancePhase::Registered,
        "the real run maintained the instance: {status:?}"
    );
    assert_eq!(reboots_since(&sandbox, &before).get(&ids[0]), Some(&1));
    sandbox.shutdown().await.expect("sandbox stops");
}
