//! What the controller adds to the recorded status before a round, from outside the plan's
//! own record: the global stop (`heldBy`) and an approval it sees on the plan (`approvedRun`).
//! The machine then decides from the status alone, as it does for everything else.

use crate::api::{MaintenancePlan, MaintenancePlanStatus};
use crate::machine::ANNOTATION_APPROVE;

/// `recorded` with `heldBy` set to `held_by` (a new plan held gets a status for it).
pub(super) fn with_hold(
    recorded: Option<MaintenancePlanStatus>,
    held_by: Option<String>,
) -> Option<MaintenancePlanStatus> {
    match (recorded, held_by) {
        (Some(mut status), held_by) => {
            status.held_by = held_by;
            Some(status)
        }
        (None, Some(held_by)) => Some(MaintenancePlanStatus {
            held_by: Some(held_by),
            ..MaintenancePlanStatus::default()
        }),
        (None, None) => None,
    }
}

/// `recorded` with the current run approved when the plan's `pitstop.dev/approve`
/// annotation names its run ID. Any other value approves nothing (an older run's ID kept in
/// Git, a typo); an approval once recorded stays for the rest of the run.
pub(super) fn with_approval(
    plan: &MaintenancePlan,
    recorded: Option<MaintenancePlanStatus>,
) -> Option<MaintenancePlanStatus> {
    let approved = plan
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_APPROVE))
        .map(|value| value.trim());
    recorded.map(|mut status| {
        if approved.is_some() && approved == status.run_id.as_deref() {
            status.approved_run.clone_from(&status.run_id);
        }
        status
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MaintenancePlanSpec;

    fn annotated(value: Option<&str>) -> MaintenancePlan {
        let mut plan = MaintenancePlan::new("web", MaintenancePlanSpec::default());
        plan.metadata.annotations =
            value.map(|v| [(ANNOTATION_APPROVE.to_owned(), v.to_owned())].into_iter().collect());
        plan
    }

    fn waiting(run_id: &str) -> Option<MaintenancePlanStatus> {
        Some(MaintenancePlanStatus {
            run_id: Some(run_id.to_owned()),
            ..MaintenancePlanStatus::default()
        })
    }

    #[test]
    fn only_the_current_run_id_approves() {
        let approved = |plan: &MaintenancePlan| with_approval(plan, waiting("run-2")).and_then(|s| s.approved_run);
        assert_eq!(approved(&annotated(Some("run-2"))).as_deref(), Some("run-2"));
        assert_eq!(approved(&annotated(Some(" run-2 "))).as_deref(), Some("run-2"));
        assert_eq!(approved(&annotated(Some("run-1"))), None, "an older run's ID");
        assert_eq!(approved(&annotated(None)), None);
        assert_eq!(
            with_approval(&annotated(Some("run-2")), None),
            None,
            "nothing to approve yet"
        );
    }

    #[test]
    fn the_global_stop_is_set_and_cleared() {
        let held = with_hold(None, Some("held".to_owned())).and_then(|s| s.held_by);
        assert_eq!(held.as_deref(), Some("held"));
        let cleared = with_hold(
            Some(MaintenancePlanStatus {
                held_by: Some("held".to_owned()),
                ..MaintenancePlanStatus::default()
            }),
            None,
        );
        assert_eq!(cleared.and_then(|s| s.held_by), None);
        assert_eq!(with_hold(None, None), None);
    }
}
