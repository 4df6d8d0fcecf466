//! `spec.autoScaling`: keeping an instance's EC2 Auto Scaling group from replacing it (or
//! scaling it in) while pitstop has it out. Pure, like the rest of the machine.
//!
//! The instance steps in `instance.rs` call in here at a few points: before the drain
//! (Standby: lower MinSize if needed, EnterStandby, wait for `Standby`; SuspendProcesses:
//! suspend), before the registration (ExitStandby), before the instance counts as back
//! (wait for `InService`, restore MinSize, resume), and on the failure paths (the same undoing).
//!
//! Crash safety: every call is recorded in the instance's `autoScaling` status before it is
//! made, and what it did is confirmed by reading the group afterwards, never assumed from an
//! answer. EnterStandby and ExitStandby are refused by AWS when repeated, and an EnterStandby
//! that happened with its answer lost must not be made again (the capacity would drop twice):
//! after an attempt, the lifecycle state is read for [`STANDBY_LOOKUP_GRACE`] before the call
//! is made again. The MinSize changes set an absolute value computed from the recorded
//! original, and suspending or resuming a process twice changes nothing, so those are repeated
//! freely until the read shows them done.

use std::time::Duration;

use jiff::Timestamp;

use crate::api::auto_scaling::SUSPENDED_PROCESSES;
use crate::api::{
    AutoScalingMode, InstanceAutoScaling, InstancePhase, InstanceStatus, MaintenancePlanSpec, MaintenancePlanStatus,
};
use crate::aws::{AsgMembership, AutoScalingGroup, AwsError};

use super::decision::{Action, AutoScalingCall, Requeue, Transition};
use super::instance::{Step, fail};
use super::observed::{Observed, Wants, is_active, needs_return};
use super::reason;

/// How long an EnterStandby or ExitStandby that got no answer is followed by reading the
/// instance's lifecycle state before it is asked again. AWS changes the state within the call
/// (`EnteringStandby`, `Pending`), so a state unchanged after this long means the call never
/// took effect.
pub const STANDBY_LOOKUP_GRACE: Duration = Duration::from_secs(90);

/// What observe reads about an instance's Auto Scaling group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AutoScalingReads {
    /// The instance (DescribeAutoScalingInstances).
    pub instance_id: String,
    /// The group recorded in the instance's status while it is in flight: it is read
    /// (DescribeAutoScalingGroups) even if the membership is gone. None: the group of the
    /// membership, if any.
    pub group_name: Option<String>,
}

/// What observe read about the instance's Auto Scaling group.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceGroupView {
    /// The instance's membership (DescribeAutoScalingInstances); None: in no group.
    pub membership: Option<AsgMembership>,
    /// Its group (DescribeAutoScalingGroups); None: in no group.
    pub group: Option<AutoScalingGroup>,
}

impl InstanceGroupView {
    fn lifecycle(&self) -> Option<&str> {
        self.membership.as_ref().map(|m| m.lifecycle_state.as_str())
    }
}

/// What to read about the Auto Scaling group of the instance `wants` names: the recorded
/// group of an instance in flight with an `autoScaling` record; the membership of one about
/// to start, unless the mode is `Ignore` (or a dry run, which changes nothing). An instance in
/// flight without a record (in no group, or started by an older pitstop) needs nothing, and
/// nor does one whose maintenance runs (Rebooting, the long phase: nothing of the group is
/// done then, and the Auto Scaling API's request rate is shared with the whole account).
pub fn reads(
    spec: &MaintenancePlanSpec,
    status: Option<&MaintenancePlanStatus>,
    wants: &Wants,
) -> Option<AutoScalingReads> {
    let instance_id = wants.instance_id.clone()?;
    let instance = status.and_then(|s| s.instances.iter().find(|i| i.instance_id == instance_id));
    match instance {
        Some(i) if i.phase == InstancePhase::Rebooting => None,
        Some(i) if i.phase != InstancePhase::Pending && is_active(spec, i) => {
            i.auto_scaling.as_ref().map(|record| AutoScalingReads {
                instance_id,
                group_name: Some(record.group_name.clone()),
            })
        }
        _ if spec.dry_run || spec.auto_scaling.mode == AutoScalingMode::Ignore => None,
        _ => Some(AutoScalingReads {
            instance_id,
            group_name: None,
        }),
    }
}

/// Whether what the start of an instance needs from Auto Scaling was read this round.
pub(super) fn read_for_start(spec: &MaintenancePlanSpec, observed: &Observed) -> bool {
    spec.dry_run || spec.auto_scaling.mode == AutoScalingMode::Ignore || observed.instance_group.is_some()
}

/// At the write-ahead start of an instance: records its group and the mode that applies to
/// it, when it is a member and the mode is not `Ignore`. Returns whether it did: then the
/// first call is the group's (see [`advance`]), not DeregisterTargets.
pub(super) fn on_start(spec: &MaintenancePlanSpec, instance: &mut InstanceStatus, observed: &Observed) -> bool {
    instance.auto_scaling = None;
    if spec.auto_scaling.mode == AutoScalingMode::Ignore {
        return false;
    }
    let Some(membership) = observed.instance_group.as_ref().and_then(|v| v.membership.as_ref()) else {
        return false;
    };
    instance.auto_scaling = Some(InstanceAutoScaling {
        group_name: membership.group_name.clone(),
        mode: spec.auto_scaling.mode,
        ..InstanceAutoScaling::default()
    });
    let what = match spec.auto_scaling.mode {
        AutoScalingMode::SuspendProcesses => "suspending its processes",
        _ => "putting it in Standby",
    };
    instance.message = Some(format!(
        "member of Auto Scaling group {}: {what} before it leaves the target groups",
        membership.group_name
    ));
    true
}

/// True while an instance that is done in the plan's eyes (failed and not to be put back:
/// `onFailure: LeaveOut`, its registration refused, or failed on the healthy timeout once
/// back) still has something of its group to undo: processes pitstop suspended, or a MinSize
/// lowered for a Standby that is over (or never happened).
pub(crate) fn cleanup_pending(spec: &MaintenancePlanSpec, instance: &InstanceStatus) -> bool {
    // Skipped: gone while out (see `gone`); the group's processes and MinSize are still to restore.
    matches!(instance.phase, InstancePhase::Failed | InstancePhase::Skipped)
        && !needs_return(spec, instance)
        && instance.auto_scaling.as_ref().is_some_and(left_out_work)
}

fn left_out_work(record: &InstanceAutoScaling) -> bool {
    processes_to_resume(record) || (min_size_to_restore(record).is_some() && !left_in_standby(record))
}

/// In Standby and not to be taken out by pitstop: its decrement (and so the lowered MinSize)
/// stays, or restoring MinSize would make the group launch an instance in its place.
fn left_in_standby(record: &InstanceAutoScaling) -> bool {
    record.entered_standby && !record.exited_standby
}

fn processes_to_resume(record: &InstanceAutoScaling) -> bool {
    record.suspended_processes.as_ref().is_some_and(|p| !p.is_empty()) && !record.processes_resumed
}

fn min_size_to_restore(record: &InstanceAutoScaling) -> Option<i32> {
    record.original_min_size.filter(|_| !record.min_size_restored)
}

fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    now.duration_since(since).try_into().unwrap_or_default()
}

fn wait(instance: &mut InstanceStatus, message: String) -> Option<Step> {
    instance.message = Some(message);
    Some(Step {
        action: None,
        requeue: Some(Requeue::Poll),
        transitions: Vec::new(),
    })
}

fn call(instance: &InstanceStatus, group_name: &str, call: AutoScalingCall) -> Option<Step> {
    Some(Step {
        action: Some(Action::AutoScaling {
            group_name: group_name.to_owned(),
            instance_id: instance.instance_id.clone(),
            call,
        }),
        // The next round reads what the call did.
        requeue: Some(Requeue::Now),
        transitions: Vec::new(),
    })
}

/// The group's steps that come before the instance's own in the current phase: before the
/// drain, and on the failure paths. None: go on with the instance steps. `drained`: every
/// group the instance leaves shows it `unused`.
pub(super) fn advance(
    spec: &MaintenancePlanSpec,
    instance: &mut InstanceStatus,
    observed: &Observed,
    drained: bool,
    now: Timestamp,
) -> Option<Step> {
    let record = instance.auto_scaling.clone()?;
    let returning = needs_return(spec, instance);
    let step_needed = match instance.phase {
        InstancePhase::Draining => true,
        InstancePhase::Failed if returning => record.mode == AutoScalingMode::Standby,
        // Failed and done, or gone while out (see `gone`): what is left of the group's changes.
        InstancePhase::Failed | InstancePhase::Skipped => left_out_work(&record),
        _ => false,
    };
    if !step_needed {
        return None;
    }
    let Some(view) = observed.instance_group.as_ref() else {
        return wait(instance, format!("reading Auto Scaling group {}", record.group_name));
    };
    match (instance.phase, record.mode) {
        (InstancePhase::Draining, AutoScalingMode::Standby) => {
            enter_standby(spec, instance, record, view, drained, now)
        }
        (InstancePhase::Draining, _) => suspend(instance, record, view),
        (_, AutoScalingMode::Standby) if returning => {
            confirm_standby(instance, view, now);
            exit_standby(instance, view, now)
        }
        _ => finish(instance, view),
    }
}

/// Standby before the drain: MinSize lowered if the group is at it, EnterStandby, and once the
/// targets are drained, the wait for `Standby`.
fn enter_standby(
    spec: &MaintenancePlanSpec,
    instance: &mut InstanceStatus,
    mut record: InstanceAutoScaling,
    view: &InstanceGroupView,
    drained: bool,
    now: Timestamp,
) -> Option<Step> {
    let group_name = record.group_name.clone();
    let lifecycle = view.lifecycle().unwrap_or("not a member");
    if confirm_standby(instance, view, now) {
        record = instance.auto_scaling.clone()?;
    }
    if record.entered_standby {
        // EnterStandby deregisters from the group's own target groups; the instance steps
        // take it out of any other of the plan's and wait for `unused` in all. Maintenance
        // starts only once the group says `Standby` too.
        if drained && lifecycle != "Standby" {
            return wait_within_drain_limit(
                spec,
                instance,
                format!("drained; waiting for Auto Scaling group {group_name} to show it Standby (now {lifecycle})"),
                now,
            );
        }
        return None;
    }
    if let Some(at) = record.standby_requested_at
        && elapsed(at, now) <= STANDBY_LOOKUP_GRACE
    {
        return wait(
            instance,
            format!(
                "EnterStandby got no answer; reading its lifecycle state (now {lifecycle}) for up to {}s before \
                 asking again",
                STANDBY_LOOKUP_GRACE.as_secs()
            ),
        );
    }
    if lifecycle != "InService" {
        return wait_within_drain_limit(
            spec,
            instance,
            format!("waiting for it to be InService in Auto Scaling group {group_name} (now {lifecycle})"),
            now,
        );
    }
    let Some(group) = view.group.as_ref() else {
        return wait(instance, format!("reading Auto Scaling group {group_name}"));
    };
    let slot = instance.auto_scaling.as_mut()?;
    if group.desired_capacity - 1 < group.min_size {
        // EnterStandby with a decrement would be refused: lower MinSize by one, from the
        // original recorded before the first call (so a repeat sets the same value).
        let original = *slot.original_min_size.get_or_insert(group.min_size);
        if group.min_size > original - 1 {
            instance.message = Some(format!(
                "lowering MinSize of Auto Scaling group {group_name} from {original} to {} for the Standby",
                original - 1
            ));
            return call(instance, &group_name, AutoScalingCall::SetMinSize(original - 1));
        }
    }
    // Write-ahead: recorded before the call, so a lost answer is followed by reading.
    slot.standby_requested_at = Some(now);
    slot.standby_asked = true;
    instance.message = Some(format!(
        "entering Standby in Auto Scaling group {group_name} (desired capacity {} → {})",
        group.desired_capacity,
        group.desired_capacity - 1
    ));
    call(instance, &group_name, AutoScalingCall::EnterStandby)
}

/// Waits, saying why, unless the instance has been Draining longer than its drain limit plus
/// the look-up grace: then it fails `DrainTimeout` (a lifecycle hook, say, that never lets
/// it go), and the return path puts back what was done.
fn wait_within_drain_limit(
    spec: &MaintenancePlanSpec,
    instance: &mut InstanceStatus,
    message: String,
    now: Timestamp,
) -> Option<Step> {
    let limit = Duration::from_secs(instance.drain_timeout_seconds.unwrap_or(0).into()) + STANDBY_LOOKUP_GRACE;
    let waited = instance
        .phase_since
        .map(|since| elapsed(since, now))
        .unwrap_or_default();
    if waited <= limit {
        return wait(instance, message);
    }
    let message = format!("{message}, still after {}s", limit.as_secs());
    let transition = fail(spec, instance, reason::DRAIN_TIMEOUT, message, now);
    Some(Step {
        action: None,
        requeue: Some(Requeue::Now),
        transitions: vec![transition],
    })
}

/// Records that the group shows the instance in (or entering) Standby after pitstop asked.
/// Returns whether that is new.
fn confirm_standby(instance: &mut InstanceStatus, view: &InstanceGroupView, _now: Timestamp) -> bool {
    let Some(record) = instance.auto_scaling.as_mut() else {
        return false;
    };
    let standing_by = matches!(view.lifecycle(), Some("EnteringStandby" | "Standby"));
    if record.entered_standby || !record.standby_asked || !standing_by {
        return false;
    }
    record.entered_standby = true;
    true
}

/// SuspendProcesses before the drain: the ones not suspended already, recorded before the call.
fn suspend(instance: &mut InstanceStatus, record: InstanceAutoScaling, view: &InstanceGroupView) -> Option<Step> {
    let group_name = record.group_name.clone();
    let Some(group) = view.group.as_ref() else {
        return wait(instance, format!("reading Auto Scaling group {group_name}"));
    };
    let ours = match record.suspended_processes {
        Some(ours) => ours,
        None => {
            // Decided once: after the call, every one of them reads suspended, and only the
            // ones pitstop suspended may be resumed.
            let ours: Vec<String> = SUSPENDED_PROCESSES
                .iter()
                .filter(|p| !group.suspended_processes.iter().any(|s| s == *p))
                .map(|p| (*p).to_owned())
                .collect();
            instance.auto_scaling.as_mut()?.suspended_processes = Some(ours.clone());
            ours
        }
    };
    if ours.iter().all(|p| group.suspended_processes.contains(p)) {
        return None;
    }
    instance.message = Some(format!(
        "suspending {} in Auto Scaling group {group_name} while it is out",
        ours.join(", ")
    ));
    call(instance, &group_name, AutoScalingCall::SuspendProcesses(ours))
}

/// Before the instance is registered again (and on the return path after a failure):
/// ExitStandby of an instance pitstop put in Standby. None once the group shows it back.
fn exit_standby(instance: &mut InstanceStatus, view: &InstanceGroupView, now: Timestamp) -> Option<Step> {
    let record = instance.auto_scaling.clone()?;
    let group_name = record.group_name.clone();
    let lifecycle = view.lifecycle().unwrap_or("not a member");
    if record.standby_asked && !record.entered_standby {
        // Asked for, never seen: within the grace the call may still show; after it, it
        // never happened and there is nothing to undo.
        if let Some(at) = record.standby_requested_at
            && elapsed(at, now) <= STANDBY_LOOKUP_GRACE
            && lifecycle == "InService"
        {
            return wait(
                instance,
                format!("EnterStandby got no answer; reading its lifecycle state (now {lifecycle})"),
            );
        }
        return None;
    }
    if !record.entered_standby || record.exited_standby {
        return None;
    }
    match lifecycle {
        "Standby" => {
            if let Some(at) = record.exit_requested_at
                && elapsed(at, now) <= STANDBY_LOOKUP_GRACE
            {
                return wait(
                    instance,
                    format!("ExitStandby got no answer; reading its lifecycle state (now {lifecycle})"),
                );
            }
            instance.auto_scaling.as_mut()?.exit_requested_at = Some(now);
            instance.message = Some(format!("leaving Standby in Auto Scaling group {group_name}"));
            call(instance, &group_name, AutoScalingCall::ExitStandby)
        }
        "EnteringStandby" => wait(
            instance,
            format!("waiting for Standby in Auto Scaling group {group_name} before leaving it"),
        ),
        _ => {
            // Pending or InService: back (or on its way); anything else (terminated) has
            // nothing left to exit.
            instance.auto_scaling.as_mut()?.exited_standby = true;
            None
        }
    }
}

/// Before the instance registers again after its maintenance: ExitStandby (the group then
/// registers it in its own target groups; the instance steps register it in any other).
pub(super) fn before_register(instance: &mut InstanceStatus, observed: &Observed, now: Timestamp) -> Option<Step> {
    let record = instance.auto_scaling.as_ref()?;
    if record.mode != AutoScalingMode::Standby || !record.entered_standby || record.exited_standby {
        return None;
    }
    let Some(view) = observed.instance_group.as_ref() else {
        let group = record.group_name.clone();
        return wait(instance, format!("reading Auto Scaling group {group}"));
    };
    exit_standby(instance, view, now)
}

/// Before the instance counts as back (healthy again, or its return after a failure decided):
/// `InService` in the group, MinSize restored, processes resumed. None when nothing is left.
pub(super) fn before_done(instance: &mut InstanceStatus, observed: &Observed) -> Option<Step> {
    let record = instance.auto_scaling.as_ref()?;
    let standby_back = record.entered_standby && record.exited_standby;
    if !standby_back && min_size_to_restore(record).is_none() && !processes_to_resume(record) {
        return None;
    }
    let Some(view) = observed.instance_group.as_ref() else {
        let group = record.group_name.clone();
        return wait(instance, format!("reading Auto Scaling group {group}"));
    };
    if standby_back && view.lifecycle() == Some("Pending") {
        let group = record.group_name.clone();
        return wait(
            instance,
            format!("healthy; waiting for InService in Auto Scaling group {group} (now Pending)"),
        );
    }
    finish(instance, view)
}

/// Restores MinSize and resumes the processes pitstop suspended, one call a round, each
/// confirmed by a read before it counts as done.
fn finish(instance: &mut InstanceStatus, view: &InstanceGroupView) -> Option<Step> {
    let record = instance.auto_scaling.clone()?;
    let group_name = record.group_name.clone();
    let Some(group) = view.group.as_ref() else {
        // The group is gone: nothing of it to restore.
        let slot = instance.auto_scaling.as_mut()?;
        slot.min_size_restored = slot.original_min_size.is_some();
        slot.processes_resumed = slot.suspended_processes.is_some();
        return None;
    };
    let left_in_standby = instance.phase == InstancePhase::Failed && left_in_standby(&record);
    if let Some(original) = min_size_to_restore(&record).filter(|_| !left_in_standby) {
        if group.min_size == original {
            instance.auto_scaling.as_mut()?.min_size_restored = true;
        } else {
            instance.message = Some(format!(
                "restoring MinSize of Auto Scaling group {group_name} to {original}"
            ));
            return call(instance, &group_name, AutoScalingCall::SetMinSize(original));
        }
    }
    if processes_to_resume(&record) {
        let ours = record.suspended_processes.clone().unwrap_or_default();
        if ours.iter().any(|p| group.suspended_processes.contains(p)) {
            instance.message = Some(format!(
                "resuming {} in Auto Scaling group {group_name} (the processes pitstop suspended)",
                ours.join(", ")
            ));
            return call(instance, &group_name, AutoScalingCall::ResumeProcesses(ours));
        }
        instance.auto_scaling.as_mut()?.processes_resumed = true;
    }
    None
}

/// An Auto Scaling call AWS refused for good. EnterStandby, a MinSize lowering and
/// SuspendProcesses fail the instance (the return path undoes what was done); a refused
/// ExitStandby is followed by reading the lifecycle state and, if it is still `Standby`,
/// asked again after the grace period, with a warning each time (the instance must not be
/// forgotten in Standby); a refused restore or resume is given up with a warning rather than
/// retried forever.
pub(super) fn refused(
    spec: &MaintenancePlanSpec,
    instance: &mut InstanceStatus,
    call: &AutoScalingCall,
    message: String,
    now: Timestamp,
) -> Option<Transition> {
    let record = instance.auto_scaling.as_mut()?;
    match call {
        AutoScalingCall::EnterStandby => {
            // Refused: it certainly did not happen.
            record.standby_requested_at = None;
            Some(fail(spec, instance, reason::AWS_REJECTED, message, now))
        }
        AutoScalingCall::ExitStandby => {
            // Refused when the instance is no longer in Standby (an earlier ExitStandby whose
            // answer was lost took effect) or the group is at its MaxSize. Nothing changed:
            // the lifecycle state is read for the grace period (it shows the first case), and
            // the call is made again after it, with this warning each time.
            record.exit_requested_at = Some(now);
            let message = format!("{message}; reading its lifecycle state before asking again");
            instance.message = Some(message.clone());
            let mut transition = Transition::instance(
                &instance.instance_id,
                instance.phase,
                instance.phase,
                "ExitStandbyRefused",
                message,
            );
            transition.warning = true;
            Some(transition)
        }
        AutoScalingCall::SetMinSize(size) if record.original_min_size == Some(*size) => {
            record.min_size_restored = true;
            Some(given_up(instance, message))
        }
        AutoScalingCall::ResumeProcesses(_) => {
            record.processes_resumed = true;
            Some(given_up(instance, message))
        }
        AutoScalingCall::SetMinSize(_) | AutoScalingCall::SuspendProcesses(_) => {
            Some(fail(spec, instance, reason::AWS_REJECTED, message, now))
        }
    }
}

fn given_up(instance: &mut InstanceStatus, message: String) -> Transition {
    let message = format!("{message}; left as it is");
    instance.message = Some(message.clone());
    let mut transition = Transition::instance(
        &instance.instance_id,
        instance.phase,
        instance.phase,
        "AutoScalingNotRestored",
        message,
    );
    transition.warning = true;
    transition
}

/// Records that an EnterStandby or ExitStandby certainly did not take effect (refused before
/// it reached the group, or never sent), so the next round may ask again at once instead of
/// reading through [`STANDBY_LOOKUP_GRACE`]. Returns whether the status changed.
pub fn record_not_made(status: &mut MaintenancePlanStatus, action: &Action, error: &AwsError) -> bool {
    let Action::AutoScaling { instance_id, call, .. } = action else {
        return false;
    };
    if error.outcome_unknown {
        return false;
    }
    let Some(record) = status
        .instances
        .iter_mut()
        .find(|i| &i.instance_id == instance_id)
        .and_then(|i| i.auto_scaling.as_mut())
    else {
        return false;
    };
    let slot = match call {
        AutoScalingCall::EnterStandby => &mut record.standby_requested_at,
        AutoScalingCall::ExitStandby => &mut record.exit_requested_at,
        _ => return false,
    };
    slot.take().is_some()
}

/// Drops the working timestamps of a done instance's record (see `compact.rs`); what was done
/// to its group stays on record.
pub(super) fn compact(instance: &mut InstanceStatus) {
    if let Some(record) = instance.auto_scaling.as_mut() {
        record.standby_requested_at = None;
        record.exit_requested_at = None;
    }
}
