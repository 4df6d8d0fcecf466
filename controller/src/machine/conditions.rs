//! Conditions and the one-line summary, derived from the instances' states.

use jiff::Timestamp;

use crate::api::validate::InvalidSpec;
use crate::api::{Condition, InstancePhase, MaintenancePlanSpec, MaintenancePlanStatus, PlanPhase};

use super::health::{Health, set_health};
use super::turn::WAITING_FOR_TURN;

/// The spec was accepted (valid).
pub const CONDITION_ACCEPTED: &str = "Accepted";
/// An instance is being worked on.
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// The plan succeeded.
pub const CONDITION_COMPLETE: &str = "Complete";
/// The plan failed.
pub const CONDITION_FAILED: &str = "Failed";
/// The plan cannot go on until something outside it changes; set by the controller while
/// the plan's AWS calls fail (reasons starting with `AWS`), see `k8s::aws_condition`.
pub const CONDITION_STALLED: &str = "Stalled";

/// Whether `c` is the `Stalled=True` that `k8s::aws_condition` sets while AWS calls fail.
fn is_stalled_on_aws(c: &Condition) -> bool {
    c.type_ == CONDITION_STALLED && c.status == "True" && c.reason.starts_with("AWS")
}

/// Sets one condition, keeping `lastTransitionTime` unless `status` flips, so that a status
/// that did not really change is written as the same bytes (and the write skipped).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = now;
            }
            existing.status = status.to_owned();
            existing.reason = reason.to_owned();
            existing.message = message.to_owned();
            existing.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            observed_generation: generation,
            last_transition_time: now,
            reason: reason.to_owned(),
            message: message.to_owned(),
        }),
    }
}

/// Fills `progress`, `message` and the conditions from the rest of the status.
pub(super) fn summarize(
    status: &mut MaintenancePlanStatus,
    spec: &MaintenancePlanSpec,
    invalid: Option<&InvalidSpec>,
    failure_reason: Option<&str>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let total = status.instances.len();
    let done = status.instances.iter().filter(|i| i.phase.is_finished()).count();
    let failed = status
        .instances
        .iter()
        .filter(|i| i.phase == InstancePhase::Failed)
        .count();
    let skipped = status
        .instances
        .iter()
        .filter(|i| i.phase == InstancePhase::Skipped)
        .count();
    status.progress = Some(format!("{done}/{total}"));

    let current = status
        .current_instance
        .as_ref()
        .and_then(|id| status.instances.iter().find(|i| &i.instance_id == id));
    let awaiting_approval = super::approval::awaits_approval(spec, status) && status.run_id.is_some();
    let message = match (status.phase, current) {
        (PlanPhase::Pending | PlanPhase::Running, _) if awaiting_approval => super::approval::waiting_message(status),
        (PlanPhase::Pending | PlanPhase::Running, None) if spec.schedule.is_some() && status.window_end.is_none() => {
            match status.next_window {
                Some(next) => format!("{done}/{total} instances done; waiting for the maintenance window at {next}"),
                None => format!("{done}/{total} instances done; the schedule has no next window"),
            }
        }
        (PlanPhase::Pending, Some(i)) if i.message.is_some() => format!(
            "waiting to start: {}: {}",
            i.instance_id,
            i.message.as_deref().unwrap_or_default()
        ),
        (PlanPhase::Pending, _) => "waiting to start".to_owned(),
        (PlanPhase::Running, _) if spec.dry_run => {
            let checked = status.instances.iter().filter(|i| i.dry_run.is_some()).count();
            format!("dry run: {checked}/{total} instances checked")
        }
        // A wave (`maxUnavailable`): every instance out, each with its phase.
        (PlanPhase::Running, Some(_)) if super::concurrency::out_ids(spec, status).nth(1).is_some() => {
            let out: Vec<String> = status
                .instances
                .iter()
                .filter(|i| super::observed::is_active(spec, i))
                .map(|i| format!("{} {}", i.instance_id, i.phase))
                .collect();
            format!(
                "{} instances out (at most {}): {}; {done}/{total} done",
                out.len(),
                super::concurrency::limit(spec, Some(status)),
                out.join(", ")
            )
        }
        (PlanPhase::Running, Some(i)) => format!(
            "{} {}{}",
            i.instance_id,
            i.phase,
            i.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
        ),
        (PlanPhase::Running, None) => format!("{done}/{total} instances done"),
        (PlanPhase::Suspended, _) if !spec.suspend && status.held_by.is_some() => {
            format!(
                "{} (after {done}/{total} instances)",
                status.held_by.as_deref().unwrap_or_default()
            )
        }
        (PlanPhase::Suspended, _) => {
            format!("suspended after {done}/{total} instances; set spec.suspend to false to go on")
        }
        (PlanPhase::Succeeded | PlanPhase::Failed, _) if spec.dry_run && invalid.is_none() => {
            let blocked = status
                .instances
                .iter()
                .filter(|i| i.dry_run.as_deref().is_some_and(|r| r.starts_with("blocked")))
                .count();
            if blocked == 0 {
                format!("dry run: all {total} instances would be maintained; nothing was changed")
            } else {
                format!("dry run: {blocked} of {total} instances would be blocked; nothing was changed")
            }
        }
        (PlanPhase::Succeeded, _) if skipped > 0 => {
            let maintained = status
                .instances
                .iter()
                .filter(|i| i.phase == InstancePhase::Registered)
                .count();
            let failed = if failed > 0 {
                format!(", {failed} failed (within maxFailures)")
            } else {
                String::new()
            };
            format!(
                "{maintained}/{total} instances maintained and healthy, {skipped} skipped (gone: terminated or replaced){failed}"
            )
        }
        (PlanPhase::Succeeded, _) if failed > 0 => {
            format!("{done}/{total} instances done, {failed} failed (within maxFailures)")
        }
        (PlanPhase::Succeeded, _) => format!("all {total} instances maintained and healthy"),
        (PlanPhase::Failed, _) => match invalid {
            Some(invalid) => invalid.to_string(),
            None if failure_reason == Some(super::selection::EMPTY_SELECTION)
                || failure_reason == Some(super::selection::SELECTION_TOO_LARGE) =>
            {
                status
                    .selection
                    .as_ref()
                    .and_then(|s| s.message.clone())
                    .unwrap_or_else(|| "the selector matched no instance".to_owned())
            }
            None => format!("{failed} of {total} instances failed; the plan stopped"),
        },
    };
    // While AWS calls fail, the message is what the controller put with `Stalled` (what
    // failed and the fix), and a round that changes nothing else writes nothing: in a
    // cluster every status write wakes the controller, and a write per retry would skip
    // its backoff. The first round that reaches AWS removes the condition and summarizes
    // again.
    // (The conditions below keep the summary.)
    status.message = Some(
        status
            .conditions
            .iter()
            .find(|c| is_stalled_on_aws(c))
            .map_or_else(|| message.clone(), |stalled| stalled.message.clone()),
    );

    let conditions = &mut status.conditions;
    match invalid {
        Some(invalid) => set_condition(
            conditions,
            CONDITION_ACCEPTED,
            false,
            "InvalidSpec",
            &invalid.to_string(),
            generation,
            now,
        ),
        None => set_condition(
            conditions,
            CONDITION_ACCEPTED,
            true,
            "Valid",
            "spec is valid",
            generation,
            now,
        ),
    }
    let running = status.phase == PlanPhase::Running;
    let waiting_for_turn = current
        .and_then(|i| i.message.as_deref())
        .is_some_and(|m| m.starts_with(WAITING_FOR_TURN));
    let progressing_reason = match status.phase {
        PlanPhase::Pending | PlanPhase::Running if awaiting_approval => super::approval::AWAITING_APPROVAL,
        PlanPhase::Pending | PlanPhase::Running if waiting_for_turn => "WaitingForTargetGroup",
        PlanPhase::Pending => "NotStarted",
        PlanPhase::Running => "InstanceInProgress",
        PlanPhase::Suspended if !spec.suspend && status.held_by.is_some() => super::hold::GLOBAL_STOP,
        PlanPhase::Suspended => "Suspended",
        PlanPhase::Succeeded | PlanPhase::Failed => "Finished",
    };
    set_condition(
        conditions,
        CONDITION_PROGRESSING,
        running,
        progressing_reason,
        &message,
        generation,
        now,
    );
    let succeeded = status.phase == PlanPhase::Succeeded;
    set_condition(
        conditions,
        CONDITION_COMPLETE,
        succeeded,
        match (succeeded, spec.dry_run) {
            (true, true) => "DryRunDone",
            (true, false) => "AllInstancesDone",
            (false, _) => "NotFinished",
        },
        if succeeded { &message } else { "" },
        generation,
        now,
    );
    let failed_plan = status.phase == PlanPhase::Failed;
    set_condition(
        conditions,
        CONDITION_FAILED,
        failed_plan,
        if failed_plan {
            failure_reason.unwrap_or("InstancesFailed")
        } else {
            "NoFailure"
        },
        if failed_plan { &message } else { "" },
        generation,
        now,
    );

    // While AWS calls fail, `k8s::aws_condition` has set the three from the failure, and
    // they stay until the first round that reaches AWS.
    if !conditions.iter().any(is_stalled_on_aws) {
        let waiting_for_window = matches!(status.phase, PlanPhase::Pending | PlanPhase::Running)
            && current.is_none()
            && spec.schedule.is_some()
            && status.window_end.is_none();
        let (health, reason) = match status.phase {
            PlanPhase::Succeeded if spec.dry_run => (Health::Ready, "DryRunDone"),
            PlanPhase::Succeeded => (Health::Ready, "Succeeded"),
            PlanPhase::Failed => (
                Health::Stalled,
                failure_reason.unwrap_or(if invalid.is_some() {
                    "InvalidSpec"
                } else {
                    "InstancesFailed"
                }),
            ),
            PlanPhase::Suspended => (Health::Paused, progressing_reason),
            // A scheduled plan between windows is as it should be: a GitOps sync that waits
            // for health must not wait until next Sunday.
            PlanPhase::Pending | PlanPhase::Running if waiting_for_window => (Health::Ready, "WaitingForWindow"),
            PlanPhase::Pending | PlanPhase::Running => (Health::InProgress, progressing_reason),
        };
        set_health(conditions, health, reason, &message, generation, now);
    }
}
