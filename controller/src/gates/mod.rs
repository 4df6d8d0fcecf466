//! Gates outside AWS that hold a plan's next instance (`spec.gates`): what they say, and the
//! readers that ask them.

pub mod alarms;
pub mod alerts;
pub mod prometheus_http;

use std::sync::Arc;

pub use alerts::{Alert, AlertFilter, AlertState};
pub use prometheus_http::{AlertSource, HttpAlertSource};

/// What a gate said this round, as the state machine sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateReading {
    /// Nothing that holds the plan.
    Quiet,
    /// Something holds the plan: what, in a few words (`HighErrorRate{severity="critical"}
    /// firing`).
    Holding(String),
    /// The gate could not be read: why.
    Unreadable(String),
}

/// The readers of the gates, shared by every plan.
#[derive(Clone)]
pub struct GateReaders {
    /// Prometheus' alerts.
    pub prometheus: Arc<dyn AlertSource>,
    /// The Prometheus URL of plans that name none (`--prometheus-url`).
    pub default_prometheus_url: Option<String>,
}

impl GateReaders {
    /// Readers over HTTP(S), with the controller-wide Prometheus URL, if any.
    pub fn http(default_prometheus_url: Option<String>) -> Self {
        Self {
            prometheus: Arc::new(HttpAlertSource::new()),
            default_prometheus_url,
        }
    }
}

impl std::fmt::Debug for GateReaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateReaders")
            .field("default_prometheus_url", &self.default_prometheus_url)
            .finish_non_exhaustive()
    }
}
