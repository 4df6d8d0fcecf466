//! What every reconcile shares: the clients, the clock, and the little memory the
//! controller keeps between rounds (error counts for backoff, statuses it just wrote).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::events::Reporter;

use super::backoff::ErrorBackoff;
use super::global_stop::GlobalStop;
use super::notify::Notifications;
use super::recovery::ApiserverRecovery;
use super::status_cache::StatusCache;
use super::target_group_lock::TargetGroupLocks;
use super::tenancy::Tenancy;
use crate::telemetry::Metrics;

/// The field manager of every status write, and the name events are reported under.
pub const MANAGER: &str = "pitstop";

/// The time source of the reconcile. The system clock in production; tests pass the fake
/// AWS's clock so that timeouts and waits follow the scenario, not the wall.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Shared state of the controller, handed to every reconcile.
pub struct Context {
    /// The Kubernetes client.
    pub client: kube::Client,
    /// AWS clients by region.
    pub aws: Arc<dyn crate::aws::AwsProvider>,
    /// Who publishes the Kubernetes Events (each round has its own recorder: see `events::PlanEvents`).
    pub reporter: Reporter,
    /// Wait between looks at AWS while work is in flight.
    pub poll_interval: Duration,
    /// The clock.
    pub clock: Clock,
    /// Prometheus metrics: reconciles, errors by kind, plan phases, transitions.
    pub metrics: Metrics,
    /// Per-plan error counts, for exponential backoff in the error policy.
    pub(crate) backoff: ErrorBackoff,
    /// Statuses written but maybe not yet seen through the watch.
    pub(crate) statuses: StatusCache,
    /// The per-target-group Leases: one instance out of a group at a time, across plans.
    pub locks: TargetGroupLocks,
    /// The MaintenancePolicies: what each namespace's plans may do (checked before AWS).
    pub tenancy: Tenancy,
    /// Notices apiserver outages, so that the plans are reconciled as soon as it is back.
    pub recovery: ApiserverRecovery,
    /// The global stop: holds every plan before its next instance while it is set.
    pub stop: GlobalStop,
    /// The readers of `spec.gates` (Prometheus), with the controller-wide defaults.
    pub gates: crate::gates::GateReaders,
    /// Target group health read once per poll tick and shared by every plan.
    pub group_reads: crate::aws::shared_reads::SharedGroupReads,
    /// The webhook deliveries of `spec.notify`.
    pub notify: Notifications,
}

impl Context {
    /// The AWS APIs for `region`, every call counted in the metrics; a target group's health
    /// is shared with the other plans for one poll tick (and then counted once).
    pub async fn apis(&self, region: &str) -> crate::aws::AwsApis {
        let metrics = self.metrics.clone();
        let metered = crate::aws::metered::metered(
            self.aws.for_region(region).await,
            Arc::new(move |operation, outcome| metrics.aws_call(operation, outcome)),
        );
        self.group_reads.wrap(region, metered, self.clock.clone())
    }

    /// A context on the system clock, reporting events as `pitstop` from this host (the
    /// pod name, in a cluster).
    pub fn new(client: kube::Client, aws: Arc<dyn crate::aws::AwsProvider>, poll_interval: Duration) -> Self {
        Self::with_reporter(client, aws, poll_interval, Reporter::from(MANAGER))
    }

    /// A context with an explicit event reporter (tests use a fixed one, independent of
    /// the host name).
    pub fn with_reporter(
        client: kube::Client,
        aws: Arc<dyn crate::aws::AwsProvider>,
        poll_interval: Duration,
        reporter: Reporter,
    ) -> Self {
        Self {
            reporter,
            locks: TargetGroupLocks::new(client.default_namespace(), poll_interval),
            client,
            aws,
            poll_interval,
            clock: Arc::new(Timestamp::now),
            metrics: Metrics::default(),
            backoff: ErrorBackoff::default(),
            statuses: StatusCache::default(),
            tenancy: Tenancy::default(),
            recovery: ApiserverRecovery::default(),
            stop: GlobalStop::default(),
            gates: crate::gates::GateReaders::http(None),
            group_reads: crate::aws::shared_reads::SharedGroupReads::new(poll_interval),
            notify: Notifications::default(),
        }
    }

    /// Replaces the readers of `spec.gates`.
    #[must_use]
    pub fn with_gates(mut self, gates: crate::gates::GateReaders) -> Self {
        self.gates = gates;
        self
    }

    /// Sends `spec.notify`'s webhooks through `notifier` (by default: over HTTP(S)).
    #[must_use]
    pub fn with_notifier(mut self, notifier: crate::notify::Notifier) -> Self {
        self.notify = Notifications::new(notifier);
        self
    }

    /// Replaces the clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Records into `metrics` (shared with the metrics endpoint) instead of a registry of
    /// its own.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Keeps the target group Leases in `namespace` (the controller's own; by default the
    /// client's default namespace).
    #[must_use]
    pub fn with_lock_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.locks = TargetGroupLocks::new(namespace, self.poll_interval);
        self
    }

    /// Checks plans against these policies (by default: none, and the restricted default).
    #[must_use]
    pub fn with_tenancy(mut self, tenancy: Tenancy) -> Self {
        self.tenancy = tenancy;
        self
    }

    /// Holds every plan while this stop ConfigMap says so (by default: no global stop).
    #[must_use]
    pub fn with_global_stop(mut self, stop: GlobalStop) -> Self {
        self.stop = stop;
        self
    }

    /// The time now, by the context's clock.
    pub fn now(&self) -> Timestamp {
        (self.clock)()
    }
}
