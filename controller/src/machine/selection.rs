//! `spec.selector`: which instances a run maintains, when the plan does not list them.
//!
//! The selector is resolved once, when a run starts (a new plan, a new schedule window, a
//! new generation of a finished plan), from what AWS shows then, and the result is written
//! to `status.selection`. Every later round, and a restarted controller, works from that
//! record and never resolves again mid-run, so the run is stable whatever the fleet does
//! meanwhile; an instance that is gone when its turn comes is skipped (see
//! [`super::reason::GONE`]).

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use crate::api::{MAX_INSTANCES, MaintenancePlanSpec, MaintenancePlanStatus, Order, SelectionStatus};
use crate::aws::TargetState;

use super::decision::Transition;
use super::observed::Observed;
use super::preflight::group_name;

/// True when a plan's instances (or their order) are worked out when each run starts: it
/// selects them, or orders them by zone.
pub fn resolves_per_run(spec: &MaintenancePlanSpec) -> bool {
    spec.selector.is_some() || needs_zones(spec)
}

/// True when the run needs its instances' Availability Zones: to order them by zone, or to
/// hold `maxUnavailablePerZone`.
pub(crate) fn needs_zones(spec: &MaintenancePlanSpec) -> bool {
    spec.order == Order::ByZone || spec.max_unavailable_per_zone.is_some()
}

/// True when the plan's run resolves its instances and the current run has not yet.
pub fn needs_resolving(spec: &MaintenancePlanSpec, status: Option<&MaintenancePlanStatus>) -> bool {
    resolves_per_run(spec)
        && status
            .and_then(|s| s.selection.as_ref())
            .is_none_or(|s| s.resolved_at.is_none())
}

/// The instances of the current run, in order: `spec.instances`, or with a selector the
/// ones recorded when the run started (none before that).
pub fn run_instances<'a>(spec: &'a MaintenancePlanSpec, status: Option<&'a MaintenancePlanStatus>) -> &'a [String] {
    if !resolves_per_run(spec) {
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
pub fn members(spec: &MaintenancePlanSpec, observed: &Observed) -> Option<Vec<String>> {
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

/// The `InService` instances of the selector's Auto Scaling group, in ID order; None when the
/// group was not read this round.
fn in_service(observed: &Observed) -> Option<Vec<String>> {
    let group = observed.auto_scaling_group.as_ref()?;
    let mut ids: Vec<String> = group
        .instances
        .iter()
        .filter(|i| i.in_service())
        .map(|i| i.instance_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    Some(ids)
}

/// Resolves the run's instances from this round's observation into `status.selection`: the
/// selector's matches (or the listed instances), and with `order: ByZone` their zones, zone
/// after zone. Returns None (and changes nothing) when what it needs was not read; otherwise
/// the transition that says what was resolved.
pub(super) fn resolve(
    spec: &MaintenancePlanSpec,
    status: &mut MaintenancePlanStatus,
    observed: &Observed,
    now: Timestamp,
) -> Option<Transition> {
    let groups = spec
        .target_groups()
        .into_iter()
        .map(group_name)
        .collect::<Vec<_>>()
        .join(", ");
    let (mut instances, source) = match &spec.selector {
        None => (spec.instances.clone(), None),
        Some(selector) if selector.target_group_members => (members(spec, observed)?, Some(format!("in {groups}"))),
        Some(selector) if !selector.tags.is_empty() => (
            observed
                .tagged
                .as_ref()?
                .iter()
                .map(|i| i.instance_id.clone())
                .collect(),
            Some(format!(
                "tagged {}",
                selector
                    .tags
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        ),
        Some(selector) if selector.auto_scaling_group_name.is_some() => (
            in_service(observed)?,
            Some(format!(
                "InService in Auto Scaling group {}",
                selector.auto_scaling_group_name.as_deref().unwrap_or_default()
            )),
        ),
        Some(_) => return None,
    };
    let matched = instances.len();
    if matched > MAX_INSTANCES {
        // Recorded as a count only: the IDs would not fit the status the plan cannot run.
        instances.clear();
    }
    let zones: BTreeMap<String, String> = if needs_zones(spec) {
        let known = match (&observed.zones, &observed.tagged, &observed.auto_scaling_group) {
            (Some(zones), _, _) => zones.clone(),
            (None, Some(tagged), _) => tagged
                .iter()
                .filter_map(|i| Some((i.instance_id.clone(), i.availability_zone.clone()?)))
                .collect(),
            (None, None, Some(group)) => group
                .instances
                .iter()
                .filter_map(|i| Some((i.instance_id.clone(), i.availability_zone.clone()?)))
                .collect(),
            (None, None, None) => return None,
        };
        // Zone after zone, in name order (an instance EC2 did not place last); the usual
        // order within a zone (a stable sort). For `maxUnavailablePerZone` alone the order
        // stays as it is.
        if spec.order == Order::ByZone {
            instances.sort_by(|a, b| {
                let key = |id: &String| (!known.contains_key(id), known.get(id).cloned());
                key(a).cmp(&key(b))
            });
        }
        instances
            .iter()
            .filter_map(|id| Some((id.clone(), known.get(id)?.clone())))
            .collect()
    } else {
        BTreeMap::new()
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
    let by_zone = if zones.is_empty() {
        String::new()
    } else {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for zone in zones.values() {
            *counts.entry(zone.as_str()).or_default() += 1;
        }
        format!(
            "; zone by zone: {}",
            counts
                .iter()
                .map(|(zone, n)| format!("{zone} ({n})"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let (reason, message, warning) = match (&source, instances.is_empty()) {
        (Some(source), true) if matched > MAX_INSTANCES => (
            SELECTION_TOO_LARGE,
            format!(
                "the selector matched {matched} instances {source}, more than the {MAX_INSTANCES} one plan takes \
                 (its status must fit one etcd write): narrow the selector or split the fleet across plans"
            ),
            true,
        ),
        (Some(source), true) => {
            let none = match &spec.selector {
                Some(s) if s.target_group_members => format!("no registered target {source}"),
                Some(s) if s.auto_scaling_group_name.is_some() => format!("no instance {source}"),
                _ => format!("no running instance {source}"),
            };
            (
                EMPTY_SELECTION,
                format!("the selector matched no instance: {none}"),
                true,
            )
        }
        (Some(source), false) => (
            "Selected",
            format!(
                "the selector matched {} instance{} {source}: {}{by_zone}",
                instances.len(),
                if instances.len() == 1 { "" } else { "s" },
                listed(&instances)
            ),
            false,
        ),
        (None, _) if spec.order == Order::ByZone => (
            "Ordered",
            format!("the instances in zone order: {}{by_zone}", listed(&instances)),
            false,
        ),
        (None, _) => (
            "Zoned",
            format!("the instances' zones: {}{by_zone}", listed(&instances)),
            false,
        ),
    };
    status.selection = Some(SelectionStatus {
        resolved_at: Some(now),
        matched: Some(u32::try_from(matched).unwrap_or(u32::MAX)),
        instances,
        attempt_floor: floor,
        message: Some(message.clone()),
        zones,
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

/// Reason of a run whose selector matched more instances than one plan takes
/// ([`MAX_INSTANCES`]).
pub const SELECTION_TOO_LARGE: &str = "SelectionTooLarge";

/// How many instance IDs a message names before it only counts the rest (the IDs are all in
/// `status.selection.instances`; messages also go to Events and conditions).
const LISTED_IDS: usize = 10;

fn listed(instances: &[String]) -> String {
    let named = instances[..instances.len().min(LISTED_IDS)].join(", ");
    match instances.len().saturating_sub(LISTED_IDS) {
        0 => named,
        more => format!("{named} and {more} more"),
    }
}

/// True when the current run's selection is resolved and has nothing to run (it matched no
/// instance, or too many).
pub(super) fn is_empty(status: &MaintenancePlanStatus) -> bool {
    status
        .selection
        .as_ref()
        .is_some_and(|s| s.resolved_at.is_some() && s.instances.is_empty())
}

/// Why the current run's selection fails it, if it does: [`EMPTY_SELECTION`] or
/// [`SELECTION_TOO_LARGE`].
pub(super) fn failure_reason(status: &MaintenancePlanStatus) -> Option<&'static str> {
    if !is_empty(status) {
        return None;
    }
    let matched = status.selection.as_ref().and_then(|s| s.matched).unwrap_or(0);
    Some(if matched as usize > MAX_INSTANCES {
        SELECTION_TOO_LARGE
    } else {
        EMPTY_SELECTION
    })
}
