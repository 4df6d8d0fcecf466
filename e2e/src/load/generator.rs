//! The open-loop generator: a fixed schedule of `GET` requests, each on a keep-alive or a fresh connection.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONNECTION, HeaderValue, USER_AGENT};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, LengthLimitError, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep_until};

use super::tally::{Slot, Tally, backend_from_body};
use crate::report::{LoadResult, Outcome};

/// The header carrying a request's sequence number `k` (due at `k / rate` seconds), so that a server or an HAProxy
/// log can tell which request of the run it saw.
pub const SEQUENCE_HEADER: &str = "x-pitstop-seq";
/// Longest run allowed, whatever the configuration: a forgotten generator stops by itself.
pub const MAX_RUN: Duration = Duration::from_secs(3600);
/// Highest rate allowed; far above what the sandbox needs, low enough that a typo cannot flood a machine.
pub const MAX_RATE_PER_S: f64 = 20_000.0;
/// Bodies are read up to this size; the backend's name is in the first few bytes.
const MAX_BODY_BYTES: usize = 64 * 1024;
const USER_AGENT_VALUE: &str = concat!("pitstop-load/", env!("CARGO_PKG_VERSION"));
const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// What to send, how fast and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadConfig {
    /// The `http://` URL every request goes to.
    pub url: String,
    /// Requests per second, kept whatever the target does (open loop).
    pub rate_per_s: f64,
    /// How long to send for; `None` runs until stopped (at most [`MAX_RUN`]).
    pub duration: Option<Duration>,
    /// Share of requests sent on a fresh connection (`0.0..=1.0`); the rest reuse keep-alive connections. Fresh
    /// connections are what a load balancer routes to a backend that is being rebooted without draining.
    pub new_connection_share: f64,
    /// Most requests in flight at once; a request due while this many are in flight is dropped and counted.
    pub max_in_flight: usize,
    /// Time allowed for a whole request, from connecting to the last byte of the body.
    pub request_timeout: Duration,
    /// Allow a target that is not a loopback address. Off by default: the sandbox's load balancer listens on
    /// 127.0.0.1, and a load test must never reach anything else by mistake.
    pub allow_non_loopback: bool,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            url: "http://127.0.0.1:8080/".to_string(),
            rate_per_s: 200.0,
            duration: None,
            new_connection_share: 0.5,
            max_in_flight: 256,
            request_timeout: Duration::from_secs(2),
            allow_non_loopback: false,
        }
    }
}

/// Why a load run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The URL does not parse, or is not a plain `http://` URL with a host.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL's host is not a loopback address and `allow_non_loopback` is off.
    #[error("refusing to send load to {host:?}: not a loopback address (set allow_non_loopback to override)")]
    NotLoopback {
        /// The host of the URL.
        host: String,
    },
    /// A numeric setting is out of range.
    #[error("invalid setting {name}: {reason}")]
    InvalidSetting {
        /// The setting's field name.
        name: &'static str,
        /// The allowed range.
        reason: String,
    },
}

/// The schedule a validated configuration turns into.
#[derive(Debug, Clone)]
struct Plan {
    uri: Uri,
    period_ns: u64,
    /// How many requests are due in total; the run stops after these.
    requests: u64,
    /// When the run ends if nobody stops it.
    run_for: Duration,
    /// New-connection share in millionths, so that the split is exact integer arithmetic.
    new_connection_ppm: u64,
}

impl LoadConfig {
    fn plan(&self) -> Result<Plan, LoadError> {
        let invalid_url = |reason: &str| LoadError::InvalidUrl {
            url: self.url.clone(),
            reason: reason.to_string(),
        };
        let uri: Uri = self
            .url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid_url(&e.to_string()))?;
        if uri.scheme_str() != Some("http") {
            return Err(invalid_url(
                "only http:// is supported (the sandbox's load balancer speaks plain HTTP)",
            ));
        }
        let host = uri.host().ok_or_else(|| invalid_url("no host"))?;
        if !self.allow_non_loopback && !is_loopback_host(host) {
            return Err(LoadError::NotLoopback { host: host.to_string() });
        }
        if !(self.rate_per_s.is_finite() && self.rate_per_s > 0.0 && self.rate_per_s <= MAX_RATE_PER_S) {
            return Err(setting("rate_per_s", format!("must be in (0, {MAX_RATE_PER_S}]")));
        }
        if !(0.0..=1.0).contains(&self.new_connection_share) {
            return Err(setting("new_connection_share", "must be in [0, 1]".to_string()));
        }
        if self.max_in_flight == 0 || self.max_in_flight > Semaphore::MAX_PERMITS {
            return Err(setting(
                "max_in_flight",
                format!("must be in [1, {}]", Semaphore::MAX_PERMITS),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(setting("request_timeout", "must be more than zero".to_string()));
        }
        let run_for = match self.duration {
            Some(duration) if duration > MAX_RUN => {
                return Err(setting("duration", format!("must be at most {} s", MAX_RUN.as_secs())));
            }
            Some(duration) => duration,
            None => MAX_RUN,
        };
        // The rate is validated above, so the period is at least 50 µs and fits easily.
        let period_ns = ((NANOS_PER_SECOND as f64 / self.rate_per_s).round() as u64).max(1);
        // Request k is due at k * period; the run sends those due before its end.
        let requests = u64::try_from(run_for.as_nanos().div_ceil(u128::from(period_ns))).unwrap_or(u64::MAX);
        Ok(Plan {
            uri,
            period_ns,
            requests,
            run_for,
            new_connection_ppm: (self.new_connection_share * 1_000_000.0).round() as u64,
        })
    }
}

fn setting(name: &'static str, reason: String) -> LoadError {
    LoadError::InvalidSetting { name, reason }
}

fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Plan {
    fn due(&self, seq: u64) -> Duration {
        Duration::from_nanos(seq.saturating_mul(self.period_ns))
    }

    fn second(&self, seq: u64) -> u64 {
        (u128::from(seq) * u128::from(self.period_ns) / NANOS_PER_SECOND) as u64
    }

    /// Spreads new-connection requests evenly: exactly `floor(n * share)` of the first `n` requests use a fresh
    /// connection, so the mix is the same in every second and a short outage hits both kinds.
    fn is_new_connection(&self, seq: u64) -> bool {
        let before = u128::from(seq) * u128::from(self.new_connection_ppm) / 1_000_000;
        let after = (u128::from(seq) + 1) * u128::from(self.new_connection_ppm) / 1_000_000;
        after > before
    }
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client(reuse_connections: bool) -> HttpClient {
    let mut connector = HttpConnector::new();
    // Requests are tiny; Nagle's algorithm would only add latency.
    connector.set_nodelay(true);
    let mut builder = Client::builder(TokioExecutor::new());
    if !reuse_connections {
        builder.pool_max_idle_per_host(0);
    }
    builder.build(connector)
}

/// State shared by the handle and the run task.
struct Shared {
    tally: Mutex<Tally>,
    config: LoadConfig,
    started: Instant,
    started_unix_ms: u64,
    /// Set when the run has stopped issuing requests: elapsed time and whether it was stopped early.
    finished: Mutex<Option<(Duration, bool)>>,
}

impl Shared {
    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        // A panic while holding the lock cannot leave the counters half-updated in a way that matters more than
        // losing the whole run would.
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn result(&self) -> LoadResult {
        let finished = *self.finished.lock().unwrap_or_else(PoisonError::into_inner);
        let (elapsed, stopped_early) = finished.unwrap_or_else(|| (self.started.elapsed(), false));
        LoadResult {
            url: self.config.url.clone(),
            rate_per_s: self.config.rate_per_s,
            new_connection_share: self.config.new_connection_share,
            started_unix_ms: self.started_unix_ms,
            elapsed_s: elapsed.as_secs_f64(),
            stopped_early,
            ..self.tally().to_result()
        }
    }
}

/// Stops a run from anywhere (e.g. a signal handler) without owning its [`LoadHandle`].
#[derive(Debug, Clone)]
pub struct Stopper(Arc<watch::Sender<bool>>);

impl Stopper {
    /// Asks the run to stop issuing requests; those in flight still complete or time out.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// A running load. Dropping it aborts the run; call [`LoadHandle::stop`] or [`LoadHandle::wait`] for the result.
pub struct LoadHandle {
    shared: Arc<Shared>,
    stopper: Stopper,
    task: Option<JoinHandle<()>>,
}

impl LoadHandle {
    /// A [`Stopper`] for this run.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// When the run started: the zero of its per-second buckets, and the instant phase bands should be measured
    /// from.
    pub fn started_at(&self) -> Instant {
        self.shared.started
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// The counts so far; requests still in flight show in `sent` but in no outcome yet.
    pub fn snapshot(&self) -> LoadResult {
        self.shared.result()
    }

    /// Stops issuing requests, waits for those in flight (at most the request timeout), and returns the result.
    pub async fn stop(self) -> LoadResult {
        self.stopper.stop();
        self.wait().await
    }

    /// Waits until the configured duration has passed (or someone used a [`Stopper`]) and every request in flight
    /// has completed, and returns the result.
    pub async fn wait(mut self) -> LoadResult {
        if let Some(task) = self.task.take() {
            // The run task does not panic; if it did, what it counted so far is still in the tally.
            let _ = task.await;
        }
        self.shared.result()
    }
}

impl Drop for LoadHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts sending load as `config` says; must be called from within a Tokio runtime.
pub fn start(config: LoadConfig) -> Result<LoadHandle, LoadError> {
    let plan = config.plan()?;
    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let shared = Arc::new(Shared {
        tally: Mutex::new(Tally::default()),
        config,
        started: Instant::now(),
        started_unix_ms,
        finished: Mutex::new(None),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(plan, Arc::clone(&shared), stop_rx));
    Ok(LoadHandle {
        shared,
        stopper: Stopper(Arc::new(stop_tx)),
        task: Some(task),
    })
}

/// Runs a load for its configured duration and returns the result.
pub async fn run_for(config: LoadConfig) -> Result<LoadResult, LoadError> {
    Ok(start(config)?.wait().await)
}

async fn run(plan: Plan, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let keep_alive = client(true);
    let fresh = client(false);
    let permits = Arc::new(Semaphore::new(shared.config.max_in_flight));
    let timeout = shared.config.request_timeout;
    // Owning the request tasks here means that aborting the run (dropping the handle) aborts them too.
    let mut in_flight = JoinSet::new();
    let start = shared.started;
    let mut stopped_early = false;

    for seq in 0..plan.requests {
        // Sleeping until each request's due time, rather than for a period after the previous one, keeps the rate
        // exact when the loop runs late: overdue requests go out at once (what MissedTickBehavior::Burst does).
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => {
                stopped_early = true;
                break;
            }
            () = sleep_until(start + plan.due(seq)) => {}
        }
        while in_flight.try_join_next().is_some() {}

        let slot = Slot {
            second: plan.second(seq),
            new_connection: plan.is_new_connection(seq),
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            shared.tally().dropped(slot);
            continue;
        };
        shared.tally().sent(slot);
        let client = if slot.new_connection {
            fresh.clone()
        } else {
            keep_alive.clone()
        };
        let uri = plan.uri.clone();
        let task_shared = Arc::clone(&shared);
        in_flight.spawn(async move {
            let (outcome, backend) = send(&client, uri, seq, slot.new_connection, timeout).await;
            task_shared.tally().outcome(slot, outcome, backend);
            drop(permit);
        });
    }
    if !stopped_early {
        // The last request is due one period before the end; the run still lasts its full duration.
        tokio::select! {
            biased;
            _ = stopped(&mut stop) => stopped_early = true,
            () = sleep_until(start + plan.run_for) => {}
        }
    }
    *shared.finished.lock().unwrap_or_else(PoisonError::into_inner) = Some((start.elapsed(), stopped_early));
    // Each request ends within its timeout, so this wait is bounded.
    while in_flight.join_next().await.is_some() {}
}

/// Resolves once a stop was asked for, or when every [`Stopper`] is gone and none can be asked for any more.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        // With no sender left nobody can stop the run early; let it finish its schedule.
        std::future::pending::<()>().await;
    }
}

/// Sends request `seq` and classifies what came back.
async fn send(
    client: &HttpClient,
    uri: Uri,
    seq: u64,
    new_connection: bool,
    timeout: Duration,
) -> (Outcome, Option<String>) {
    let mut request = Request::new(Empty::<Bytes>::new());
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
    headers.insert(SEQUENCE_HEADER, HeaderValue::from(seq));
    if new_connection {
        // Tells the server too that this connection ends with the response, as a one-shot client (curl) would.
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    tokio::time::timeout(timeout, exchange(client, request))
        .await
        .unwrap_or((Outcome::Timeout, None))
}

async fn exchange(client: &HttpClient, request: Request<Empty<Bytes>>) -> (Outcome, Option<String>) {
    let Ok(response) = client.request(request).await else {
        return (Outcome::ConnectionError, None);
    };
    let status = response.status();
    let outcome = classify(status);
    match Limited::new(response.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(body) if outcome == Outcome::Success => (outcome, backend_from_body(&body.to_bytes())),
        Ok(_) => (outcome, None),
        // An oversized body still came from a working backend; only the name in it is lost.
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => (outcome, None),
        // A 2xx cut off mid-body is a broken page to a user; an error status is already the more telling fact.
        Err(_) if outcome == Outcome::Success => (Outcome::ConnectionError, None),
        Err(_) => (outcome, None),
    }
}

fn classify(status: StatusCode) -> Outcome {
    if status.is_success() {
        Outcome::Success
    } else if status.is_server_error() {
        Outcome::ServerError(status.as_u16())
    } else {
        Outcome::Other(status.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(config: LoadConfig) -> Plan {
        match config.plan() {
            Ok(plan) => plan,
            Err(error) => panic!("valid config rejected: {error}"),
        }
    }

    #[test]
    fn schedule_has_rate_times_duration_requests() {
        let plan = plan(LoadConfig {
            rate_per_s: 100.0,
            duration: Some(Duration::from_secs(2)),
            ..LoadConfig::default()
        });
        assert_eq!(plan.requests, 200);
        assert_eq!(plan.second(99), 0);
        assert_eq!(plan.second(100), 1);
        assert_eq!(plan.second(199), 1);
    }

    #[test]
    fn unbounded_duration_is_capped() {
        let plan = plan(LoadConfig {
            rate_per_s: 10.0,
            duration: None,
            ..LoadConfig::default()
        });
        assert_eq!(plan.requests, MAX_RUN.as_secs() * 10);
    }

    #[test]
    fn new_connection_split_is_exact() {
        for (share, expected) in [(0.0, 0), (0.5, 500), (0.25, 250), (1.0, 1000), (0.333, 333)] {
            let plan = plan(LoadConfig {
                new_connection_share: share,
                ..LoadConfig::default()
            });
            let fresh = (0..1000).filter(|&seq| plan.is_new_connection(seq)).count();
            assert_eq!(fresh, expected, "share {share}");
        }
    }

    #[test]
    fn only_loopback_targets_unless_allowed() {
        for url in [
            "http://127.0.0.1:1/",
            "http://localhost/",
            "http://[::1]:8080/x",
            "http://127.3.4.5/",
        ] {
            assert!(
                LoadConfig {
                    url: url.into(),
                    ..LoadConfig::default()
                }
                .plan()
                .is_ok(),
                "{url}"
            );
        }
        for url in ["http://10.0.0.1/", "http://example.com/", "http://[2001:db8::1]/"] {
            let config = LoadConfig {
                url: url.into(),
                ..LoadConfig::default()
            };
            assert!(matches!(config.plan(), Err(LoadError::NotLoopback { .. })), "{url}");
            assert!(
                LoadConfig {
                    allow_non_loopback: true,
                    ..config
                }
                .plan()
                .is_ok(),
                "{url}"
            );
        }
    }

    #[test]
    fn bad_settings_are_rejected() {
        let bad = [
            LoadConfig {
                url: "https://127.0.0.1/".into(),
                ..LoadConfig::default()
            },
            LoadConfig {
                url: "not a url".into(),
                ..LoadConfig::default()
            },
            LoadConfig {
                rate_per_s: 0.0,
                ..LoadConfig::default()
            },
            LoadConfig {
                rate_per_s: f64::NAN,
                ..LoadConfig::default()
            },
            LoadConfig {
                new_connection_share: 1.5,
                ..LoadConfig::default()
            },
            LoadConfig {
                max_in_flight: 0,
                ..LoadConfig::default()
            },
            LoadConfig {
                request_timeout: Duration::ZERO,
                ..LoadConfig::default()
            },
            LoadConfig {
                duration: Some(MAX_RUN * 2),
                ..LoadConfig::default()
            },
        ];
        for config in bad {
            assert!(config.plan().is_err(), "{config:?}");
        }
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify(StatusCode::OK), Outcome::Success);
        assert_eq!(classify(StatusCode::NO_CONTENT), Outcome::Success);
        assert_eq!(classify(StatusCode::FOUND), Outcome::Other(302));
        assert_eq!(classify(StatusCode::NOT_FOUND), Outcome::Other(404));
        assert_eq!(classify(StatusCode::BAD_GATEWAY), Outcome::ServerError(502));
        assert_eq!(classify(StatusCode::INTERNAL_SERVER_ERROR), Outcome::ServerError(500));
    }
}
