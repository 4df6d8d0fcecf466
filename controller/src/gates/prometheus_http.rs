//! Reading Prometheus' active alerts over HTTP(S): `GET <url>/api/v1/alerts`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde::Deserialize;

use super::alerts::{Alert, AlertState};
use crate::http_client::error_chain;

/// How long one read of the alerts may take before it counts as failed.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer read: an alerts list far past this is not a Prometheus answering.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Where a gate's alerts come from.
#[async_trait]
pub trait AlertSource: Send + Sync {
    /// The active (firing and pending) alerts of the Prometheus server at `base_url`; the
    /// error says what went wrong, in a sentence for the status.
    async fn alerts(&self, base_url: &str) -> Result<Vec<Alert>, String>;
}

/// [`AlertSource`] over HTTP or HTTPS (the system's trusted roots).
#[derive(Clone, Debug)]
pub struct HttpAlertSource {
    /// Built on first use: reading the system's root certificates takes a while, and most
    /// plans have no gate.
    client: Arc<std::sync::OnceLock<HttpsClient>>,
}

type HttpsClient = crate::http_client::HttpsClient<Empty<Bytes>>;

impl HttpAlertSource {
    /// A reader for any number of servers, trusting the system's root certificates (none, if
    /// they cannot be read: then HTTPS fails per call, with the reason, and HTTP still works).
    /// Its TLS uses ring explicitly, so it needs no process-wide rustls provider.
    pub fn new() -> Self {
        Self {
            client: Arc::new(std::sync::OnceLock::new()),
        }
    }

    fn client(&self) -> &HttpsClient {
        self.client.get_or_init(crate::http_client::build)
    }
}

impl Default for HttpAlertSource {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl AlertSource for HttpAlertSource {
    async fn alerts(&self, base_url: &str) -> Result<Vec<Alert>, String> {
        let url = format!("{}/api/v1/alerts", base_url.trim_end_matches('/'));
        let uri: hyper::Uri = url.parse().map_err(|e| format!("{url} is not a URL ({e})"))?;
        let read = async {
            let response = self
                .client()
                .get(uri)
                .await
                .map_err(|e| format!("GET {url} failed: {}", error_chain(&e)))?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("GET {url}: reading the answer failed: {e}"))?
                .to_bytes();
            if !status.is_success() {
                let text = String::from_utf8_lossy(&body);
                return Err(format!(
                    "GET {url} answered {status}: {}",
                    text.chars().take(200).collect::<String>()
                ));
            }
            parse_alerts(&body).map_err(|e| format!("GET {url}: {e}"))
        };
        tokio::time::timeout(READ_TIMEOUT, read)
            .await
            .map_err(|_| format!("GET {url} did not answer within {}s", READ_TIMEOUT.as_secs()))?
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<AnswerData>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct AnswerData {
    alerts: Vec<AnswerAlert>,
}

#[derive(Deserialize)]
struct AnswerAlert {
    labels: BTreeMap<String, String>,
    state: String,
}

/// The alerts of an `/api/v1/alerts` answer; alerts in a state other than firing and
/// pending (none today) are left out.
fn parse_alerts(body: &[u8]) -> Result<Vec<Alert>, String> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not Prometheus' alerts JSON ({e})"))?;
    if answer.status != "success" {
        return Err(format!(
            "Prometheus answered {}: {}",
            answer.status,
            answer.error.unwrap_or_default()
        ));
    }
    let data = answer.data.ok_or("the answer has no data")?;
    Ok(data
        .alerts
        .into_iter()
        .filter_map(|a| {
            let state = match a.state.as_str() {
                "firing" => AlertState::Firing,
                "pending" => AlertState::Pending,
                _ => return None,
            };
            Some(Alert {
                labels: a.labels,
                state,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_answers_are_parsed_and_errors_say_what_came() {
        let body = br#"{"status":"success","data":{"alerts":[
            {"labels":{"alertname":"HighErrorRate","severity":"critical"},"annotations":{},"state":"firing","activeAt":"2026-12-03T10:00:00Z","value":"1e+00"},
            {"labels":{"alertname":"Slow"},"annotations":{},"state":"pending","activeAt":"2026-12-03T10:00:00Z","value":"1e+00"}]}}"#;
        let alerts = parse_alerts(body).unwrap();
        assert_eq!(alerts.len(), 2);
        assert_eq!(
            (alerts[0].name(), alerts[0].state),
            ("HighErrorRate", AlertState::Firing)
        );
        assert_eq!((alerts[1].name(), alerts[1].state), ("Slow", AlertState::Pending));
        assert!(
            parse_alerts(b"<html>")
                .unwrap_err()
                .starts_with("the answer is not Prometheus' alerts JSON")
        );
        assert_eq!(
            parse_alerts(br#"{"status":"error","errorType":"bad_data","error":"nope"}"#).unwrap_err(),
            "Prometheus answered error: nope"
        );
    }
}
