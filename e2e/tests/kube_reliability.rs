//! The lost-answer issue's promise for `pitstop controller` against a real API server, under load: every
//! instance rebooted exactly once, none left out of rotation, no failed request, when
//!
//! - the API server is unreachable for 30 s mid-plan (the controller cannot write the status, so it must not act
//!   on AWS: no AWS write reaches the sandbox meanwhile);
//! - the controller is killed (-9) again and again, at random moments and right after SendCommand was carried
//!   out, and started again (`make chaos` runs this with a cluster and prints its row).
//!
//! Like `kube_e2e.rs` (whose harness it shares), each test prints `SKIPPED` and passes without a cluster; see
//! `e2e/KUBE_E2E.md`. The limits only keep a broken run from hanging; no test asserts a duration.

mod kube_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pitstop::api::{InstancePhase, PlanPhase};
use pitstop_e2e::load::{self, LoadConfig, LoadHandle};
use pitstop_e2e::sandbox::{CallRecord, LostAnswer, LostAnswerMode, Sandbox};

use kube_support::{Fleet, Harness, instance_in, phase};

/// Upper bound on a plan of three instances with the failures injected.
const PLAN_LIMIT: Duration = Duration::from_secs(300);
/// How long the API server is away.
const OUTAGE: Duration = Duration::from_secs(30);
/// After the API server stops, a round already past its status write may still make its one AWS call.
const ROUND_IN_FLIGHT: Duration = Duration::from_secs(3);
/// Requests per second through the load balancer during the tests.
const RATE: f64 = 100.0;

fn effective_writes(sandbox: &Sandbox) -> Vec<CallRecord> {
    sandbox
        .call_log()
        .records()
        .into_iter()
        .filter(CallRecord::is_effective_write)
        .collect()
}

fn sends_per_instance(sandbox: &Sandbox) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for call in effective_writes(sandbox)
        .iter()
        .filter(|c| c.operation == "SendCommand")
    {
        for id in &call.instance_ids {
            *counts.entry(id.clone()).or_default() += 1;
        }
    }
    counts
}

fn start_load(sandbox: &Sandbox) -> LoadHandle {
    sandbox.reset_rotation_history();
    load::start(LoadConfig {
        url: sandbox.frontend_url(),
        rate_per_s: RATE,
        ..LoadConfig::default()
    })
    .expect("the load starts")
}

/// What a run did to the fleet, printed as a row of `make chaos`'s table.
struct Promise {
    reboots: Vec<u64>,
    sends: BTreeMap<String, usize>,
    max_out: usize,
    requests: u64,
    failed: u64,
    left_out: usize,
}

impl Promise {
    async fn measure(fleet: &Fleet, before: &[u64], load: LoadHandle) -> Promise {
        let result = load.stop().await;
        let rotation = fleet.sandbox.rotation_states().await.expect("HAProxy's states");
        Promise {
            reboots: fleet
                .boots()
                .iter()
                .zip(before)
                .map(|(after, before)| after - before)
                .collect(),
            sends: sends_per_instance(&fleet.sandbox),
            max_out: fleet.sandbox.max_out_of_rotation(),
            requests: result.totals.sent,
            failed: result.totals.failed(),
            left_out: rotation.values().filter(|r| !r.in_rotation()).count(),
        }
    }

    fn row(&self, scenario: &str, injected: usize) -> String {
        let doubles = self.reboots.iter().filter(|n| **n > 1).count();
        format!(
            "| {scenario} | 1 | {injected} | {doubles} | {} | {} of {} |",
            self.left_out, self.failed, self.requests
        )
    }

    fn assert_kept(&self) {
        assert_eq!(self.reboots, [1, 1, 1], "each instance rebooted exactly once");
        assert!(
            self.sends.values().all(|n| *n == 1),
            "one command per instance: {:?}",
            self.sends
        );
        assert_eq!(self.max_out, 1, "one instance out at a time");
        assert_eq!(self.left_out, 0, "every instance back in rotation");
        assert!(self.requests > 100, "the load ran");
        assert_eq!(self.failed, 0, "no failed request of {}", self.requests);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiserver_unreachable_for_30s_mid_plan_makes_no_aws_write_and_keeps_the_promise() {
    kube_support::run(
        "an_apiserver_unreachable_for_30s_mid_plan_makes_no_aws_write_and_keeps_the_promise",
        |h: Harness| async move {
            let Some(apiserver) = h.apiserver.clone() else {
                eprintln!(
                    "SKIPPED: an_apiserver_unreachable_for_30s_mid_plan_makes_no_aws_write_and_keeps_the_promise: \
                     it stops and starts the API server, so it needs one started here (KUBE_APISERVER + ETCD); \
                     this test did NOT run"
                );
                return;
            };
            let mut fleet = Fleet::start(&h, &["controller"], |_| Vec::new()).await;
            let before = fleet.boots();
            let load = start_load(&fleet.sandbox);
            let name = "apiserver-away";
            fleet.apply_plan(name).await;
            // Mid-plan: the first instance has been deregistered, so pitstop owes AWS a command and a return.
            fleet
                .wait_for_plan(name, "the first instance out", PLAN_LIMIT, |p| {
                    instance_in(p, &[InstancePhase::Draining, InstancePhase::Rebooting]).is_some()
                })
                .await;
            apiserver.stop().await;
            let stopped = Instant::now();
            tokio::time::sleep(ROUND_IN_FLIGHT).await;
            let writes_before = effective_writes(&fleet.sandbox).len();
            tokio::time::sleep(OUTAGE.saturating_sub(stopped.elapsed())).await;
            let during: Vec<CallRecord> = effective_writes(&fleet.sandbox)
                .into_iter()
                .skip(writes_before)
                .collect();
            apiserver.start(&fleet.client).await;
            assert!(
                during.is_empty(),
                "no AWS write while the status cannot be written: {during:#?}"
            );
            fleet
                .wait_for_plan(name, "phase Succeeded after the outage", PLAN_LIMIT, |p| {
                    phase(p) == Some(PlanPhase::Succeeded)
                })
                .await;
            let promise = Promise::measure(&fleet, &before, load).await;
            println!(
                "{}",
                promise.row("API server unreachable 30 s mid-plan (pitstop controller)", 1)
            );
            promise.assert_kept();
            fleet.shutdown().await;
        },
    )
    .await;
}

/// Kills of the controller per run at the most; then it is let finish.
const MAX_KILLS: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_killed_at_random_and_right_after_send_command_never_reboots_twice() {
    kube_support::run(
        "the_controller_killed_at_random_and_right_after_send_command_never_reboots_twice",
        |h: Harness| async move {
            let mut fleet = Fleet::start(&h, &["c0"], |_| Vec::new()).await;
            // Each SendCommand answer is held a moment, so a kill on seeing the call always lands after AWS acted
            // and before the controller heard back.
            fleet
                .sandbox
                .faults()
                .set_lost_answer(
                    "SendCommand",
                    Some(LostAnswer::share(LostAnswerMode::Hold, 1.0).holding(Duration::from_millis(400))),
                )
                .expect("fault set");
            let before = fleet.boots();
            let load = start_load(&fleet.sandbox);
            let name = "killed-controllers";
            fleet.apply_plan(name).await;
            let mut kills = 0;
            let mut current = "c0".to_owned();
            let deadline = kube_support::Deadline::new("the plan to succeed through the kills", PLAN_LIMIT);
            loop {
                let plan = fleet.plans.get(name).await.expect("read the plan");
                if phase(&plan) == Some(PlanPhase::Succeeded) {
                    break;
                }
                if kills < MAX_KILLS {
                    // Alternate: a kill at a random moment, and one the moment a SendCommand was carried out.
                    let sends_seen = sends_per_instance(&fleet.sandbox).values().sum::<usize>();
                    let wait = Duration::from_millis(fastrand::u64(300..3000));
                    let started = Instant::now();
                    while started.elapsed() < wait {
                        if kills % 2 == 1 && sends_per_instance(&fleet.sandbox).values().sum::<usize>() > sends_seen {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    fleet.kill(&current).await;
                    kills += 1;
                    current = format!("c{kills}");
                    fleet.spawn_controller(&h, &current, &[]).await;
                } else {
                    deadline.tick(&format!("{:#?}", plan.status)).await;
                }
            }
            let promise = Promise::measure(&fleet, &before, load).await;
            println!(
                "{}",
                promise.row("kill -9 of pitstop controller (real API server)", kills)
            );
            promise.assert_kept();
            fleet.shutdown().await;
        },
    )
    .await;
}
