//! Command-line arguments of `pitstop controller`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::cli::logging::LogFormat;
use crate::tenancy::DefaultPolicy;

/// Arguments of `pitstop controller`: run as a Kubernetes controller over MaintenancePlans.
#[derive(clap::Args, Clone, Debug)]
pub struct ControllerArgs {
    /// Watch MaintenancePlans in this namespace only; all namespaces when omitted. A
    /// namespaced install needs it: its Role cannot list plans cluster-wide.
    #[arg(long, env = "PITSTOP_NAMESPACE")]
    pub namespace: Option<String>,

    /// Wait between looks at AWS while an instance drains, reboots or warms up
    /// (e.g. `5s`, `1m 30s`).
    #[arg(long, env = "PITSTOP_POLL_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,

    /// Most plans reconciled at once. Each round in flight holds an apiserver connection
    /// (HTTP/1.1: one request per connection) and its own buffers; unbounded, a thousand
    /// plans woken together opened hundreds of connections. A round is short (a few
    /// apiserver and AWS calls), so a busy fleet's rounds queue for milliseconds.
    #[arg(long, env = "PITSTOP_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "PITSTOP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Address of the HTTP server for `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "PITSTOP_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Take part in leader election on a Lease, so that of several replicas only one acts.
    #[arg(long, env = "PITSTOP_LEADER_ELECTION")]
    pub leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "PITSTOP_LEASE_NAME", default_value = "pitstop-controller")]
    pub lease_name: String,

    /// Namespace of the leader-election Lease; defaults to the pod's own namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Who this replica is in the Lease; defaults to the pod name.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// What the plans of a namespace that no MaintenancePolicy selects may do: `restricted`
    /// (the built-in graceful reboot and AWS-RunPatchBaseline only, no free-form commands)
    /// or `unrestricted` (any document and parameters: everyone who may create a plan may run
    /// code as root on every instance the controller's IAM role reaches).
    #[arg(long, env = "PITSTOP_DEFAULT_POLICY", value_enum, default_value_t = DefaultPolicy::Restricted)]
    pub default_policy: DefaultPolicy,

    /// The global stop: a ConfigMap in the controller's namespace (the Lease namespace) whose
    /// `pitstop.dev/paused` annotation holds every plan before its next instance, its value
    /// saying why. Unset: no global stop.
    #[arg(long, env = "PITSTOP_STOP_CONFIGMAP")]
    pub stop_configmap: Option<String>,

    /// The Prometheus server of plans whose `spec.gates.prometheus` names no URL
    /// (e.g. `http://prometheus-operated.monitoring:9090`).
    #[arg(long, env = "PITSTOP_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        args: ControllerArgs,
    }

    #[test]
    fn defaults_watch_all_namespaces_every_five_seconds() {
        let parsed = Harness::try_parse_from(["pitstop"]).expect("no arguments are needed");
        assert_eq!(parsed.args.namespace, None);
        assert_eq!(parsed.args.poll_interval, Duration::from_secs(5));
        assert_eq!(parsed.args.log_format, LogFormat::Text);
        assert_eq!(parsed.args.http_addr.port(), 8080);
        assert!(!parsed.args.leader_election);
        assert_eq!(parsed.args.lease_name, "pitstop-controller");
        assert_eq!(parsed.args.default_policy, DefaultPolicy::Restricted, "safe by default");
    }

    #[test]
    fn parses_humantime_durations_and_json_logs() {
        let parsed = Harness::try_parse_from([
            "pitstop",
            "--namespace",
            "ops",
            "--poll-interval",
            "1m 30s",
            "--log-format",
            "json",
        ])
        .expect("valid arguments");
        assert_eq!(parsed.args.namespace.as_deref(), Some("ops"));
        assert_eq!(parsed.args.poll_interval, Duration::from_secs(90));
        assert_eq!(parsed.args.log_format, LogFormat::Json);
        let open = Harness::try_parse_from(["pitstop", "--default-policy", "unrestricted"]).expect("valid");
        assert_eq!(open.args.default_policy, DefaultPolicy::Unrestricted);
        assert!(Harness::try_parse_from(["pitstop", "--default-policy", "open"]).is_err());
        assert!(Harness::try_parse_from(["pitstop", "--poll-interval", "soon"]).is_err());
    }
}
