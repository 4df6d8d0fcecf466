//! Getting a notification to its webhook: a bounded queue feeding one background task that
//! POSTs each event with a timeout and a few retries, so maintenance never waits on a
//! receiver, and a receiver that is down costs a bounded amount of memory and time.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use backon::BackoffBuilder;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::event::Notification;
use crate::api::NotifyFormat;
use crate::http_client::{HttpsClient, error_chain};
use crate::telemetry::Metrics;

/// Events waiting for delivery, per controller (or `pitstop run`). A receiver that is down
/// holds each event for its attempts; past this many waiting, new ones are dropped.
pub const QUEUE_CAPACITY: usize = 256;

/// One event for one webhook.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The webhook's URL.
    pub url: String,
    /// The body's format.
    pub format: NotifyFormat,
    /// The event.
    pub notification: Notification,
}

/// Why a POST failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostError {
    /// True when another attempt may go through: no answer (connection refused or reset, a
    /// timeout), 429, or a 5xx. A 4xx other than 429 will not change by asking again.
    pub retryable: bool,
    /// What happened, in a sentence for the log.
    pub message: String,
}

/// Sends one body to a URL.
#[async_trait]
pub trait Poster: Send + Sync {
    /// POSTs `body` with `content_type` to `url`, within `timeout`; Ok for a 2xx answer.
    async fn post(&self, url: &str, content_type: &str, body: Bytes, timeout: Duration) -> Result<(), PostError>;
}

/// How often, and how patiently, each event is tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per event, the first included.
    pub attempts: usize,
    /// The wait before the second attempt; it doubles for each one after (with jitter).
    pub first_backoff: Duration,
    /// The longest one attempt may take.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    /// 3 attempts, 5 s each, 1–2 s and then 2–4 s apart (jitter): an event is done with in
    /// at most about 21 s.
    fn default() -> Self {
        Self {
            attempts: 3,
            first_backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

/// How a delivery ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver took it, at this attempt (1-based).
    Delivered {
        /// The attempt that went through.
        attempt: usize,
    },
    /// Given up after this many attempts.
    Dropped {
        /// Attempts made.
        attempts: usize,
        /// The last failure.
        error: String,
    },
}

/// Tries `delivery` by `policy`: again after a retryable failure, until the attempts are spent.
pub async fn deliver(poster: &dyn Poster, policy: &RetryPolicy, delivery: &Delivery) -> Outcome {
    let (content_type, body) = delivery.notification.body(delivery.format);
    let body = Bytes::from(body);
    let mut waits = backon::ExponentialBuilder::default()
        .with_min_delay(policy.first_backoff)
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(policy.attempts.saturating_sub(1))
        .build();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error = match poster
            .post(&delivery.url, content_type, body.clone(), policy.timeout)
            .await
        {
            Ok(()) => return Outcome::Delivered { attempt },
            Err(error) => error,
        };
        match waits.next() {
            Some(wait) if error.retryable => {
                tracing::debug!(attempt, error = %error.message, "notification not delivered; trying again");
                tokio::time::sleep(wait).await;
            }
            _ => {
                return Outcome::Dropped {
                    attempts: attempt,
                    error: error.message,
                };
            }
        }
    }
}

/// The queue to the delivery task. Cheap to clone; clones share the queue. The task starts
/// with the first event, so a controller whose plans notify nobody runs none.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    poster: Arc<dyn Poster>,
    policy: RetryPolicy,
    capacity: usize,
    worker: Mutex<Worker>,
}

enum Worker {
    NotStarted,
    Running {
        queue: mpsc::Sender<Delivery>,
        task: JoinHandle<()>,
    },
    Closed,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("policy", &self.inner.policy)
            .field("capacity", &self.inner.capacity)
            .finish_non_exhaustive()
    }
}

impl Default for Notifier {
    fn default() -> Self {
        Self::http()
    }
}

impl Notifier {
    /// A notifier over HTTP(S), with the default retries and queue.
    pub fn http() -> Self {
        Self::new(Arc::new(HttpPoster::default()), RetryPolicy::default(), QUEUE_CAPACITY)
    }

    /// A notifier posting through `poster`.
    pub fn new(poster: Arc<dyn Poster>, policy: RetryPolicy, capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                poster,
                policy,
                capacity: capacity.max(1),
                worker: Mutex::new(Worker::NotStarted),
            }),
        }
    }

    /// Queues `delivery` without waiting; outcomes count in `metrics`. With the queue full (a
    /// receiver that has been down a while) the event is dropped, logged and counted: the
    /// round that made it does not wait. Needs a Tokio runtime (the task starts here).
    pub fn send(&self, delivery: Delivery, metrics: &Metrics) {
        let mut worker = self.inner.worker.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(*worker, Worker::NotStarted) {
            let (queue, receiver) = mpsc::channel(self.inner.capacity);
            let task = tokio::spawn(run(
                Arc::clone(&self.inner.poster),
                self.inner.policy,
                receiver,
                metrics.clone(),
            ));
            *worker = Worker::Running { queue, task };
        }
        let Worker::Running { queue, .. } = &*worker else {
            tracing::warn!(
                event = delivery.notification.event_type(),
                "notification dropped: notifications are closed"
            );
            metrics.notification(false);
            return;
        };
        match queue.try_send(delivery) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(delivery)) => {
                tracing::warn!(
                    event = delivery.notification.event_type(),
                    id = %delivery.notification.id,
                    capacity = self.inner.capacity,
                    "notification dropped: the delivery queue is full (is the webhook down?)"
                );
                metrics.notification(false);
            }
            Err(mpsc::error::TrySendError::Closed(delivery)) => {
                tracing::warn!(
                    event = delivery.notification.event_type(),
                    id = %delivery.notification.id,
                    "notification dropped: the delivery task has stopped"
                );
                metrics.notification(false);
            }
        }
    }

    /// Stops taking events and waits, at most `within`, for the queued ones to be delivered
    /// or dropped; what is still queued after that is dropped. For a process about to exit.
    pub async fn close(&self, within: Duration) {
        let worker = std::mem::replace(
            &mut *self.inner.worker.lock().unwrap_or_else(PoisonError::into_inner),
            Worker::Closed,
        );
        let Worker::Running { queue, mut task } = worker else {
            return;
        };
        let waiting = self.inner.capacity - queue.capacity();
        // The task ends once the queue is empty and its sender is gone.
        drop(queue);
        if tokio::time::timeout(within, &mut task).await.is_err() {
            tracing::warn!(
                waiting,
                "notifications still undelivered after {}s; dropped",
                within.as_secs()
            );
            task.abort();
        }
    }
}

/// The delivery task: one event at a time, in order.
async fn run(poster: Arc<dyn Poster>, policy: RetryPolicy, mut queue: mpsc::Receiver<Delivery>, metrics: Metrics) {
    while let Some(delivery) = queue.recv().await {
        let notification = &delivery.notification;
        match deliver(poster.as_ref(), &policy, &delivery).await {
            Outcome::Delivered { attempt } => {
                tracing::debug!(event = notification.event_type(), id = %notification.id, attempt, "notification delivered");
                metrics.notification(true);
            }
            Outcome::Dropped { attempts, error } => {
                tracing::warn!(
                    event = notification.event_type(),
                    id = %notification.id,
                    plan = %format!("{}/{}", notification.plan.namespace, notification.plan.name),
                    attempts,
                    %error,
                    "notification dropped: the webhook did not take it"
                );
                metrics.notification(false);
            }
        }
    }
}

/// [`Poster`] over HTTP or HTTPS (the system's trusted roots).
#[derive(Clone, Default)]
pub struct HttpPoster {
    /// Built on first use: reading the system's root certificates takes a while.
    client: Arc<std::sync::OnceLock<HttpsClient<Full<Bytes>>>>,
}

#[async_trait]
impl Poster for HttpPoster {
    async fn post(&self, url: &str, content_type: &str, body: Bytes, timeout: Duration) -> Result<(), PostError> {
        // The URL came from a Secret: it is never logged, only where it went wrong.
        let request = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::USER_AGENT, concat!("pitstop/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body))
            .map_err(|e| PostError {
                retryable: false,
                message: format!("the webhook URL cannot be used ({e})"),
            })?;
        let client = self.client.get_or_init(crate::http_client::build);
        let attempt = async {
            let response = client.request(request).await.map_err(|e| PostError {
                retryable: true,
                message: format!("POST failed: {}", error_chain(&e)),
            })?;
            let status = response.status();
            // Read (and so free) the answer; only its start is worth a log line.
            let answer = http_body_util::Limited::new(response.into_body(), 4096)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if status.is_success() {
                return Ok(());
            }
            Err(PostError {
                retryable: status == http::StatusCode::TOO_MANY_REQUESTS || status.is_server_error(),
                message: format!(
                    "the webhook answered {status}: {}",
                    String::from_utf8_lossy(&answer).chars().take(200).collect::<String>()
                ),
            })
        };
        tokio::time::timeout(timeout, attempt).await.map_err(|_| PostError {
            retryable: true,
            message: format!("the webhook did not answer within {}s", timeout.as_secs()),
        })?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::api::{NotifyEvent, PlanPhase};
    use crate::notify::event::PlanRef;

    /// Fails its first `failures` POSTs (retryably or not), then takes every one.
    struct Flaky {
        failures: usize,
        retryable: bool,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Poster for Flaky {
        async fn post(&self, _: &str, _: &str, _: Bytes, _: Duration) -> Result<(), PostError> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            if call < self.failures {
                Err(PostError {
                    retryable: self.retryable,
                    message: format!("failure {}", call + 1),
                })
            } else {
                Ok(())
            }
        }
    }

    fn flaky(failures: usize, retryable: bool) -> Flaky {
        Flaky {
            failures,
            retryable,
            calls: AtomicUsize::new(0),
        }
    }

    fn delivery() -> Delivery {
        Delivery {
            url: "http://127.0.0.1:9/hook".into(),
            format: NotifyFormat::CloudEvents,
            notification: Notification {
                id: "id-1".into(),
                kind: NotifyEvent::RunStarted,
                time: jiff::Timestamp::UNIX_EPOCH,
                plan: PlanRef {
                    namespace: "shop".into(),
                    name: "web".into(),
                },
                run_id: None,
                run_started_at: None,
                plan_phase: PlanPhase::Running,
                instance: None,
                from: "Pending".into(),
                to: "Running".into(),
                reason: "PlanStarted".into(),
                message: String::new(),
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_receiver_that_fails_twice_then_accepts_gets_it_once() {
        let poster = flaky(2, true);
        let outcome = deliver(&poster, &RetryPolicy::default(), &delivery()).await;
        assert_eq!(outcome, Outcome::Delivered { attempt: 3 });
        assert_eq!(poster.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_receiver_that_always_fails_gets_exactly_the_attempts_then_a_drop() {
        let poster = flaky(usize::MAX, true);
        let outcome = deliver(&poster, &RetryPolicy::default(), &delivery()).await;
        assert_eq!(
            outcome,
            Outcome::Dropped {
                attempts: 3,
                error: "failure 3".into()
            }
        );
        assert_eq!(poster.calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_that_asking_again_cannot_change_is_not_retried() {
        let poster = flaky(usize::MAX, false);
        let outcome = deliver(&poster, &RetryPolicy::default(), &delivery()).await;
        assert!(matches!(outcome, Outcome::Dropped { attempts: 1, .. }), "{outcome:?}");
        assert_eq!(poster.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_delivers_in_the_background_and_counts_outcomes() {
        let poster = Arc::new(flaky(3, true));
        let notifier = Notifier::new(poster.clone(), RetryPolicy::default(), 8);
        let metrics = Metrics::default();
        // The first event uses up its 3 attempts; the second goes through at once.
        notifier.send(delivery(), &metrics);
        notifier.send(delivery(), &metrics);
        notifier.close(Duration::from_secs(60)).await;
        assert_eq!(poster.calls.load(Ordering::SeqCst), 4);
        let text = metrics.encode();
        assert!(
            text.contains("pitstop_notifications_total{outcome=\"delivered\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pitstop_notifications_total{outcome=\"dropped\"} 1"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_drops_the_newest_without_waiting() {
        /// Never answers: the task stays on the first event.
        struct Hanging;
        #[async_trait]
        impl Poster for Hanging {
            async fn post(&self, _: &str, _: &str, _: Bytes, _: Duration) -> Result<(), PostError> {
                std::future::pending().await
            }
        }
        let notifier = Notifier::new(Arc::new(Hanging), RetryPolicy::default(), 1);
        let metrics = Metrics::default();
        for _ in 0..4 {
            notifier.send(delivery(), &metrics);
            tokio::task::yield_now().await;
        }
        let text = metrics.encode();
        // One taken by the task, one queued, two dropped.
        assert!(
            text.contains("pitstop_notifications_total{outcome=\"dropped\"} 2"),
            "{text}"
        );
        notifier.close(Duration::from_secs(1)).await;
    }
}
