//! `spec.selector`: which instances a run maintains, when the plan does not list them.
//!
//! The selector is resolved once, when a run starts (a new plan, a new schedule window, a
//! new generation of a finished plan), from what AWS shows then, and the result is written
//! to `status.selection`. Every later round, and a restarted controller, works from that
//! record and never resolves again mid-run, so the run is stable whatever the fleet does
//! meanwhile; an instance that is gone when its turn comes is skipped (see
//! [`super::reason::GONE`]).

use std::collections::BTreeSet;

use jiff::Timestamp;

use crate::api::{MaintenancePlanSpec, MaintenancePlanStatus, SelectionStatus};
use crate::aws::TargetState;

use super::decision::Transition;
use super::observed::Observed;
use super::preflight::group_name;

/// True when the plan selects its instances and the current run has not resolved them yet.
pub fn needs_resolving(spec: &MaintenancePlanSpec, status: Option<&MaintenancePlanStatus>) -> bool {
    spec.selector.is_some()
        && status
            .and_then(|s| s.selection.as_ref())
            .is_none_or(|s| s.resolved_at.is_none())
}

/// The instances of the current run, in order: `spec.instances`, or with a selector the
/// ones recorded when the run started (none before that).
pub fn run_instances<'a>(spec: &'a MaintenancePlanSpec, status: Option<&'a MaintenancePlanStatus>) -> &'a [String] {
    if spec.selector.is_none() {
        return &spec.instances;
    }
    status
        .and_then(|s| s.selection.as_ref())
        .filter(|s| s.resolved_at.is_some())
        .map_or(&[], |s| s.instances.as_slice())
}

/// Marks the selection as to be resolved again when the run that starts now begins (kept,
/// rather than dropped, for its attempt floor).
pub(super) fn expire(status: &mut MaintenancePlanStatus) {
    let highest = status.instances.iter().map(|i| i.attempt).max().unwrap_or(0);
    if let Some(selection) = status.selection.as_mut() {
        selection.resolved_at = None;
        selection.attempt_floor = selection.attempt_floor.max(highest);
    }
}

/// The members of the plan's target groups: every instance registered in at least one of
/// them (any state but `draining` and `unused`: one on its way out is no longer a member),
/// sorted by ID. None when the groups were not read this round.
pub(super) fn members(spec: &MaintenancePlanSpec, observed: &Observed) -> Option<Vec<String>> {
    let groups = spec.target_groups();
    if !observed.has_groups(&groups) {
        return None;
    }
    let mut ids = BTreeSet::new();
    for arn in groups {
        for target in observed.group(arn).unwrap_or_default() {
            if !matches!(target.state, TargetState::Draining | TargetState::Unused) {
                ids.insert(target.target.instance_id.clone());
            }
        }
    }
    Some(ids.into_iter().collect())
}

/// Resolves the selector from this round's observation into `status.selection`. Returns
/// None (and changes nothing) when what it needs was not read; otherwise the transition
/// that says what was selected.
pub(super) fn resolve(
    spec: &MaintenancePlanSpec,
    status: &mut MaintenancePlanStatus,
    observed: &Observed,
    now: Timestamp,
) -> Option<Transition> {
    let selector = spec.selector.as_ref()?;
    let instances = if selector.target_group_members {
        members(spec, observed)?
    } else {
        return None;
    };
    // Attempt numbers go on across runs (and across an instance leaving the selection and
    // coming back), so a try's command tag is never one an earlier run used.
    let floor = status
        .instances
        .iter()
        .map(|i| i.attempt)
        .chain(status.selection.as_ref().map(|s| s.attempt_floor))
        .max()
        .unwrap_or(0);
    let groups = spec
        .target_groups()
        .into_iter()
        .map(group_name)
        .collect::<Vec<_>>()
        .join(", ");
    let (reason, message, warning) = if instances.is_empty() {
        (
            EMPTY_SELECTION,
            format!("the selector matched no instance: no registered target in {groups}"),
            true,
        )
    } else {
        (
            "Selected",
            format!(
                "the selector matched {} instance{} in {groups}: {}",
                instances.len(),
                if instances.len() == 1 { "" } else { "s" },
                instances.join(", ")
            ),
            false,
        )
    };
    status.selection = Some(SelectionStatus {
        resolved_at: Some(now),
        instances,
        attempt_floor: floor,
        message: Some(message.clone()),
    });
    Some(Transition {
        instance_id: None,
        from: format!("{:?}", status.phase),
        to: format!("{:?}", status.phase),
        reason: reason.to_owned(),
        message,
        warning,
    })
}

/// Reason of a run whose selector matched no instance (the plan's `Failed` condition and
/// Event).
pub const EMPTY_SELECTION: &str = "EmptySelection";

/// True when the current run's selection is resolved and empty.
pub(super) fn is_empty(status: &MaintenancePlanStatus) -> bool {
    status
        .selection
        .as_ref()
        .is_some_and(|s| s.resolved_at.is_some() && s.instances.is_empty())
}
