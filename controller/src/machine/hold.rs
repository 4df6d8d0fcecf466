//! Holding a plan before its next instance: by its own `spec.suspend`, or by the controller's
//! global stop (recorded in `status.heldBy` by the controller before each round). Pure.

use crate::api::{MaintenancePlanSpec, MaintenancePlanStatus};

/// Reason of the conditions of a plan the global stop holds.
pub const GLOBAL_STOP: &str = "GlobalStop";

/// True when no new instance may start: the plan is suspended, or the global stop holds it.
pub fn is_held(spec: &MaintenancePlanSpec, status: Option<&MaintenancePlanStatus>) -> bool {
    spec.suspend || status.is_some_and(|s| s.held_by.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspended_or_stopped_globally_is_held() {
        let spec = MaintenancePlanSpec::default();
        let stopped = MaintenancePlanStatus {
            held_by: Some("held by the global stop".to_owned()),
            ..MaintenancePlanStatus::default()
        };
        assert!(!is_held(&spec, None));
        assert!(!is_held(&spec, Some(&MaintenancePlanStatus::default())));
        assert!(is_held(&spec, Some(&stopped)));
        let suspended = MaintenancePlanSpec {
            suspend: true,
            ..MaintenancePlanSpec::default()
        };
        assert!(is_held(&suspended, None));
    }
}
