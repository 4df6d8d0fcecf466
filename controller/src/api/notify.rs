//! `spec.notify`: a webhook that is told what happens to the plan.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A webhook that receives one JSON POST per event of the plan: a run started, an instance
/// maintained or failed, a run finished, a gate (or the global stop) started holding the next
/// instance. Delivery is best effort and never holds maintenance up: each event is tried a few
/// times (on connection errors, timeouts, 429 and 5xx answers) and then dropped with a log
/// line and a metric.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notify {
    /// The Secret, in the plan's own namespace, whose key holds the webhook URL (`http://` or
    /// `https://`). A URL often carries a token (Slack's do), so it is never written in the
    /// plan itself. While the Secret or its key is missing the plan runs anyway, without
    /// notifications, and a Warning Event on the plan says so.
    pub secret_ref: SecretKeyRef,

    /// The body sent: `CloudEvents` (default), a CloudEvents 1.0 JSON event in structured
    /// mode (`Content-Type: application/cloudevents+json`); or `Slack`, a Slack-compatible
    /// `{"text": "..."}` with one readable line (Slack, Mattermost and Rocket.Chat incoming
    /// webhooks take it).
    #[serde(default, skip_serializing_if = "NotifyFormat::is_default")]
    pub format: NotifyFormat,

    /// Which events are sent; when empty (default), all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub events: Vec<NotifyEvent>,
}

/// A key of a Secret in the plan's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name. It is always read from the plan's own namespace: a plan cannot
    /// name another namespace's Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// The key of the Secret's data that holds the URL. Defaults to `url`.
    #[serde(default = "default_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_key() -> String {
    "url".to_owned()
}

/// The body of a notification (`spec.notify.format`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum NotifyFormat {
    /// A CloudEvents 1.0 JSON event.
    #[default]
    CloudEvents,
    /// `{"text": "..."}`, as Slack's incoming webhooks take it.
    Slack,
}

impl NotifyFormat {
    /// True for the default (not written back).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// An event a webhook can be sent (`spec.notify.events`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum NotifyEvent {
    /// A run started its first instance (`dev.pitstop.run.started`).
    RunStarted,
    /// An instance was maintained and is healthy again (`dev.pitstop.instance.maintained`).
    InstanceMaintained,
    /// An instance failed (`dev.pitstop.instance.failed`).
    InstanceFailed,
    /// A run ended, succeeded or failed (`dev.pitstop.run.finished`).
    RunFinished,
    /// A gate of `spec.gates` or the controller's global stop started holding the next
    /// instance (`dev.pitstop.gate.blocked`; the reason says which).
    GateBlocked,
}

impl Notify {
    /// Whether `event` is to be sent.
    pub fn wants(&self, event: NotifyEvent) -> bool {
        self.events.is_empty() || self.events.contains(&event)
    }
}
