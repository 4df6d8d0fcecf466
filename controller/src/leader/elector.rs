//! The loop that reads and writes the Lease and publishes "am I the leader" on a watch
//! channel.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::decide::{LeaseDecision, decide, leading_spec, released_spec};
use super::{ConfigError, LeaseConfig};

/// How a follower's wait between tries is spread, as client-go's `JitterFactor`: replicas
/// that started together do not keep racing for the lease in lockstep.
const FOLLOWER_JITTER: f64 = 1.2;

/// Outcome of one read-and-write of the lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Round {
    /// We hold the lease now: it was created, taken over or renewed by our write.
    Leading {
        /// True when this round took the lease (created it or took it over), false when it
        /// renewed a lease we already held.
        acquired: bool,
    },
    /// Another replica holds a live lease.
    Following {
        /// The holder.
        holder: String,
        /// When its lease runs out unless renewed.
        until: Timestamp,
    },
    /// Our write lost a race (409: the lease changed since we read it, or someone created
    /// it first). Someone else may believe they lead now.
    Conflict,
}

/// Runs leader election for one replica.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaderElector {
    /// An elector for the lease `config` names, refusing configurations whose timing could
    /// let two replicas lead at once.
    pub fn new(client: kube::Client, config: LeaseConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            api: Api::namespaced(client, &config.namespace),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Starts the election loop on its own task. It runs until `shutdown` is cancelled, then
    /// reports not-leader and releases the lease if we hold it.
    pub fn spawn(self, shutdown: CancellationToken) -> LeaderHandle {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(self.run(shutdown, tx));
        LeaderHandle {
            leadership: Leadership(rx),
            task,
        }
    }

    /// The election loop; [`LeaderElector::spawn`] runs it on a task. `is_leader` is set to
    /// true once we hold the lease and back to false as soon as we may no longer hold it:
    /// another replica took it, a write lost a race, renewing has failed for the renew
    /// deadline, shutdown began, or this future was dropped.
    pub async fn run(self, shutdown: CancellationToken, is_leader: watch::Sender<bool>) {
        let state = StepDownOnDrop(is_leader);
        let config = &self.config;
        // While leading: the instant we must stop believing it unless a renew succeeds.
        let mut leading_until: Option<Instant> = None;
        // Whether the lease may name us, so that shutdown knows whether to release it.
        let mut may_hold = false;
        loop {
            let started = Instant::now();
            // A hung request must not keep a leader past its deadline, nor wedge a follower.
            let limit = leading_until.unwrap_or(started + config.renew_deadline);
            let round = tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    // The write of the interrupted round may have landed: check on the way out.
                    may_hold = true;
                    break;
                }
                round = tokio::time::timeout_at(limit, self.try_acquire_or_renew()) => round,
            };
            match round {
                Ok(Ok(Round::Leading { acquired })) => {
                    may_hold = true;
                    // Counted from before the read: the renewTime we wrote is no later than
                    // this, so we stop leading at least lease_duration - renew_deadline
                    // before anyone else may take over.
                    leading_until = Some(started + config.renew_deadline);
                    if state.set(true) || acquired {
                        tracing::info!(lease = %config.name, holder = %config.holder_identity, "became the leader");
                    }
                }
                Ok(Ok(Round::Following { holder, until })) => {
                    may_hold = false;
                    leading_until = None;
                    if state.set(false) {
                        tracing::warn!(lease = %config.name, %holder, "lost the lease to another replica");
                    } else {
                        tracing::debug!(lease = %config.name, %holder, %until, "following");
                    }
                }
                Ok(Ok(Round::Conflict)) => {
                    leading_until = None;
                    if state.set(false) {
                        tracing::warn!(lease = %config.name, "lease changed under us; stepping down");
                    } else {
                        tracing::debug!(lease = %config.name, "lost a race for the lease");
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!(lease = %config.name, %error, "could not read or write the lease");
                }
                Err(_elapsed) => {
                    tracing::warn!(lease = %config.name, "lease request timed out");
                }
            }
            if leading_until.is_some_and(|until| Instant::now() >= until) {
                leading_until = None;
                state.step_down_late(&config.name);
            }

            let next = if leading_until.is_some() {
                // A leader keeps a steady beat, counted from the start of the last try.
                started + config.retry_period
            } else {
                Instant::now() + jittered(config.retry_period)
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                // Wake at the deadline itself, not at the next try, so a leader whose renews
                // keep failing steps down at once.
                () = sleep_until_opt(leading_until), if leading_until.is_some() => {
                    leading_until = None;
                    state.step_down_late(&config.name);
                }
                () = tokio::time::sleep_until(next) => {}
            }
        }

        // Report not-leader before giving the lease up, so nothing acts on our behalf once
        // another replica can have it.
        state.set(false);
        if may_hold {
            match tokio::time::timeout(config.renew_deadline, self.release()).await {
                Ok(Ok(true)) => tracing::info!(lease = %config.name, "released the lease"),
                Ok(Ok(false)) => tracing::debug!(lease = %config.name, "lease was not ours to release"),
                Ok(Err(error)) => tracing::warn!(lease = %config.name, %error, "could not release the lease"),
                Err(_elapsed) => tracing::warn!(lease = %config.name, "releasing the lease timed out"),
            }
        }
    }

    /// One try: read the lease and, if it is free, expired or ours, write it naming us. The
    /// write carries the resourceVersion that was read, so it fails with 409 if anyone wrote
    /// in between; a racing create fails the same way.
    pub async fn try_acquire_or_renew(&self) -> Result<Round, kube::Error> {
        let config = &self.config;
        let now = Timestamp::now();
        let current = self.api.get_opt(&config.name).await?;
        let current_spec = current.as_ref().and_then(|lease| lease.spec.as_ref());
        let decision = decide(current_spec, now, &config.holder_identity, config.lease_duration);
        let acquired = matches!(decision, LeaseDecision::Acquire { .. });
        let Some(spec) = leading_spec(
            current_spec,
            &decision,
            now,
            &config.holder_identity,
            config.lease_duration,
        ) else {
            return Ok(match decision {
                LeaseDecision::Follow { holder, until } => Round::Following { holder, until },
                // leading_spec writes something for every other decision.
                LeaseDecision::Acquire { .. } | LeaseDecision::Renew => Round::Conflict,
            });
        };
        let written = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(config.name.clone()),
                        namespace: Some(config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                // The metadata as read, resourceVersion included: that is the precondition.
                lease.spec = Some(spec);
                self.api.replace(&config.name, &PostParams::default(), &lease).await
            }
        };
        match written {
            Ok(_) => Ok(Round::Leading { acquired }),
            Err(error) if is_conflict(&error) => Ok(Round::Conflict),
            Err(error) => Err(error),
        }
    }

    /// Gives the lease up if it names us, so the next replica can take it on its next try
    /// rather than after the lease duration. Returns whether a release was written.
    pub async fn release(&self) -> Result<bool, kube::Error> {
        let config = &self.config;
        let Some(mut lease) = self.api.get_opt(&config.name).await? else {
            return Ok(false);
        };
        let holder = lease.spec.as_ref().and_then(|spec| spec.holder_identity.as_deref());
        if holder != Some(config.holder_identity.as_str()) {
            return Ok(false);
        }
        lease.spec = Some(released_spec(lease.spec.as_ref(), Timestamp::now()));
        match self.api.replace(&config.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            // Someone wrote in between: it is no longer ours to release.
            Err(error) if is_conflict(&error) => Ok(false),
            Err(error) => Err(error),
        }
    }
}

/// A running election: whether we lead, and the task (await [`LeaderHandle::join`] after
/// cancelling the shutdown token to be sure the lease was released).
pub struct LeaderHandle {
    leadership: Leadership,
    task: JoinHandle<()>,
}

impl LeaderHandle {
    /// True while we hold the lease.
    pub fn is_leader(&self) -> bool {
        self.leadership.is_leader()
    }

    /// A receiver of leadership changes, for the controller and for metrics.
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// Waits for the election task to end (after shutdown: once the lease is released).
    pub async fn join(self) -> Result<(), tokio::task::JoinError> {
        self.task.await
    }
}

/// Whether this replica leads, as it changes. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Leadership(watch::Receiver<bool>);

impl Leadership {
    /// Wraps a receiver, e.g. one fed by [`LeaderElector::run`], or a fixed one for a
    /// controller run without election (`watch::channel(true)`).
    pub fn new(receiver: watch::Receiver<bool>) -> Self {
        Self(receiver)
    }

    /// True while we hold the lease.
    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until we lead. Returns false instead if the election ended first (shutdown).
    pub async fn acquired(&mut self) -> bool {
        self.0.wait_for(|leading| *leading).await.is_ok()
    }

    /// Waits until we no longer lead, or the election ended. Meant for
    /// `Controller::graceful_shutdown_on`.
    pub async fn lost(&mut self) {
        // An error means the elector is gone, which also means we do not lead.
        let _ = self.0.wait_for(|leading| !*leading).await;
    }

    /// The underlying receiver.
    pub fn receiver(&self) -> watch::Receiver<bool> {
        self.0.clone()
    }
}

/// Owns the leadership sender so that however the loop ends, even by panic or by being
/// dropped, the last word is "not leader".
struct StepDownOnDrop(watch::Sender<bool>);

impl StepDownOnDrop {
    /// Publishes `leading`; true if that changed it.
    fn set(&self, leading: bool) -> bool {
        self.0
            .send_if_modified(|current| std::mem::replace(current, leading) != leading)
    }

    fn step_down_late(&self, lease: &str) {
        if self.set(false) {
            tracing::warn!(%lease, "could not renew the lease within the renew deadline; stepping down");
        }
    }
}

impl Drop for StepDownOnDrop {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// Whether a write lost a race: 409, as a Conflict on replace or AlreadyExists on create.
pub fn is_conflict(error: &kube::Error) -> bool {
    // A racing create answers 409 AlreadyExists, which `Status::is_conflict` does not count
    // because its reason is not "Conflict".
    matches!(error, kube::Error::Api(status) if status.code == 409 || status.is_conflict() || status.is_already_exists())
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// `base` stretched by a random factor in [1, 1 + FOLLOWER_JITTER).
fn jittered(base: Duration) -> Duration {
    // A fresh RandomState is randomly keyed, which is all the randomness a jitter needs.
    let bits = RandomState::new().hash_one(0u8) >> 11;
    let unit = bits as f64 / (1u64 << 53) as f64;
    base.mul_f64(1.0 + FOLLOWER_JITTER * unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_bounds() {
        let base = Duration::from_secs(2);
        for _ in 0..1000 {
            let waited = jittered(base);
            assert!(
                waited >= base && waited < base.mul_f64(1.0 + FOLLOWER_JITTER),
                "{waited:?}"
            );
        }
    }

    #[test]
    fn conflicts_are_409s_of_either_reason() {
        let status = |code: u16, reason: &str| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                reason: reason.to_owned(),
                ..kube::core::Status::default()
            }))
        };
        assert!(is_conflict(&status(409, "Conflict")));
        assert!(is_conflict(&status(409, "AlreadyExists")));
        assert!(!is_conflict(&status(404, "NotFound")));
        assert!(!is_conflict(&status(500, "InternalError")));
    }

    #[tokio::test]
    async fn dropped_loop_leaves_not_leader() {
        let (tx, rx) = watch::channel(false);
        let guard = StepDownOnDrop(tx);
        assert!(guard.set(true));
        assert!(!guard.set(true));
        assert!(*rx.borrow());
        drop(guard);
        assert!(!*rx.borrow());
    }
}
