//! `make chaos`: pitstop's reliability under the failures a controller meets, repeated for a bounded time and
//! reported as a table. Each run maintains a fresh plan of the sandbox's fleet under load with the real `pitstop
//! run` binary while one kind of failure is injected over and over:
//!
//! - kill -9 of `pitstop run` at random moments, then a restart on the same state file ([`kills`]);
//! - kill -9 right after SendCommand was carried out, before pitstop heard back ([`kills`]);
//! - writes whose answer is lost after AWS carried them out, for every write, in every mode ([`lost_answers`]).
//!
//! Every run then counts what the promise is about: instances rebooted more than once, instances left out of
//! rotation, failed requests. Figures, not assertions: the report is for the user to read (and `pitstop-chaos`
//! exits non-zero when a run broke the promise, so it can gate a pipeline).

mod kills;
mod lost_answers;
mod run;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::sandbox::{Sandbox, SandboxConfig};

pub use run::RunOutcome;

/// What `make chaos` runs.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// Time for each scenario; a run that started within it is finished.
    pub budget_per_scenario: Duration,
    /// Requests per second sent through the load balancer during every run.
    pub rate_per_s: f64,
    /// The `pitstop` binary.
    pub pitstop_binary: PathBuf,
    /// Where plans and state files go.
    pub out_dir: PathBuf,
    /// The fleet.
    pub sandbox: SandboxConfig,
}

impl ChaosConfig {
    /// Three instances with short drains and boots, so many runs fit in the budget.
    pub fn new(budget_per_scenario: Duration, out_dir: PathBuf) -> Self {
        Self {
            budget_per_scenario,
            rate_per_s: 100.0,
            pitstop_binary: crate::experiment::default_pitstop_binary(),
            out_dir,
            sandbox: SandboxConfig::default()
                .with_instances(3)
                .with_deregistration_delay(Duration::from_secs(1))
                .with_boot_time(Duration::from_secs(1))
                .with_health_interval(Duration::from_millis(400)),
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScenarioReport {
    /// What was injected.
    pub scenario: String,
    /// Plans run to the end.
    pub runs: u32,
    /// Kills or faults injected, all runs together.
    pub injected: u32,
    /// Instances rebooted more than once in a run.
    pub double_reboots: u32,
    /// Instances out of rotation when a run ended.
    pub left_out: u32,
    /// Requests sent through the load balancer.
    pub requests: u64,
    /// Requests that failed (5xx, connection errors, timeouts).
    pub failed_requests: u64,
    /// Runs whose `pitstop run` did not end with exit code 0.
    pub unfinished_runs: u32,
    /// Wall time of the scenario, seconds.
    pub seconds: f64,
}

impl ScenarioReport {
    fn add(&mut self, outcome: &RunOutcome) {
        self.runs += 1;
        self.injected += outcome.injected;
        self.double_reboots += outcome.double_reboots;
        self.left_out += outcome.left_out;
        self.requests += outcome.requests;
        self.failed_requests += outcome.failed_requests;
        self.unfinished_runs += u32::from(!outcome.succeeded);
    }

    /// Whether every run kept the promise.
    pub fn kept_the_promise(&self) -> bool {
        self.double_reboots == 0 && self.left_out == 0 && self.failed_requests == 0 && self.unfinished_runs == 0
    }
}

/// The scenarios `make chaos` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// kill -9 of `pitstop run` at random moments.
    RandomKills,
    /// kill -9 right after SendCommand was carried out.
    KillsAfterSend,
    /// Lost answers on every write.
    LostAnswers,
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Scenario; 3] = [Scenario::RandomKills, Scenario::KillsAfterSend, Scenario::LostAnswers];

    fn title(self) -> &'static str {
        match self {
            Scenario::RandomKills => "kill -9 of pitstop run at random moments",
            Scenario::KillsAfterSend => "kill -9 right after SendCommand",
            Scenario::LostAnswers => "lost answers on every write (reset, 500, hold)",
        }
    }
}

/// Runs `scenario` over and over on `sandbox` until its budget is spent.
pub async fn run_scenario(
    sandbox: &Sandbox,
    config: &ChaosConfig,
    scenario: Scenario,
) -> anyhow::Result<ScenarioReport> {
    let started = Instant::now();
    let mut report = ScenarioReport {
        scenario: scenario.title().to_owned(),
        ..ScenarioReport::default()
    };
    let mut index = 0u32;
    while started.elapsed() < config.budget_per_scenario {
        index += 1;
        let name = format!("chaos-{scenario:?}-{index}").to_lowercase();
        let outcome = match scenario {
            Scenario::RandomKills => kills::random_kills(sandbox, config, &name).await?,
            Scenario::KillsAfterSend => kills::kills_after_send(sandbox, config, &name).await?,
            Scenario::LostAnswers => lost_answers::every_write(sandbox, config, &name).await?,
        };
        eprintln!(
            "  {name}: {} injected, {} double reboots, {} left out, {} of {} requests failed{}",
            outcome.injected,
            outcome.double_reboots,
            outcome.left_out,
            outcome.failed_requests,
            outcome.requests,
            if outcome.succeeded { "" } else { ", did not succeed" }
        );
        report.add(&outcome);
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The report as a Markdown table.
pub fn table(reports: &[ScenarioReport]) -> String {
    let mut out = String::from(
        "| scenario | runs | kills or faults injected | double reboots | instances left out | failed requests | unfinished runs | time |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} of {} | {} | {:.0} s |\n",
            r.scenario,
            r.runs,
            r.injected,
            r.double_reboots,
            r.left_out,
            r.failed_requests,
            r.requests,
            r.unfinished_runs,
            r.seconds
        ));
    }
    out
}
