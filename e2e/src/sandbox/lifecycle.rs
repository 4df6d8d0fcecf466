//! Booting and rebooting instances, as the SSM agent's `exit 194` asks and as the fault switches bend it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Child;

use super::Shared;
use super::backend_process;
use super::instance::{Instance, Power};
use super::net::wait_until_accepting;
use super::process::log_tail;

/// Longest wait for a freshly started backend to listen.
const LISTEN_LIMIT: Duration = Duration::from_secs(10);

/// Starts the instance's backend (counting the boot) without waiting for it to listen.
///
/// The `unhealthy_after_boot` fault is applied here, at boot, by creating the file the backend's `/health` looks at.
pub(crate) fn start_backend(shared: &Shared, instance: &Instance) -> anyhow::Result<()> {
    if shared.faults.boots_unhealthy(&instance.id) {
        std::fs::write(&instance.sick_file, b"unhealthy_after_boot fault\n")
            .with_context(|| format!("write {}", instance.sick_file.display()))?;
    } else if warms_up(shared, instance) {
        // Failing from the first check; `come_back` ends the warm-up.
        std::fs::write(&instance.sick_file, b"warming up after a reboot\n")
            .with_context(|| format!("write {}", instance.sick_file.display()))?;
    } else {
        remove_sick_file(instance);
    }
    instance.with_processes(|procs| {
        // Checked under the lock a shutdown takes to kill children, so no backend starts after the kill.
        if shared.is_closed() {
            bail!("the sandbox is shutting down");
        }
        if instance.power().power == Power::Terminated {
            bail!("{} is terminated", instance.id);
        }
        let boot = instance.count_boot();
        let boot_file = instance.home.join("boot-count");
        std::fs::write(&boot_file, format!("{boot}\n")).with_context(|| format!("write {}", boot_file.display()))?;
        if !shared.cfg.light {
            procs.backend = Some(backend_process::spawn(&shared.cfg.backend_binary, instance)?);
        }
        Ok(())
    })
}

/// Whether the boot about to start is a reboot whose service warms up ([`SandboxConfig::app_warmup`]); the first
/// boot never does, so a sandbox starts as fast as before.
///
/// [`SandboxConfig::app_warmup`]: super::SandboxConfig::app_warmup
fn warms_up(shared: &Shared, instance: &Instance) -> bool {
    !shared.cfg.app_warmup.is_zero() && instance.power().boot_count > 0
}

/// Waits until the backend started by [`start_backend`] listens, then marks the instance `Running` (at once in
/// light mode, where no backend runs).
pub(crate) async fn finish_boot(shared: &Shared, instance: &Instance) -> anyhow::Result<()> {
    if !shared.cfg.light && !wait_until_accepting(instance.port, LISTEN_LIMIT).await {
        let exited = instance.with_processes(|procs| procs.backend.as_mut().map(Child::try_wait));
        bail!(
            "the backend of {} did not listen on 127.0.0.1:{} within {LISTEN_LIMIT:?} (process: {exited:?}); log: {}",
            instance.id,
            instance.port,
            log_tail(&instance.log_file, 1000)
        );
    }
    instance.set_power(Power::Running);
    Ok(())
}

/// Removes the file that makes the backend's health check fail, if present.
pub(crate) fn remove_sick_file(instance: &Instance) {
    if let Err(err) = std::fs::remove_file(&instance.sick_file)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(instance = %instance.id, %err, "could not remove the health fault file");
    }
}

/// Reboots `instance` as an SSM agent does after `exit 194`: everything on it dies now, it stays down for the boot
/// time (or for good, under the `never_return` fault), then the backend starts again.
///
/// Returns the boot count before the reboot; the reboot is over once the instance is `Running` with a larger one.
/// A reboot requested while one is under way joins it.
pub(crate) fn begin_reboot(shared: &Arc<Shared>, instance: &Arc<Instance>) -> u64 {
    if !instance.power_off_if_running() {
        return instance.power().down_at_boot;
    }
    let before = instance.power().down_at_boot;
    let dead_backend = instance.kill_processes();
    let (shared_task, instance_task) = (Arc::clone(shared), Arc::clone(instance));
    shared.tasks.spawn(async move {
        if let Some(mut child) = dead_backend {
            // Reap it, so the port is free and no zombie stays behind.
            let _ = child.wait().await;
        }
        if let Err(err) = come_back(&shared_task, &instance_task).await {
            tracing::error!(instance = %instance_task.id, "reboot failed, the instance stays down: {err:#}");
        }
    });
    before
}

async fn come_back(shared: &Shared, instance: &Instance) -> anyhow::Result<()> {
    tokio::time::sleep(shared.cfg.boot_time).await;
    if instance.power().power == Power::Terminated {
        return Ok(());
    }
    let mut faults = shared.faults.subscribe();
    while shared.faults.never_returns(&instance.id) {
        instance.set_power(Power::Lost);
        if faults.changed().await.is_err() {
            return Ok(());
        }
    }
    let warming = warms_up(shared, instance);
    start_backend(shared, instance)?;
    finish_boot(shared, instance).await?;
    if warming {
        // The OS and the SSM agent are up; the service answers its health check only after the warm-up.
        tokio::time::sleep(shared.cfg.app_warmup).await;
        if !shared.faults.boots_unhealthy(&instance.id) {
            remove_sick_file(instance);
        }
    }
    Ok(())
}

/// Waits until `instance` runs with a boot count above `before` (`0`: until it runs at all).
pub(crate) async fn wait_for_boot_after(instance: &Instance, before: u64) {
    let mut power = instance.watch_power();
    // Only fails when the instance is gone, i.e. the sandbox is shutting down: then there is nothing to wait for.
    let _ = power
        .wait_for(|state| state.power == Power::Running && state.boot_count > before)
        .await;
}
