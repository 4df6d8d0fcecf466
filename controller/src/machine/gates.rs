//! `spec.gates` in the decision to start the next instance. Pure.

use crate::api::MaintenancePlanSpec;
use crate::gates::GateReading;

use super::observed::Observed;
use super::reason;

/// Why the plan's gates hold its next instance, or None when they let it go (or the plan has
/// none). A gate that was not read this round holds it: nothing starts on a reading that was
/// not made.
pub(super) fn holding(spec: &MaintenancePlanSpec, observed: &Observed) -> Option<Held> {
    let gate = spec.gates.as_ref()?.prometheus.as_ref()?;
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
    Some(Held {
        reason,
        message: format!("waiting ({reason}): {why}"),
    })
}

/// A gate holding the next instance.
pub(super) struct Held {
    /// `AlertFiring` or `GateUnreadable`.
    pub reason: &'static str,
    /// The instance's message.
    pub message: String,
}

impl Held {
    /// Whether `message` (the instance's last) already said this gate holds it: then this
    /// round is no news and makes no Event.
    pub fn already_said(&self, message: Option<&str>) -> bool {
        message.is_some_and(|m| m.starts_with(&format!("waiting ({})", self.reason)))
    }
}
