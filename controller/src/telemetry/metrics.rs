//! Prometheus metrics of the controller, all under the `pitstop_` prefix, exposed in the
//! OpenMetrics text format by [`super::server`].
//!
//! The methods are named for what happened (`observe_transition`, `aws_call`, ...) so that
//! callers record events and this module alone knows the metric names and labels.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

use crate::api::PlanPhase;
use crate::aws::AwsErrorKind;
use crate::machine::Transition;

/// Upper bounds of the `phase_duration_seconds` buckets: from a quick drain (1 s) to a long
/// patch run (2 h).
pub const PHASE_DURATION_BUCKETS: [f64; 12] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

/// Every plan phase, so the `plans` gauge shows a zero rather than no series.
const PLAN_PHASES: [PlanPhase; 4] = [
    PlanPhase::Pending,
    PlanPhase::Running,
    PlanPhase::Succeeded,
    PlanPhase::Failed,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    to: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationErrorLabels {
    operation: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    plan: String,
    instance: String,
}

type SecondsGauge = Gauge<f64, AtomicU64>;

type HistogramFamily = Family<PhaseLabels, Histogram, fn() -> Histogram>;

/// The controller's metrics. Cheap to clone: clones share the same series.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    plans: Family<PhaseLabels, Gauge>,
    /// The phase of every plan we know, so the `plans` gauge is recounted from scratch on
    /// each change rather than moved by increments that a repeated or missed call would skew.
    plan_phases: Mutex<HashMap<String, PlanPhase>>,
    plan_transitions: Family<TransitionLabels, Counter>,
    instance_transitions: Family<TransitionLabels, Counter>,
    phase_duration: HistogramFamily,
    aws_calls: Family<OperationLabels, Counter>,
    aws_errors: Family<OperationErrorLabels, Counter>,
    aws_throttled: Family<OperationLabels, Counter>,
    reconciles: Counter,
    reconcile_errors: Family<KindLabels, Counter>,
    leader: Gauge,
    notifications: Family<OutcomeLabels, Counter>,
    out_of_rotation: Family<InstanceLabels, SecondsGauge>,
    out_of_rotation_since: Family<InstanceLabels, SecondsGauge>,
    out_of_rotation_stretches: Histogram,
    /// Every instance with out-of-rotation series, by `(plan, instance)`, with when it went
    /// out while it is out.
    out_since: Mutex<HashMap<(String, String), Option<Timestamp>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh registry with every pitstop metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pitstop");
        let plans = Family::<PhaseLabels, Gauge>::default();
        registry.register("plans", "MaintenancePlans by phase", plans.clone());
        let plan_transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "plan_transitions",
            "Phase changes of plans, by new phase and reason",
            plan_transitions.clone(),
        );
        let instance_transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "instance_transitions",
            "Phase changes of instances, by new phase and reason",
            instance_transitions.clone(),
        );
        let phase_duration: HistogramFamily = Family::new_with_constructor(phase_duration_histogram);
        registry.register_with_unit(
            "phase_duration",
            "Time an instance spent in a phase, observed when it left the phase",
            Unit::Seconds,
            phase_duration.clone(),
        );
        let aws_calls = Family::<OperationLabels, Counter>::default();
        registry.register("aws_calls", "AWS API calls, by operation", aws_calls.clone());
        let aws_errors = Family::<OperationErrorLabels, Counter>::default();
        registry.register(
            "aws_errors",
            "Failed AWS API calls, by operation and kind",
            aws_errors.clone(),
        );
        let aws_throttled = Family::<OperationLabels, Counter>::default();
        registry.register(
            "aws_throttled",
            "AWS API calls refused for rate, by operation",
            aws_throttled.clone(),
        );
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        let reconcile_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by error kind",
            reconcile_errors.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease, else 0",
            leader.clone(),
        );

        let notifications = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "notifications",
            "Webhook notifications (spec.notify), by outcome: delivered, or dropped after their attempts or on a full queue",
            notifications.clone(),
        );
        // Both series from the start, so a rate over them is defined before the first event.
        for outcome in ["delivered", "dropped"] {
            let _ = notifications.get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            });
        }

        let out_of_rotation = Family::<InstanceLabels, SecondsGauge>::default();
        registry.register_with_unit(
            "instance_out_of_rotation",
            "Time an instance has been out of its target group: while it is out, as of the last round; once back, the whole stretch",
            Unit::Seconds,
            out_of_rotation.clone(),
        );
        let out_of_rotation_since = Family::<InstanceLabels, SecondsGauge>::default();
        registry.register_with_unit(
            "instance_out_of_rotation_since_timestamp",
            "Unix time an instance now out of its target group went out (no series while it is in): time() minus this is the stretch so far, even while no round runs",
            Unit::Seconds,
            out_of_rotation_since.clone(),
        );
        let out_of_rotation_stretches = phase_duration_histogram();
        registry.register_with_unit(
            "out_of_rotation",
            "Time instances spent out of their target group, observed when each came back",
            Unit::Seconds,
            out_of_rotation_stretches.clone(),
        );

        let metrics = Self {
            inner: Arc::new(Inner {
                registry,
                plans,
                plan_phases: Mutex::new(HashMap::new()),
                plan_transitions,
                instance_transitions,
                phase_duration,
                aws_calls,
                aws_errors,
                aws_throttled,
                reconciles,
                reconcile_errors,
                leader,
                notifications,
                out_of_rotation,
                out_of_rotation_since,
                out_of_rotation_stretches,
                out_since: Mutex::new(HashMap::new()),
            }),
        };
        metrics.recount_plans(&HashMap::new());
        metrics
    }

    /// Records the phase of plan `plan_key` (e.g. `namespace/name`), or that it is gone
    /// (None). Calling it again with the same phase changes nothing.
    pub fn set_plan_phase(&self, plan_key: &str, phase: Option<PlanPhase>) {
        let mut phases = self.inner.plan_phases.lock().unwrap_or_else(PoisonError::into_inner);
        match phase {
            Some(phase) => {
                if phases.get(plan_key) == Some(&phase) {
                    return;
                }
                phases.insert(plan_key.to_owned(), phase);
            }
            None => {
                if phases.remove(plan_key).is_none() {
                    return;
                }
            }
        }
        // Still under the lock, so two updates cannot publish their counts out of order.
        self.recount_plans(&phases);
    }

    fn recount_plans(&self, phases: &HashMap<String, PlanPhase>) {
        for phase in PLAN_PHASES {
            let count = phases.values().filter(|p| **p == phase).count();
            self.inner
                .plans
                .get_or_create(&PhaseLabels {
                    phase: plan_phase_name(phase).to_owned(),
                })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Records a phase change from the state machine. `time_in_previous_phase` is how long
    /// the instance spent in `transition.from` (from its `phaseSince`), when known. Plan
    /// transitions (no instance) count in `plan_transitions_total`; their duration is not
    /// observed, as the histogram is about instance phases.
    pub fn observe_transition(&self, transition: &Transition, time_in_previous_phase: Option<Duration>) {
        let labels = TransitionLabels {
            to: transition.to.clone(),
            reason: transition.reason.clone(),
        };
        if transition.instance_id.is_none() {
            self.inner.plan_transitions.get_or_create(&labels).inc();
            return;
        }
        self.inner.instance_transitions.get_or_create(&labels).inc();
        if let Some(spent) = time_in_previous_phase {
            self.inner
                .phase_duration
                .get_or_create(&PhaseLabels {
                    phase: transition.from.clone(),
                })
                .observe(spent.as_secs_f64());
        }
    }

    /// Records whether `instance` of plan `plan_key` is out of its target group after a
    /// round. `went_out` is when the status says it went out, for an instance first seen
    /// out (after a restart); otherwise an instance newly out went out `now`. Coming back
    /// records the whole stretch.
    pub fn observe_rotation(
        &self,
        plan_key: &str,
        instance: &str,
        out: bool,
        went_out: Option<Timestamp>,
        now: Timestamp,
    ) {
        let key = (plan_key.to_owned(), instance.to_owned());
        let labels = InstanceLabels {
            plan: plan_key.to_owned(),
            instance: instance.to_owned(),
        };
        let mut out_since = self.inner.out_since.lock().unwrap_or_else(PoisonError::into_inner);
        let since = if out {
            let entry = out_since.entry(key).or_default();
            let since = *entry.get_or_insert_with(|| went_out.unwrap_or(now).min(now));
            self.inner
                .out_of_rotation_since
                .get_or_create(&labels)
                .set(since.as_millisecond() as f64 / 1000.0);
            since
        } else {
            let Some(since) = out_since.get_mut(&key).and_then(Option::take) else {
                return;
            };
            self.inner.out_of_rotation_since.remove(&labels);
            since
        };
        let stretch = now.duration_since(since).as_secs_f64().max(0.0);
        self.inner.out_of_rotation.get_or_create(&labels).set(stretch);
        if !out {
            self.inner.out_of_rotation_stretches.observe(stretch);
        }
    }

    /// Forgets the instances of a deleted plan.
    pub fn forget_plan_instances(&self, plan_key: &str) {
        let mut out_since = self.inner.out_since.lock().unwrap_or_else(PoisonError::into_inner);
        out_since.retain(|(plan, instance), _| {
            if plan != plan_key {
                return true;
            }
            let labels = InstanceLabels {
                plan: plan.clone(),
                instance: instance.clone(),
            };
            self.inner.out_of_rotation.remove(&labels);
            self.inner.out_of_rotation_since.remove(&labels);
            false
        });
    }

    /// Records one AWS API call: `Ok(())` if it succeeded, else how it failed.
    pub fn aws_call(&self, operation: &str, outcome: Result<(), AwsErrorKind>) {
        let op = OperationLabels {
            operation: operation.to_owned(),
        };
        self.inner.aws_calls.get_or_create(&op).inc();
        if let Err(kind) = outcome {
            self.inner
                .aws_errors
                .get_or_create(&OperationErrorLabels {
                    operation: operation.to_owned(),
                    kind: aws_error_kind_name(kind).to_owned(),
                })
                .inc();
            if kind == AwsErrorKind::Throttled {
                self.inner.aws_throttled.get_or_create(&op).inc();
            }
        }
    }

    /// Records that a reconcile ran (whatever its outcome).
    pub fn reconciled(&self) {
        self.inner.reconciles.inc();
    }

    /// Records the end of one notification: delivered to its webhook, or dropped.
    pub fn notification(&self, delivered: bool) {
        let outcome = if delivered { "delivered" } else { "dropped" };
        self.inner
            .notifications
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Records a failed reconcile of category `kind` (e.g. `ErrorKind::as_str()`).
    pub fn reconcile_error(&self, kind: &str) {
        self.inner
            .reconcile_errors
            .get_or_create(&KindLabels { kind: kind.to_owned() })
            .inc();
    }

    /// Records whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.inner.leader.set(i64::from(leading));
    }

    /// All metrics in the OpenMetrics text format, `# EOF` included.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail; an error could only come from an encoder, and a
        // partial page is more use to a scraper than none.
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry) {
            tracing::warn!(%error, "could not encode the metrics");
        }
        text
    }
}

fn phase_duration_histogram() -> Histogram {
    Histogram::new(PHASE_DURATION_BUCKETS)
}

fn plan_phase_name(phase: PlanPhase) -> &'static str {
    match phase {
        PlanPhase::Pending => "Pending",
        PlanPhase::Running => "Running",
        PlanPhase::Succeeded => "Succeeded",
        PlanPhase::Failed => "Failed",
        PlanPhase::Suspended => "Suspended",
    }
}

fn aws_error_kind_name(kind: AwsErrorKind) -> &'static str {
    kind.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::InstancePhase;

    fn lines(metrics: &Metrics) -> Vec<String> {
        metrics.encode().lines().map(str::to_owned).collect()
    }

    fn has(metrics: &Metrics, line: &str) -> bool {
        lines(metrics).iter().any(|l| l == line)
    }

    #[test]
    fn fresh_registry_shows_zeroed_plans_and_leader_and_ends_with_eof() {
        let metrics = Metrics::new();
        let text = metrics.encode();
        for phase in ["Pending", "Running", "Succeeded", "Failed"] {
            assert!(
                has(&metrics, &format!("pitstop_plans{{phase=\"{phase}\"}} 0")),
                "{text}"
            );
        }
        assert!(has(&metrics, "pitstop_leader 0"), "{text}");
        assert!(has(&metrics, "pitstop_reconciles_total 0"), "{text}");
        assert!(text.contains("# TYPE pitstop_plans gauge"), "{text}");
        assert!(text.contains("# TYPE pitstop_reconciles counter"), "{text}");
        // prometheus-client leaves a labelled family out until its first series exists.
        assert!(!text.contains("pitstop_instance_transitions"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn time_out_of_rotation_per_instance() {
        let metrics = Metrics::new();
        let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).expect("valid timestamp");
        metrics.observe_rotation("ns/a", "i-1", false, None, at(0));
        assert!(!metrics.encode().contains("i-1"), "never out: no series");
        metrics.observe_rotation("ns/a", "i-1", true, None, at(10));
        metrics.observe_rotation("ns/a", "i-1", true, None, at(14));
        let series = "{plan=\"ns/a\",instance=\"i-1\"}";
        assert!(
            has(
                &metrics,
                &format!("pitstop_instance_out_of_rotation_seconds{series} 4.0")
            ),
            "{}",
            metrics.encode()
        );
        assert!(
            has(
                &metrics,
                &format!("pitstop_instance_out_of_rotation_since_timestamp_seconds{series} 1800000010.0")
            ),
            "{}",
            metrics.encode()
        );
        metrics.observe_rotation("ns/a", "i-1", false, None, at(17));
        assert!(
            has(
                &metrics,
                &format!("pitstop_instance_out_of_rotation_seconds{series} 7.0")
            ),
            "{}",
            metrics.encode()
        );
        assert!(
            !metrics.encode().contains("since_timestamp_seconds{"),
            "back in: no since series"
        );
        assert!(
            has(&metrics, "pitstop_out_of_rotation_seconds_count 1"),
            "{}",
            metrics.encode()
        );

        // First seen out after a restart: the status tells since when.
        metrics.observe_rotation("ns/a", "i-2", true, Some(at(0)), at(30));
        assert!(
            has(
                &metrics,
                "pitstop_instance_out_of_rotation_seconds{plan=\"ns/a\",instance=\"i-2\"} 30.0"
            ),
            "{}",
            metrics.encode()
        );
        metrics.forget_plan_instances("ns/a");
        assert!(!metrics.encode().contains("plan=\"ns/a\""), "{}", metrics.encode());
    }

    #[test]
    fn plans_gauge_is_recounted_not_double_counted() {
        let metrics = Metrics::new();
        metrics.set_plan_phase("ns/a", Some(PlanPhase::Pending));
        metrics.set_plan_phase("ns/a", Some(PlanPhase::Running));
        metrics.set_plan_phase("ns/a", Some(PlanPhase::Running));
        metrics.set_plan_phase("ns/b", Some(PlanPhase::Running));
        metrics.set_plan_phase("ns/c", Some(PlanPhase::Succeeded));
        assert!(has(&metrics, "pitstop_plans{phase=\"Pending\"} 0"));
        assert!(has(&metrics, "pitstop_plans{phase=\"Running\"} 2"));
        assert!(has(&metrics, "pitstop_plans{phase=\"Succeeded\"} 1"));

        metrics.set_plan_phase("ns/b", None);
        metrics.set_plan_phase("ns/b", None);
        metrics.set_plan_phase("ns/unknown", None);
        metrics.set_plan_phase("ns/a", Some(PlanPhase::Failed));
        assert!(has(&metrics, "pitstop_plans{phase=\"Running\"} 0"));
        assert!(has(&metrics, "pitstop_plans{phase=\"Succeeded\"} 1"));
        assert!(has(&metrics, "pitstop_plans{phase=\"Failed\"} 1"));
    }

    #[test]
    fn clones_share_the_series() {
        let metrics = Metrics::new();
        let clone = metrics.clone();
        clone.reconciled();
        clone.reconciled();
        clone.set_leader(true);
        assert!(has(&metrics, "pitstop_reconciles_total 2"));
        assert!(has(&metrics, "pitstop_leader 1"));
        metrics.set_leader(false);
        assert!(has(&clone, "pitstop_leader 0"));
    }

    #[test]
    fn instance_transitions_count_by_phase_and_reason_and_time_the_left_phase() {
        let metrics = Metrics::new();
        let drain = Transition::instance(
            "i-1",
            InstancePhase::Pending,
            InstancePhase::Draining,
            "Deregistered",
            "m",
        );
        let reboot = Transition::instance("i-1", InstancePhase::Draining, InstancePhase::Rebooting, "Drained", "m");
        metrics.observe_transition(&drain, None);
        metrics.observe_transition(&reboot, Some(Duration::from_secs(40)));
        metrics.observe_transition(&reboot, Some(Duration::from_millis(500)));
        let text = metrics.encode();
        assert!(
            has(
                &metrics,
                "pitstop_instance_transitions_total{to=\"Draining\",reason=\"Deregistered\"} 1"
            ),
            "{text}"
        );
        assert!(
            has(
                &metrics,
                "pitstop_instance_transitions_total{to=\"Rebooting\",reason=\"Drained\"} 2"
            ),
            "{text}"
        );
        assert!(
            has(&metrics, "pitstop_phase_duration_seconds_count{phase=\"Draining\"} 2"),
            "{text}"
        );
        assert!(
            has(&metrics, "pitstop_phase_duration_seconds_sum{phase=\"Draining\"} 40.5"),
            "{text}"
        );
        assert!(
            has(
                &metrics,
                "pitstop_phase_duration_seconds_bucket{le=\"1.0\",phase=\"Draining\"} 1"
            ),
            "{text}"
        );
        assert!(
            has(
                &metrics,
                "pitstop_phase_duration_seconds_bucket{le=\"60.0\",phase=\"Draining\"} 2"
            ),
            "{text}"
        );
        assert!(
            has(
                &metrics,
                "pitstop_phase_duration_seconds_bucket{le=\"7200.0\",phase=\"Draining\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE pitstop_phase_duration_seconds histogram"),
            "{text}"
        );
        assert!(text.contains("# UNIT pitstop_phase_duration_seconds seconds"), "{text}");
        // No observation without a duration: Pending has no histogram series.
        assert!(
            !text.contains("pitstop_phase_duration_seconds_count{phase=\"Pending\"}"),
            "{text}"
        );
    }

    #[test]
    fn plan_transitions_are_counted_apart_from_instances() {
        let metrics = Metrics::new();
        let plan = Transition {
            instance_id: None,
            from: "Pending".to_owned(),
            to: "Running".to_owned(),
            reason: "Started".to_owned(),
            message: String::new(),
            warning: false,
        };
        metrics.observe_transition(&plan, Some(Duration::from_secs(3)));
        let text = metrics.encode();
        assert!(
            has(
                &metrics,
                "pitstop_plan_transitions_total{to=\"Running\",reason=\"Started\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("pitstop_instance_transitions_total{"), "{text}");
        assert!(!text.contains("pitstop_phase_duration_seconds_count"), "{text}");
    }

    #[test]
    fn aws_calls_errors_and_throttles_by_operation() {
        let metrics = Metrics::new();
        metrics.aws_call("DeregisterTargets", Ok(()));
        metrics.aws_call("DeregisterTargets", Err(AwsErrorKind::Throttled));
        metrics.aws_call("DeregisterTargets", Err(AwsErrorKind::Transient));
        metrics.aws_call("SendCommand", Err(AwsErrorKind::Rejected));
        let text = metrics.encode();
        for line in [
            "pitstop_aws_calls_total{operation=\"DeregisterTargets\"} 3",
            "pitstop_aws_calls_total{operation=\"SendCommand\"} 1",
            "pitstop_aws_errors_total{operation=\"DeregisterTargets\",kind=\"throttled\"} 1",
            "pitstop_aws_errors_total{operation=\"DeregisterTargets\",kind=\"transient\"} 1",
            "pitstop_aws_errors_total{operation=\"SendCommand\",kind=\"rejected\"} 1",
            "pitstop_aws_throttled_total{operation=\"DeregisterTargets\"} 1",
        ] {
            assert!(has(&metrics, line), "missing {line}\n{text}");
        }
        assert!(
            !text.contains("pitstop_aws_throttled_total{operation=\"SendCommand\"}"),
            "{text}"
        );
    }

    #[test]
    fn reconciles_and_errors_by_kind() {
        let metrics = Metrics::new();
        for _ in 0..3 {
            metrics.reconciled();
        }
        metrics.reconcile_error("throttled");
        metrics.reconcile_error("kube");
        metrics.reconcile_error("kube");
        assert!(has(&metrics, "pitstop_reconciles_total 3"));
        assert!(has(&metrics, "pitstop_reconcile_errors_total{kind=\"throttled\"} 1"));
        assert!(has(&metrics, "pitstop_reconcile_errors_total{kind=\"kube\"} 2"));
    }
}
