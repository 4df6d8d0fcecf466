//! `make bench-scale`: the real `pitstop controller` on a real kube-apiserver, against the sandbox's light mode
//! (simulated target health, no processes) with a thousand instances in a hundred target groups.
//!
//! Two scenarios, each printing a table and writing JSON under `.work/bench-scale/`:
//!
//! - **fleet**: 1,000 plans of one instance each, ten per target group, at the default `maxUnavailable: 1` and the
//!   default 5 s poll. Measured: the controller's RSS (idle, holding the plans, peak) and CPU seconds, apiserver
//!   writes and AWS calls per instance, `DescribeTargetHealth` per group per tick, the time from a plan's creation
//!   to its first `DeregisterTargets`, and the most instances out of any group at once.
//! - **waves**: one plan of 100 instances in one group at `maxUnavailable: 10`, its time against the physical
//!   minimum of ten waves.
//!
//! They are `#[ignore]`d benchmarks, not tests: `make bench-scale` runs them. The only assertions are the safety
//! ones (no group ever had more out than its bound, every instance rebooted exactly once, every plan succeeded);
//! timings are printed, never asserted. Without an apiserver (`KUBE_APISERVER` + `ETCD`, or `KUBECONFIG`) the
//! Makefile says so and stops; the controller binary is `PITSTOP_BIN` (a release build gives the figures the
//! README quotes for memory), else `target/debug/pitstop`.

mod kube_support;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use comfy_table::Table;
use kube::Client;
use kube::api::{ListParams, PostParams};
use kube_support::{ControllerProcess, Deadline, Harness, repo_root};
use pitstop::api::{MaintenancePlan, PlanPhase};
use pitstop_e2e::proc_stats::{Resident, cpu_seconds, resident, status_kib};
use pitstop_e2e::sandbox::{CallRecord, Sandbox, SandboxConfig};
use serde_json::json;

/// The controller's default poll interval (`pitstop controller --poll-interval`), which the targets are for.
const POLL: Duration = Duration::from_secs(5);
/// How long the controller is left alone before its idle memory is read, and again after the last plan.
const SETTLE: Duration = Duration::from_secs(10);

/// A whole number from the environment, or `default`.
fn env_number(var: &str, default: usize) -> usize {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The light sandbox: the default fleet timings (deregistration delay 2 s, boot 2 s, checks every 1 s, healthy after
/// 2), `instances` instances in `groups` groups, instance `i` in group `i % groups`.
fn light_config(instances: usize, groups: usize) -> SandboxConfig {
    SandboxConfig::default()
        .light()
        .with_instances(instances)
        .with_target_groups(groups)
        .with_partitioned_groups()
}

/// Starts the sandbox of [`light_config`].
async fn light_sandbox(instances: usize, groups: usize) -> Sandbox {
    Sandbox::start(light_config(instances, groups))
        .await
        .unwrap_or_else(|err| panic!("the light sandbox did not start: {err:#}"))
}

/// Starts `pitstop controller` at the default poll interval and waits until it is ready.
async fn start_controller(harness: &Harness, sandbox: &Sandbox) -> ControllerProcess {
    let poll = format!("{}s", POLL.as_secs());
    let mut controller = ControllerProcess::spawn(
        "bench",
        harness,
        &sandbox.aws_env(),
        &["--poll-interval".to_owned(), poll],
    );
    controller.wait_ready().await;
    controller
}

// ----------------------------------------------------------------------------- the controller's process

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ----------------------------------------------------------------------------- apiserver writes

/// `apiserver_request_total` of the write verbs, by `verb resource/subresource`, from the apiserver's `/metrics`.
async fn apiserver_writes(client: &Client) -> BTreeMap<String, f64> {
    let request = http::Request::get("/metrics").body(Vec::new()).expect("a request");
    let text = client
        .request_text(request)
        .await
        .unwrap_or_else(|err| panic!("cannot read the apiserver's /metrics: {err}"));
    let mut writes = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |name: &str| {
            let key = format!("{name}=\"");
            labels
                .split_once(&key)
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(value, _)| value.to_owned())
                .unwrap_or_default()
        };
        let verb = label("verb");
        if !matches!(
            verb.as_str(),
            "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION"
        ) {
            continue;
        }
        let subresource = label("subresource");
        let resource = match subresource.as_str() {
            "" => label("resource"),
            sub => format!("{}/{sub}", label("resource")),
        };
        *writes.entry(format!("{verb} {resource}")).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    writes
}

/// What was written between two reads of [`apiserver_writes`], without the bench's own `POST maintenanceplans`.
fn controller_writes(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    own_creates: usize,
) -> BTreeMap<String, f64> {
    let mut delta: BTreeMap<String, f64> = after
        .iter()
        .map(|(key, value)| (key.clone(), value - before.get(key).copied().unwrap_or(0.0)))
        .filter(|(_, value)| *value > 0.0)
        .collect();
    if let Some(creates) = delta.get_mut("POST maintenanceplans") {
        *creates -= own_creates as f64;
    }
    delta.retain(|_, value| *value > 0.0);
    delta
}

// ----------------------------------------------------------------------------- AWS calls

/// The target group ARN a `DescribeTargetHealth` named.
fn target_group_of(record: &CallRecord) -> Option<&str> {
    record
        .summary
        .split('&')
        .find_map(|pair| pair.strip_prefix("TargetGroupArn="))
}

/// `DescribeTargetHealth` per target group per poll tick: for each group, its reads over the ticks between its first
/// and last read; the mean and the largest over the groups.
fn health_reads_per_tick(calls: &[CallRecord]) -> (f64, f64) {
    let mut per_group: HashMap<&str, (u64, u64, usize)> = HashMap::new();
    for record in calls.iter().filter(|r| r.operation == "DescribeTargetHealth") {
        if let Some(group) = target_group_of(record) {
            let entry = per_group
                .entry(group)
                .or_insert((record.elapsed_ms, record.elapsed_ms, 0));
            entry.0 = entry.0.min(record.elapsed_ms);
            entry.1 = entry.1.max(record.elapsed_ms);
            entry.2 += 1;
        }
    }
    let poll_ms = POLL.as_millis() as f64;
    let ratios: Vec<f64> = per_group
        .values()
        .map(|(first, last, reads)| *reads as f64 / ((last - first) as f64 / poll_ms + 1.0).round())
        .collect();
    let mean = ratios.iter().sum::<f64>() / ratios.len().max(1) as f64;
    let most = ratios.iter().copied().fold(0.0, f64::max);
    (mean, most)
}

/// The value at fraction `q` of `sorted` (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Seconds from each instance's plan creation (ms on the call log's clock) to its first `DeregisterTargets`.
fn time_to_first_deregister(calls: &[CallRecord], created_ms: &BTreeMap<String, u64>) -> BTreeMap<String, f64> {
    let mut first = BTreeMap::new();
    for record in calls.iter().filter(|r| r.operation == "DeregisterTargets") {
        for id in &record.instance_ids {
            if let Some(created) = created_ms.get(id) {
                first
                    .entry(id.clone())
                    .or_insert(record.elapsed_ms.saturating_sub(*created) as f64 / 1000.0);
            }
        }
    }
    first
}

// ----------------------------------------------------------------------------- plans

/// A plan rebooting `instances` of the target group `arn` (the default graceful reboot), with `extra` in its spec.
fn plan(name: &str, arn: &str, instances: &[String], extra: serde_json::Value) -> MaintenancePlan {
    let mut plan = json!({
        "apiVersion": "pitstop.dev/v1alpha1",
        "kind": "MaintenancePlan",
        "metadata": { "name": name },
        "spec": {
            "targetGroupArn": arn,
            "instances": instances,
            "timeouts": { "healthySeconds": 60 },
            // Every sandbox instance is in the Auto Scaling group; the bench measures pitstop's own calls.
            "autoScaling": { "mode": "Ignore" },
        },
    });
    if let (Some(spec), Some(extra)) = (plan["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(plan).expect("a MaintenancePlan")
}

/// Waits until every plan has succeeded, printing progress; fails on a failed plan or a dead controller.
async fn wait_all_succeeded(harness: &Harness, controller: &mut ControllerProcess, plans: usize, limit: Duration) {
    let api = harness.plans();
    let deadline = Deadline::new(format!("{plans} plans to succeed"), limit);
    let started = Instant::now();
    let mut last_print = Instant::now();
    loop {
        controller.assert_running();
        let list = api
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|err| panic!("cannot list the plans: {err}"));
        let phase = |p: &MaintenancePlan| p.status.as_ref().map(|s| s.phase);
        if let Some(failed) = list.items.iter().find(|p| phase(p) == Some(PlanPhase::Failed)) {
            panic!("plan {:?} failed: {:#?}", failed.metadata.name, failed.status);
        }
        let done = list
            .items
            .iter()
            .filter(|p| phase(p) == Some(PlanPhase::Succeeded))
            .count();
        if done == plans {
            return;
        }
        if last_print.elapsed() >= Duration::from_secs(30) {
            eprintln!(
                "{:>5.0} s: {done} of {plans} plans succeeded",
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        deadline.tick(&format!("{done} of {plans} succeeded")).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

// ----------------------------------------------------------------------------- the report

/// What one scenario measured, besides its own figures.
struct Measured {
    instances: usize,
    idle: Resident,
    holding: Resident,
    peak_rss_kib: u64,
    cpu_seconds: f64,
    writes: BTreeMap<String, f64>,
    calls: Vec<CallRecord>,
    most_out: Vec<usize>,
    bound: usize,
}

impl Measured {
    fn total_writes(&self) -> f64 {
        self.writes.values().sum()
    }

    fn calls_by_operation(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for record in &self.calls {
            *counts.entry(record.operation.clone()).or_default() += 1;
        }
        counts
    }

    /// Rows shared by both scenarios.
    fn rows(&self) -> Vec<(String, String)> {
        let (mean, most) = health_reads_per_tick(&self.calls);
        let instances = self.instances.max(1) as f64;
        vec![
            ("controller RSS idle".into(), resident_text(self.idle)),
            (
                "controller RSS holding the plans (after the run)".into(),
                resident_text(self.holding),
            ),
            (
                "controller RSS peak".into(),
                format!("{:.1} MiB", mib(self.peak_rss_kib)),
            ),
            ("controller CPU".into(), format!("{:.1} s", self.cpu_seconds)),
            (
                "apiserver writes per instance".into(),
                format!(
                    "{:.2} ({:.0} in all)",
                    self.total_writes() / instances,
                    self.total_writes()
                ),
            ),
            (
                "AWS calls per instance".into(),
                format!(
                    "{:.2} ({} in all)",
                    self.calls.len() as f64 / instances,
                    self.calls.len()
                ),
            ),
            (
                "DescribeTargetHealth per group per tick".into(),
                format!("{mean:.2} mean, {most:.2} most"),
            ),
            (
                "most out of any group at once".into(),
                format!(
                    "{} (bound {})",
                    self.most_out.iter().max().copied().unwrap_or(0),
                    self.bound
                ),
            ),
        ]
    }

    fn json(&self) -> serde_json::Value {
        let (mean, most) = health_reads_per_tick(&self.calls);
        json!({
            "instances": self.instances,
            "controller_rss_idle_mib": mib(self.idle.total_kib),
            "controller_rss_idle_anon_mib": mib(self.idle.anon_kib),
            "controller_rss_idle_file_mib": mib(self.idle.file_kib),
            "controller_rss_holding_mib": mib(self.holding.total_kib),
            "controller_rss_holding_anon_mib": mib(self.holding.anon_kib),
            "controller_rss_holding_file_mib": mib(self.holding.file_kib),
            "controller_rss_peak_mib": mib(self.peak_rss_kib),
            "controller_cpu_seconds": self.cpu_seconds,
            "apiserver_writes": self.total_writes(),
            "apiserver_writes_per_instance": self.total_writes() / self.instances.max(1) as f64,
            "apiserver_writes_by_request": self.writes,
            "aws_calls": self.calls.len(),
            "aws_calls_per_instance": self.calls.len() as f64 / self.instances.max(1) as f64,
            "aws_calls_by_operation": self.calls_by_operation(),
            "describe_target_health_per_group_per_tick_mean": mean,
            "describe_target_health_per_group_per_tick_most": most,
            "most_out_of_any_group": self.most_out.iter().max().copied().unwrap_or(0),
            "bound": self.bound,
        })
    }

    /// Fails the run if any group had more out than its bound, or an instance did not reboot exactly once.
    fn assert_safe(&self, sandbox: &Sandbox) {
        for (group, out) in self.most_out.iter().enumerate() {
            assert!(
                *out <= self.bound,
                "target group {group} had {out} instances out at once, above its bound {}",
                self.bound
            );
        }
        let boots = sandbox.boot_counts();
        let wrong: Vec<_> = boots.iter().filter(|(_, boots)| **boots != 2).collect();
        assert!(wrong.is_empty(), "instances not rebooted exactly once: {wrong:?}");
    }
}

/// Total resident memory, with its anonymous (heap, stacks) and file-backed (the binary's code) parts.
fn resident_text(resident: Resident) -> String {
    format!(
        "{:.1} MiB ({:.1} anonymous, {:.1} mapped files)",
        mib(resident.total_kib),
        mib(resident.anon_kib),
        mib(resident.file_kib)
    )
}

fn print_table(title: &str, rows: &[(String, String)]) {
    let mut table = Table::new();
    table.set_header(vec!["bench-scale: ".to_owned() + title, String::new()]);
    for (what, value) in rows {
        table.add_row(vec![what.clone(), value.clone()]);
    }
    println!("\n{table}");
}

fn write_json(file: &str, value: &serde_json::Value) {
    let dir = std::env::var_os("BENCH_SCALE_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".work/bench-scale"));
    std::fs::create_dir_all(&dir).expect("create the output directory");
    let path = dir.join(file);
    std::fs::write(&path, serde_json::to_string_pretty(value).expect("JSON")).expect("write the JSON");
    println!("written: {}", path.display());
}

/// Runs `create` (which creates the plans and returns how many, with each instance's creation time on the call log's
/// clock) against a fresh controller, waits for every plan to succeed and measures the controller.
async fn measure(
    harness: &Harness,
    sandbox: &Sandbox,
    plans: usize,
    bound: usize,
    create: impl AsyncFnOnce(&Harness) -> BTreeMap<String, u64>,
) -> (Measured, BTreeMap<String, u64>, Duration) {
    let mut controller = start_controller(harness, sandbox).await;
    let pid = controller.pid().expect("the controller runs");
    tokio::time::sleep(SETTLE).await;
    let idle = resident(pid);
    let calls_before = sandbox.call_log().len();
    let writes_before = apiserver_writes(&harness.client).await;

    let started = Instant::now();
    let created_ms = create(harness).await;
    wait_all_succeeded(harness, &mut controller, plans, Duration::from_secs(45 * 60)).await;
    let run_time = started.elapsed();

    tokio::time::sleep(SETTLE).await;
    let writes_after = apiserver_writes(&harness.client).await;
    let measured = Measured {
        instances: sandbox.instance_ids().len(),
        idle,
        holding: resident(pid),
        // The kernel's own peak of the process's resident set.
        peak_rss_kib: status_kib(pid, "VmHWM:").unwrap_or(0),
        cpu_seconds: cpu_seconds(pid).unwrap_or(f64::NAN),
        writes: controller_writes(&writes_before, &writes_after, plans),
        calls: sandbox.call_log().records().split_off(calls_before),
        most_out: sandbox.most_out_per_target_group(),
        bound,
    };
    controller.kill().await;
    (measured, created_ms, run_time)
}

// ----------------------------------------------------------------------------- the scenarios

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: `make bench-scale` (1,000 plans on a real apiserver, ~10 min)"]
async fn bench_scale_fleet() {
    let groups = env_number("BENCH_SCALE_GROUPS", 100);
    let per_group = env_number("BENCH_SCALE_PLANS_PER_GROUP", 10);
    kube_support::run("bench_scale_fleet", |harness| async move {
        let instances = groups * per_group;
        let sandbox = light_sandbox(instances, groups).await;
        let ids = sandbox.instance_ids();
        let arns = sandbox.target_group_arns();
        let create = async |harness: &Harness| {
            let api = harness.plans();
            let mut created_ms = BTreeMap::new();
            let started = Instant::now();
            // The first plan of every group, then the second of every group...: instance `g + j * groups` is the
            // `j`-th member of group `g`.
            for j in 0..per_group {
                for (g, arn) in arns.iter().enumerate() {
                    let id = &ids[g + j * groups];
                    let plan = plan(&format!("g{g:03}-p{j:02}"), arn, std::slice::from_ref(id), json!({}));
                    created_ms.insert(id.clone(), sandbox.call_log().now_ms());
                    api.create(&PostParams::default(), &plan)
                        .await
                        .unwrap_or_else(|err| panic!("cannot create a plan: {err}"));
                }
            }
            eprintln!("{instances} plans created in {:.1} s", started.elapsed().as_secs_f64());
            created_ms
        };
        let (measured, created_ms, run_time) = measure(&harness, &sandbox, instances, 1, create).await;

        let latency = time_to_first_deregister(&measured.calls, &created_ms);
        let mut all: Vec<f64> = latency.values().copied().collect();
        all.sort_by(f64::total_cmp);
        // The controller's own latency, without the wait for a group's turn: per group, from its
        // first plan's creation to the first DeregisterTargets in the group, whichever plan
        // made it (the fair queue may let the second plan created go first).
        let mut first: Vec<f64> = (0..groups)
            .filter_map(|g| {
                let members: Vec<&String> = ids.iter().skip(g).step_by(groups).collect();
                let created = members.iter().filter_map(|id| created_ms.get(*id)).min()?;
                let deregistered = members
                    .iter()
                    .filter_map(|id| Some(created_ms.get(*id)? + (latency.get(*id)? * 1000.0) as u64))
                    .min()?;
                Some(deregistered.saturating_sub(*created) as f64 / 1000.0)
            })
            .collect();
        first.sort_by(f64::total_cmp);

        let mut rows = vec![
            (
                "fleet".to_owned(),
                format!("{instances} instances in {groups} groups, {instances} plans, maxUnavailable 1, poll {POLL:?}"),
            ),
            (
                "all plans succeeded in".into(),
                format!("{:.1} s", run_time.as_secs_f64()),
            ),
            (
                "group's first plan created → its first DeregisterTargets".into(),
                format!(
                    "p50 {:.1} s, p99 {:.1} s",
                    percentile(&first, 0.5),
                    percentile(&first, 0.99)
                ),
            ),
            (
                "plan created → first DeregisterTargets, all plans (waiting for the group's turn)".into(),
                format!(
                    "p50 {:.1} s, p99 {:.1} s",
                    percentile(&all, 0.5),
                    percentile(&all, 0.99)
                ),
            ),
        ];
        rows.extend(measured.rows());
        print_table("fleet", &rows);
        let mut report = measured.json();
        report["scenario"] = json!("fleet");
        report["groups"] = json!(groups);
        report["plans"] = json!(instances);
        report["run_seconds"] = json!(run_time.as_secs_f64());
        report["first_deregister_seconds_per_group"] =
            json!({ "p50": percentile(&first, 0.5), "p99": percentile(&first, 0.99) });
        report["first_deregister_seconds_all"] = json!({ "p50": percentile(&all, 0.5), "p99": percentile(&all, 0.99) });
        write_json("fleet.json", &report);
        assert_eq!(latency.len(), instances, "every instance was deregistered");
        measured.assert_safe(&sandbox);
        sandbox.shutdown().await.expect("the sandbox stops");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: `make bench-scale` (100 instances at maxUnavailable 10 on a real apiserver, ~3 min)"]
async fn bench_scale_waves() {
    let instances = env_number("BENCH_SCALE_WAVE_INSTANCES", 100);
    let max_unavailable = env_number("BENCH_SCALE_MAX_UNAVAILABLE", 10);
    kube_support::run("bench_scale_waves", |harness| async move {
        let sandbox = light_sandbox(instances, 1).await;
        let ids = sandbox.instance_ids();
        let arn = sandbox.target_group_arn().to_owned();
        let create = async |harness: &Harness| {
            let extra = json!({ "maxUnavailable": max_unavailable });
            let created = sandbox.call_log().now_ms();
            harness
                .plans()
                .create(&PostParams::default(), &plan("waves", &arn, &ids, extra))
                .await
                .unwrap_or_else(|err| panic!("cannot create the plan: {err}"));
            ids.iter().map(|id| (id.clone(), created)).collect()
        };
        let (measured, _, run_time) = measure(&harness, &sandbox, 1, max_unavailable, create).await;

        let cfg = light_config(instances, 1);
        let per_wave = cfg.deregistration_delay + cfg.boot_time + cfg.health_interval * cfg.healthy_threshold;
        let waves = instances.div_ceil(max_unavailable.max(1));
        let minimum = per_wave * u32::try_from(waves).unwrap_or(u32::MAX);
        let mut rows = vec![
            (
                "waves".to_owned(),
                format!(
                    "{instances} instances in one group, one plan, maxUnavailable {max_unavailable}, poll {POLL:?}"
                ),
            ),
            (
                "plan created → succeeded".into(),
                format!(
                    "{:.1} s against a minimum of {:.1} s ({waves} waves of {:.0} s): {:.2}×",
                    run_time.as_secs_f64(),
                    minimum.as_secs_f64(),
                    per_wave.as_secs_f64(),
                    run_time.as_secs_f64() / minimum.as_secs_f64().max(f64::EPSILON)
                ),
            ),
        ];
        rows.extend(measured.rows());
        print_table("waves", &rows);
        let mut report = measured.json();
        report["scenario"] = json!("waves");
        report["max_unavailable"] = json!(max_unavailable);
        report["run_seconds"] = json!(run_time.as_secs_f64());
        report["minimum_seconds"] = json!(minimum.as_secs_f64());
        write_json("waves.json", &report);
        measured.assert_safe(&sandbox);
        sandbox.shutdown().await.expect("the sandbox stops");
    })
    .await;
}
