//! The seed's before/after experiment on the sandbox: a fleet behind a real HAProxy, a
//! steady load, and the same reboots done two ways — by `pitstop run` (drain first) or
//! naively (reboot in place, as the seed's first runbook did) — with every request counted.

mod bands;
mod naive;
mod pitstop_process;
mod plan;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::load::{self, LoadConfig};
use crate::report::{RunMode, RunReport};
use crate::sandbox::{Sandbox, SandboxConfig};

pub use bands::BandRecorder;
pub use pitstop_process::{PitstopRun, default_pitstop_binary, pitstop_run_command, read_to_end};
pub use plan::{IGNORE_AUTO_SCALING, fleet_plan_yaml, plan_yaml};

/// One experiment.
#[derive(Clone, Debug)]
pub struct ExperimentConfig {
    /// The fleet.
    pub sandbox: SandboxConfig,
    /// Pitstop (drain first) or naive (reboot in place).
    pub mode: RunMode,
    /// Requests per second sent to the load balancer throughout.
    pub rate_per_s: f64,
    /// The `pitstop` binary.
    pub pitstop_binary: PathBuf,
    /// `pitstop run --poll-interval`.
    pub poll_interval: Duration,
    /// Seconds of load before and after the maintenance, so the chart shows the baseline.
    pub settle: Duration,
    /// `spec.timeouts.healthySeconds` of the plan.
    pub healthy_seconds: u32,
    /// Extra YAML lines for the plan's spec (fault experiments), indented as spec fields.
    pub extra_spec: String,
    /// The plan's instances in this order; None: the sandbox's order.
    pub instance_order: Option<Vec<String>>,
    /// Where to write the plan, the state file and the reports.
    pub out_dir: PathBuf,
    /// Extra environment for `pitstop run` (e.g. `PITSTOP_AWS_ATTEMPT_TIMEOUT`).
    pub pitstop_env: Vec<(String, String)>,
}

impl ExperimentConfig {
    /// A pitstop experiment on a fleet of `instances` at `rate_per_s`, writing into `out_dir`.
    pub fn new(instances: usize, rate_per_s: f64, mode: RunMode, out_dir: PathBuf) -> Self {
        Self {
            sandbox: SandboxConfig::default().with_instances(instances),
            mode,
            rate_per_s,
            pitstop_binary: default_pitstop_binary(),
            poll_interval: Duration::from_millis(500),
            settle: Duration::from_secs(2),
            healthy_seconds: 60,
            extra_spec: String::new(),
            instance_order: None,
            out_dir,
            pitstop_env: Vec::new(),
        }
    }

    /// The least time the fleet allows for maintaining every instance: per instance the
    /// deregistration delay, the boot time and `healthy_threshold × interval` of checks.
    pub fn minimum_time(&self) -> Duration {
        let s = &self.sandbox;
        let per_instance = s.deregistration_delay + s.boot_time + s.health_interval * s.healthy_threshold;
        per_instance * u32::try_from(s.instances).unwrap_or(u32::MAX)
    }
}

/// What an experiment measured.
#[derive(Clone, Debug, Serialize)]
pub struct ExperimentResult {
    /// Load, bands and extras, as written to JSON and charted.
    pub report: RunReport,
    /// Boot counters before the maintenance.
    pub boots_before: BTreeMap<String, u64>,
    /// Boot counters after.
    pub boots_after: BTreeMap<String, u64>,
    /// The most instances out of rotation at once, from HAProxy's state.
    pub max_out_of_rotation: usize,
    /// AWS API calls the client made (sandbox call log).
    pub aws_calls: usize,
    /// AWS write calls (register, deregister, send, cancel).
    pub aws_writes: usize,
    /// AWS API calls by operation, for seeing where they go.
    pub aws_calls_by_operation: BTreeMap<String, usize>,
    /// Wall time of the pitstop process (or the naive script), from its start to its exit:
    /// the maintenance plus the process's start-up, first reads and final output.
    pub process_time: Duration,
    /// The least time the fleet allows.
    pub minimum_time: Duration,
    /// For pitstop mode: exit code, final status YAML, peak memory.
    pub pitstop: Option<PitstopRun>,
    /// With several target groups: the load through every frontend but the first (whose load is in `report`),
    /// in target group order, each at the same rate.
    pub other_frontends: Vec<crate::report::LoadResult>,
}

impl ExperimentResult {
    /// The maintenance time: from the first instance out to the last one back (the span of
    /// the phase bands), the one figure the summary and the bench report.
    pub fn maintenance_time(&self) -> Duration {
        Duration::from_secs_f64(crate::report::phase_durations(&self.report.bands).span_s)
    }

    /// Requests that failed, through every frontend: 5xx, connection errors, timeouts.
    pub fn failed_requests(&self) -> u64 {
        self.report.load.totals.failed() + self.other_frontends.iter().map(|l| l.totals.failed()).sum::<u64>()
    }

    /// Requests sent, through every frontend.
    pub fn sent_requests(&self) -> u64 {
        self.report.load.totals.sent + self.other_frontends.iter().map(|l| l.totals.sent).sum::<u64>()
    }

    /// How many times each instance booted during the experiment, by instance ID.
    pub fn reboots(&self) -> BTreeMap<String, u64> {
        self.boots_after
            .iter()
            .map(|(id, after)| {
                let before = self.boots_before.get(id).copied().unwrap_or(0);
                (id.clone(), after.saturating_sub(before))
            })
            .collect()
    }
}

/// Runs one experiment on a sandbox that is already started (its instances healthy).
pub async fn run_on(sandbox: &Sandbox, config: &ExperimentConfig) -> anyhow::Result<ExperimentResult> {
    std::fs::create_dir_all(&config.out_dir).with_context(|| format!("creating {}", config.out_dir.display()))?;
    let boots_before = sandbox.boot_counts();
    sandbox.reset_rotation_history();
    sandbox.call_log().clear();
    // The same load through every target group's frontend: a group pitstop did not drain shows as failures there.
    let mut loads = Vec::new();
    for url in sandbox.frontend_urls() {
        loads.push(
            load::start(LoadConfig {
                url,
                rate_per_s: config.rate_per_s,
                ..LoadConfig::default()
            })
            .context("starting the load")?,
        );
    }
    let load_started = jiff::Timestamp::now();
    tokio::time::sleep(config.settle).await;

    let started = Instant::now();
    let mut bands = BandRecorder::new(load_started);
    let pitstop = match config.mode {
        RunMode::Pitstop => Some(pitstop_process::run_pitstop(sandbox, config, &mut bands).await?),
        RunMode::Naive => {
            naive::reboot_in_place(sandbox, &mut bands).await?;
            None
        }
    };
    let process_time = started.elapsed();
    tokio::time::sleep(config.settle).await;
    let mut results = Vec::new();
    for load in loads {
        results.push(load.stop().await);
    }
    let mut results = results.into_iter();
    let result = results.next().context("no frontend to load")?;
    let other_frontends: Vec<_> = results.collect();

    let calls = sandbox.call_log().records();
    let mut by_operation = BTreeMap::<String, usize>::new();
    for call in &calls {
        *by_operation.entry(call.operation.clone()).or_default() += 1;
    }
    let mode_name = match config.mode {
        RunMode::Pitstop => "pitstop",
        RunMode::Naive => "naive",
    };
    let report = RunReport {
        title: format!(
            "{mode_name}: {} instances at {} req/s",
            config.sandbox.instances, config.rate_per_s
        ),
        mode: config.mode,
        load: result,
        bands: bands.finish(),
        extra: serde_json::json!({
            "process_s": process_time.as_secs_f64(),
            "minimum_s": config.minimum_time().as_secs_f64(),
            "aws_calls": calls.len(),
            "aws_calls_by_operation": by_operation,
        }),
    };
    Ok(ExperimentResult {
        report,
        boots_before,
        boots_after: sandbox.boot_counts(),
        max_out_of_rotation: sandbox.max_out_of_rotation(),
        aws_calls: calls.len(),
        aws_writes: calls.iter().filter(|c| c.is_effective_write()).count(),
        aws_calls_by_operation: by_operation,
        process_time,
        minimum_time: config.minimum_time(),
        pitstop,
        other_frontends,
    })
}

/// Starts a sandbox, runs the experiment, tears the sandbox down.
pub async fn run(config: &ExperimentConfig) -> anyhow::Result<ExperimentResult> {
    let sandbox = Sandbox::start(config.sandbox.clone())
        .await
        .context("starting the sandbox")?;
    let result = run_on(&sandbox, config).await;
    sandbox.shutdown().await.context("stopping the sandbox")?;
    result
}
