//! Background watchers: HAProxy's server states (for target health and the rotation record) and the fault switches.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::Shared;
use super::balancer::Balancer;
use super::instance::{Instance, Power};
use super::lifecycle::remove_sick_file;
use super::rotation::RotationState;
use super::simulated_balancer::Probe;

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
    for (index, group) in shared.target_groups.iter().enumerate() {
        let states = shared.balancer.server_states(&group.backend).await?;
        group.observe(&states);
        let out = states
            .iter()
            .filter(|(id, state)| {
                !state.in_rotation() && group.knows(id) && shared.instance(id).is_some_and(|i| i.in_service())
            })
            .count();
        shared.most_out.note(index, out);
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

/// Runs the light mode's health checks every health-check interval, as HAProxy runs them, then records the states
/// (the rotation record and the most out per group see every change a check makes).
pub(crate) async fn check_simulated_health(shared: Arc<Shared>) {
    let Balancer::Simulated(sim) = &shared.balancer else {
        return;
    };
    let mut tick = tokio::time::interval(shared.cfg.health_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let instances: HashMap<&str, &Instance> = shared.instances.iter().map(|i| (i.id.as_str(), &**i)).collect();
        sim.run_checks(|id| match instances.get(id) {
            Some(instance) if instance.power().power == Power::Running => {
                if instance.sick_file.exists() {
                    Probe::Status(503)
                } else {
                    Probe::Passed
                }
            }
            _ => Probe::Refused,
        });
        if let Err(err) = observe_now(&shared).await {
            tracing::warn!("could not record the simulated server states: {err:#}");
        }
    }
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
