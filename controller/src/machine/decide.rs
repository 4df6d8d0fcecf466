//! The plan-level decision: which instance to work on, and what to do with it.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::api::schedule::window_state;
use crate::api::validate::validate;
use crate::api::{InstancePhase, InstanceStatus, MaintenancePlanSpec, MaintenancePlanStatus, PlanPhase, RunRecord};

use super::conditions::summarize;
use super::decision::{Decision, Requeue, Transition};
use super::instance::{self, DRAIN_MARGIN, PlanContext, Step};
use super::observed::{Observed, groups_out, is_active};
use super::turn::WAITING_FOR_TURN;
use super::{dry_run, preflight, reason, selection};

/// How long a closed preflight gate is waited for by default.
const DEFAULT_GATE_TIMEOUT: Duration = Duration::from_secs(600);

/// The plan as the state machine sees it.
#[derive(Clone, Copy, Debug)]
pub struct PlanView<'a> {
    /// `metadata.uid`: part of every command's tag.
    pub uid: &'a str,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// The spec.
    pub spec: &'a MaintenancePlanSpec,
    /// The status as last recorded (None for a new plan).
    pub status: Option<&'a MaintenancePlanStatus>,
}

/// Decides the next step of a plan from its recorded status and what AWS showed. Pure.
pub fn decide(plan: PlanView<'_>, observed: &Observed, now: Timestamp) -> Decision {
    let mut decision = decide_round(plan, observed, now);
    // Whatever the round did, a done instance keeps only its record (the status must fit
    // one etcd write at any plan size).
    super::compact::compact_finished(&mut decision.status.instances);
    decision
}

fn decide_round(plan: PlanView<'_>, observed: &Observed, now: Timestamp) -> Decision {
    let spec = plan.spec;
    let mut status = plan.status.cloned().unwrap_or_default();
    let edited = plan.generation.is_some() && status.observed_generation != plan.generation;
    status.observed_generation = plan.generation;
    let plan_before = status.phase;
    let validity = validate(spec);
    let mut transitions = Vec::new();

    let windows = spec
        .schedule
        .as_ref()
        .and_then(|schedule| window_state(schedule, now).ok());
    status.window_end = windows.and_then(|w| w.open).map(|w| w.end);
    status.next_window = windows.and_then(|w| w.next);
    // With a schedule, nothing is started outside a window (unset: no schedule, or it is open).
    let closed_until = windows.filter(|w| w.open.is_none()).map(|w| w.next);
    let opened = windows.and_then(|w| w.open);

    let finished = status.phase.is_finished() && !status.instances.iter().any(|i| is_active(spec, i));
    if finished && edited && validity.is_ok() && plan.status.is_some() {
        // A new generation of a finished plan is a new run: what is done stays done.
        transitions.push(restart_run(&mut status));
    } else if let Some(window) = opened.filter(|w| finished && validity.is_ok() && status.window_start != Some(w.start))
    {
        // A scheduled plan's new window: a new run of every instance.
        transitions.push(new_scheduled_run(&mut status, window.start));
    } else if finished {
        // A finished plan stays finished until its spec changes (or, scheduled, until the next window).
        status.current_instance = None;
        conclude(&mut status, spec, validity.as_ref().err(), plan.generation, now);
        let requeue = match status.next_window {
            Some(next) => Requeue::After(now.duration_until(next).try_into().unwrap_or_default()),
            None => Requeue::Idle,
        };
        return Decision {
            status,
            action: None,
            requeue,
            transitions,
        };
    }

    // A plan that selects its instances resolves the selector in the first round of a run
    // that may start an instance, and never again during the run.
    if selection::needs_resolving(spec, Some(&status))
        && validity.is_ok()
        && !super::hold::is_held(spec, Some(&status))
        && (closed_until.is_none() || spec.dry_run)
        && !status.instances.iter().any(|i| is_active(spec, i))
    {
        return resolve_selection(plan, status, observed, transitions, now);
    }

    merge_instances(&mut status, spec);

    let mut cancel = None;
    if let Err(invalid) = &validity {
        // An instance in flight goes back through the failure path; nothing new starts. A
        // command still running is cancelled first, so no reboot hits it once it is back
        // (one per round: with several instances out, the next round cancels the next).
        for instance in status.instances.iter_mut() {
            if cancel.is_some() {
                break;
            }
            let running = match instance.phase {
                InstancePhase::Rebooting => instance.maintenance_command_id.clone(),
                InstancePhase::Verifying if instance.registered_at.is_none() => instance.verify_command_id.clone(),
                _ => None,
            };
            if matches!(
                instance.phase,
                InstancePhase::Draining | InstancePhase::Rebooting | InstancePhase::Verifying
            ) {
                transitions.push(instance::fail(
                    spec,
                    instance,
                    reason::INVALID_SPEC,
                    invalid.to_string(),
                    now,
                ));
                if let Some(command_id) = running {
                    cancel = Some(super::Action::Cancel {
                        command_id,
                        instance_id: instance.instance_id.clone(),
                    });
                }
            }
        }
    }
    if let Some(action) = cancel {
        conclude(&mut status, spec, validity.as_ref().err(), plan.generation, now);
        return Decision {
            status,
            action: Some(action),
            requeue: Requeue::Now,
            transitions,
        };
    }

    let context = PlanContext { uid: plan.uid, spec };
    let mut step = Step::default();
    // Whichever branch below works on an instance (or waits for one) names it again.
    status.current_instance = None;
    let active: Vec<String> = status
        .instances
        .iter()
        .filter(|i| is_active(spec, i))
        .map(|i| i.instance_id.clone())
        .collect();
    if !active.is_empty() {
        status.current_instance = active.first().cloned();
        step = advance_all(&context, &mut status, &active, observed, now);
        // Only beside instances still out: once the whole wave is back, the next round starts
        // afresh (and in the controller asks for the group's turn again, so a waiting plan
        // gets it).
        let may_add = step.action.is_none()
            && super::concurrency::out_ids(spec, &status).next().is_some()
            && validity.is_ok()
            && !spec.dry_run
            && !super::hold::is_held(spec, Some(&status))
            && closed_until.is_none()
            && super::approval::may_start(spec, Some(&status))
            && super::concurrency::has_room(spec, &status);
        // What a start reads (the next instance's agent, the gates, the drain limit) was read
        // only if the round began with room for it; a slot freed by this round is filled in
        // the next, which comes at once.
        let read_for_start = plan.status.is_some_and(|s| super::concurrency::has_room(spec, s))
            && super::concurrency::next_to_start(spec, Some(&status)).is_some_and(|id| observed.has_reads_for(id));
        if may_add && observed.turn_wanted && super::concurrency::refilling(spec, &status) {
            tracing::debug!("another plan waits for the target group: no new instance until this wave is back");
        } else if may_add && !read_for_start {
            step.requeue = Some(Requeue::Now);
        } else if may_add {
            let first = status.current_instance.clone();
            let mut started = start_next(spec, &mut status, observed, now);
            // The first instance out stays the plan's current one.
            status.current_instance = first;
            step.action = started.action.take();
            step.requeue = Some(sooner(step.requeue, started.requeue));
            step.transitions.append(&mut started.transitions);
        }
    } else if validity.is_err() {
        finish(&mut status, PlanPhase::Failed, now);
    } else if super::hold::is_held(spec, Some(&status)) {
        stop_gate_clocks(&mut status);
        status.phase = PlanPhase::Suspended;
        step.requeue = Some(Requeue::Idle);
    } else if spec.dry_run {
        status.phase = PlanPhase::Running;
        status.started_at.get_or_insert(now);
        step = dry_run::rehearse_next(spec, &mut status, observed, now);
    } else if let Some(next) = closed_until {
        // Between windows: nothing starts; the run (if any) goes on in the next window.
        stop_gate_clocks(&mut status);
        if status.phase == PlanPhase::Suspended {
            status.phase = PlanPhase::Running;
        }
        step.requeue = Some(match next {
            Some(next) => Requeue::After(now.duration_until(next).try_into().unwrap_or_default()),
            None => Requeue::Idle,
        });
    } else {
        if status.phase == PlanPhase::Suspended {
            status.phase = PlanPhase::Running;
        }
        if let Some(window) = opened {
            status.window_start = Some(window.start);
        }
        if super::approval::awaits_approval(spec, &status) {
            // Nothing starts, nothing is read: the approval comes as a change of the plan.
            super::approval::name_run(&mut status, now);
            step.requeue = Some(Requeue::Idle);
        } else {
            step = start_next(spec, &mut status, observed, now);
        }
    }
    transitions.append(&mut step.transitions);

    if status.phase == PlanPhase::Pending && status.instances.iter().any(|i| i.phase != InstancePhase::Pending) {
        status.phase = PlanPhase::Running;
        status.started_at.get_or_insert(now);
    }
    // An instance that finished this round is no longer current; one waiting to start is.
    let current_open = status
        .current_instance
        .as_ref()
        .and_then(|id| status.instances.iter().find(|i| &i.instance_id == id))
        .is_some_and(|i| is_active(spec, i) || i.phase == InstancePhase::Pending);
    if !current_open {
        status.current_instance = None;
    }
    if status.phase != plan_before {
        transitions.push(plan_transition(plan_before, &status));
    }
    conclude(&mut status, spec, validity.as_ref().err(), plan.generation, now);
    let requeue = if status.phase.is_finished() {
        Requeue::Idle
    } else {
        step.requeue.unwrap_or(Requeue::Now)
    };
    Decision {
        status,
        action: step.action,
        requeue,
        transitions,
    }
}

/// The round that resolves the selector of a run that starts: records what it matched (and
/// fails the run when that is nothing); no instance is started in the same round, as its
/// turn and its reads are not there yet. Without the groups read this round, it asks for them.
fn resolve_selection(
    plan: PlanView<'_>,
    mut status: MaintenancePlanStatus,
    observed: &Observed,
    mut transitions: Vec<Transition>,
    now: Timestamp,
) -> Decision {
    let spec = plan.spec;
    let before = status.phase;
    if let Some(transition) = selection::resolve(spec, &mut status, observed, now) {
        transitions.push(transition);
        merge_instances(&mut status, spec);
        if selection::is_empty(&status) {
            finish(&mut status, PlanPhase::Failed, now);
        }
    }
    status.current_instance = None;
    if status.phase != before {
        transitions.push(plan_transition(before, &status));
    }
    conclude(&mut status, spec, None, plan.generation, now);
    let requeue = if status.phase.is_finished() {
        match status.next_window {
            Some(next) => Requeue::After(now.duration_until(next).try_into().unwrap_or_default()),
            None => Requeue::Idle,
        }
    } else {
        Requeue::Now
    };
    Decision {
        status,
        action: None,
        requeue,
        transitions,
    }
}

/// Whether a finished scheduled plan has a window open now that its last run did not run
/// in: the next round starts a new run. `pitstop run` (which otherwise ends once its plans
/// have finished) uses it, so that running it again in the next window with the same state
/// file maintains the fleet again.
pub fn new_window_open(spec: &MaintenancePlanSpec, status: Option<&MaintenancePlanStatus>, now: Timestamp) -> bool {
    let Some(status) = status else {
        return false;
    };
    spec.schedule
        .as_ref()
        .and_then(|schedule| window_state(schedule, now).ok())
        .and_then(|w| w.open)
        .is_some_and(|window| status.phase.is_finished() && status.window_start != Some(window.start))
}

/// Takes the next Pending instance through the preflight gates, or finishes the plan.
fn start_next(
    spec: &MaintenancePlanSpec,
    status: &mut MaintenancePlanStatus,
    observed: &Observed,
    now: Timestamp,
) -> Step {
    let failures = status
        .instances
        .iter()
        .filter(|i| i.phase == InstancePhase::Failed)
        .count();
    // An instance left out (onFailure: LeaveOut) still holds the one out-of-rotation slot:
    // taking another would put two out at once, so the plan stops whatever maxFailures says.
    let left_out = status
        .instances
        .iter()
        .any(|i| i.phase == InstancePhase::Failed && i.out_of_rotation);
    // With other instances out (`maxUnavailable`), the plan only ends once they are back.
    let others_out = super::concurrency::out_ids(spec, status).count();
    if failures > spec.max_failures as usize || left_out {
        if others_out == 0 {
            finish(status, PlanPhase::Failed, now);
        }
        return Step::default();
    }
    if !status.instances.iter().any(|i| i.phase == InstancePhase::Pending) {
        if others_out == 0 {
            finish(status, PlanPhase::Succeeded, now);
        }
        return Step::default();
    }
    if others_out > 0 && super::concurrency::zones_full(spec, status) {
        // The Pending instances' zones are full (`maxUnavailablePerZone`): they wait for one
        // of their zone to come back.
        return Step::default();
    }
    let next_id = super::concurrency::next_to_start(spec, Some(status)).map(str::to_owned);
    if let Some(until) = settling_until(spec, &status.instances)
        && until > now
        && let Some(next) = status
            .instances
            .iter_mut()
            .find(|i| Some(&i.instance_id) == next_id.as_ref())
    {
        next.message = Some(format!("waiting until {until} (settleSeconds) before taking it out"));
        status.current_instance = Some(next.instance_id.clone());
        let wait = now.duration_until(until).try_into().unwrap_or_default();
        return Step {
            requeue: Some(Requeue::After(wait)),
            ..Step::default()
        };
    }
    let limit = super::concurrency::resolve(spec, status, observed);
    let own_out: Vec<String> = super::concurrency::out_ids(spec, status).map(str::to_owned).collect();
    let Some(next_id) = next_id else {
        // Every Pending instance's zone is full (`maxUnavailablePerZone`) with nothing of the
        // plan out: a zone limit never holds the first instance back, so this is not reached;
        // wait rather than finish.
        return Step {
            requeue: Some(Requeue::Poll),
            ..Step::default()
        };
    };
    let Some(next) = status.instances.iter_mut().find(|i| i.instance_id == next_id) else {
        return Step::default();
    };
    let observed_next = observed.for_instance(&next.instance_id);
    let observed = observed_next.as_ref();
    if let Some(holder) = &observed.turn_held_by {
        // Waiting for another plan's instance to come back is not a closed gate: its time
        // does not count against gateTimeoutSeconds.
        next.waiting_since = None;
        next.message = Some(format!("{WAITING_FOR_TURN} {holder}"));
        status.current_instance = Some(next.instance_id.clone());
        return Step {
            requeue: Some(Requeue::Poll),
            ..Step::default()
        };
    }
    if !observed.has_groups(&spec.target_groups()) || !super::auto_scaling::read_for_start(spec, observed) {
        return Step {
            requeue: Some(Requeue::Poll),
            ..Step::default()
        };
    }
    if let Some(held) = super::gates::holding(spec, observed) {
        // Like another plan's turn, a gate is waited out, not held against the instance. It
        // is news (an Event, a line of `pitstop run`) only when it starts holding.
        let mut transitions = Vec::new();
        if !held.already_said(next.message.as_deref()) {
            let mut transition = Transition::instance(
                &next.instance_id,
                InstancePhase::Pending,
                InstancePhase::Pending,
                held.reason,
                held.message.clone(),
            );
            transition.warning = true;
            transitions.push(transition);
        }
        next.waiting_since = None;
        next.message = Some(held.message);
        status.current_instance = Some(next.instance_id.clone());
        return Step {
            action: None,
            requeue: Some(Requeue::Poll),
            transitions,
        };
    }
    let drain_limit = match (spec.timeouts.drain_seconds, observed.deregistration_delay) {
        (Some(seconds), _) => seconds,
        (None, Some(delay)) => u32::try_from((delay + DRAIN_MARGIN).as_secs()).unwrap_or(u32::MAX),
        (None, None) => {
            return Step {
                requeue: Some(Requeue::Poll),
                ..Step::default()
            };
        }
    };
    status.current_instance = Some(next.instance_id.clone());
    match preflight::check(spec, &next.instance_id, observed, &own_out) {
        Err(closed) => {
            let since = *next.waiting_since.get_or_insert(now);
            let limit = spec
                .preflight
                .gate_timeout_seconds
                .map_or(DEFAULT_GATE_TIMEOUT, |s| Duration::from_secs(s.into()));
            let waited: Duration = now.duration_since(since).try_into().unwrap_or_default();
            // A selected instance that left the groups since the run started is gone: skipped.
            if closed.reason == reason::NOT_IN_TARGET_GROUP && spec.selector.is_some() {
                next.waiting_since = None;
                let transition = skip(next, &closed.message, status.selection.as_ref(), now);
                return Step {
                    action: None,
                    requeue: Some(Requeue::Now),
                    transitions: vec![transition],
                };
            }
            // An instance that is not in the group will not join it by waiting.
            if closed.reason == reason::NOT_IN_TARGET_GROUP || waited >= limit {
                let message = if closed.reason == reason::NOT_IN_TARGET_GROUP {
                    closed.message
                } else {
                    format!("gate still closed after {}s: {}", limit.as_secs(), closed.message)
                };
                next.waiting_since = None;
                let transition = instance::fail(spec, next, closed.reason, message, now);
                return Step {
                    action: None,
                    requeue: Some(Requeue::Now),
                    transitions: vec![transition],
                };
            }
            next.message = Some(format!("waiting ({}): {}", closed.reason, closed.message));
            Step {
                action: None,
                requeue: Some(Requeue::Poll),
                transitions: Vec::new(),
            }
        }
        Ok(groups) => {
            if spec.max_unavailable.is_some() {
                // The bound of this run, as the groups stand now (a percentage of their size).
                status.max_unavailable = limit.or(status.max_unavailable);
            }
            let Some(next) = status.instances.iter_mut().find(|i| i.instance_id == next_id) else {
                return Step::default();
            };
            next.waiting_since = None;
            // Write-ahead: the status says Draining and out of rotation, and names every
            // group the instance leaves, before the first call is made, so a crash in between
            // can only lead to deregistering (again) and then putting the instance back into
            // each of them, never to forgetting one.
            // Attempts count across runs of the plan, so every try's command tag is new: a
            // later run must never find (and adopt) the command of an earlier one.
            next.attempt += 1;
            next.first_attempt = next.attempt;
            next.port = groups.first().and_then(|g| g.port);
            next.target_groups = groups;
            next.out_of_rotation = true;
            next.drain_timeout_seconds = Some(drain_limit);
            next.phase = InstancePhase::Draining;
            next.phase_since = Some(now);
            let message = match next.target_groups.as_slice() {
                [_] => format!("deregistering from the target group (drain limit {drain_limit}s)"),
                several => format!(
                    "deregistering from {} target groups: {} (drain limit {drain_limit}s)",
                    several.len(),
                    several
                        .iter()
                        .map(|g| preflight::group_name(&g.target_group_arn))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            next.message = Some(message.clone());
            let mut transition = Transition::instance(
                &next.instance_id,
                InstancePhase::Pending,
                InstancePhase::Draining,
                "Deregistering",
                message,
            );
            if super::auto_scaling::on_start(spec, next, observed) {
                // The group's calls come first (see `auto_scaling::advance`), from the next round.
                transition.message = next.message.clone().unwrap_or_default();
                return Step {
                    action: None,
                    requeue: Some(Requeue::Now),
                    transitions: vec![transition],
                };
            }
            // One group per round: the next rounds deregister the others (see `drain`).
            let first = groups_out(spec, next).into_iter().next();
            Step {
                action: first.map(|g| super::Action::Deregister {
                    target_group_arn: g.target_group_arn,
                    target: g.target,
                }),
                requeue: Some(if next.target_groups.len() > 1 {
                    Requeue::Now
                } else {
                    Requeue::Poll
                }),
                transitions: vec![transition],
            }
        }
    }
}

/// Advances every instance in flight, in the plan's order, each with its own reads. A round
/// makes at most one AWS call (written ahead like every other): the first instance that needs
/// one ends the round, and the ones after it are looked at in the next, which comes at once.
fn advance_all(
    context: &PlanContext<'_>,
    status: &mut MaintenancePlanStatus,
    active: &[String],
    observed: &Observed,
    now: Timestamp,
) -> Step {
    let mut step = Step::default();
    for (index, id) in active.iter().enumerate() {
        let Some(instance) = status.instances.iter_mut().find(|i| &i.instance_id == id) else {
            continue;
        };
        let own = observed.for_instance(id);
        let mut advanced = instance::advance(context, instance, &own, now);
        step.transitions.append(&mut advanced.transitions);
        step.requeue = Some(sooner(step.requeue, advanced.requeue));
        if advanced.action.is_some() {
            step.action = advanced.action;
            if index + 1 < active.len() {
                step.requeue = Some(Requeue::Now);
            }
            break;
        }
    }
    step
}

/// The sooner of two requeues (None: no opinion). A poll comes before a longer wait: it is
/// how instances in flight are looked at.
fn sooner(a: Option<Requeue>, b: Option<Requeue>) -> Requeue {
    match (a, b) {
        (Some(Requeue::Now), _) | (_, Some(Requeue::Now)) => Requeue::Now,
        (Some(Requeue::Poll), _) | (_, Some(Requeue::Poll)) => Requeue::Poll,
        (Some(Requeue::After(x)), Some(Requeue::After(y))) => Requeue::After(x.min(y)),
        (Some(Requeue::After(x)), _) | (_, Some(Requeue::After(x))) => Requeue::After(x),
        (Some(Requeue::Idle), _) | (_, Some(Requeue::Idle)) => Requeue::Idle,
        (None, None) => Requeue::Now,
    }
}

/// Marks a selected instance that is gone as Skipped, untouched, with the reason.
fn skip(
    instance: &mut InstanceStatus,
    why: &str,
    selection: Option<&crate::api::SelectionStatus>,
    now: Timestamp,
) -> Transition {
    let selected = selection
        .and_then(|s| s.resolved_at)
        .map(|at| format!(" since the selection at {at}"))
        .unwrap_or_default();
    let message = format!("{why}: gone{selected} (terminated or replaced); skipped, untouched");
    instance.phase = InstancePhase::Skipped;
    instance.phase_since = Some(now);
    instance.failure_reason = Some(reason::GONE.to_owned());
    instance.message = Some(message.clone());
    Transition::instance(
        &instance.instance_id,
        InstancePhase::Pending,
        InstancePhase::Skipped,
        reason::GONE,
        message,
    )
}

/// A plan that is not trying to start an instance (suspended, between windows) is not
/// waiting at a gate either: the gate's timeout starts again when it tries again.
fn stop_gate_clocks(status: &mut MaintenancePlanStatus) {
    for instance in status.instances.iter_mut() {
        if instance.phase == InstancePhase::Pending && instance.waiting_since.take().is_some() {
            instance.message = None;
        }
    }
}

/// With `settleSeconds`, when the last instance that came back has settled.
pub(super) fn settling_until(spec: &MaintenancePlanSpec, instances: &[InstanceStatus]) -> Option<Timestamp> {
    if spec.settle_seconds == 0 {
        return None;
    }
    let last = instances
        .iter()
        .filter(|i| i.phase == InstancePhase::Registered)
        .filter_map(|i| i.phase_since)
        .max()?;
    Some(last + SignedDuration::from_secs(spec.settle_seconds.into()))
}

/// Most runs a scheduled plan remembers.
const RUN_HISTORY: usize = 10;

/// Starts the run of a new window: the finished run goes into the history, and every
/// instance is maintained again (attempt numbers go on, so command tags stay unique). An
/// instance left out by `onFailure: LeaveOut` stays as it is, and keeps the plan stopped.
fn new_scheduled_run(status: &mut MaintenancePlanStatus, window_start: Timestamp) -> Transition {
    let from = status.phase;
    if status.started_at.is_some() {
        status.runs.insert(
            0,
            RunRecord {
                window_start: status.window_start,
                started_at: status.started_at,
                finished_at: status.finished_at,
                phase: status.phase,
                progress: status.progress.clone(),
                message: status.message.clone(),
            },
        );
        status.runs.truncate(RUN_HISTORY);
    }
    for instance in status.instances.iter_mut() {
        if !(instance.phase == InstancePhase::Failed && instance.out_of_rotation) {
            start_afresh(instance);
        }
    }
    selection::expire(status);
    status.window_start = Some(window_start);
    new_run(
        status,
        from,
        "WindowOpened",
        format!("maintenance window opened at {window_start}: a new run"),
    )
}

/// Starts a new run of a finished plan whose spec changed: Registered instances stay done,
/// failed ones that are back in the group are tried again, dry-run results are dropped.
fn restart_run(status: &mut MaintenancePlanStatus) -> Transition {
    let from = status.phase;
    for instance in status.instances.iter_mut() {
        instance.dry_run = None;
        if matches!(instance.phase, InstancePhase::Failed | InstancePhase::Skipped) && !instance.out_of_rotation {
            start_afresh(instance);
        }
    }
    selection::expire(status);
    new_run(
        status,
        from,
        "SpecChanged",
        "the spec changed after the plan finished: starting a new run".to_owned(),
    )
}

/// An instance to be maintained again: Pending, keeping only its attempt count (so the
/// next try's command tag is new).
fn start_afresh(instance: &mut InstanceStatus) {
    *instance = InstanceStatus {
        instance_id: std::mem::take(&mut instance.instance_id),
        attempt: instance.attempt,
        ..InstanceStatus::default()
    };
}

/// Puts the plan back to Pending for a new run, with the transition that says why.
fn new_run(status: &mut MaintenancePlanStatus, from: PlanPhase, reason: &str, message: String) -> Transition {
    super::approval::forget(status);
    status.phase = PlanPhase::Pending;
    status.started_at = None;
    status.finished_at = None;
    status.current_instance = None;
    Transition {
        instance_id: None,
        from: format!("{from:?}"),
        to: format!("{:?}", PlanPhase::Pending),
        reason: reason.to_owned(),
        message,
        warning: false,
    }
}

fn finish(status: &mut MaintenancePlanStatus, phase: PlanPhase, now: Timestamp) {
    status.phase = phase;
    status.finished_at.get_or_insert(now);
    status.current_instance = None;
}

/// Aligns the instance entries with the spec's list, in its order. Entries of instances
/// removed from the spec are dropped, except one still in flight: it is finished (and put
/// back) first.
///
/// With a selector the list is the run's selection; until it is resolved the entries stay
/// as they are (with their attempt numbers). An instance new to a selected run starts from
/// the selection's attempt floor, so its command tags are new.
fn merge_instances(status: &mut MaintenancePlanStatus, spec: &MaintenancePlanSpec) {
    if selection::needs_resolving(spec, Some(status)) {
        return;
    }
    let ids = selection::run_instances(spec, Some(status)).to_vec();
    let floor = status.selection.as_ref().map_or(0, |s| s.attempt_floor);
    let zones = status.selection.as_ref().map(|s| s.zones.clone()).unwrap_or_default();
    let mut old = std::mem::take(&mut status.instances);
    let mut merged: Vec<InstanceStatus> = Vec::with_capacity(ids.len());
    for id in &ids {
        if merged.iter().any(|i| &i.instance_id == id) {
            continue; // duplicates are reported by validation
        }
        match old.iter().position(|i| &i.instance_id == id) {
            Some(index) => merged.push(old.swap_remove(index)),
            None => merged.push(InstanceStatus {
                instance_id: id.clone(),
                attempt: floor,
                ..InstanceStatus::default()
            }),
        }
    }
    merged.extend(old.into_iter().filter(|i| is_active(spec, i)));
    for instance in &mut merged {
        if let Some(zone) = zones.get(&instance.instance_id) {
            instance.zone = Some(zone.clone());
        }
    }
    status.instances = merged;
}

/// Fills the summary fields (`progress`, `message`) and conditions of `status` again, after
/// something outside the state machine changed them (an AWS problem that is over).
pub fn summarize_again(
    status: &mut MaintenancePlanStatus,
    spec: &MaintenancePlanSpec,
    generation: Option<i64>,
    now: Timestamp,
) {
    let validity = validate(spec);
    conclude(status, spec, validity.as_ref().err(), generation, now);
}

/// Fills the summary fields and conditions once the decision about the instances is made.
fn conclude(
    status: &mut MaintenancePlanStatus,
    spec: &MaintenancePlanSpec,
    invalid: Option<&crate::api::validate::InvalidSpec>,
    generation: Option<i64>,
    now: Timestamp,
) {
    let failure = plan_failure_reason(status);
    summarize(status, spec, invalid, failure.as_deref(), generation, now);
}

fn plan_failure_reason(status: &MaintenancePlanStatus) -> Option<String> {
    if status.phase != PlanPhase::Failed {
        return None;
    }
    if let Some(reason) = selection::failure_reason(status) {
        return Some(reason.to_owned());
    }
    status
        .instances
        .iter()
        .rev()
        .find(|i| i.phase == InstancePhase::Failed)
        .and_then(|i| i.failure_reason.clone())
}

fn plan_transition(from: PlanPhase, status: &MaintenancePlanStatus) -> Transition {
    let (reason, warning) = match status.phase {
        PlanPhase::Pending => ("PlanPending", false),
        PlanPhase::Running => ("PlanStarted", false),
        PlanPhase::Succeeded => ("PlanSucceeded", false),
        PlanPhase::Failed => ("PlanFailed", true),
        PlanPhase::Suspended => ("PlanSuspended", false),
    };
    Transition {
        instance_id: None,
        from: format!("{from:?}"),
        to: format!("{:?}", status.phase),
        reason: reason.to_owned(),
        message: String::new(),
        warning,
    }
}
