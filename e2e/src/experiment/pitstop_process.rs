//! Running the real `pitstop run` binary against the sandbox, watching its state file for
//! the phase bands and its memory high-water mark.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::io::AsyncReadExt;

use super::ExperimentConfig;
use super::bands::BandRecorder;
use super::plan::fleet_plan_yaml;
use crate::sandbox::Sandbox;

/// Environment variable naming the `pitstop` binary.
pub const PITSTOP_BINARY_ENV: &str = "PITSTOP_BIN";

/// The `pitstop` binary: `$PITSTOP_BIN`, else next to the running executable (the test
/// binaries live one level further down, in `deps/`).
pub fn default_pitstop_binary() -> PathBuf {
    crate::binaries::sibling_binary(PITSTOP_BINARY_ENV, "pitstop")
}

/// What `pitstop run` did.
#[derive(Clone, Debug, Serialize)]
pub struct PitstopRun {
    /// Its exit code.
    pub exit_code: Option<i32>,
    /// What it printed on stdout: the final plans as YAML.
    pub final_yaml: String,
    /// What it printed on stderr: the progress lines.
    pub progress: String,
    /// Peak resident memory (VmHWM), in KiB, as last read while it ran.
    pub peak_rss_kib: Option<u64>,
}

/// `pitstop run` on a plan file against the sandbox's AWS endpoint, with its output piped and
/// the process killed when the handle is dropped.
pub fn pitstop_run_command(
    binary: &Path,
    plan_file: &Path,
    state_file: &Path,
    poll_interval: Duration,
    sandbox: &Sandbox,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary);
    command
        .arg("run")
        .arg(plan_file)
        .arg("--state-file")
        .arg(state_file)
        .arg("--poll-interval")
        .arg(format!("{}ms", poll_interval.as_millis()))
        .envs(sandbox.aws_env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs `pitstop run` on a plan for the whole fleet and waits for it to exit.
pub(super) async fn run_pitstop(
    sandbox: &Sandbox,
    config: &ExperimentConfig,
    bands: &mut BandRecorder,
) -> anyhow::Result<PitstopRun> {
    let plan_path = config.out_dir.join("plan.yaml");
    let state_path = config.out_dir.join("state.json");
    let _ = std::fs::remove_file(&state_path);
    // Every target group the fleet serves through: pitstop drains each instance from all of them.
    let instances = config.instance_order.clone().unwrap_or_else(|| sandbox.instance_ids());
    let yaml = fleet_plan_yaml(
        "sandbox-reboot",
        &sandbox.target_group_arns(),
        &instances,
        config.healthy_seconds,
        &config.extra_spec,
    );
    std::fs::write(&plan_path, yaml).with_context(|| format!("writing {}", plan_path.display()))?;
    let binary = &config.pitstop_binary;
    anyhow::ensure!(
        binary.is_file(),
        "{} not found: build it first (`cargo build --workspace --bins`) or set {PITSTOP_BINARY_ENV}",
        binary.display()
    );
    let mut child = pitstop_run_command(binary, &plan_path, &state_path, config.poll_interval, sandbox)
        .envs(config.pitstop_env.iter().map(|(k, v)| (k, v)))
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pid = child.id();
    let stdout = child.stdout.take().context("pitstop stdout")?;
    let stderr = child.stderr.take().context("pitstop stderr")?;
    let out_task = read_to_end(stdout);
    let err_task = read_to_end(stderr);

    let mut peak = None;
    let status = loop {
        if let Some(pid) = pid
            && let Some(hwm) = crate::proc_stats::status_kib(pid, "VmHWM:")
        {
            peak = Some(hwm);
        }
        if let Some(status) = read_status(&state_path) {
            bands.status(&status);
        }
        tokio::select! {
            status = child.wait() => break status.context("waiting for pitstop")?,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    };
    if let Some(status) = read_status(&state_path) {
        bands.status(&status);
    }
    Ok(PitstopRun {
        exit_code: status.code(),
        final_yaml: out_task.await.unwrap_or_default(),
        progress: err_task.await.unwrap_or_default(),
        peak_rss_kib: peak,
    })
}

impl PitstopRun {
    /// The final status of the one plan, parsed from what `pitstop run` printed.
    pub fn final_status(&self) -> anyhow::Result<pitstop::api::MaintenancePlanStatus> {
        let plans: Vec<pitstop::api::MaintenancePlan> =
            serde_saphyr::from_multiple(&self.final_yaml).context("parsing pitstop's final YAML")?;
        plans
            .into_iter()
            .next()
            .and_then(|plan| plan.status)
            .context("pitstop printed no plan with a status")
    }
}

fn read_status(path: &std::path::Path) -> Option<pitstop::api::MaintenancePlanStatus> {
    let text = std::fs::read_to_string(path).ok()?;
    let state: serde_json::Value = serde_json::from_str(&text).ok()?;
    let status = state.get("plans")?.get("sandbox-reboot")?.get("status")?.clone();
    serde_json::from_value(status).ok()
}

/// Collects everything a child's pipe prints, in the background, so the child never blocks
/// on a full pipe; the task ends with the text when the pipe closes.
pub fn read_to_end<R>(mut pipe: R) -> tokio::task::JoinHandle<String>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text).await;
        text
    })
}
