//! The fleet changing under a plan, as an Auto Scaling group changes it: an instance terminated (taken out of every
//! target group it is in, after the deregistration delay, then powered off for good) and a spare one launched in its
//! place (registered in every target group). The group ([`super::autoscaling`]) follows: a terminating member reads
//! `Terminating`, then leaves it; a launched one joins `InService`. Part of the world: the wire
//! (`/_sandbox/terminate`, `/_sandbox/replace`) and the tests call in here.

use std::sync::Arc;

use anyhow::{Context, bail};

use super::Shared;
use super::instance::Power;
use super::targets::{self, Registration};

/// Terminates instance `id`: it leaves every target group it is registered in (draining for the deregistration delay,
/// as an Auto Scaling group's termination does), then everything on it stops and it never comes back. The group
/// shrinks by one, as TerminateInstanceInAutoScalingGroup with ShouldDecrementDesiredCapacity does. Returns once it
/// is gone.
pub(crate) async fn terminate(shared: &Arc<Shared>, id: &str) -> anyhow::Result<()> {
    terminate_member(shared, id, true).await
}

/// [`terminate`], with the group's desired capacity lowered (`decrement`) or kept for a replacement.
async fn terminate_member(shared: &Arc<Shared>, id: &str, decrement: bool) -> anyhow::Result<()> {
    let instance = shared
        .instance(id)
        .cloned()
        .with_context(|| format!("no instance {id} in the sandbox"))?;
    if !instance.in_service() {
        bail!("{id} is not in service (a spare not launched, or terminated already)");
    }
    shared.auto_scaling.start_terminating(id, decrement);
    let mut drained = false;
    for (index, group) in shared.target_groups.iter().enumerate() {
        if matches!(group.registration(id), Registration::Registered { .. }) {
            targets::deregister(shared, index, &[id.to_owned()]).await?;
            drained = true;
        }
    }
    if drained {
        tokio::time::sleep(shared.cfg.deregistration_delay).await;
    }
    instance.terminate();
    // A client may have registered it again while it drained; AWS takes a terminated instance out of every target
    // group, so no target points at it.
    for (index, group) in shared.target_groups.iter().enumerate() {
        if matches!(group.registration(id), Registration::Registered { .. }) {
            targets::deregister(shared, index, &[id.to_owned()]).await?;
        }
    }
    shared.auto_scaling.finish_terminating(id);
    if let Some(mut backend) = instance.kill_processes() {
        // Reap it, so no zombie stays behind.
        let _ = backend.wait().await;
    }
    tracing::info!(instance = %id, "terminated");
    Ok(())
}

/// Launches the next spare instance: it is registered in every target group (on each group's port) and serves once
/// the health checks pass; the group grows by one. Returns its ID.
pub(crate) async fn launch(shared: &Arc<Shared>) -> anyhow::Result<String> {
    launch_member(shared, true).await
}

/// [`launch`], with the group's desired capacity raised (`increment`) or kept (a replacement).
async fn launch_member(shared: &Arc<Shared>, increment: bool) -> anyhow::Result<String> {
    let instance = shared
        .instances
        .iter()
        .find(|i| i.take_spare())
        .cloned()
        .context("no spare instance left to launch (SandboxConfig::spare_instances)")?;
    if instance.power().power != Power::Running {
        bail!("spare {} is not running", instance.id);
    }
    for (index, group) in shared.target_groups.iter().enumerate() {
        targets::register(shared, index, &[(instance.id.clone(), group.port)]).await?;
    }
    shared.auto_scaling.launched(&instance.id, increment);
    tracing::info!(instance = %instance.id, "launched");
    Ok(instance.id.clone())
}

/// Launches a spare for the group without growing it (a replacement the group launches itself, e.g. for an
/// instance put in Standby without decrementing the capacity). Returns its ID.
pub(crate) async fn launch_replacement(shared: &Arc<Shared>) -> anyhow::Result<String> {
    launch_member(shared, false).await
}

/// Replaces instance `id` as an Auto Scaling group replaces an unhealthy one: terminates it, then launches a spare;
/// the group's sizes stay. Returns the new instance's ID.
pub(crate) async fn replace(shared: &Arc<Shared>, id: &str) -> anyhow::Result<String> {
    terminate_member(shared, id, false).await?;
    launch_member(shared, false).await
}
