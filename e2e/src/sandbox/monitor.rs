//! Background watchers: HAProxy's server states (for target health and the rotation record) and the fault switches.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Shared;
use super::lifecycle::remove_sick_file;
use super::rotation::RotationState;

/// Polls HAProxy every `haproxy_poll` (by default 100 ms, well below any health-check interval): ends targets'
/// `initial` phase when they come up and records rotation changes.
///
/// Polling catches what HAProxy's checks change; what the sandbox changes itself (registrations) and what a
/// `DescribeTargetHealth` reads are also recorded at once by [`observe_now`], so even a short maintenance or drain
/// is never missed, and a client never acts on a state the record lacks.
pub(crate) async fn watch_haproxy(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.cfg.haproxy_poll);
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

/// Reads HAProxy's server states of the first target group once, records them and returns them.
pub(crate) async fn observe_now(shared: &Shared) -> anyhow::Result<BTreeMap<String, RotationState>> {
    let first = observe_all_now(shared).await?.into_iter().next().unwrap_or_default();
    Ok(in_service_only(shared, &first))
}

/// The states of the instances in service: spares not launched and terminated instances are no part of the fleet.
fn in_service_only(shared: &Shared, states: &BTreeMap<String, RotationState>) -> BTreeMap<String, RotationState> {
    states
        .iter()
        .filter(|(id, _)| shared.instance(id).is_some_and(|i| i.in_service()))
        .map(|(id, state)| (id.clone(), state.clone()))
        .collect()
}

/// Reads HAProxy's server states of every target group once (one backend each), notes them in each group and
/// records the first group's in the rotation record; returns them, one map per group.
///
/// One reader at a time: two interleaved readers could record an older read after a newer one, and the record would
/// show a server flapping that never did.
pub(crate) async fn observe_all_now(shared: &Shared) -> anyhow::Result<Vec<BTreeMap<String, RotationState>>> {
    let _turn = shared.observing.lock().await;
    let mut all = Vec::with_capacity(shared.target_groups.len());
    for group in &shared.target_groups {
        let states = shared.haproxy.server_states(&group.backend).await?;
        group.observe(&states);
        all.push(states);
    }
    if let Some(first) = all.first() {
        // The rotation record (and the reports built on it) follow the first group; the others are checked
        // through their own frontends' traffic. Spares not launched and terminated instances are no part of it.
        shared
            .rotation
            .observe(shared.started.elapsed(), &in_service_only(shared, first));
    }
    Ok(all)
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
