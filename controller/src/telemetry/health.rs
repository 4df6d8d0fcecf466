//! What `/healthz` and `/readyz` answer, set by the controller as it runs.
//!
//! Liveness asks "is this process still doing its job, or should the kubelet restart it":
//! it fails when a main loop has exited, or when the loop that drives the controller has
//! stopped ticking. Readiness asks "has the controller started": it passes once the
//! controller could reach its CRD, whether or not this replica leads, since a standby
//! replica that never became ready would stall every rolling update.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Liveness and readiness of the process. Cheap to clone: clones share the same state.
#[derive(Clone, Debug)]
pub struct HealthState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Longest allowed gap between heartbeats before liveness fails.
    stale_after: Duration,
    ready: AtomicBool,
    /// None while alive; the reason once a main loop has died.
    dead: Mutex<Option<String>>,
    /// The last heartbeat; None before the first one and after a pause.
    heartbeat: Mutex<Option<Instant>>,
}

impl HealthState {
    /// Alive and not ready, with no heartbeat yet. Liveness fails once a heartbeat is older
    /// than `stale_after`.
    pub fn new(stale_after: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                stale_after,
                ready: AtomicBool::new(false),
                dead: Mutex::new(None),
                heartbeat: Mutex::new(None),
            }),
        }
    }

    /// Records that the controller loop is turning. Call it from the loop itself, on a timer
    /// that ticks even when there is nothing to reconcile (an interval in the same `select!`
    /// that drives the controller stream), more often than `stale_after`: an idle controller
    /// is healthy, a wedged one is not.
    pub fn heartbeat(&self) {
        *self.inner.heartbeat.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Stops judging the heartbeat until the next [`HealthState::heartbeat`]: the controller
    /// loop stopped on purpose (this replica stands by, or lost the lease).
    pub fn pause_heartbeat(&self) {
        *self.inner.heartbeat.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Marks the process as no longer alive: a main loop (the controller, the leader
    /// election) ended when it should not have. `/healthz` answers 503 with `reason` from now
    /// on, and the kubelet restarts the pod.
    pub fn mark_dead(&self, reason: impl Into<String>) {
        let mut dead = self.inner.dead.lock().unwrap_or_else(PoisonError::into_inner);
        // The first cause is the interesting one; later failures tend to be its echoes.
        if dead.is_none() {
            *dead = Some(reason.into());
        }
    }

    /// Sets readiness: true once the controller has reached its CRD (its first list
    /// succeeded), on leaders and standbys alike.
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Release);
    }

    /// Ok while alive, else why not.
    pub fn liveness(&self) -> Result<(), String> {
        self.liveness_at(Instant::now())
    }

    /// [`HealthState::liveness`] as of `now`.
    pub fn liveness_at(&self, now: Instant) -> Result<(), String> {
        if let Some(reason) = self.inner.dead.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            return Err(reason.clone());
        }
        let last = *self.inner.heartbeat.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = last {
            let since = now.saturating_duration_since(last);
            if since > self.inner.stale_after {
                return Err(format!(
                    "controller loop has not ticked for {}s (limit {}s)",
                    since.as_secs(),
                    self.inner.stale_after.as_secs()
                ));
            }
        }
        Ok(())
    }

    /// Ok once ready, else why not.
    pub fn readiness(&self) -> Result<(), String> {
        if self.inner.ready.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err("controller not started: CRD not reached yet".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_without_heartbeat_then_judged_by_its_age() {
        let health = HealthState::new(Duration::from_secs(30));
        let start = Instant::now();
        assert_eq!(health.liveness_at(start + Duration::from_secs(3600)), Ok(()));
        health.heartbeat();
        assert_eq!(health.liveness_at(start), Ok(()));
        let beat = Instant::now();
        assert_eq!(health.liveness_at(beat + Duration::from_secs(29)), Ok(()));
        let stale = health.liveness_at(beat + Duration::from_secs(31));
        assert!(
            stale.as_ref().is_err_and(|reason| reason.contains("not ticked")),
            "{stale:?}"
        );
        health.pause_heartbeat();
        assert_eq!(health.liveness_at(Instant::now() + Duration::from_secs(3600)), Ok(()));
    }

    #[test]
    fn dead_stays_dead_with_the_first_reason() {
        let health = HealthState::new(Duration::from_secs(30));
        health.heartbeat();
        health.mark_dead("controller loop exited");
        health.mark_dead("leader election exited");
        health.heartbeat();
        assert_eq!(health.liveness(), Err("controller loop exited".to_owned()));
    }

    #[test]
    fn readiness_follows_the_flag() {
        let health = HealthState::new(Duration::from_secs(30));
        assert!(health.readiness().is_err());
        health.clone().set_ready(true);
        assert_eq!(health.readiness(), Ok(()));
        health.set_ready(false);
        assert!(health.readiness().is_err());
    }
}
