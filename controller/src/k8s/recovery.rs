//! Noticing that the apiserver could not be reached, and telling the controller when it can
//! be again, so that the plans are reconciled at once instead of at their next retry.
//!
//! The watch reconnects by itself after an outage, but a reconcile that failed meanwhile
//! waits for its requeue. The error policy reports each failure that never reached the
//! apiserver ([`unreachable`]); a probe then asks the apiserver for its version every
//! [`PROBE_EVERY`] until it answers, and yields once: the controller reconciles every plan
//! on it (`Controller::reconcile_all_on`).
//!
//! kube-runtime reads all of a controller's triggers (the watches, and this probe) through
//! one backoff: after a watch error it reads none of them until the backoff has passed. Its
//! default grows to 30 s, which is what kept the plans waiting after an outage; the
//! controller uses [`trigger_backoff`] instead, capped at the poll interval.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::Stream;
use kube::runtime::utils::{Backoff, ResetTimerBackoff};
use kube::runtime::watcher::ExponentialBackoff;
use tokio::sync::Notify;

use crate::engine::StepError;

use super::error::Error;

/// How often the probe asks while the apiserver is away.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The backoff of the controller's triggers after a watch error: 0.5 s doubling up to the
/// poll interval (at least 1 s, at most 30 s), with jitter, reset after two quiet minutes
/// (as kube-runtime's default). A reconnecting watch lists once per step, which an apiserver
/// that is back can take; one that is still away costs nothing.
pub fn trigger_backoff(poll_interval: Duration) -> impl Backoff {
    let cap = poll_interval.clamp(Duration::from_secs(1), Duration::from_secs(30));
    let steps = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(cap)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(ExponentialBackoff::from(steps), Duration::from_secs(120))
}

/// Whether a failed reconcile never got an answer from the apiserver (connection refused or
/// reset, a timeout): as opposed to an answer that refused the request (`kube::Error::Api`),
/// which a probe would not see, and which is no outage.
pub fn unreachable(error: &Error) -> bool {
    let kube_error = match error {
        Error::Step(StepError::Store(e))
        | Error::RecordInvalid(e)
        | Error::TargetGroupLock(e)
        | Error::AddFinalizer(e)
        | Error::RemoveFinalizer(e) => e,
        _ => return false,
    };
    !matches!(kube_error, kube::Error::Api(_))
}

/// Shared between the error policy (which notices an outage) and the probe.
#[derive(Clone, Debug, Default)]
pub struct ApiserverRecovery {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    away: AtomicBool,
    noticed: Notify,
}

impl ApiserverRecovery {
    /// Records that a call did not reach the apiserver; the probe starts if it is not running.
    pub fn noticed_outage(&self) {
        if !self.inner.away.swap(true, Ordering::SeqCst) {
            self.inner.noticed.notify_one();
        }
    }

    /// Whether an outage was noticed and the apiserver has not answered since.
    pub fn is_away(&self) -> bool {
        self.inner.away.load(Ordering::SeqCst)
    }

    /// Yields once each time the apiserver answers again after a noticed outage, asking it
    /// with `probe` (in the controller, a request for its version) every `every`.
    pub fn recoveries<P, F>(self, every: Duration, probe: P) -> impl Stream<Item = ()> + Send + 'static
    where
        P: Fn() -> F + Send + Sync + 'static,
        F: Future<Output = bool> + Send + 'static,
    {
        futures::stream::unfold((self, probe), move |(recovery, probe)| async move {
            loop {
                if !recovery.is_away() {
                    recovery.inner.noticed.notified().await;
                }
                tokio::time::sleep(every).await;
                if probe().await {
                    recovery.inner.away.store(false, Ordering::SeqCst);
                    tracing::info!("the apiserver answers again; reconciling the plans");
                    return Some(((), (recovery, probe)));
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures::StreamExt;

    use super::*;

    fn kube_api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status::failure("test", "Test").with_code(code)))
    }

    #[test]
    fn only_a_call_that_got_no_answer_is_an_outage() {
        assert!(!unreachable(&Error::TargetGroupLock(kube_api_error(500))));
        let refused = kube::Error::Service(Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)));
        assert!(unreachable(&Error::Step(StepError::Store(refused))));
        assert!(!unreachable(&Error::MissingMetadata("uid")));
    }

    #[test]
    fn the_trigger_backoff_stays_within_the_poll_interval() {
        let mut backoff = trigger_backoff(Duration::from_secs(5));
        let steps: Vec<Duration> = backoff.by_ref().take(20).collect();
        assert_eq!(steps.len(), 20, "never gives up");
        // Jitter adds up to one step on top of the delay.
        assert!(steps.iter().all(|d| *d <= Duration::from_secs(10)), "{steps:?}");
        let mut short = trigger_backoff(Duration::from_millis(500));
        assert!(
            short.by_ref().take(20).all(|d| d <= Duration::from_secs(2)),
            "at least 1 s cap, jittered"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn yields_once_the_apiserver_answers_after_an_outage() {
        let recovery = ApiserverRecovery::default();
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        let mut stream = Box::pin(recovery.clone().recoveries(PROBE_EVERY, move || {
            let counter = counter.clone();
            // Answers from the third probe on.
            async move { counter.fetch_add(1, Ordering::SeqCst) >= 2 }
        }));
        // Nothing noticed: no probe, nothing yielded.
        assert!(
            tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .is_err()
        );
        assert_eq!(asked.load(Ordering::SeqCst), 0);

        recovery.noticed_outage();
        recovery.noticed_outage();
        assert!(recovery.is_away());
        assert_eq!(stream.next().await, Some(()));
        assert_eq!(asked.load(Ordering::SeqCst), 3, "probed until it answered");
        assert!(!recovery.is_away());
    }
}
