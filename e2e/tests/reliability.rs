//! pitstop's first promise — every instance rebooted exactly once, none left out of rotation, no failed request —
//! under the faults a controller meets on real networks, each run with the real `pitstop run` binary on the
//! sandbox under load: a write's answer lost after AWS carried it out (reset, 500, held past the attempt limit),
//! the AWS endpoint refusing connections for 30 s mid-plan, half of all calls throttled, and a status write that
//! fails right after SendCommand followed by a kill -9.

mod pitstop_support;

use std::time::Duration;

use pitstop::api::{InstancePhase, PlanPhase};
use pitstop_e2e::experiment::{
    ExperimentConfig, ExperimentResult, default_pitstop_binary, pitstop_run_command, plan_yaml, read_to_end, run_on,
};
use pitstop_e2e::load::{self, LoadConfig};
use pitstop_e2e::report::RunMode;
use pitstop_e2e::sandbox::{CallOutcome, CallRecord, LostAnswer, LostAnswerMode, Sandbox, SandboxConfig};
use pitstop_support::{assert_all_in_rotation, read_saved_status, reboots_since};

/// One fleet at a time: several fleets under load on a 2-core machine would measure the machine.
static ONE_FLEET_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The attempt limit pitstop gets here, and a hold that outlasts it and the SDK's default limit (30 s), so that
/// without pitstop's own handling the SDK would retry.
const ATTEMPT: &str = "2s";
const HOLD: Duration = Duration::from_secs(35);

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)")
}

fn config(out: &std::path::Path) -> ExperimentConfig {
    let mut config = ExperimentConfig::new(3, 200.0, RunMode::Pitstop, out.to_path_buf());
    config.sandbox = SandboxConfig::default();
    config.settle = Duration::from_secs(1);
    config.pitstop_env = vec![("PITSTOP_AWS_ATTEMPT_TIMEOUT".into(), ATTEMPT.into())];
    config
}

fn sends_per_instance(calls: &[CallRecord]) -> Vec<(String, usize)> {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for call in calls
        .iter()
        .filter(|c| c.operation == "SendCommand" && c.is_effective_write())
    {
        for id in &call.instance_ids {
            *counts.entry(id.clone()).or_default() += 1;
        }
    }
    counts.into_iter().collect()
}

/// The promise, checked on one experiment.
async fn assert_the_promise_held(sandbox: &Sandbox, result: &ExperimentResult) {
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
    let reboots: Vec<u64> = result.reboots().into_values().collect();
    assert_eq!(reboots, [1, 1, 1], "each instance rebooted exactly once");
    let sends = sends_per_instance(&sandbox.call_log().records());
    assert!(
        sends.iter().all(|(_, n)| *n == 1),
        "one maintenance command per instance: {sends:?}"
    );
    assert_eq!(result.max_out_of_rotation, 1, "one instance out of rotation at a time");
    assert!(
        result.report.load.totals.sent > 500,
        "the load ran: {:?}",
        result.report.load.totals
    );
    assert_eq!(result.failed_requests(), 0, "{:?}", result.report.load.totals);
    assert_all_in_rotation(sandbox).await;
}

fn answers_lost(sandbox: &Sandbox, operation: &str) -> usize {
    sandbox
        .call_log()
        .records()
        .iter()
        .filter(|c| c.operation == operation && matches!(c.outcome, CallOutcome::AnswerLost { .. }))
        .count()
}

async fn a_lost_send_command_answer_reboots_once(mode: LostAnswerMode) {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let out = tempfile::tempdir().expect("temp dir");
    let sandbox = sandbox().await;
    sandbox
        .faults()
        .set_lost_answer("SendCommand", Some(LostAnswer::next(mode, 1).holding(HOLD)))
        .expect("fault set");
    let result = run_on(&sandbox, &config(out.path())).await.expect("experiment runs");
    assert_eq!(answers_lost(&sandbox, "SendCommand"), 1, "the fault fired");
    assert_the_promise_held(&sandbox, &result).await;
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_command_answered_by_a_connection_reset_reboots_the_instance_once() {
    a_lost_send_command_answer_reboots_once(LostAnswerMode::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_command_answered_500_after_aws_acted_reboots_the_instance_once() {
    a_lost_send_command_answer_reboots_once(LostAnswerMode::Error500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_command_answer_held_past_the_attempt_limit_reboots_the_instance_once() {
    a_lost_send_command_answer_reboots_once(LostAnswerMode::Hold).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_of_the_target_group_writes_change_nothing_either() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let out = tempfile::tempdir().expect("temp dir");
    let sandbox = sandbox().await;
    let faults = sandbox.faults();
    faults
        .set_lost_answer("DeregisterTargets", Some(LostAnswer::next(LostAnswerMode::Reset, 2)))
        .expect("fault set");
    faults
        .set_lost_answer(
            "RegisterTargets",
            Some(LostAnswer::next(LostAnswerMode::Hold, 1).holding(HOLD)),
        )
        .expect("fault set");
    let result = run_on(&sandbox, &config(out.path())).await.expect("experiment runs");
    assert!(answers_lost(&sandbox, "DeregisterTargets") >= 1, "the fault fired");
    assert_eq!(answers_lost(&sandbox, "RegisterTargets"), 1, "the fault fired");
    assert_the_promise_held(&sandbox, &result).await;
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aws_endpoint_refusing_connections_for_30s_mid_plan_changes_nothing() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let out = tempfile::tempdir().expect("temp dir");
    let sandbox = sandbox().await;
    let outage = async {
        // As soon as the first instance's maintenance command is out: pitstop then has an instance out of
        // rotation and can neither see it come back nor register it until AWS answers again.
        loop {
            let sent = sandbox
                .call_log()
                .records()
                .iter()
                .any(|c| c.operation == "SendCommand" && c.is_effective_write());
            if sent {
                sandbox.refuse_connections(Duration::from_secs(30));
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let mut config = config(out.path());
    config.healthy_seconds = 300;
    let (result, ()) = tokio::join!(run_on(&sandbox, &config), outage);
    let result = result.expect("experiment runs");
    assert_the_promise_held(&sandbox, &result).await;
    sandbox.shutdown().await.expect("sandbox stops");
}

/// Half of all calls throttled from the start: for the whole run, or until HAProxy has had the first instance out
/// of rotation and back.
async fn half_of_all_calls_throttled(whole_run: bool) {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let out = tempfile::tempdir().expect("temp dir");
    let sandbox = sandbox().await;
    sandbox.faults().set_throttle_rate(0.5).expect("fault set");
    let mut config = config(out.path());
    // The healthy limit counts from the first RegisterTargets try, which the SDK's adaptive rate limiter can hold
    // for a long while at this rate; this test is about the promise, not that limit.
    config.healthy_seconds = 300;
    let lift = async {
        if !whole_run {
            first_instance_out_and_back(&sandbox).await;
            sandbox.faults().set_throttle_rate(0.0).expect("fault cleared");
        }
    };
    let (result, ()) = tokio::join!(run_on(&sandbox, &config), lift);
    let result = result.expect("experiment runs");
    let calls = sandbox.call_log().records();
    // While the first instance was out of rotation: from its deregistration to its registration.
    let left = calls
        .iter()
        .position(|c| c.operation == "DeregisterTargets" && c.is_effective_write())
        .expect("an instance left rotation");
    let back = calls
        .iter()
        .position(|c| c.operation == "RegisterTargets" && c.is_effective_write())
        .expect("an instance came back");
    let throttled_while_out = calls[left..back]
        .iter()
        .filter(|c| c.outcome == CallOutcome::Throttled)
        .count();
    // The fault never lets more than 3 calls through in a row, and the turn makes more than that (drain checks,
    // the command and its polls, the health checks).
    assert!(
        throttled_while_out >= 1,
        "the fault threw calls back while the first instance was out: {throttled_while_out}"
    );
    assert_the_promise_held(&sandbox, &result).await;
    sandbox.shutdown().await.expect("sandbox stops");
}

/// Resolves once the first instance has been registered again and HAProxy has every instance back in rotation.
async fn first_instance_out_and_back(sandbox: &Sandbox) {
    loop {
        let registered = sandbox
            .call_log()
            .records()
            .iter()
            .any(|c| c.operation == "RegisterTargets" && c.is_effective_write());
        if registered {
            let states = sandbox.rotation_states().await.unwrap_or_default();
            if !states.is_empty() && states.values().all(|s| s.in_rotation()) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The first instance's whole turn out of rotation (deregister, drain, command, register, healthy) and every call
/// before it throttled. The whole run throttled takes about 13 minutes here, because the SDK's adaptive rate
/// limiter falls to its floor: that one is for `make chaos`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a throttling stress run (about 6 minutes): run by `make chaos`"]
async fn half_of_all_aws_calls_throttled_while_the_first_instance_is_out_changes_nothing() {
    half_of_all_calls_throttled(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about 13 minutes: run by `make chaos`"]
async fn half_of_all_aws_calls_throttled_for_the_whole_run_changes_nothing() {
    half_of_all_calls_throttled(true).await;
}

/// Makes every write of `dir` fail (a regular file where the directory was), until [`unbreak`].
fn break_dir(dir: &std::path::Path) {
    std::fs::rename(dir, dir.with_extension("away")).expect("move the state dir away");
    std::fs::write(dir, b"not a directory").expect("put a file in its place");
}

fn unbreak(dir: &std::path::Path) {
    std::fs::remove_file(dir).expect("remove the file");
    std::fs::rename(dir.with_extension("away"), dir).expect("move the state dir back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_write_lost_after_send_command_and_a_kill_never_send_it_twice() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let sandbox = sandbox().await;
    let ids = sandbox.instance_ids();
    let work = tempfile::tempdir().expect("temp dir");
    let state_dir = work.path().join("state");
    std::fs::create_dir(&state_dir).expect("state dir");
    let state_file = state_dir.join("run.json");
    let plan_file = work.path().join("plan.yaml");
    std::fs::write(
        &plan_file,
        plan_yaml("lost-write", sandbox.target_group_arn(), &ids, 120, ""),
    )
    .expect("plan file");
    // The first SendCommand's answer comes late (within the attempt limit): time to make the status write that
    // follows it fail.
    sandbox
        .faults()
        .set_lost_answer(
            "SendCommand",
            Some(LostAnswer::next(LostAnswerMode::Hold, 1).holding(Duration::from_secs(3))),
        )
        .expect("fault set");
    let boots_before = sandbox.boot_counts();
    sandbox.reset_rotation_history();
    let load = load::start(LoadConfig {
        url: sandbox.frontend_url(),
        rate_per_s: 200.0,
        ..LoadConfig::default()
    })
    .expect("load starts");
    let binary = default_pitstop_binary();
    let poll = Duration::from_millis(200);

    let mut first = pitstop_run_command(&binary, &plan_file, &state_file, poll, &sandbox)
        .spawn()
        .expect("pitstop starts");
    let first_err = read_to_end(first.stderr.take().expect("stderr"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while answers_lost(&sandbox, "SendCommand") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no SendCommand within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    break_dir(&state_dir);
    // The answer arrives, the write of the command ID fails; then the process dies.
    tokio::time::sleep(Duration::from_secs(5)).await;
    first.start_kill().expect("kill -9");
    let _ = first.wait().await;
    unbreak(&state_dir);
    let saved = read_saved_status(&state_file, "lost-write").expect("a status was saved before");
    let out = &saved.instances[0];
    assert_eq!(out.phase, InstancePhase::Rebooting, "{saved:?}");
    assert_eq!(out.maintenance_command_id, None, "the write of the command ID was lost");
    assert!(out.send_attempted_at.is_some(), "the attempt was written ahead");

    let second = pitstop_run_command(&binary, &plan_file, &state_file, poll, &sandbox)
        .output()
        .await
        .expect("pitstop runs again");
    let result = load.stop().await;
    let first_err = first_err.await.unwrap_or_default();
    assert_eq!(
        second.status.code(),
        Some(0),
        "{}\nfirst run:\n{first_err}",
        String::from_utf8_lossy(&second.stderr)
    );
    let reboots = reboots_since(&sandbox, &boots_before);
    assert!(
        reboots.values().all(|n| *n == 1),
        "each instance rebooted once: {reboots:?}"
    );
    let sends = sends_per_instance(&sandbox.call_log().records());
    assert!(
        sends.iter().all(|(_, n)| *n == 1),
        "one command per instance: {sends:?}"
    );
    assert_eq!(sandbox.max_out_of_rotation(), 1);
    assert_eq!(result.totals.failed(), 0, "{:?}", result.totals);
    assert_all_in_rotation(&sandbox).await;
    sandbox.shutdown().await.expect("sandbox stops");
}
