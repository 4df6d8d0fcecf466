//! One chaos run: a fresh plan of the whole fleet, under load, and what it did to the fleet.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use super::ChaosConfig;
use crate::experiment::{pitstop_run_command, plan_yaml};
use crate::load::{self, LoadConfig, LoadHandle};
use crate::sandbox::Sandbox;

/// What one run did.
#[derive(Clone, Debug, Default)]
pub struct RunOutcome {
    /// Kills or faults injected.
    pub injected: u32,
    /// Instances rebooted more than once.
    pub double_reboots: u32,
    /// Instances out of rotation at the end.
    pub left_out: u32,
    /// Requests sent.
    pub requests: u64,
    /// Requests failed.
    pub failed_requests: u64,
    /// Whether the last `pitstop run` exited 0 (the plan succeeded).
    pub succeeded: bool,
}

/// Longest a run may take before it counts as unfinished: a safety net, far above a run's few seconds.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// A run in progress: its files, the fleet's boot counters before it, and the load.
pub(super) struct Run<'a> {
    pub(super) sandbox: &'a Sandbox,
    pub(super) config: &'a ChaosConfig,
    pub(super) plan_file: PathBuf,
    pub(super) state_file: PathBuf,
    boots_before: BTreeMap<String, u64>,
    load: LoadHandle,
    deadline: tokio::time::Instant,
}

impl<'a> Run<'a> {
    /// Writes a fresh plan (a new name, so a new plan UID and new command tags) and starts the load.
    pub(super) fn start(sandbox: &'a Sandbox, config: &'a ChaosConfig, name: &str) -> anyhow::Result<Self> {
        let dir = config.out_dir.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let plan_file = dir.join("plan.yaml");
        let state_file = dir.join("state.json");
        let _ = std::fs::remove_file(&state_file);
        std::fs::write(
            &plan_file,
            plan_yaml(name, sandbox.target_group_arn(), &sandbox.instance_ids(), 120, ""),
        )
        .with_context(|| format!("write {}", plan_file.display()))?;
        sandbox.reset_rotation_history();
        let load = load::start(LoadConfig {
            url: sandbox.frontend_url(),
            rate_per_s: config.rate_per_s,
            ..LoadConfig::default()
        })
        .context("start the load")?;
        Ok(Self {
            sandbox,
            config,
            plan_file,
            state_file,
            boots_before: sandbox.boot_counts(),
            load,
            deadline: tokio::time::Instant::now() + RUN_LIMIT,
        })
    }

    /// `pitstop run` on the run's plan and state file, with `env` added.
    pub(super) fn command(&self, env: &[(&str, &str)]) -> tokio::process::Command {
        let mut command = pitstop_run_command(
            &self.config.pitstop_binary,
            &self.plan_file,
            &self.state_file,
            Duration::from_millis(200),
            self.sandbox,
        );
        command.envs(env.iter().copied());
        command
    }

    /// Whether the run has gone on for too long.
    pub(super) fn overdue(&self) -> bool {
        tokio::time::Instant::now() >= self.deadline
    }

    /// Runs `pitstop run` to its end (or the run's limit); returns whether it exited 0.
    pub(super) async fn finish_pitstop(&self, env: &[(&str, &str)]) -> anyhow::Result<bool> {
        let mut child = self.command(env).spawn().context("start pitstop run")?;
        let left = self.deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, child.wait()).await {
            Ok(status) => Ok(status.context("wait for pitstop run")?.success()),
            Err(_) => {
                let _ = child.kill().await;
                Ok(false)
            }
        }
    }

    /// Stops the load and counts what the run did to the fleet.
    pub(super) async fn end(self, injected: u32, succeeded: bool) -> anyhow::Result<RunOutcome> {
        // A beat for the load's last requests against the fleet as pitstop left it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let result = self.load.stop().await;
        let rotation = self.sandbox.rotation_states().await?;
        let double_reboots = self
            .sandbox
            .boot_counts()
            .into_iter()
            .filter(|(id, after)| after - self.boots_before.get(id).copied().unwrap_or(0) > 1)
            .count();
        Ok(RunOutcome {
            injected,
            double_reboots: u32::try_from(double_reboots).unwrap_or(u32::MAX),
            left_out: u32::try_from(rotation.values().filter(|r| !r.in_rotation()).count()).unwrap_or(u32::MAX),
            requests: result.totals.sent,
            failed_requests: result.totals.failed(),
            succeeded,
        })
    }

    /// The run's state file.
    pub(super) fn state_file(&self) -> &Path {
        &self.state_file
    }
}
