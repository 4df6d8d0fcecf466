//! `spec.maxUnavailable` and `spec.maxUnavailablePerZone`: how many of a plan's instances
//! may be out at once, and which one goes next when some are.
//!
//! The bound is the plan's own: every instance out is written ahead in its status (Draining
//! before the DeregisterTargets call), so counting the active entries of the status is
//! exact after any crash. Across plans, the target group's turn (a Lease in the controller)
//! is held by one plan at a time while it has instances out, so the group never has more out
//! than the holder's bound; a holder that sees another plan waiting starts no new instance,
//! lets its wave come back, and gives the turn up.

use std::collections::BTreeSet;

use crate::api::{InstancePhase, MaintenancePlanSpec, MaintenancePlanStatus};
use crate::aws::{TargetHealth, TargetState};

use super::observed::{Observed, is_active};

/// The most instances of the plan out at once in this run: 1 without `maxUnavailable`, the
/// count, or the percentage as resolved when an instance last started.
pub(crate) fn limit(spec: &MaintenancePlanSpec, status: Option<&MaintenancePlanStatus>) -> usize {
    match spec.max_unavailable {
        None => 1,
        Some(crate::api::MaxUnavailable::Count(count)) => count.max(1) as usize,
        Some(crate::api::MaxUnavailable::Percent(_)) => {
            status.and_then(|s| s.max_unavailable).map_or(1, |n| n.max(1) as usize)
        }
    }
}

/// `maxUnavailable` resolved against what this round read: a percentage of the registered
/// targets of the plan's smallest target group, counting the plan's own instances out as
/// registered (once deregistered they are no longer listed). None without `maxUnavailable`
/// or when a group was not read.
pub(super) fn resolve(spec: &MaintenancePlanSpec, status: &MaintenancePlanStatus, observed: &Observed) -> Option<u32> {
    let max = spec.max_unavailable?;
    let smallest = spec
        .target_groups()
        .iter()
        .map(|arn| Some(registered(observed.group(arn)?, out_ids(spec, status))))
        .collect::<Option<Vec<usize>>>()?
        .into_iter()
        .min()?;
    Some(max.resolve(smallest))
}

/// How many targets a group has registered: the ones it lists (but `unused`), and the plan's
/// own instances out, which it no longer lists once they are deregistered.
pub(super) fn registered<'a>(group: &'a [TargetHealth], own_out: impl IntoIterator<Item = &'a str>) -> usize {
    group
        .iter()
        .filter(|t| t.state != TargetState::Unused)
        .map(|t| t.target.instance_id.as_str())
        .chain(own_out)
        .collect::<BTreeSet<&str>>()
        .len()
}

/// The plan's instances out of rotation or on their way back (the ones the bound counts).
pub(super) fn out_ids<'a>(
    spec: &'a MaintenancePlanSpec,
    status: &'a MaintenancePlanStatus,
) -> impl Iterator<Item = &'a str> + 'a {
    status
        .instances
        .iter()
        .filter(move |i| is_active(spec, i))
        .map(|i| i.instance_id.as_str())
}

/// Whether the bound leaves room for one more instance.
pub(super) fn has_room(spec: &MaintenancePlanSpec, status: &MaintenancePlanStatus) -> bool {
    out_ids(spec, status).count() < limit(spec, Some(status))
}

/// Whether an instance of the plan came back (finished) since the oldest one now out left:
/// the wave is being refilled. While another plan waits for the group, a holder fills its
/// wave up to its bound but does not refill it, so the turn passes once the wave is back.
pub(super) fn refilling(spec: &MaintenancePlanSpec, status: &MaintenancePlanStatus) -> bool {
    let Some(wave_began) = status
        .instances
        .iter()
        .filter(|i| is_active(spec, i))
        // When it left: its start (Draining's phase_since) or, in a later phase, when the
        // group first showed it draining, whichever is earlier.
        .filter_map(|i| [i.draining_since, i.phase_since].into_iter().flatten().min())
        .min()
    else {
        return false;
    };
    status
        .instances
        .iter()
        .filter(|i| i.phase.is_finished() && !is_active(spec, i))
        .filter_map(|i| i.phase_since)
        .any(|done| done > wave_began)
}

/// Whether `zone`'s share of the instances out is below `maxUnavailablePerZone`. Instances
/// whose zone is not known count as one zone of their own (the safe side).
fn zone_has_room(spec: &MaintenancePlanSpec, status: Option<&MaintenancePlanStatus>, zone: Option<&str>) -> bool {
    let Some(per_zone) = spec.max_unavailable_per_zone else {
        return true;
    };
    let out_in_zone = status.map_or(0, |s| {
        s.instances
            .iter()
            .filter(|i| is_active(spec, i) && i.zone.as_deref() == zone)
            .count()
    });
    out_in_zone < per_zone as usize
}

/// The next instance of the run to start (or, in a dry run, to check): the first that has
/// not started whose zone has room under `maxUnavailablePerZone`.
pub(crate) fn next_to_start<'a>(
    spec: &'a MaintenancePlanSpec,
    status: Option<&'a MaintenancePlanStatus>,
) -> Option<&'a str> {
    let instances = status.map(|s| s.instances.as_slice()).unwrap_or_default();
    super::selection::run_instances(spec, status)
        .iter()
        .filter(|id| {
            instances
                .iter()
                .find(|i| &i.instance_id == *id)
                .is_none_or(|i| i.phase == InstancePhase::Pending && !(spec.dry_run && i.dry_run.is_some()))
        })
        .find(|id| {
            let zone = instances
                .iter()
                .find(|i| &i.instance_id == *id)
                .and_then(|i| i.zone.as_deref());
            zone_has_room(spec, status, zone)
        })
        .map(String::as_str)
}

/// Whether Pending instances wait only because their zones are full.
pub(super) fn zones_full(spec: &MaintenancePlanSpec, status: &MaintenancePlanStatus) -> bool {
    spec.max_unavailable_per_zone.is_some()
        && status.instances.iter().any(|i| i.phase == InstancePhase::Pending)
        && next_to_start(spec, Some(status)).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{InstanceStatus, MaxUnavailable};

    fn instance(id: &str, phase: InstancePhase, zone: &str) -> InstanceStatus {
        InstanceStatus {
            instance_id: id.to_owned(),
            phase,
            out_of_rotation: phase != InstancePhase::Pending,
            zone: Some(zone.to_owned()),
            ..InstanceStatus::default()
        }
    }

    fn spec(ids: &[&str]) -> MaintenancePlanSpec {
        MaintenancePlanSpec {
            target_group_arn: "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef"
                .to_owned(),
            instances: ids.iter().map(|s| (*s).to_owned()).collect(),
            max_unavailable: Some(MaxUnavailable::Count(3)),
            max_unavailable_per_zone: Some(1),
            ..MaintenancePlanSpec::default()
        }
    }

    #[test]
    fn a_full_zone_lets_a_later_instance_in_another_zone_go_first() {
        let spec = spec(&["i-0000000000000000a", "i-0000000000000000b", "i-0000000000000000c"]);
        let status = MaintenancePlanStatus {
            instances: vec![
                instance("i-0000000000000000a", InstancePhase::Rebooting, "eu-west-1a"),
                instance("i-0000000000000000b", InstancePhase::Pending, "eu-west-1a"),
                instance("i-0000000000000000c", InstancePhase::Pending, "eu-west-1b"),
            ],
            // A per-zone limit resolves the run's instances (and their zones) when it starts.
            selection: Some(crate::api::SelectionStatus {
                resolved_at: Some(jiff::Timestamp::UNIX_EPOCH),
                instances: spec.instances.clone(),
                ..crate::api::SelectionStatus::default()
            }),
            ..MaintenancePlanStatus::default()
        };
        assert_eq!(next_to_start(&spec, Some(&status)), Some("i-0000000000000000c"));
        assert!(has_room(&spec, &status));
        let mut both_out = status.clone();
        both_out.instances[2].phase = InstancePhase::Draining;
        assert_eq!(next_to_start(&spec, Some(&both_out)), None);
        assert!(zones_full(&spec, &both_out));
    }

    #[test]
    fn without_max_unavailable_the_limit_is_one() {
        let mut spec = spec(&["i-0000000000000000a"]);
        spec.max_unavailable = None;
        assert_eq!(limit(&spec, None), 1);
        spec.max_unavailable = Some(MaxUnavailable::Percent(50));
        assert_eq!(limit(&spec, None), 1, "a percentage not yet resolved allows one");
        let resolved = MaintenancePlanStatus {
            max_unavailable: Some(4),
            ..MaintenancePlanStatus::default()
        };
        assert_eq!(limit(&spec, Some(&resolved)), 4);
    }
}
