//! `spec.gates`: signals from outside the target group that hold a plan's next instance.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Signals from outside the target group that must be quiet before pitstop takes the next
/// instance out. While one is not, the plan waits: the instance in flight (if any) is
/// finished and put back, no new one starts, and the wait does not count against
/// `preflight.gateTimeoutSeconds`. The plan goes on by itself once the signal is quiet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Gates {
    /// Hold while matching Prometheus alerts fire (as kured's `--prometheus-url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusGate>,

    /// Hold while any of these CloudWatch alarms is in `ALARM` (as CodeDeploy's alarm
    /// configuration). The alarms are read in the plan's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_watch_alarms: Option<CloudWatchAlarmsGate>,
}

/// CloudWatch alarms (metric or composite, `DescribeAlarms`) that hold the plan while any of
/// them is in `ALARM`. `OK` and `INSUFFICIENT_DATA` let it go on.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudWatchAlarmsGate {
    /// The alarms' names, in the plan's region: 1 to 10, as SSM's and CodeDeploy's alarm
    /// configurations take. An alarm that does not exist counts as unreadable.
    #[schemars(length(min = 1, max = 10), inner(length(min = 1, max = 255)))]
    pub names: Vec<String>,

    /// Also stop the instance that is out of rotation when one of the alarms goes into
    /// `ALARM`: its maintenance command is cancelled (CancelCommand; SSM also gets the alarms
    /// as the command's `AlarmConfiguration`, so it stops the command itself even while
    /// pitstop is away), and the instance fails with `AbortedByAlarm` and is put back (under
    /// `onFailure: LeaveOut`, only if its maintenance had not begun). Defaults to false: the
    /// instance in flight is finished and put back, and only the next one waits.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abort_in_flight: bool,

    /// When the alarms cannot be read (or one does not exist): `false` (default) holds the
    /// plan, as an alarm that cannot be seen might be in `ALARM`; `true` goes on as if none
    /// were (SSM's `IgnorePollAlarmFailure`, which the command's alarm configuration also
    /// gets).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_read_failures: bool,
}

/// A Prometheus server whose alerts (`GET /api/v1/alerts`) hold the plan while any that
/// match is firing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusGate {
    /// The Prometheus server's base URL, e.g. `http://prometheus.monitoring:9090`. When
    /// unset, the controller's `--prometheus-url` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,

    /// Regular expressions for the alert names that hold the plan, each matched against the
    /// whole `alertname` (as PromQL's `=~`). When empty, every alert counts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub alert_names: Vec<String>,

    /// Label matchers an alert must satisfy, all of them, in Alertmanager's syntax:
    /// `severity="critical"`, `team!="batch"`, `env=~"prod|staging"`, `job!~"test.*"`
    /// (the quotes are optional). Regular expressions match the whole value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub matchers: Vec<String>,

    /// Also hold on `pending` alerts (their `for` has not elapsed yet). Defaults to false:
    /// only `firing` alerts hold.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_pending: bool,

    /// When Prometheus cannot be read: `false` (default) holds the plan, as an alert that
    /// cannot be seen might be firing; `true` goes on as if no alert fired (as SSM's
    /// `IgnorePollAlarmFailure`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_read_failures: bool,
}
