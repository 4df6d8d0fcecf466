//! The SSM agent of each instance: runs `AWS-RunShellScript` invocations, reboots on `exit 194`, and reports.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};

use super::Shared;
use super::commands::Outcome;
use super::instance::{Instance, Power};
use super::lifecycle::{begin_reboot, wait_for_boot_after};
use super::process::{kill_process_group, tie_to_parent};

/// Exit code asking the agent to reboot after the script, then run it again.
const REBOOT_AFTER_EXIT: i32 = 194;

/// Exit code asking for an immediate reboot; the sandbox treats it like 194 (the script has already ended).
const REBOOT_NOW_EXIT: i32 = 193;

/// Time limits of one invocation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The script must have started by then (`TimeoutSeconds` after sending).
    pub(crate) delivery_deadline: Instant,
    /// From the first start, the run may take this long, reboots included (`executionTimeout`).
    pub(crate) execution_timeout: Duration,
}

/// Starts the invocation of `command_id` on `instance`: it runs in the background until it succeeds, fails, times
/// out or is cancelled.
pub(crate) fn start_invocation(
    shared: &Arc<Shared>,
    command_id: String,
    instance: Arc<Instance>,
    script: String,
    limits: Limits,
    mut cancel: watch::Receiver<bool>,
) {
    let shared_task = Arc::clone(shared);
    shared.tasks.spawn(async move {
        let cancelled = async move {
            if cancel.wait_for(|cancelled| *cancelled).await.is_err() {
                // The command store is gone, so nobody can cancel any more: never fire.
                std::future::pending::<()>().await;
            }
        };
        // Whichever branch loses is dropped, and with it any script it runs (its guard kills the process group).
        let outcome = tokio::select! {
            outcome = deliver_and_run(&shared_task, &command_id, &instance, &script, limits) => outcome,
            () = cancelled => Outcome::Cancelled,
        };
        shared_task.commands.finish(&command_id, &instance.id, outcome);
    });
}

/// Waits for the instance to run (until the delivery deadline), then runs the script (within the execution
/// timeout).
async fn deliver_and_run(
    shared: &Arc<Shared>,
    command_id: &str,
    instance: &Arc<Instance>,
    script: &str,
    limits: Limits,
) -> Outcome {
    if timeout_at(limits.delivery_deadline, wait_for_boot_after(instance, 0))
        .await
        .is_err()
    {
        return Outcome::TimedOut;
    }
    let execution = run(shared, command_id, instance, script);
    timeout_at(Instant::now() + limits.execution_timeout, execution)
        .await
        .unwrap_or(Outcome::TimedOut)
}

/// Runs the script, and on a reboot exit code reboots and runs it again from the start once the instance is back,
/// as the real agent does.
async fn run(shared: &Arc<Shared>, command_id: &str, instance: &Arc<Instance>, script: &str) -> Outcome {
    let store = &shared.commands;
    let mut boot_floor = 0;
    loop {
        wait_for_boot_after(instance, boot_floor).await;
        if shared.is_closed() {
            // The sandbox is going away and this task with it; do not spin on a runner that cannot start scripts.
            std::future::pending::<()>().await;
        }
        if let Some(code) = shared.faults.command_failure(&instance.id) {
            store.mark_started(command_id, &instance.id);
            let message = format!(
                "sandbox fault: commands on {} fail with exit code {code}\n",
                instance.id
            );
            store.append_output(command_id, &instance.id, "", &message);
            return Outcome::Failed(code);
        }
        store.mark_started(command_id, &instance.id);
        let run = match run_script(shared, instance, script).await {
            Ok(Some(run)) => run,
            // The instance went down between the wait and the start: run it once it is back.
            Ok(None) => {
                boot_floor = instance.power().down_at_boot;
                continue;
            }
            Err(err) => {
                store.append_output(command_id, &instance.id, "", &format!("sandbox: {err:#}\n"));
                return Outcome::Failed(-1);
            }
        };
        store.append_output(command_id, &instance.id, &run.stdout, &run.stderr);
        match run.exit_code {
            Some(0) => return Outcome::Success,
            Some(REBOOT_AFTER_EXIT | REBOOT_NOW_EXIT) => boot_floor = begin_reboot(shared, instance),
            Some(code) => return Outcome::Failed(code),
            // Killed because the instance was terminated: its agent died with it and never reports, so the
            // invocation stays in progress until its execution timeout, as on AWS.
            None if instance.power().power == Power::Terminated => std::future::pending::<()>().await,
            // Killed by a signal: another command rebooted the instance under it, or someone killed it.
            None => return Outcome::Failed(-1),
        }
    }
}

/// What one run of a script left.
struct ScriptRun {
    exit_code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Kills a script's process group (it and whatever it left running) and forgets it, when its run ends or is
/// abandoned (timeout, cancel, shutdown).
struct ScriptGuard<'a> {
    instance: &'a Instance,
    pgid: u32,
}

impl Drop for ScriptGuard<'_> {
    fn drop(&mut self) {
        kill_process_group(self.pgid);
        self.instance.with_processes(|procs| procs.scripts.remove(&self.pgid));
    }
}

/// Runs `script` with `sh -c` in the instance's home; `None` when the instance is not running.
async fn run_script(shared: &Shared, instance: &Instance, script: &str) -> anyhow::Result<Option<ScriptRun>> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .current_dir(&instance.home)
        .env("PITSTOP_STATE_DIR", &instance.home)
        .env("PITSTOP_INSTANCE_ID", &instance.id)
        .env("HOME", &instance.home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a reboot or a cancel kills what the script started too.
        .process_group(0);
    tie_to_parent(&mut cmd);
    let spawned = instance.with_processes(|procs| -> anyhow::Result<_> {
        // Under the same lock as a reboot's kill: a script never starts on an instance that is going down.
        if shared.is_closed() || instance.power().power != Power::Running {
            return Ok(None);
        }
        let child = cmd.spawn().context("start sh")?;
        let pgid = child.id().context("the script exited before it could be tracked")?;
        procs.scripts.insert(pgid);
        Ok(Some((child, pgid)))
    })?;
    let Some((child, pgid)) = spawned else {
        return Ok(None);
    };
    let _guard = ScriptGuard { instance, pgid };
    let output = child.wait_with_output().await.context("wait for the script")?;
    Ok(Some(ScriptRun {
        exit_code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }))
}
