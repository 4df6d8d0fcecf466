//! `spec.gates` in the decisions to start the next instance and, for alarms with
//! `abortInFlight`, to stop the one that is out. Pure.

use crate::api::{CloudWatchAlarmsGate, InstancePhase, InstanceStatus, MaintenancePlanSpec};
use crate::gates::GateReading;

use super::observed::Observed;
use super::reason;

/// Why the plan's gates hold its next instance, or None when they let it go (or the plan has
/// none). A gate that was not read this round holds it: nothing starts on a reading that was
/// not made. The alarms are looked at first: an AWS alarm is the account's own word.
pub(super) fn holding(spec: &MaintenancePlanSpec, observed: &Observed) -> Option<Held> {
    let gates = spec.gates.as_ref()?;
    if let Some(gate) = &gates.cloud_watch_alarms
        && let Some(held) = alarms_holding(gate, observed.alarms.as_ref())
    {
        return Some(held);
    }
    let gate = gates.prometheus.as_ref()?;
    let (reason, why) = match &observed.gates {
        None => (reason::ALERT_FIRING, "Prometheus not read yet".to_owned()),
        Some(GateReading::Quiet) => return None,
        Some(GateReading::Holding(what)) => (reason::ALERT_FIRING, format!("{what} in Prometheus")),
        Some(GateReading::Unreadable(_)) if gate.ignore_read_failures => return None,
        Some(GateReading::Unreadable(why)) => (
            reason::GATE_UNREADABLE,
            format!(
                "Prometheus cannot be read, so an alert might be firing ({why}; \
                 spec.gates.prometheus.ignoreReadFailures: true goes on regardless)"
            ),
        ),
    };
    Some(Held::new(reason, why))
}

fn alarms_holding(gate: &CloudWatchAlarmsGate, reading: Option<&GateReading>) -> Option<Held> {
    let (reason, why) = match reading {
        None => (reason::ALARM_FIRING, "CloudWatch alarms not read yet".to_owned()),
        Some(GateReading::Quiet) => return None,
        Some(GateReading::Holding(what)) => (reason::ALARM_FIRING, what.clone()),
        Some(GateReading::Unreadable(_)) if gate.ignore_read_failures => return None,
        Some(GateReading::Unreadable(why)) => (
            reason::GATE_UNREADABLE,
            format!(
                "the CloudWatch alarms cannot be read, so one might be in ALARM ({why}; \
                 spec.gates.cloudWatchAlarms.ignoreReadFailures: true goes on regardless)"
            ),
        ),
    };
    Some(Held::new(reason, why))
}

/// The alarms that stop an instance in flight (`abortInFlight: true`), if the plan has any.
pub(crate) fn aborting_alarms(spec: &MaintenancePlanSpec) -> Option<&CloudWatchAlarmsGate> {
    spec.gates
        .as_ref()
        .and_then(|g| g.cloud_watch_alarms.as_ref())
        .filter(|gate| gate.abort_in_flight)
}

/// Whether the alarms are read while `instance` is in flight: under `abortInFlight`, while
/// it is out and its maintenance has not finished (draining, or its command running). Once
/// the maintenance is done, stopping would gain nothing: the instance goes back anyway.
pub(super) fn aborts_in(spec: &MaintenancePlanSpec, instance: &InstanceStatus) -> bool {
    aborting_alarms(spec).is_some()
        && instance.out_of_rotation
        && matches!(instance.phase, InstancePhase::Draining | InstancePhase::Rebooting)
}

/// What stops the instance in flight this round: the alarms in `ALARM`, in a few words. None
/// when nothing does (no `abortInFlight`, not read, quiet, or unreadable: an alarm that
/// cannot be read does not stop a maintenance under way, it only holds the next one).
pub(super) fn aborting(spec: &MaintenancePlanSpec, instance: &InstanceStatus, observed: &Observed) -> Option<String> {
    if !aborts_in(spec, instance) {
        return None;
    }
    match observed.alarms.as_ref() {
        Some(GateReading::Holding(what)) => Some(what.clone()),
        _ => None,
    }
}

/// A gate holding the next instance.
pub(super) struct Held {
    /// `AlertFiring`, `AlarmFiring` or `GateUnreadable`.
    pub reason: &'static str,
    /// The instance's message.
    pub message: String,
}

impl Held {
    fn new(reason: &'static str, why: String) -> Self {
        Self {
            reason,
            message: format!("waiting ({reason}): {why}"),
        }
    }

    /// Whether `message` (the instance's last) already said this gate holds it: then this
    /// round is no news and makes no Event.
    pub fn already_said(&self, message: Option<&str>) -> bool {
        message.is_some_and(|m| m.starts_with(&format!("waiting ({})", self.reason)))
    }
}
