//! Helpers shared by the tests that run the real `pitstop` binary (`pitstop run`) against the sandbox: starting
//! it on a plan file, reading its state file while it runs, parsing what it printed, and reading what the sandbox
//! saw (boot counters, the AWS call log, HAProxy's states).

#![allow(dead_code)] // Each test file uses a different subset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pitstop::api::{InstancePhase, InstanceStatus, MaintenancePlan, MaintenancePlanStatus};
use pitstop_e2e::experiment::{default_pitstop_binary, pitstop_run_command, plan_yaml, read_to_end};
use pitstop_e2e::sandbox::{CallRecord, Sandbox};
use tokio::process::Child;
use tokio::task::JoinHandle;

/// `pitstop run --poll-interval`: short, so the runs take little more than the fleet needs.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Upper bound on one `pitstop run` by default; a safety net against a hang, not a timing assertion.
pub const RUN_LIMIT: Duration = Duration::from_secs(120);

/// What a `pitstop run` ended with.
pub struct Finished {
    /// The process's exit code (None if killed by a signal).
    pub code: Option<i32>,
    /// The plans it printed on stdout, with their final status.
    pub plans: Vec<MaintenancePlan>,
    /// Its progress lines.
    pub stderr: String,
}

impl Finished {
    /// The final status of the plan named `name`.
    pub fn status(&self, name: &str) -> &MaintenancePlanStatus {
        self.plans
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no plan {name} in the output; stderr:\n{}", self.stderr))
            .status
            .as_ref()
            .unwrap_or_else(|| panic!("plan {name} has no status; stderr:\n{}", self.stderr))
    }
}

/// A `pitstop run` in progress.
pub struct Running {
    child: Child,
    stdout: JoinHandle<String>,
    stderr: JoinHandle<String>,
    state_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts `pitstop run` on `yaml` against `sandbox`, with `state_file` (None: a fresh one).
pub fn start_pitstop(sandbox: &Sandbox, yaml: &str, state_file: Option<&Path>) -> Running {
    start_pitstop_with(sandbox, yaml, state_file, &[])
}

/// [`start_pitstop`] with more command-line arguments (e.g. `--notify-url URL`).
pub fn start_pitstop_with(sandbox: &Sandbox, yaml: &str, state_file: Option<&Path>, args: &[&str]) -> Running {
    let binary = default_pitstop_binary();
    assert!(
        binary.is_file(),
        "{} not found: build it first (`cargo build --workspace --bins`) or set PITSTOP_BIN",
        binary.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let plan_file = dir.path().join("plans.yaml");
    let state_file = state_file.map_or_else(|| dir.path().join("state.json"), Path::to_path_buf);
    std::fs::write(&plan_file, yaml).expect("write the plan file");
    let mut child = pitstop_run_command(&binary, &plan_file, &state_file, POLL_INTERVAL, sandbox)
        .args(args)
        .spawn()
        .unwrap_or_else(|err| panic!("starting {}: {err}", binary.display()));
    let stdout = read_to_end(child.stdout.take().expect("stdout piped"));
    let stderr = read_to_end(child.stderr.take().expect("stderr piped"));
    Running {
        child,
        stdout,
        stderr,
        state_file,
        _dir: dir,
    }
}

/// The status of plan `name` as last written to the state file at `path`, if any yet.
pub fn read_saved_status(path: &Path, name: &str) -> Option<MaintenancePlanStatus> {
    let text = std::fs::read_to_string(path).ok()?;
    let state: serde_json::Value = serde_json::from_str(&text).ok()?;
    let status = state.get("plans")?.get(name)?.get("status")?.clone();
    serde_json::from_value(status).ok()
}

/// Waits until plan `name`'s status in the state file at `path` satisfies `done`, and returns it; panics with the
/// last status seen after `limit` (a safety net against a hang, not a timing assertion).
pub async fn wait_for_saved_status(
    path: &Path,
    name: &str,
    what: &str,
    limit: Duration,
    done: impl Fn(&MaintenancePlanStatus) -> bool,
) -> MaintenancePlanStatus {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let status = read_saved_status(path, name);
        if let Some(status) = status.as_ref().filter(|s| done(s)) {
            return status.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached; last status {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many calls of `operation` the sandbox carried out (its effective writes).
pub fn effective_writes(sandbox: &Sandbox, operation: &str) -> usize {
    sandbox
        .call_log()
        .records()
        .iter()
        .filter(|c| c.operation == operation && c.is_effective_write())
        .count()
}

/// What the first instance held at a gate says (`waiting (AlertFiring): …`), if one waits there for `reason`.
pub fn held_at_gate(status: &MaintenancePlanStatus, reason: &str) -> Option<String> {
    let prefix = format!("waiting ({reason})");
    status
        .instances
        .iter()
        .filter(|i| i.phase == InstancePhase::Pending)
        .find_map(|i| i.message.clone().filter(|m| m.starts_with(&prefix)))
}

impl Running {
    /// Waits (at most [`RUN_LIMIT`]) until plan `name`'s saved status satisfies `done`, and returns it.
    pub async fn wait_for_status(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&MaintenancePlanStatus) -> bool,
    ) -> MaintenancePlanStatus {
        wait_for_saved_status(&self.state_file, name, what, RUN_LIMIT, done).await
    }

    /// The state file pitstop writes.
    pub fn state_file(&self) -> &Path {
        &self.state_file
    }

    /// The status of plan `name` as last written to the state file, if any yet.
    pub fn saved_status(&self, name: &str) -> Option<MaintenancePlanStatus> {
        read_saved_status(&self.state_file, name)
    }

    /// Whether the process has exited already.
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits (at most [`RUN_LIMIT`]) for the process to exit and parses what it printed.
    pub async fn finish(self) -> Finished {
        self.finish_within(RUN_LIMIT).await
    }

    /// Waits (at most `limit`, a safety net against a hang) for the process to exit and parses what it printed.
    pub async fn finish_within(mut self, limit: Duration) -> Finished {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("waiting for pitstop"),
            Err(_) => {
                let _ = self.child.kill().await;
                let stderr = self.stderr.await.unwrap_or_default();
                panic!("pitstop run did not finish within {limit:?}; stderr:\n{stderr}");
            }
        };
        let stdout = self.stdout.await.unwrap_or_default();
        let stderr = self.stderr.await.unwrap_or_default();
        let plans = serde_saphyr::from_multiple::<MaintenancePlan>(&stdout).unwrap_or_else(|err| {
            panic!("pitstop printed no readable plans ({err}); stdout:\n{stdout}\nstderr:\n{stderr}")
        });
        Finished {
            code: status.code(),
            plans,
            stderr,
        }
    }
}

/// Runs `pitstop run` on `yaml` to the end, with a fresh state file: (exit code, final plans,
/// stderr) in one value.
pub async fn run_pitstop(sandbox: &Sandbox, yaml: &str) -> Finished {
    start_pitstop(sandbox, yaml, None).finish().await
}

/// A plan for `instances` of the sandbox's target group, with extra spec lines.
pub fn plan(sandbox: &Sandbox, name: &str, instances: &[String], extra_spec: &str) -> String {
    plan_yaml(name, sandbox.target_group_arn(), instances, 60, extra_spec)
}

/// Reboots per instance since `before`.
pub fn reboots_since(sandbox: &Sandbox, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    sandbox
        .boot_counts()
        .into_iter()
        .map(|(id, after)| {
            let earlier = before.get(&id).copied().unwrap_or(0);
            (id, after - earlier)
        })
        .collect()
}

/// One line per call: operation, instances, outcome.
pub fn describe_writes(writes: &[CallRecord]) -> Vec<String> {
    writes
        .iter()
        .map(|w| format!("{} {:?} {:?}", w.operation, w.instance_ids, w.outcome))
        .collect()
}

/// The instances' phases, in the status's order.
pub fn phases(status: &MaintenancePlanStatus) -> Vec<InstancePhase> {
    status.instances.iter().map(|i| i.phase).collect()
}

/// The status of instance `id`.
pub fn instance<'a>(status: &'a MaintenancePlanStatus, id: &str) -> &'a InstanceStatus {
    status
        .instances
        .iter()
        .find(|i| i.instance_id == id)
        .unwrap_or_else(|| panic!("{id} not in the status: {status:?}"))
}

/// Asserts that HAProxy sends traffic to every instance now.
pub async fn assert_all_in_rotation(sandbox: &Sandbox) {
    let rotation = sandbox.rotation_states().await.expect("HAProxy state");
    assert!(
        rotation.values().all(|r| r.in_rotation()),
        "every instance back in rotation: {rotation:?}"
    );
}
