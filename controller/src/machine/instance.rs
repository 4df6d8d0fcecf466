//! Advancing the one instance that is in flight: Draining → Rebooting → Verifying →
//! Registered, or Failed and (with `onFailure: Register`) back into the group.

use std::time::Duration;

use jiff::Timestamp;

use crate::api::{CommandSpec, InstancePhase, InstanceStatus, MaintenancePlanSpec};
use crate::aws::{CommandKind, CommandRequest, CommandStatus, CommandTag, TargetState};

use super::decision::{Action, Requeue, Transition};
use super::observed::{GroupTarget, Observed, Presence, goes_back_after, groups_out, needs_return};
use super::preflight::group_name;
use super::reason;
use super::reboot_script::reboot_command;

/// Maintenance commands may run this long by default (a reboot of a large instance plus
/// a patch run fits; a stuck one is noticed within the hour).
pub(super) const DEFAULT_MAINTENANCE_TIMEOUT: Duration = Duration::from_secs(1800);
/// Verification commands may run this long by default.
pub(super) const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(300);
/// The wait for `healthy` after registration, by default.
pub(super) const DEFAULT_HEALTHY_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a SendCommand whose answer never arrived is looked for by its tag before it is
/// sent again. It counts from the attempt, so it covers the call itself (one attempt of at
/// most [`crate::aws::sdk::MAX_ATTEMPT_TIMEOUT`]) and the lag of ListCommands behind a fresh
/// command (seconds, in practice).
pub const SEND_LOOKUP_GRACE: Duration = Duration::from_secs(90);
/// Added to the group's deregistration delay to get the default drain limit: AWS takes a
/// little while past the delay to report `unused`.
pub(super) const DRAIN_MARGIN: Duration = Duration::from_secs(60);

/// What the plan is, for the instance step.
pub(super) struct PlanContext<'a> {
    pub uid: &'a str,
    pub spec: &'a MaintenancePlanSpec,
}

/// The outcome of one step of the instance.
#[derive(Default)]
pub(super) struct Step {
    pub action: Option<Action>,
    pub requeue: Option<Requeue>,
    pub transitions: Vec<Transition>,
}

impl Step {
    fn wait(action: Option<Action>) -> Self {
        Self {
            action,
            requeue: Some(Requeue::Poll),
            transitions: Vec::new(),
        }
    }

    fn moved(transition: Transition, action: Option<Action>) -> Self {
        Self {
            action,
            requeue: Some(Requeue::Now),
            transitions: vec![transition],
        }
    }
}

fn elapsed(since: Option<Timestamp>, now: Timestamp) -> Duration {
    since
        .and_then(|since| now.duration_since(since).try_into().ok())
        .unwrap_or_default()
}

fn enter(instance: &mut InstanceStatus, phase: InstancePhase, message: String, now: Timestamp) -> Transition {
    let from = instance.phase;
    instance.phase = phase;
    instance.phase_since = Some(now);
    instance.message = Some(message.clone());
    let reason = match phase {
        InstancePhase::Draining => "Deregistering",
        InstancePhase::Rebooting => "Drained",
        InstancePhase::Verifying => "MaintenanceSucceeded",
        InstancePhase::Registered => "Healthy",
        InstancePhase::Pending | InstancePhase::Failed | InstancePhase::Skipped => "Changed",
    };
    Transition::instance(&instance.instance_id, from, phase, reason, message)
}

/// First wait between tries of one instance; it doubles with each try.
const RETRY_BACKOFF: Duration = Duration::from_secs(10);
/// Longest wait between tries.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// A failed maintenance or verification: another try while the instance is still out
/// (`maxAttempts`), after a backoff, or the end of it.
fn fail_or_retry(
    spec: &MaintenancePlanSpec,
    instance: &mut InstanceStatus,
    reason: &str,
    message: String,
    now: Timestamp,
) -> Transition {
    let attempt = instance.attempt.max(1);
    let tries = attempt + 1 - instance.first_attempt.clamp(1, attempt);
    if tries >= spec.max_attempts {
        return fail(spec, instance, reason, message, now);
    }
    let backoff = RETRY_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempt - 1))
        .min(RETRY_BACKOFF_MAX);
    let at = now + jiff::SignedDuration::try_from(backoff).unwrap_or(jiff::SignedDuration::ZERO);
    let from = instance.phase;
    instance.attempt = attempt + 1;
    instance.phase = InstancePhase::Rebooting;
    instance.phase_since = Some(now);
    instance.next_attempt_at = Some(at);
    // The new try has a new tag, so a new command may be sent; its limit counts from `at`.
    instance.maintenance_command_id = None;
    instance.maintenance_started_at = Some(at);
    instance.verify_command_id = None;
    instance.verify_started_at = None;
    instance.send_attempted_at = None;
    let message = format!(
        "try {} of {} at {at} after {reason}: {message}",
        tries + 1,
        spec.max_attempts
    );
    instance.message = Some(message.clone());
    let mut transition = Transition::instance(
        &instance.instance_id,
        from,
        InstancePhase::Rebooting,
        "Retrying",
        message,
    );
    transition.warning = true;
    transition
}

/// Marks the instance failed. Whether it is then put back is the return path's business.
pub(super) fn fail(
    spec: &MaintenancePlanSpec,
    instance: &mut InstanceStatus,
    reason: &str,
    message: String,
    now: Timestamp,
) -> Transition {
    let from = instance.phase;
    let message = if instance.out_of_rotation {
        if goes_back_after(spec, instance, Some(reason)) {
            format!("{message}; registering it again so the target group's health checks decide")
        } else {
            format!("{message}; left out of the target group (onFailure: LeaveOut)")
        }
    } else {
        message
    };
    instance.phase = InstancePhase::Failed;
    instance.phase_since = Some(now);
    instance.failure_reason = Some(reason.to_owned());
    instance.message = Some(message.clone());
    Transition::instance(&instance.instance_id, from, InstancePhase::Failed, reason, message)
}

/// The instance in one of the groups it was taken out of, as seen this round.
#[derive(Clone, Debug)]
struct Place {
    group: GroupTarget,
    state: TargetState,
}

impl Place {
    fn deregister(&self) -> Action {
        Action::Deregister {
            target_group_arn: self.group.target_group_arn.clone(),
            target: self.group.target.clone(),
        }
    }

    fn register(&self) -> Action {
        Action::Register {
            target_group_arn: self.group.target_group_arn.clone(),
            target: self.group.target.clone(),
        }
    }
}

/// The instance's state in every group it was taken out of, or None when one of them was
/// not read this round.
fn places(spec: &MaintenancePlanSpec, instance: &InstanceStatus, observed: &Observed) -> Option<Vec<Place>> {
    groups_out(spec, instance)
        .into_iter()
        .map(|group| {
            let state = observed.state_in(&group.target_group_arn, &instance.instance_id)?;
            Some(Place { group, state })
        })
        .collect()
}

/// "unused" for one group, "web: unused, web-tls: draining" for several.
fn describe(places: &[Place]) -> String {
    match places {
        [one] => one.state.to_string(),
        [first, rest @ ..] if rest.iter().all(|p| p.state == first.state) => {
            format!("{} in all {} target groups", first.state, places.len())
        }
        several => several
            .iter()
            .map(|p| format!("{}: {}", group_name(&p.group.target_group_arn), p.state))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Waits with `action`, or, when further groups remain to be called after it, comes back
/// at once (one AWS call per round, so each group gets its own round).
fn one_of(action: Action, more: bool) -> Step {
    Step {
        action: Some(action),
        requeue: Some(if more { Requeue::Now } else { Requeue::Poll }),
        transitions: Vec::new(),
    }
}

/// Advances the in-flight instance by one step.
pub(super) fn advance(
    plan: &PlanContext<'_>,
    instance: &mut InstanceStatus,
    observed: &Observed,
    now: Timestamp,
) -> Step {
    if let Some(presence) = observed.presence.as_ref().filter(|_| instance.out_of_rotation) {
        instance.ec2_checked_at = Some(now);
        if let Presence::Gone(said) = presence {
            return Step::moved(super::gone::end_turn(plan.spec, instance, said, now), None);
        }
    }
    let Some(places) = places(plan.spec, instance, observed) else {
        // A group was not read this round; nothing is safe to decide.
        return Step::wait(None);
    };
    let drained = places.iter().all(|p| p.state == TargetState::Unused);
    if let Some(step) = super::auto_scaling::advance(plan.spec, instance, observed, drained, now) {
        return step;
    }
    if needs_return(plan.spec, instance) {
        return put_back(plan.spec, instance, &places, observed, now);
    }
    if let Some(what) = super::gates::aborting(plan.spec, instance, observed) {
        return abort(plan.spec, instance, observed, &what, now);
    }
    match instance.phase {
        InstancePhase::Draining => drain(plan.spec, instance, &places, now),
        InstancePhase::Rebooting => {
            if let Some(step) = redrain_if_back(instance, &places, now) {
                return step;
            }
            if let Some(at) = instance.next_attempt_at {
                if at > now {
                    let wait = now.duration_until(at).try_into().unwrap_or_default();
                    return Step {
                        requeue: Some(Requeue::After(wait)),
                        ..Step::default()
                    };
                }
                instance.next_attempt_at = None;
            }
            match run_command(plan, instance, CommandKind::Maintenance, observed, now) {
                CommandProgress::Wait(action) => Step::wait(action),
                CommandProgress::Succeeded => Step::moved(
                    enter(
                        instance,
                        InstancePhase::Verifying,
                        "maintenance command succeeded".to_owned(),
                        now,
                    ),
                    None,
                ),
                CommandProgress::Failed {
                    reason,
                    message,
                    cancel,
                } => Step::moved(fail_or_retry(plan.spec, instance, reason, message, now), cancel),
            }
        }
        InstancePhase::Verifying => verify_and_register(plan, instance, &places, observed, now),
        InstancePhase::Pending | InstancePhase::Registered | InstancePhase::Failed | InstancePhase::Skipped => {
            Step::default()
        }
    }
}

/// An alarm of `spec.gates.cloudWatchAlarms` (with `abortInFlight`) went into `ALARM` while
/// the instance was out: its maintenance stops (the command, if sent, is cancelled) and it
/// fails with `AbortedByAlarm`, so the return path puts it back. No retry: the alarm says the
/// fleet is in trouble, which another try would not help.
fn abort(
    spec: &MaintenancePlanSpec,
    instance: &mut InstanceStatus,
    observed: &Observed,
    what: &str,
    now: Timestamp,
) -> Step {
    let command_id = instance.maintenance_command_id.clone().or_else(|| {
        observed
            .command
            .as_ref()
            .and_then(|view| view.command_id.clone())
            .filter(|_| instance.phase == InstancePhase::Rebooting)
    });
    if command_id.is_none()
        && instance.phase == InstancePhase::Rebooting
        && instance
            .send_attempted_at
            .is_some_and(|at| elapsed(Some(at), now) <= SEND_LOOKUP_GRACE)
    {
        // A SendCommand went out with no answer: the command may exist and must be found
        // (and cancelled) before the instance may go back.
        instance.message = Some(format!(
            "{what}: stopping the maintenance; looking for the command sent without an answer first"
        ));
        return Step::wait(None);
    }
    let cancel = command_id.map(|command_id| {
        instance.maintenance_command_id = Some(command_id.clone());
        Action::Cancel {
            command_id,
            instance_id: instance.instance_id.clone(),
        }
    });
    let stopped = match (instance.phase, &cancel) {
        (InstancePhase::Rebooting, Some(_)) => "maintenance command cancelled",
        _ => "maintenance not started",
    };
    let message = format!("{what}: {stopped} (spec.gates.cloudWatchAlarms.abortInFlight)");
    Step::moved(fail(spec, instance, reason::ABORTED_BY_ALARM, message, now), cancel)
}

/// The failure return path: RegisterTargets in every group the instance was taken out of
/// (one per round), then wait until each group's health checks have decided (`healthy` or
/// `unhealthy`), up to the healthy timeout.
///
/// The instance counts as out until then: a target in `initial` gets no traffic, and the
/// target groups' turns must not pass to another plan while it is not serving, or two of
/// a group's instances would be without traffic at once.
fn put_back(
    spec: &MaintenancePlanSpec,
    instance: &mut InstanceStatus,
    places: &[Place],
    observed: &Observed,
    now: Timestamp,
) -> Step {
    let missing: Vec<&Place> = places
        .iter()
        .filter(|p| matches!(p.state, TargetState::Unused | TargetState::Draining))
        .collect();
    if let Some(first) = missing.first() {
        instance.registered_at.get_or_insert(now);
        return one_of(first.register(), missing.len() > 1);
    }
    // Registered by an older pitstop or by hand: the wait counts from the first sight.
    let since = *instance.registered_at.get_or_insert(now);
    // While the checks run, the failure message (which says it is being registered again)
    // stays as it is.
    let initial = places.iter().any(|p| p.state == TargetState::Initial);
    let back = if initial && elapsed(Some(since), now) <= healthy_limit(spec) {
        return Step::wait(None);
    } else if initial {
        let which = match places {
            [_] => String::new(),
            several => format!(" ({})", describe(several)),
        };
        format!(
            "registered again, still initial {}s after registration{which}",
            healthy_limit(spec).as_secs()
        )
    } else {
        format!("registered again: {}", describe(places))
    };
    if let Some(step) = super::auto_scaling::before_done(instance, observed) {
        return step;
    }
    instance.out_of_rotation = false;
    let message = format!("{} ({back})", instance.message.as_deref().unwrap_or("failed"));
    instance.message = Some(message.clone());
    let mut transition = Transition::instance(
        &instance.instance_id,
        InstancePhase::Failed,
        InstancePhase::Failed,
        "ReturnedToTargetGroup",
        message,
    );
    transition.warning = false;
    Step::moved(transition, None)
}

/// How long a registered target may take to become `healthy`.
fn healthy_limit(spec: &MaintenancePlanSpec) -> Duration {
    spec.timeouts
        .healthy_seconds
        .map_or(DEFAULT_HEALTHY_TIMEOUT, |s| Duration::from_secs(s.into()))
}

/// Draining: DeregisterTargets in every group that still has the instance registered (one
/// per round); maintenance starts only once every group shows it `unused`.
fn drain(spec: &MaintenancePlanSpec, instance: &mut InstanceStatus, places: &[Place], now: Timestamp) -> Step {
    let registered: Vec<&Place> = places.iter().filter(|p| p.state.is_registered()).collect();
    if let Some(first) = registered.first() {
        // First rounds after the write-ahead status, a crash before a call went out, or
        // the call failed (throttled, say): the drain clock has not started there.
        return one_of(first.deregister(), registered.len() > 1);
    }
    if places.iter().all(|p| p.state == TargetState::Unused) {
        instance.maintenance_started_at = Some(now);
        let transition = enter(
            instance,
            InstancePhase::Rebooting,
            "drained; sending the maintenance command".to_owned(),
            now,
        );
        return Step::moved(transition, None);
    }
    let since = *instance.draining_since.get_or_insert(now);
    let limit = Duration::from_secs(u64::from(instance.drain_timeout_seconds.unwrap_or(0)));
    if elapsed(Some(since), now) > limit {
        let message = format!("still {} after {}s (drain limit)", describe(places), limit.as_secs());
        return Step::moved(fail(spec, instance, reason::DRAIN_TIMEOUT, message, now), None);
    }
    Step::wait(None)
}

/// Someone registered the instance again in one of its groups while it was out: never run
/// maintenance on an instance that may be serving traffic; drain it again first.
fn redrain_if_back(instance: &mut InstanceStatus, places: &[Place], now: Timestamp) -> Option<Step> {
    let back: Vec<&Place> = places.iter().filter(|p| p.state != TargetState::Unused).collect();
    let first = back.first()?;
    let message = format!(
        "the target group shows it {} again (registered by someone else?); draining again",
        describe(places)
    );
    instance.draining_since = None;
    let transition = enter(instance, InstancePhase::Draining, message, now);
    Some(Step::moved(transition, Some(first.deregister())))
}

fn verify_and_register(
    plan: &PlanContext<'_>,
    instance: &mut InstanceStatus,
    places: &[Place],
    observed: &Observed,
    now: Timestamp,
) -> Step {
    if instance.registered_at.is_none() {
        if plan.spec.verify.is_some() {
            if let Some(step) = redrain_if_back(instance, places, now) {
                return step;
            }
            if instance.verify_started_at.is_none() {
                instance.verify_started_at = Some(now);
            }
            match run_command(plan, instance, CommandKind::Verify, observed, now) {
                CommandProgress::Wait(action) => return Step::wait(action),
                CommandProgress::Failed {
                    reason,
                    message,
                    cancel,
                } => {
                    return Step::moved(fail_or_retry(plan.spec, instance, reason, message, now), cancel);
                }
                CommandProgress::Succeeded => {}
            }
        }
        instance.registered_at = Some(now);
        instance.message = Some(match places {
            [_] => "registering the instance again".to_owned(),
            several => format!("registering the instance again in {} target groups", several.len()),
        });
    }
    if let Some(step) = super::auto_scaling::before_register(instance, observed, now) {
        return step;
    }
    let missing: Vec<&Place> = places
        .iter()
        .filter(|p| matches!(p.state, TargetState::Unused | TargetState::Draining))
        .collect();
    if let Some(first) = missing.first() {
        return one_of(first.register(), missing.len() > 1);
    }
    if places.iter().all(|p| p.state == TargetState::Healthy) {
        if let Some(step) = super::auto_scaling::before_done(instance, observed) {
            return step;
        }
        instance.out_of_rotation = false;
        let message = match places {
            [_] => "healthy in the target group again".to_owned(),
            several => format!("healthy again in all {} target groups", several.len()),
        };
        let transition = enter(instance, InstancePhase::Registered, message, now);
        return Step::moved(transition, None);
    }
    // Registered in every group; some health checks have not passed yet.
    instance.out_of_rotation = false;
    let limit = healthy_limit(plan.spec);
    if elapsed(instance.registered_at, now) > limit {
        let message = format!("still {} {}s after registration", describe(places), limit.as_secs());
        return Step::moved(fail(plan.spec, instance, reason::HEALTHY_TIMEOUT, message, now), None);
    }
    instance.message = Some(format!(
        "registered; target is {}, waiting for healthy",
        describe(places)
    ));
    Step::wait(None)
}

enum CommandProgress {
    Wait(Option<Action>),
    Succeeded,
    Failed {
        reason: &'static str,
        message: String,
        cancel: Option<Action>,
    },
}

/// The document to run for `kind`, with the tag that finds it again after a crash.
fn command_request(plan: &PlanContext<'_>, instance: &InstanceStatus, kind: CommandKind) -> CommandRequest {
    let tag = CommandTag {
        plan_uid: plan.uid.to_owned(),
        kind,
        attempt: instance.attempt.max(1),
    }
    .comment();
    // The maintenance command of a plan whose alarms abort it carries them, so SSM stops it
    // itself even while pitstop is away.
    let abort_alarms = super::gates::aborting_alarms(plan.spec).filter(|_| kind == CommandKind::Maintenance);
    let (spec, default_timeout): (CommandSpec, Duration) = match kind {
        CommandKind::Maintenance => (
            plan.spec.maintenance.clone().unwrap_or_else(|| reboot_command(&tag)),
            DEFAULT_MAINTENANCE_TIMEOUT,
        ),
        CommandKind::Verify => (
            plan.spec.verify.clone().unwrap_or_else(|| reboot_command(&tag)),
            DEFAULT_VERIFY_TIMEOUT,
        ),
    };
    CommandRequest {
        instance_id: instance.instance_id.clone(),
        document_name: spec.document_name,
        document_version: spec.document_version,
        parameters: spec.parameters,
        timeout: spec
            .timeout_seconds
            .map_or(default_timeout, |s| Duration::from_secs(s.into())),
        comment: tag,
        alarms: abort_alarms.map(|gate| gate.names.clone()).unwrap_or_default(),
        ignore_alarm_read_failures: abort_alarms.is_some_and(|gate| gate.ignore_read_failures),
    }
}

fn run_command(
    plan: &PlanContext<'_>,
    instance: &mut InstanceStatus,
    kind: CommandKind,
    observed: &Observed,
    now: Timestamp,
) -> CommandProgress {
    let request = command_request(plan, instance, kind);
    let (recorded, started_at) = match kind {
        CommandKind::Maintenance => (&mut instance.maintenance_command_id, instance.maintenance_started_at),
        CommandKind::Verify => (&mut instance.verify_command_id, instance.verify_started_at),
    };
    let Some(view) = observed.command.as_ref() else {
        return CommandProgress::Wait(None);
    };
    let command_id = match (recorded.as_ref(), view.command_id.as_ref()) {
        (Some(id), _) => id.clone(),
        (None, Some(found)) => {
            // Sent before a crash or with its answer lost, found by its tag: adopt it
            // instead of sending another.
            *recorded = Some(found.clone());
            instance.send_attempted_at = None;
            found.clone()
        }
        (None, None) => {
            if let Some(at) = instance.send_attempted_at
                && elapsed(Some(at), now) <= SEND_LOOKUP_GRACE
            {
                // A SendCommand went out and its answer never came (or the controller
                // stopped around the call): the command may exist though ListCommands does
                // not show it yet. Look again before sending a second one.
                instance.message = Some(format!(
                    "SendCommand for the {} command got no answer; looking for the command by its tag \
                     for up to {}s before sending it again",
                    kind.as_str(),
                    SEND_LOOKUP_GRACE.as_secs()
                ));
                return CommandProgress::Wait(None);
            }
            // Write-ahead: the status records the attempt before the call goes out.
            instance.send_attempted_at = Some(now);
            return CommandProgress::Wait(Some(Action::Send { kind, request }));
        }
    };
    let timed_out = elapsed(started_at, now) > request.timeout;
    let cancel = || {
        Some(Action::Cancel {
            command_id: command_id.clone(),
            instance_id: instance.instance_id.clone(),
        })
    };
    let (failed_reason, timeout_reason) = match kind {
        CommandKind::Maintenance => (reason::MAINTENANCE_FAILED, reason::MAINTENANCE_TIMEOUT),
        CommandKind::Verify => (reason::VERIFY_FAILED, reason::VERIFY_TIMEOUT),
    };
    let limit_message = || {
        format!(
            "{} command {command_id} did not finish within {}s",
            kind.as_str(),
            request.timeout.as_secs()
        )
    };
    let Some(invocation) = view.invocation.as_ref() else {
        if timed_out {
            return CommandProgress::Failed {
                reason: timeout_reason,
                message: limit_message(),
                cancel: cancel(),
            };
        }
        return CommandProgress::Wait(None);
    };
    match invocation.status {
        CommandStatus::Success => CommandProgress::Succeeded,
        CommandStatus::Pending | CommandStatus::InProgress | CommandStatus::Delayed | CommandStatus::Cancelling => {
            if timed_out {
                CommandProgress::Failed {
                    reason: timeout_reason,
                    message: limit_message(),
                    cancel: cancel(),
                }
            } else {
                CommandProgress::Wait(None)
            }
        }
        status @ (CommandStatus::Failed | CommandStatus::TimedOut | CommandStatus::Cancelled) => {
            let mut message = format!("{} command {command_id} ended {status:?}", kind.as_str());
            if let Some(details) = &invocation.status_details {
                message.push_str(&format!(" ({details})"));
            }
            if let Some(code) = invocation.response_code.filter(|c| *c >= 0) {
                message.push_str(&format!(", exit code {code}"));
            }
            if let Some(stderr) = invocation
                .stderr_tail
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                message.push_str(&format!(": {stderr}"));
            }
            CommandProgress::Failed {
                reason: failed_reason,
                message,
                cancel: None,
            }
        }
    }
}
