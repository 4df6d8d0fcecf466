//! The target group: which instances are registered, draining or unused, and their health as read from HAProxy.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Shared;
use super::haproxy::backend_name;
use super::rotation::{AdminState, OperationalState, RotationState};

/// Port targets are registered on when a request names none (the first target group's port).
pub(crate) const TARGET_GROUP_PORT: u16 = 80;

/// Name of the sandbox's first target group (in its ARN too).
pub(crate) const TARGET_GROUP_NAME: &str = "sandbox";

/// Name of target group `index` (0 is [`TARGET_GROUP_NAME`]).
pub(crate) fn target_group_name(index: usize) -> String {
    match index {
        0 => TARGET_GROUP_NAME.to_owned(),
        n => format!("{TARGET_GROUP_NAME}-{}", n + 1),
    }
}

/// Port of target group `index`: 80 for the first, 443 for the second (HTTP and HTTPS), then 8002, 8003...
pub(crate) fn target_group_port(index: usize) -> u16 {
    match index {
        0 => TARGET_GROUP_PORT,
        1 => 443,
        n => 8000 + u16::try_from(n).unwrap_or(0),
    }
}

/// An ELBv2 target state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    /// Registered, initial health checks still running.
    Initial,
    /// Registered and passing health checks: HAProxy sends it traffic.
    Healthy,
    /// Registered and failing health checks.
    Unhealthy,
    /// Not registered (or draining finished).
    Unused,
    /// Deregistered, the deregistration delay is running.
    Draining,
    /// Health cannot be told.
    Unavailable,
}

impl TargetState {
    /// The wire name (`healthy`, `draining`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Initial => "initial",
            TargetState::Healthy => "healthy",
            TargetState::Unhealthy => "unhealthy",
            TargetState::Unused => "unused",
            TargetState::Draining => "draining",
            TargetState::Unavailable => "unavailable",
        }
    }
}

/// One target's health, as `DescribeTargetHealth` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHealth {
    /// The target's port (the one it was registered with).
    pub port: u16,
    /// Its state.
    pub state: TargetState,
    /// Reason code, e.g. `Target.NotRegistered`; none when healthy.
    pub reason: Option<String>,
    /// Human-readable description of the reason.
    pub description: Option<String>,
}

/// Where a target stands in the target group (the sandbox's own record; health comes from HAProxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Registration {
    /// Registered at `since`; `seen_up` once HAProxy had it up since then (before that it is `initial`).
    Registered { port: u16, since: Instant, seen_up: bool },
    /// Deregistered; `generation` tells this drain from a later one when its timer fires.
    Draining { port: u16, generation: u64 },
    /// Not registered.
    Unused,
}

/// One of the sandbox's target groups: an HAProxy backend (with its own health checks) behind its own frontend.
#[derive(Debug)]
pub(crate) struct TargetGroup {
    /// Its ARN.
    pub(crate) arn: String,
    /// Its name.
    pub(crate) name: String,
    /// Its port: where a target is registered when a request names none.
    pub(crate) port: u16,
    /// Its HAProxy backend.
    pub(crate) backend: String,
    registrations: Mutex<HashMap<String, Registration>>,
    /// Its tags (DescribeTags, AddTags, RemoveTags).
    tags: Mutex<BTreeMap<String, String>>,
    /// Serialises registration changes with their HAProxy commands, so commands reach HAProxy in the order the
    /// registrations changed.
    writes: tokio::sync::Mutex<()>,
    generations: AtomicU64,
}

impl TargetGroup {
    /// Target group `index` (named, on its port and HAProxy backend) for `instance_ids`, none registered yet.
    pub(crate) fn new(index: usize, arn: String, instance_ids: &[String]) -> Self {
        let registrations = instance_ids
            .iter()
            .map(|id| (id.clone(), Registration::Unused))
            .collect();
        let name = target_group_name(index);
        // As the instances are tagged: a name, and the fleet they belong to.
        let tags = BTreeMap::from([
            ("Name".to_owned(), name.clone()),
            ("pitstop.dev/fleet".to_owned(), "sandbox".to_owned()),
        ]);
        Self {
            arn,
            name,
            port: target_group_port(index),
            backend: backend_name(index),
            registrations: Mutex::new(registrations),
            tags: Mutex::new(tags),
            writes: tokio::sync::Mutex::new(()),
            generations: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Registration>> {
        self.registrations.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The instances this group knows, by ID: its members, and any registered in it since.
    pub(crate) fn members(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Whether the group knows instance `id` (see [`TargetGroup::members`]).
    pub(crate) fn knows(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    /// Its tags, now.
    pub(crate) fn tags(&self) -> BTreeMap<String, String> {
        self.tags.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Adds or overwrites `tags`, and removes the `removed` keys.
    pub(crate) fn retag(&self, tags: &[(String, String)], removed: &[String]) {
        let mut current = self.tags.lock().unwrap_or_else(PoisonError::into_inner);
        current.extend(tags.iter().cloned());
        current.retain(|key, _| !removed.contains(key));
    }

    /// The HAProxy server of instance `id` in this group's backend.
    fn server(&self, id: &str) -> String {
        format!("{}/{id}", self.backend)
    }

    /// The registration of `id` (unknown IDs read as unused).
    pub(crate) fn registration(&self, id: &str) -> Registration {
        self.lock().get(id).copied().unwrap_or(Registration::Unused)
    }

    /// Notes which registered targets HAProxy has up, ending their `initial` phase.
    pub(crate) fn observe(&self, states: &BTreeMap<String, RotationState>) {
        let mut regs = self.lock();
        for (id, reg) in regs.iter_mut() {
            if let Registration::Registered { seen_up, .. } = reg
                && states.get(id).is_some_and(RotationState::in_rotation)
            {
                *seen_up = true;
            }
        }
    }
}

/// Health of one target from its registration and HAProxy's view of its server.
///
/// A registered target is `initial` until HAProxy has had it up since the registration; if its checks fail and the
/// time for `unhealthy_threshold` checks has passed without it ever coming up, it is `unhealthy` (HAProxy keeps no
/// failure count for a server that is already down, so time stands in for it).
pub(crate) fn target_health(
    registration: Registration,
    server: Option<&RotationState>,
    now: Instant,
    unhealthy_after: Duration,
) -> TargetHealth {
    let health = |port, state, reason: Option<&str>, description: Option<String>| TargetHealth {
        port,
        state,
        reason: reason.map(str::to_owned),
        description,
    };
    match registration {
        Registration::Unused => health(
            TARGET_GROUP_PORT,
            TargetState::Unused,
            Some("Target.NotRegistered"),
            Some("Target is not registered to the target group".to_owned()),
        ),
        Registration::Draining { port, .. } => health(
            port,
            TargetState::Draining,
            Some("Target.DeregistrationInProgress"),
            Some("Target deregistration is in progress".to_owned()),
        ),
        Registration::Registered { port, since, seen_up } => {
            let Some(server) = server else {
                return health(
                    port,
                    TargetState::Unavailable,
                    Some("Elb.InternalError"),
                    Some("HAProxy does not know this server".to_owned()),
                );
            };
            if server.admin == AdminState::Maint {
                return health(
                    port,
                    TargetState::Unavailable,
                    Some("Elb.InternalError"),
                    Some("HAProxy holds this server in maintenance".to_owned()),
                );
            }
            if server.operational != OperationalState::Down {
                return health(port, TargetState::Healthy, None, None);
            }
            // Never up since registration and not yet given the time to fail `unhealthy_threshold` checks.
            let failed_long_enough = check_failed(&server.check_status) && now.duration_since(since) >= unhealthy_after;
            if !(seen_up || failed_long_enough) {
                return health(
                    port,
                    TargetState::Initial,
                    Some("Elb.InitialHealthChecking"),
                    Some("Initial health checks in progress".to_owned()),
                );
            }
            let (reason, description) = failure_reason(server);
            health(port, TargetState::Unhealthy, Some(reason), Some(description))
        }
    }
}

/// Whether HAProxy's last check status is a failure (`L4OK`, `L6OK`, `L7OK`, `L7OKC` pass; empty or `INI` mean
/// no check yet).
fn check_failed(check_status: &str) -> bool {
    !(check_status.is_empty() || check_status.starts_with("INI") || check_status.contains("OK"))
}

/// ELBv2's reason for a failing check, from HAProxy's check status.
fn failure_reason(server: &RotationState) -> (&'static str, String) {
    match server.check_status.as_str() {
        "L7STS" => (
            "Target.ResponseCodeMismatch",
            format!(
                "Health checks failed with these codes: [{}]",
                server.check_code.map(|c| c.to_string()).unwrap_or_default()
            ),
        ),
        "L4TOUT" | "L6TOUT" | "L7TOUT" => ("Target.Timeout", "Request timed out".to_owned()),
        _ => ("Target.FailedHealthChecks", "Health checks failed".to_owned()),
    }
}

/// Health of every instance in target group `index`, reading HAProxy now.
pub(crate) async fn describe(shared: &Shared, index: usize) -> anyhow::Result<BTreeMap<String, TargetHealth>> {
    // Recorded as well as used, so the rotation record has every state a caller was told about.
    let all = super::monitor::observe_all_now(shared).await?;
    let group = &shared.target_groups[index];
    let states = all.get(index).cloned().unwrap_or_default();
    let now = Instant::now();
    let unhealthy_after = shared.cfg.health_interval * shared.cfg.unhealthy_threshold;
    Ok(shared
        .instances
        .iter()
        .filter(|instance| group.knows(&instance.id))
        .map(|instance| {
            let reg = group.registration(&instance.id);
            (
                instance.id.clone(),
                target_health(reg, states.get(&instance.id), now, unhealthy_after),
            )
        })
        .collect())
}

/// Registers targets in target group `index`: HAProxy takes the server back (`ready`) but forced down, so it gets
/// traffic only once its checks have passed `rise` times, as an ALB sends none to an `initial` target. Registered
/// targets stay as they are.
pub(crate) async fn register(shared: &Shared, index: usize, targets: &[(String, u16)]) -> anyhow::Result<()> {
    let group = &shared.target_groups[index];
    let _writes = group.writes.lock().await;
    for (id, port) in targets {
        let srv = group.server(id);
        let commands = match group.registration(id) {
            Registration::Registered { .. } => continue,
            // Leaving maintenance puts a server straight up; passing through drain (no new traffic) lets us force it
            // down before it is ready.
            Registration::Unused => vec![
                format!("set server {srv} state drain"),
                format!("set server {srv} health down"),
                format!("set server {srv} state ready"),
            ],
            Registration::Draining { .. } => {
                vec![
                    format!("set server {srv} health down"),
                    format!("set server {srv} state ready"),
                ]
            }
        };
        shared.balancer.apply(&commands).await?;
        group.lock().insert(
            id.clone(),
            Registration::Registered {
                port: *port,
                since: Instant::now(),
                seen_up: false,
            },
        );
        record(shared).await;
    }
    Ok(())
}

/// Deregisters targets from target group `index`: HAProxy drains the server (no new requests) and, after the
/// deregistration delay, puts it in maintenance and closes what is left, as an ALB does. Targets not registered stay
/// as they are.
pub(crate) async fn deregister(shared: &Arc<Shared>, index: usize, ids: &[String]) -> anyhow::Result<()> {
    let group = &shared.target_groups[index];
    let _writes = group.writes.lock().await;
    for id in ids {
        let Registration::Registered { port, .. } = group.registration(id) else {
            continue;
        };
        shared
            .balancer
            .apply(&[format!("set server {} state drain", group.server(id))])
            .await?;
        let generation = group.generations.fetch_add(1, Ordering::Relaxed);
        group
            .lock()
            .insert(id.clone(), Registration::Draining { port, generation });
        record(shared).await;
        let (shared_task, id) = (Arc::clone(shared), id.clone());
        shared.tasks.spawn(async move {
            tokio::time::sleep(shared_task.cfg.deregistration_delay).await;
            finish_draining(&shared_task, index, &id, generation).await;
        });
    }
    Ok(())
}

/// Ends a drain, unless the target was registered again (or drained anew) meanwhile.
async fn finish_draining(shared: &Shared, index: usize, id: &str, generation: u64) {
    let group = &shared.target_groups[index];
    let _writes = group.writes.lock().await;
    if !matches!(group.registration(id), Registration::Draining { generation: current, .. } if current == generation) {
        return;
    }
    let srv = group.server(id);
    let commands = [
        format!("set server {srv} state maint"),
        format!("shutdown sessions server {srv}"),
    ];
    if let Err(err) = shared.balancer.apply(&commands).await {
        // The server stays in drain, which takes no new traffic either; the target still ends its drain.
        tracing::warn!(instance = %id, "could not put the drained server in maintenance: {err:#}");
    }
    group.lock().insert(id.to_owned(), Registration::Unused);
    record(shared).await;
}

/// Records HAProxy's states right after the sandbox changed one, so the rotation history has every change the
/// sandbox made, however short.
async fn record(shared: &Shared) {
    if let Err(err) = super::monitor::observe_now(shared).await {
        tracing::warn!("could not read HAProxy's server states after a change: {err:#}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(admin: AdminState, operational: OperationalState, check: &str, code: Option<u16>) -> RotationState {
        RotationState {
            admin,
            operational,
            check_status: check.into(),
            check_code: code,
            check_health: 0,
            haproxy_status: String::new(),
        }
    }

    const AFTER: Duration = Duration::from_secs(2);

    #[test]
    fn unregistered_and_draining_targets_do_not_look_at_haproxy() {
        let now = Instant::now();
        let h = target_health(Registration::Unused, None, now, AFTER);
        assert_eq!(
            (h.state, h.reason.as_deref()),
            (TargetState::Unused, Some("Target.NotRegistered"))
        );
        let h = target_health(
            Registration::Draining {
                port: 8080,
                generation: 0,
            },
            None,
            now,
            AFTER,
        );
        assert_eq!((h.state, h.port), (TargetState::Draining, 8080));
    }

    #[test]
    fn registered_target_is_initial_until_seen_up_then_healthy_or_unhealthy() {
        let now = Instant::now();
        let reg = |seen_up| Registration::Registered {
            port: 80,
            since: now,
            seen_up,
        };
        let down = server(AdminState::Ready, OperationalState::Down, "L7OK", Some(200));
        assert_eq!(
            target_health(reg(false), Some(&down), now, AFTER).state,
            TargetState::Initial
        );
        let up = server(AdminState::Ready, OperationalState::Up, "L7OK", Some(200));
        assert_eq!(
            target_health(reg(false), Some(&up), now, AFTER).state,
            TargetState::Healthy
        );
        let failing = server(AdminState::Ready, OperationalState::Down, "L7STS", Some(503));
        let h = target_health(reg(true), Some(&failing), now, AFTER);
        assert_eq!(
            (h.state, h.reason.as_deref()),
            (TargetState::Unhealthy, Some("Target.ResponseCodeMismatch"))
        );
        assert_eq!(
            h.description.as_deref(),
            Some("Health checks failed with these codes: [503]")
        );
        let refused = server(AdminState::Ready, OperationalState::Down, "L4CON", None);
        let h = target_health(reg(true), Some(&refused), now, AFTER);
        assert_eq!(h.reason.as_deref(), Some("Target.FailedHealthChecks"));
    }

    #[test]
    fn never_up_target_turns_unhealthy_once_the_failures_had_time() {
        let since = Instant::now();
        let reg = Registration::Registered {
            port: 80,
            since,
            seen_up: false,
        };
        let failing = server(AdminState::Ready, OperationalState::Down, "L7STS", Some(503));
        assert_eq!(
            target_health(reg, Some(&failing), since, AFTER).state,
            TargetState::Initial
        );
        assert_eq!(
            target_health(reg, Some(&failing), since + AFTER, AFTER).state,
            TargetState::Unhealthy
        );
    }

    #[test]
    fn observe_ends_the_initial_phase() {
        let group = TargetGroup::new(0, "arn".into(), &["i-a".to_owned()]);
        group.lock().insert(
            "i-a".into(),
            Registration::Registered {
                port: 80,
                since: Instant::now(),
                seen_up: false,
            },
        );
        let up = server(AdminState::Ready, OperationalState::Up, "L7OK", Some(200));
        group.observe(&BTreeMap::from([("i-a".to_owned(), up)]));
        assert!(matches!(
            group.registration("i-a"),
            Registration::Registered { seen_up: true, .. }
        ));
    }
}
