//! The data a load run produces and a report carries; plain serde types, no behaviour beyond counting.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How one request ended. Every request that was sent ends in exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "class", content = "status")]
pub enum Outcome {
    /// A 2xx response whose body was read completely.
    Success,
    /// A 1xx, 3xx or 4xx response: an answer, but not a failure of the load balancer.
    Other(u16),
    /// A 5xx response (the status code is kept to tell 502, 503 and 504 apart).
    ServerError(u16),
    /// The connection could not be opened, or it broke before a full response arrived.
    ConnectionError,
    /// No complete response within the per-request timeout.
    Timeout,
}

/// Counters for a set of requests (the whole run, one second, or one connection mode).
///
/// `sent == success + other + server_errors + connection_errors + timeouts + in_flight`, and once the run has
/// stopped `in_flight` is zero. `dropped` requests were due but never sent because too many were in flight.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Requests that were due according to the schedule (`sent + dropped`).
    pub scheduled: u64,
    /// Requests actually sent.
    pub sent: u64,
    /// Requests skipped because the in-flight cap was reached: the generator, not the target, was saturated.
    pub dropped: u64,
    /// 2xx responses.
    pub success: u64,
    /// 1xx, 3xx and 4xx responses.
    pub other: u64,
    /// All 5xx responses, including the three kept separately below.
    pub server_errors: u64,
    /// 502 Bad Gateway: what HAProxy or an ALB answers when a backend dies under a request.
    pub status_502: u64,
    /// 503 Service Unavailable: what HAProxy answers when no backend is up.
    pub status_503: u64,
    /// 504 Gateway Timeout.
    pub status_504: u64,
    /// Connections refused, reset, or closed before a complete response.
    pub connection_errors: u64,
    /// Requests with no complete response within the timeout.
    pub timeouts: u64,
}

impl Counts {
    /// Counts a request that was sent (its outcome is recorded later with [`Counts::record`]).
    pub fn record_sent(&mut self) {
        self.scheduled += 1;
        self.sent += 1;
    }

    /// Counts a request that was due but not sent because of the in-flight cap.
    pub fn record_dropped(&mut self) {
        self.scheduled += 1;
        self.dropped += 1;
    }

    /// Counts the outcome of a request previously counted with [`Counts::record_sent`].
    pub fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Success => self.success += 1,
            Outcome::Other(_) => self.other += 1,
            Outcome::ServerError(status) => {
                self.server_errors += 1;
                match status {
                    502 => self.status_502 += 1,
                    503 => self.status_503 += 1,
                    504 => self.status_504 += 1,
                    _ => {}
                }
            }
            Outcome::ConnectionError => self.connection_errors += 1,
            Outcome::Timeout => self.timeouts += 1,
        }
    }

    /// Requests that got an outcome (a response, an error or a timeout).
    pub fn completed(&self) -> u64 {
        self.success + self.other + self.server_errors + self.connection_errors + self.timeouts
    }

    /// Requests sent whose outcome is not known yet.
    pub fn in_flight(&self) -> u64 {
        self.sent.saturating_sub(self.completed())
    }

    /// Requests a user would have seen fail: 5xx, connection errors and timeouts.
    pub fn failed(&self) -> u64 {
        self.server_errors + self.connection_errors + self.timeouts
    }

    /// `failed / completed`, or 0 when nothing completed.
    pub fn failure_rate(&self) -> f64 {
        match self.completed() {
            0 => 0.0,
            completed => self.failed() as f64 / completed as f64,
        }
    }
}

/// The counts of the requests that were due in one second of the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondCounts {
    /// Whole seconds since the start of the run: this bucket covers `[second, second + 1)`.
    pub second: u64,
    /// The requests due in that second, by outcome.
    #[serde(flatten)]
    pub counts: Counts,
}

/// Everything a load run measured.
///
/// Requests are bucketed by the second in which they were *due* (request `k` is due at `k / rate`). With open-loop
/// pacing that is also when they were sent unless the generator itself fell behind; it makes a failure land in the
/// second its request met the load balancer, not the second a timeout fired.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadResult {
    /// The URL the requests went to.
    pub url: String,
    /// Requests per second that were scheduled.
    pub rate_per_s: f64,
    /// Share of requests that were sent on a fresh connection (the rest reuse keep-alive connections).
    pub new_connection_share: f64,
    /// Wall-clock start of the run, milliseconds since the Unix epoch, to line it up with other logs.
    pub started_unix_ms: u64,
    /// Seconds from the start until the last request was issued.
    pub elapsed_s: f64,
    /// Whether the run was stopped before its planned duration.
    pub stopped_early: bool,
    /// All requests.
    pub totals: Counts,
    /// Requests sent on reused keep-alive connections.
    pub keep_alive: Counts,
    /// Requests sent on a fresh connection each (`Connection: close`).
    pub new_connection: Counts,
    /// One bucket per second since the start, without gaps.
    pub per_second: Vec<SecondCounts>,
    /// 2xx responses per backend, from the `From <instance-id>` suffix of the body.
    pub backends: BTreeMap<String, u64>,
}

/// One phase of one instance over time, as observed by whoever ran the maintenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseBand {
    /// The instance, e.g. `i-0123456789abcdef0`.
    pub instance_id: String,
    /// The phase name, e.g. `Draining`, `Rebooting`, `Verifying`.
    pub phase: String,
    /// Start of the phase in seconds since the start of the load run.
    pub start_s: f64,
    /// End of the phase in seconds since the start of the load run.
    pub end_s: f64,
}

impl PhaseBand {
    /// Length of the band in seconds (0 for a band whose end precedes its start).
    pub fn duration_s(&self) -> f64 {
        (self.end_s - self.start_s).max(0.0)
    }
}

/// How the maintenance in a run was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    /// Through pitstop: drain, maintain, verify, re-register.
    Pitstop,
    /// Reboot behind the load balancer without draining, as in the seed post's first attempt.
    Naive,
}

impl RunMode {
    /// The name used in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Pitstop => "pitstop",
            RunMode::Naive => "naive",
        }
    }
}

impl fmt::Display for RunMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pitstop" => Ok(RunMode::Pitstop),
            "naive" => Ok(RunMode::Naive),
            other => Err(format!("unknown mode {other:?}: expected \"pitstop\" or \"naive\"")),
        }
    }
}

/// A complete run: the load measured while instances went through their phases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Shown as the chart's title and the summary's heading.
    pub title: String,
    /// Whether the maintenance went through pitstop or was done naively.
    pub mode: RunMode,
    /// What the load generator measured.
    pub load: LoadResult,
    /// The instances' phases over time, in seconds since the start of the load.
    pub bands: Vec<PhaseBand>,
    /// Anything else the runner wants to keep with the report (plan, versions, settings).
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// pitstop's per-instance phases in the order an instance goes through them; charts and tables list phases in
/// this order so that runs are easy to compare.
const KNOWN_PHASES: [&str; 6] = ["Pending", "Draining", "Rebooting", "Verifying", "Registered", "Failed"];

/// The distinct phases in `bands`: known phases in their natural order, then any others alphabetically.
pub(crate) fn ordered_phases(bands: &[PhaseBand]) -> Vec<String> {
    let mut phases: Vec<String> = bands.iter().map(|b| b.phase.clone()).collect();
    phases.sort_by(|a, b| phase_rank(a).cmp(&phase_rank(b)).then_with(|| a.cmp(b)));
    phases.dedup();
    phases
}

/// The position of `phase` in [`KNOWN_PHASES`], or past the end for unknown phases.
pub(crate) fn phase_rank(phase: &str) -> usize {
    KNOWN_PHASES
        .iter()
        .position(|known| *known == phase)
        .unwrap_or(KNOWN_PHASES.len())
}

/// The distinct instances in `bands`, in order of first appearance (the order a plan took them in).
pub(crate) fn ordered_instances(bands: &[PhaseBand]) -> Vec<String> {
    let mut instances: Vec<String> = Vec::new();
    for band in bands {
        if !instances.contains(&band.instance_id) {
            instances.push(band.instance_id.clone());
        }
    }
    instances
}
