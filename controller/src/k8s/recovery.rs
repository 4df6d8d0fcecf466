//! Noticing that the apiserver could not be reached, and telling the controller when it can
//! be again, so that the plans are reconciled at once instead of at their next retry.
//!
//! The watch reconnects by itself after an outage, but a reconcile that failed meanwhile
//! waits for its requeue. The error policy reports each failure that never reached the
//! apiserver ([`unreachable`]); a probe then asks the apiserver for its version every
//! [`PROBE_EVERY`] until it answers, and yields once: the controller reconciles every plan
//! on it (`Controller::reconcile_all_on`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::Stream;
use tokio::sync::Notify;

use crate::engine::StepError;

use super::error::Error;

/// How often the probe asks while the apiserver is away.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

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
