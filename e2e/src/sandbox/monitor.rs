//! Background watchers: HAProxy's server states (for target health and the rotation record) and the fault switches.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use super::lifecycle::remove_sick_file;

/// How often HAProxy is polled; well below any health-check interval, so no state change goes unseen.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// Polls HAProxy: ends targets' `initial` phase when they come up and records rotation changes.
///
/// Polling catches what HAProxy's checks change; what the sandbox changes itself (registrations) is also recorded
/// right after the change by [`observe_now`], so even a short maintenance or drain is never missed.
pub(crate) async fn watch_haproxy(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(err) = observe_now(&shared).await {
            if shared.is_closed() {
                return;
            }
            tracing::warn!("could not read HAProxy's server states: {err:#}");
        }
    }
}

/// Reads HAProxy's server states once and records them.
pub(crate) async fn observe_now(shared: &Shared) -> anyhow::Result<()> {
    let states = shared.haproxy.server_states().await?;
    shared.target_group.observe(&states);
    shared.rotation.observe(shared.started.elapsed(), &states);
    Ok(())
}

/// Heals instances whose `unhealthy_after_boot` switch is turned off: their health check passes again at once.
pub(crate) async fn watch_faults(shared: Arc<Shared>) {
    let mut faults = shared.faults.subscribe();
    while faults.changed().await.is_ok() {
        let sick: Vec<String> = faults
            .borrow_and_update()
            .unhealthy_after_boot
            .iter()
            .cloned()
            .collect();
        for instance in shared.instances.iter().filter(|i| !sick.contains(&i.id)) {
            remove_sick_file(instance);
        }
    }
}
