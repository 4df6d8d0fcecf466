//! `approval: Manual`: each run waits before its first instance until someone approves it by
//! its run ID. Pure: the controller records an approval it sees on the plan
//! (`status.approvedRun`) before the round; the machine only compares IDs.

use jiff::Timestamp;

use crate::api::{Approval, InstancePhase, MaintenancePlanSpec, MaintenancePlanStatus};

/// Reason of the Progressing condition while a run waits for its approval.
pub const AWAITING_APPROVAL: &str = "AwaitingApproval";

/// The annotation that approves a run: its value is the run ID.
pub const ANNOTATION_APPROVE: &str = "pitstop.dev/approve";

/// True while the current run needs an approval it has not got: `approval: Manual`, not a
/// dry run, an instance left to start, and no approval for this run's ID. (A run with
/// nothing left to do, e.g. a new generation whose instances are all done, needs none.)
pub fn awaits_approval(spec: &MaintenancePlanSpec, status: &MaintenancePlanStatus) -> bool {
    status.instances.iter().any(|i| i.phase == InstancePhase::Pending) && !may_start(spec, Some(status))
}

/// True when the current run may start instances as far as approval goes: it needs none
/// (`Automatic`, a dry run), or its run ID is approved.
pub fn may_start(spec: &MaintenancePlanSpec, status: Option<&MaintenancePlanStatus>) -> bool {
    spec.approval == Approval::Automatic
        || spec.dry_run
        || status.is_some_and(|s| s.run_id.is_some() && s.approved_run == s.run_id)
}

/// Gives the run an ID if it has none yet: the time it first waited, in seconds, which a later
/// run (a later window, a later generation) never has again.
pub(super) fn name_run(status: &mut MaintenancePlanStatus, now: Timestamp) {
    status.run_id.get_or_insert_with(|| format!("run-{}", now.as_second()));
}

/// Forgets the run's ID and approval: a new run needs a new approval.
pub(super) fn forget(status: &mut MaintenancePlanStatus) {
    status.run_id = None;
    status.approved_run = None;
}

/// The status sentence of a run that waits for its approval.
pub(super) fn waiting_message(status: &MaintenancePlanStatus) -> String {
    let id = status.run_id.as_deref().unwrap_or_default();
    format!("awaiting approval of run {id}: annotate the plan with {ANNOTATION_APPROVE}={id} to start it")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::InstanceStatus;

    fn manual() -> MaintenancePlanSpec {
        MaintenancePlanSpec {
            approval: Approval::Manual,
            ..MaintenancePlanSpec::default()
        }
    }

    fn pending() -> MaintenancePlanStatus {
        MaintenancePlanStatus {
            instances: vec![InstanceStatus::default()],
            ..MaintenancePlanStatus::default()
        }
    }

    #[test]
    fn a_manual_run_waits_until_its_own_id_is_approved() {
        let mut status = pending();
        assert!(!awaits_approval(&MaintenancePlanSpec::default(), &status));
        assert!(awaits_approval(&manual(), &status));
        name_run(&mut status, Timestamp::from_second(1_700_000_000).unwrap_or_default());
        assert_eq!(status.run_id.as_deref(), Some("run-1700000000"));
        status.approved_run = Some("run-1600000000".to_owned());
        assert!(awaits_approval(&manual(), &status), "an older run's approval");
        status.approved_run = status.run_id.clone();
        assert!(!awaits_approval(&manual(), &status));
        forget(&mut status);
        assert!(awaits_approval(&manual(), &status), "a new run needs a new approval");
    }

    #[test]
    fn dry_runs_and_runs_with_nothing_to_start_do_not_wait() {
        let mut done = pending();
        done.instances[0].phase = InstancePhase::Registered;
        assert!(!awaits_approval(&manual(), &done));
        let dry = MaintenancePlanSpec {
            dry_run: true,
            ..manual()
        };
        assert!(!awaits_approval(&dry, &pending()));
    }
}
