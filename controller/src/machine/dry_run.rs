//! `spec.dryRun`: the read-only checks for every instance, and what would be done, written
//! to the status. Never an action: nothing here can touch AWS.

use jiff::Timestamp;

use crate::api::{InstancePhase, MaintenancePlanSpec, MaintenancePlanStatus, PlanPhase};

use super::decision::Requeue;
use super::instance::Step;
use super::observed::Observed;
use super::preflight;

/// Checks the next instance that has no dry-run result yet; finishes the plan when all
/// have one (Succeeded when none would be blocked, Failed otherwise).
pub(super) fn rehearse_next(
    spec: &MaintenancePlanSpec,
    status: &mut MaintenancePlanStatus,
    observed: &Observed,
    now: Timestamp,
) -> Step {
    let Some(next) = status
        .instances
        .iter_mut()
        .find(|i| i.phase == InstancePhase::Pending && i.dry_run.is_none())
    else {
        let blocked = status
            .instances
            .iter()
            .any(|i| i.dry_run.as_deref().is_some_and(|r| r.starts_with("blocked")));
        status.phase = if blocked {
            PlanPhase::Failed
        } else {
            PlanPhase::Succeeded
        };
        status.finished_at.get_or_insert(now);
        status.current_instance = None;
        return Step::default();
    };
    if !observed.has_groups(&spec.target_groups()) {
        return Step {
            requeue: Some(Requeue::Poll),
            ..Step::default()
        };
    }
    status.current_instance = Some(next.instance_id.clone());
    next.dry_run = Some(match preflight::check(spec, &next.instance_id, observed, &[]) {
        Ok(groups) => {
            let what = match &spec.maintenance {
                None => "the graceful reboot (AWS-RunShellScript, exit 194)".to_owned(),
                Some(command) => command.document_name.clone(),
            };
            let verify = spec
                .verify
                .as_ref()
                .map(|v| format!(", verify with {}", v.document_name))
                .unwrap_or_default();
            let from = match groups.as_slice() {
                [one] => one.port.map(|p| format!(" (port {p})")).unwrap_or_default(),
                several => format!(
                    " from {}",
                    several
                        .iter()
                        .map(|g| {
                            let port = g.port.map(|p| format!(" (port {p})")).unwrap_or_default();
                            format!("{}{port}", super::preflight::group_name(&g.target_group_arn))
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            format!(
                "would deregister{from}, wait for the drain, run {what}{verify}, register again and wait for healthy; gates open"
            )
        }
        Err(closed) => format!("blocked ({}): {}", closed.reason, closed.message),
    });
    Step {
        requeue: Some(Requeue::Now),
        ..Step::default()
    }
}
