//! Every transition and failure path of the pure state machine, one test each.

mod machine_support;

mod argocd_support;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use machine_support::{UID, run};
use pitstop::api::{
    CommandSpec, InstancePhase, MaintenancePlanSpec, MaintenancePlanStatus, OnFailure, PlanPhase, Preflight,
};
use pitstop::aws::{
    AgentPing, AwsError, AwsErrorKind, CommandKind, CommandStatus, Invocation, Target, TargetHealth, TargetState,
};
use pitstop::machine::{
    Action, CommandView, Decision, InstanceGroupView, Observed, PlanView, Requeue, SEND_LOOKUP_GRACE, decide, reason,
    record_action_failed, record_send_not_made, record_sent, wants,
};

const ARN: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";
const A: &str = "i-0000000000000000a";
const B: &str = "i-0000000000000000b";
const C: &str = "i-0000000000000000c";

fn spec() -> MaintenancePlanSpec {
    MaintenancePlanSpec {
        target_group_arn: ARN.into(),
        region: None,
        instances: vec![A.into(), B.into(), C.into()],
        maintenance: None,
        verify: None,
        preflight: Preflight::default(),
        timeouts: Default::default(),
        on_failure: OnFailure::Register,
        max_failures: 0,
        ..Default::default()
    }
}

fn t0() -> Timestamp {
    "2026-11-23T10:00:00Z".parse().expect("valid timestamp")
}

fn at(seconds: i64) -> Timestamp {
    t0() + SignedDuration::from_secs(seconds)
}

/// The observation of the plan's one target group.
fn in_group(targets: Vec<TargetHealth>) -> std::collections::BTreeMap<String, Vec<TargetHealth>> {
    std::collections::BTreeMap::from([(ARN.to_owned(), targets)])
}

fn group(states: &[(&str, TargetState)]) -> Vec<TargetHealth> {
    states
        .iter()
        .filter(|(_, s)| *s != TargetState::Unused)
        .map(|(id, state)| TargetHealth {
            target: Target {
                instance_id: (*id).into(),
                port: Some(8080),
            },
            state: *state,
            reason: None,
            description: None,
        })
        .collect()
}

fn all_healthy() -> Observed {
    Observed {
        groups: in_group(group(&[
            (A, TargetState::Healthy),
            (B, TargetState::Healthy),
            (C, TargetState::Healthy),
        ])),
        deregistration_delay: Some(Duration::from_secs(30)),
        agent: Some(AgentPing::Online),
        command: None,
        turn_held_by: None,
        tagged: None,
        auto_scaling_group: None,
        zones: None,
        presence: None,
        gates: None,
        alarms: None,
        // Read, and in no Auto Scaling group (`autoScaling` is in auto_scaling_modes.rs).
        instance_group: Some(InstanceGroupView::default()),
        ..Observed::default()
    }
}

fn with_a(state: TargetState) -> Observed {
    Observed {
        groups: in_group(group(&[
            (A, state),
            (B, TargetState::Healthy),
            (C, TargetState::Healthy),
        ])),
        instance_group: Some(InstanceGroupView::default()),
        ..Observed::default()
    }
}

fn invocation(status: CommandStatus) -> Invocation {
    Invocation {
        status,
        status_details: None,
        response_code: Some(if status == CommandStatus::Failed { 2 } else { 0 }),
        stderr_tail: None,
    }
}

fn command(id: Option<&str>, status: Option<CommandStatus>) -> Observed {
    Observed {
        command: Some(CommandView {
            command_id: id.map(Into::into),
            invocation: status.map(invocation),
        }),
        ..with_a(TargetState::Unused)
    }
}

/// Drives instance A from Pending to the start of Rebooting, returning the status.
fn draining_then_unused(spec: &MaintenancePlanSpec) -> MaintenancePlanStatus {
    draining_then_unused_from(spec, &all_healthy())
}

/// [`draining_then_unused`], with what the first round (the start) observes.
fn draining_then_unused_from(spec: &MaintenancePlanSpec, start: &Observed) -> MaintenancePlanStatus {
    let d = run(spec, None, start, at(0));
    let d = run(spec, Some(&d.status), &with_a(TargetState::Unused), at(10));
    assert_eq!(d.status.instances[0].phase, InstancePhase::Rebooting);
    d.status
}

/// Drives instance A out and through its maintenance command `cmd-1`, which SSM then
/// reports as `end` at second `seconds`.
fn maintenance_ended(spec: &MaintenancePlanSpec, end: CommandStatus, seconds: i64) -> Decision {
    command_seen(spec, draining_then_unused(spec), "cmd-1", Some(end), at(seconds))
}

/// Records A's maintenance command `id` as sent, then runs a round in which SSM reports it
/// `seen` (`None`: no invocation yet).
fn command_seen(
    spec: &MaintenancePlanSpec,
    mut status: MaintenancePlanStatus,
    id: &str,
    seen: Option<CommandStatus>,
    now: Timestamp,
) -> Decision {
    record_sent(&mut status, A, CommandKind::Maintenance, id);
    run(spec, Some(&status), &command(Some(id), seen), now)
}

#[test]
fn pending_plan_takes_first_instance_out_with_write_ahead() {
    let d = run(&spec(), None, &all_healthy(), at(0));
    assert_eq!(d.status.phase, PlanPhase::Running);
    assert_eq!(d.status.started_at, Some(at(0)));
    let a = &d.status.instances[0];
    assert_eq!(a.phase, InstancePhase::Draining);
    assert!(a.out_of_rotation, "recorded as out before the call is made");
    assert_eq!(a.port, Some(8080));
    assert_eq!(a.drain_timeout_seconds, Some(90), "delay 30 s + 60 s margin");
    assert_eq!(
        d.action,
        Some(Action::Deregister {
            target_group_arn: ARN.into(),
            target: Target {
                instance_id: A.into(),
                port: Some(8080)
            }
        })
    );
    assert_eq!(d.status.instances[1].phase, InstancePhase::Pending);
    assert_eq!(d.status.current_instance.as_deref(), Some(A));
    assert_eq!(d.status.progress.as_deref(), Some("0/3"));
    assert_eq!(d.status.observed_generation, Some(1));
    assert!(d.transitions.iter().any(|t| t.reason == "PlanStarted"));
}

#[test]
fn a_plan_whose_target_group_is_held_by_another_takes_nothing_out_and_says_who() {
    let held = Observed {
        turn_held_by: Some("default/other".into()),
        ..all_healthy()
    };
    let d = run(&spec(), None, &held, at(0));
    assert_eq!(d.action, None, "nothing is taken out");
    assert_eq!(d.status.phase, PlanPhase::Pending);
    let a = &d.status.instances[0];
    assert_eq!(a.phase, InstancePhase::Pending);
    assert_eq!(
        a.message.as_deref(),
        Some("waiting for target group held by default/other")
    );
    assert_eq!(a.waiting_since, None, "a wait for the turn is not a gate wait");
    assert_eq!(d.status.current_instance.as_deref(), Some(A));
    let progressing = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .expect("condition");
    assert_eq!(progressing.reason, "WaitingForTargetGroup");
    assert!(
        progressing.message.contains("held by default/other"),
        "{}",
        progressing.message
    );

    // Once the turn is this plan's, the same status takes the instance out.
    let d = run(&spec(), Some(&d.status), &all_healthy(), at(5));
    assert!(matches!(d.action, Some(Action::Deregister { .. })));
}

#[test]
fn wants_reads_what_the_next_step_needs() {
    let w = wants(&spec(), None);
    assert_eq!(w.instance_id.as_deref(), Some(A));
    assert!(w.group_health && w.deregistration_delay && w.agent && w.command.is_none());
    let status = draining_then_unused(&spec());
    let w = wants(&spec(), Some(&status));
    assert_eq!(w.command, Some(CommandKind::Maintenance));
    assert!(!w.agent && !w.deregistration_delay);
}

#[test]
fn draining_repeats_deregister_while_still_registered() {
    let d = run(&spec(), None, &all_healthy(), at(0));
    // A crash before the call: the next round still sees A healthy and deregisters again.
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Healthy), at(1));
    assert!(matches!(d.action, Some(Action::Deregister { .. })));
    assert_eq!(d.status.instances[0].phase, InstancePhase::Draining);
    assert_eq!(d.requeue, Requeue::Poll);
}

/// The drain limit counts from the first sight of the target draining: a DeregisterTargets
/// call held back (throttled, retried) does not use it up while the target still serves.
#[test]
fn a_deregister_that_takes_effect_late_gets_the_whole_drain_limit() {
    let d = run(&spec(), None, &all_healthy(), at(0));
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Healthy), at(100));
    assert!(matches!(d.action, Some(Action::Deregister { .. })), "asked again");
    assert_eq!(d.status.instances[0].draining_since, None);
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Draining), at(101));
    assert_eq!(d.status.instances[0].draining_since, Some(at(101)));
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Draining), at(191));
    assert_eq!(
        d.status.instances[0].phase,
        InstancePhase::Draining,
        "90 s since it began"
    );
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Draining), at(192));
    assert_eq!(
        d.status.instances[0].failure_reason.as_deref(),
        Some(reason::DRAIN_TIMEOUT)
    );
}

/// Draining again after someone registered the instance restarts the drain clock.
#[test]
fn draining_again_restarts_the_drain_clock() {
    let d = run(&spec(), None, &all_healthy(), at(0));
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Draining), at(1));
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Unused), at(5));
    assert_eq!(d.status.instances[0].phase, InstancePhase::Rebooting);
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Healthy), at(50));
    assert_eq!(d.status.instances[0].phase, InstancePhase::Draining);
    assert_eq!(d.status.instances[0].draining_since, None);
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Draining), at(60));
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Draining), at(150));
    assert_eq!(d.status.instances[0].phase, InstancePhase::Draining);
}

#[test]
fn draining_waits_then_moves_to_rebooting_when_unused() {
    let d = run(&spec(), None, &all_healthy(), at(0));
    let seen = run(&spec(), Some(&d.status), &with_a(TargetState::Draining), at(5));
    assert_eq!(
        seen.status.instances[0].draining_since,
        Some(at(5)),
        "the drain clock starts"
    );
    let waiting = run(&spec(), Some(&seen.status), &with_a(TargetState::Draining), at(6));
    assert_eq!(waiting.action, None);
    assert_eq!(waiting.requeue, Requeue::Poll);
    assert_eq!(waiting.status, seen.status, "nothing to write while waiting");
    let status = draining_then_unused(&spec());
    assert_eq!(status.instances[0].maintenance_started_at, Some(at(10)));
}

#[test]
fn drain_timeout_fails_and_registers_again() {
    let d = run(&spec(), None, &all_healthy(), at(0));
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Draining), at(1));
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Draining), at(91));
    assert_eq!(
        d.status.instances[0].phase,
        InstancePhase::Draining,
        "the limit is 90 s"
    );
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Draining), at(92));
    let a = &d.status.instances[0];
    assert_eq!(a.phase, InstancePhase::Failed);
    assert_eq!(a.failure_reason.as_deref(), Some(reason::DRAIN_TIMEOUT));
    assert!(a.out_of_rotation);
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Draining), at(92));
    assert!(
        matches!(d.action, Some(Action::Register { .. })),
        "return path registers"
    );
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Initial), at(93));
    assert!(
        d.status.instances[0].out_of_rotation,
        "out until the health checks decide"
    );
    assert_eq!(d.status.phase, PlanPhase::Running);
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Healthy), at(94));
    assert!(!d.status.instances[0].out_of_rotation);
    assert!(
        d.status.instances[0]
            .message
            .as_deref()
            .unwrap_or_default()
            .ends_with("(registered again: healthy)"),
        "{:?}",
        d.status.instances[0].message
    );
    // max_failures 0: the plan fails and B, C stay untouched.
    let d = run(&spec(), Some(&d.status), &all_healthy(), at(95));
    assert_eq!(d.status.phase, PlanPhase::Failed);
    assert_eq!(d.action, None);
    assert_eq!(d.status.instances[1].phase, InstancePhase::Pending);
    assert_eq!(d.status.instances[2].phase, InstancePhase::Pending);
    assert_eq!(d.requeue, Requeue::Idle);
}

/// A failed instance registered again is put back once the health checks decide:
/// `healthy` or `unhealthy`, or still `initial` past the healthy timeout. Until then it
/// counts as out, so the plan keeps the target group's turn.
#[test]
fn a_failed_instance_counts_as_out_until_the_health_checks_decide() {
    let mut s = spec();
    s.timeouts.healthy_seconds = Some(60);
    let failed = |s: &MaintenancePlanSpec| {
        let d = run(s, None, &all_healthy(), at(0));
        let d = run(s, Some(&d.status), &with_a(TargetState::Draining), at(0));
        let d = run(s, Some(&d.status), &with_a(TargetState::Draining), at(91));
        let d = run(s, Some(&d.status), &with_a(TargetState::Unused), at(92));
        assert!(matches!(d.action, Some(Action::Register { .. })));
        assert_eq!(d.status.instances[0].registered_at, Some(at(92)));
        d.status
    };
    let message = |d: &Decision| d.status.instances[0].message.clone().unwrap_or_default();

    let status = failed(&s);
    let waiting = run(&s, Some(&status), &with_a(TargetState::Initial), at(152));
    assert!(waiting.status.instances[0].out_of_rotation);
    assert_eq!(waiting.action, None);
    assert_eq!(waiting.requeue, Requeue::Poll);
    assert!(
        pitstop::machine::holds_turn(&s, &waiting.status, at(152)),
        "no other plan may take an instance out meanwhile"
    );
    let gave_up = run(&s, Some(&waiting.status), &with_a(TargetState::Initial), at(153));
    assert!(!gave_up.status.instances[0].out_of_rotation);
    assert!(
        message(&gave_up).ends_with("(registered again, still initial 60s after registration)"),
        "{}",
        message(&gave_up)
    );
    assert!(!pitstop::machine::holds_turn(&s, &gave_up.status, at(153)));

    let decided = run(&s, Some(&failed(&s)), &with_a(TargetState::Unhealthy), at(100));
    assert!(!decided.status.instances[0].out_of_rotation);
    assert!(
        message(&decided).ends_with("(registered again: unhealthy)"),
        "{}",
        message(&decided)
    );
}

/// A target already registered when the return path first looks (by hand, or by an older
/// pitstop) is waited for from that first sight.
#[test]
fn a_failed_instance_found_initial_waits_from_first_sight() {
    let mut s = spec();
    s.timeouts.healthy_seconds = Some(60);
    let d = run(&s, None, &all_healthy(), at(0));
    let d = run(&s, Some(&d.status), &with_a(TargetState::Draining), at(0));
    let d = run(&s, Some(&d.status), &with_a(TargetState::Draining), at(91));
    let d = run(&s, Some(&d.status), &with_a(TargetState::Initial), at(92));
    assert_eq!(d.status.instances[0].registered_at, Some(at(92)));
    let d = run(&s, Some(&d.status), &with_a(TargetState::Initial), at(152));
    assert!(d.status.instances[0].out_of_rotation);
    let d = run(&s, Some(&d.status), &with_a(TargetState::Initial), at(153));
    assert!(!d.status.instances[0].out_of_rotation);
}

#[test]
fn rebooting_looks_up_then_sends_the_tagged_default_reboot() {
    let status = draining_then_unused(&spec());
    let d = run(&spec(), Some(&status), &command(None, None), at(11));
    let Some(Action::Send { kind, request }) = d.action else {
        panic!("expected SendCommand, got {:?}", d.action);
    };
    assert_eq!(kind, CommandKind::Maintenance);
    assert_eq!(request.document_name, "AWS-RunShellScript");
    assert_eq!(request.comment, format!("pitstop/{UID}/maintenance/1"));
    assert!(request.parameters["commands"].iter().any(|l| l.contains("exit 194")));
    assert_eq!(request.timeout, Duration::from_secs(1800));
}

#[test]
fn a_command_found_by_tag_is_adopted_not_sent_again() {
    let status = draining_then_unused(&spec());
    let d = run(
        &spec(),
        Some(&status),
        &command(Some("cmd-1"), Some(CommandStatus::InProgress)),
        at(12),
    );
    assert_eq!(d.action, None, "never a second SendCommand");
    assert_eq!(d.status.instances[0].maintenance_command_id.as_deref(), Some("cmd-1"));
}

#[test]
fn send_is_recorded_before_the_call_and_a_lost_answer_is_looked_for_not_sent_again() {
    let status = draining_then_unused(&spec());
    let d = run(&spec(), Some(&status), &command(None, None), at(11));
    assert!(matches!(d.action, Some(Action::Send { .. })));
    assert_eq!(
        d.status.instances[0].send_attempted_at,
        Some(at(11)),
        "the attempt is in the status written before SendCommand"
    );
    // The answer never came and ListCommands does not show the command yet: look again,
    // right up to the end of the grace period.
    for seconds in [12, 40, 11 + SEND_LOOKUP_GRACE.as_secs() as i64] {
        let wait = run(&spec(), Some(&d.status), &command(None, None), at(seconds));
        assert_eq!(wait.action, None, "no second SendCommand at {seconds}s");
        assert_eq!(wait.requeue, Requeue::Poll);
        assert!(
            wait.status.instances[0]
                .message
                .as_deref()
                .is_some_and(|m| m.contains("got no answer")),
            "{:?}",
            wait.status.instances[0].message
        );
    }
    // It shows up: adopted, and the attempt is settled.
    let found = run(
        &spec(),
        Some(&d.status),
        &command(Some("cmd-1"), Some(CommandStatus::InProgress)),
        at(30),
    );
    assert_eq!(found.action, None);
    assert_eq!(
        found.status.instances[0].maintenance_command_id.as_deref(),
        Some("cmd-1")
    );
    assert_eq!(found.status.instances[0].send_attempted_at, None);
}

#[test]
fn a_send_that_never_reached_aws_is_sent_again_after_the_grace_period() {
    // The controller died between the write-ahead status and the call: nothing to find.
    let status = draining_then_unused(&spec());
    let d = run(&spec(), Some(&status), &command(None, None), at(11));
    let late = 12 + SEND_LOOKUP_GRACE.as_secs() as i64;
    let again = run(&spec(), Some(&d.status), &command(None, None), at(late));
    let Some(Action::Send { request, .. }) = again.action else {
        panic!("expected SendCommand after the grace period, got {:?}", again.action);
    };
    assert_eq!(request.comment, format!("pitstop/{UID}/maintenance/1"), "same tag");
    assert_eq!(again.status.instances[0].send_attempted_at, Some(at(late)));
}

#[test]
fn a_refused_or_unsent_send_clears_the_attempt_and_a_lost_answer_keeps_it() {
    let status = draining_then_unused(&spec());
    let d = run(&spec(), Some(&status), &command(None, None), at(11));
    let action = d.action.clone().expect("SendCommand");
    let throttled = AwsError::new(
        "SendCommand",
        AwsErrorKind::Throttled,
        Some("ThrottlingException".into()),
        "Rate exceeded",
    );
    let lost = AwsError::new("SendCommand", AwsErrorKind::Transient, None, "connection reset").with_outcome_unknown();

    let mut after_lost = d.status.clone();
    assert!(!record_send_not_made(&mut after_lost, &action, &lost));
    assert_eq!(after_lost.instances[0].send_attempted_at, Some(at(11)));

    let mut after_throttle = d.status.clone();
    assert!(record_send_not_made(&mut after_throttle, &action, &throttled));
    assert_eq!(after_throttle.instances[0].send_attempted_at, None);
    let again = run(&spec(), Some(&after_throttle), &command(None, None), at(14));
    assert!(
        matches!(again.action, Some(Action::Send { .. })),
        "a refused SendCommand is sent again at once: {:?}",
        again.action
    );
    // Only SendCommand has an attempt to clear.
    let deregister = Action::Deregister {
        target_group_arn: ARN.into(),
        target: Target {
            instance_id: A.into(),
            port: Some(8080),
        },
    };
    assert!(!record_send_not_made(&mut after_lost, &deregister, &throttled));
}

#[test]
fn invocation_does_not_exist_right_after_send_is_a_wait() {
    let d = command_seen(&spec(), draining_then_unused(&spec()), "cmd-1", None, at(12));
    assert_eq!(d.action, None);
    assert_eq!(d.requeue, Requeue::Poll);
    assert_eq!(d.status.instances[0].phase, InstancePhase::Rebooting);
}

#[test]
fn every_running_status_waits() {
    for s in [
        CommandStatus::Pending,
        CommandStatus::InProgress,
        CommandStatus::Delayed,
        CommandStatus::Cancelling,
    ] {
        let d = maintenance_ended(&spec(), s, 60);
        assert_eq!(d.status.instances[0].phase, InstancePhase::Rebooting, "{s:?}");
        assert_eq!(d.action, None, "{s:?}");
    }
}

#[test]
fn every_terminal_failure_fails_the_instance() {
    for s in [CommandStatus::Failed, CommandStatus::TimedOut, CommandStatus::Cancelled] {
        let d = maintenance_ended(&spec(), s, 60);
        let a = &d.status.instances[0];
        assert_eq!(a.phase, InstancePhase::Failed, "{s:?}");
        assert_eq!(a.failure_reason.as_deref(), Some(reason::MAINTENANCE_FAILED));
        assert!(a.message.as_deref().unwrap_or_default().contains("cmd-1"));
        assert!(a.out_of_rotation, "still out until registered again");
    }
}

#[test]
fn command_past_its_limit_is_cancelled_and_fails() {
    let d = maintenance_ended(&spec(), CommandStatus::InProgress, 10 + 1801);
    assert_eq!(
        d.action,
        Some(Action::Cancel {
            command_id: "cmd-1".into(),
            instance_id: A.into()
        })
    );
    assert_eq!(
        d.status.instances[0].failure_reason.as_deref(),
        Some(reason::MAINTENANCE_TIMEOUT)
    );
}

#[test]
fn success_registers_waits_for_healthy_then_moves_on() {
    let d = maintenance_ended(&spec(), CommandStatus::Success, 60);
    assert_eq!(d.status.instances[0].phase, InstancePhase::Verifying);
    assert_eq!(d.requeue, Requeue::Now);
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Unused), at(61));
    assert!(matches!(d.action, Some(Action::Register { .. })));
    assert_eq!(d.status.instances[0].registered_at, Some(at(61)));
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Initial), at(62));
    assert_eq!(d.action, None);
    assert!(
        !d.status.instances[0].out_of_rotation,
        "registered, so back in rotation"
    );
    assert_eq!(d.status.instances[0].phase, InstancePhase::Verifying);
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Healthy), at(70));
    assert_eq!(d.status.instances[0].phase, InstancePhase::Registered);
    assert_eq!(d.status.progress.as_deref(), Some("1/3"));
    // Next round starts B.
    let d = run(&spec(), Some(&d.status), &all_healthy(), at(71));
    assert_eq!(d.status.instances[1].phase, InstancePhase::Draining);
    assert_eq!(d.status.current_instance.as_deref(), Some(B));
}

#[test]
fn healthy_timeout_fails_but_leaves_the_instance_registered() {
    let d = maintenance_ended(&spec(), CommandStatus::Success, 60);
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Unused), at(61));
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Unhealthy), at(61 + 601));
    let a = &d.status.instances[0];
    assert_eq!(a.phase, InstancePhase::Failed);
    assert_eq!(a.failure_reason.as_deref(), Some(reason::HEALTHY_TIMEOUT));
    assert!(!a.out_of_rotation);
}

#[test]
fn verify_runs_before_registration_and_its_failure_fails() {
    let mut s = spec();
    s.verify = Some(CommandSpec {
        document_name: "AWS-RunShellScript".into(),
        document_version: None,
        parameters: [(
            "commands".to_owned(),
            vec!["curl -fsS http://localhost:8080/".to_owned()],
        )]
        .into(),
        timeout_seconds: None,
    });
    let d = maintenance_ended(&s, CommandStatus::Success, 60);
    assert_eq!(wants(&s, Some(&d.status)).command, Some(CommandKind::Verify));
    let d = run(&s, Some(&d.status), &command(None, None), at(61));
    let Some(Action::Send { kind, request }) = &d.action else {
        panic!("expected the verify command, got {:?}", d.action);
    };
    assert_eq!(*kind, CommandKind::Verify);
    assert_eq!(request.comment, format!("pitstop/{UID}/verify/1"));
    assert_eq!(request.timeout, Duration::from_secs(300));
    let mut status = d.status.clone();
    record_sent(&mut status, A, CommandKind::Verify, "cmd-2");
    let d = run(
        &s,
        Some(&status),
        &command(Some("cmd-2"), Some(CommandStatus::Failed)),
        at(70),
    );
    assert_eq!(
        d.status.instances[0].failure_reason.as_deref(),
        Some(reason::VERIFY_FAILED)
    );
    let d = run(&s, Some(&d.status), &with_a(TargetState::Unused), at(71));
    assert!(matches!(d.action, Some(Action::Register { .. })));
}

#[test]
fn leave_out_keeps_a_failed_instance_out_and_stops() {
    let mut s = spec();
    s.on_failure = OnFailure::LeaveOut;
    let d = maintenance_ended(&s, CommandStatus::Failed, 60);
    assert!(
        d.status.instances[0]
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("LeaveOut")
    );
    let d = run(&s, Some(&d.status), &with_a(TargetState::Unused), at(61));
    assert_eq!(d.action, None, "no RegisterTargets with LeaveOut");
    assert_eq!(d.status.phase, PlanPhase::Failed);
    assert!(d.status.instances[0].out_of_rotation);
}

#[test]
fn max_failures_lets_the_plan_go_on_and_succeed() {
    let mut s = spec();
    s.max_failures = 1;
    let d = maintenance_ended(&s, CommandStatus::Failed, 60);
    let d = run(&s, Some(&d.status), &with_a(TargetState::Unused), at(61));
    let d = run(&s, Some(&d.status), &with_a(TargetState::Initial), at(62));
    let d = run(&s, Some(&d.status), &with_a(TargetState::Healthy), at(70));
    let d = run(&s, Some(&d.status), &all_healthy(), at(80));
    assert_eq!(
        d.status.instances[1].phase,
        InstancePhase::Draining,
        "B starts after A failed"
    );
}

#[test]
fn preflight_gates_fail_before_touching_anything() {
    let cases: Vec<(Observed, &str)> = vec![
        (
            Observed {
                groups: in_group(group(&[(B, TargetState::Healthy), (C, TargetState::Healthy)])),
                ..all_healthy()
            },
            reason::NOT_IN_TARGET_GROUP,
        ),
        (
            Observed {
                groups: in_group(group(&[
                    (A, TargetState::Unhealthy),
                    (B, TargetState::Healthy),
                    (C, TargetState::Healthy),
                ])),
                ..all_healthy()
            },
            reason::INSTANCE_UNHEALTHY,
        ),
        (
            Observed {
                groups: in_group(group(&[
                    (A, TargetState::Healthy),
                    (B, TargetState::Initial),
                    (C, TargetState::Healthy),
                ])),
                ..all_healthy()
            },
            reason::TARGET_GROUP_UNHEALTHY,
        ),
        (
            Observed {
                agent: Some(AgentPing::ConnectionLost),
                ..all_healthy()
            },
            reason::AGENT_NOT_ONLINE,
        ),
        (
            Observed {
                groups: in_group(group(&[(A, TargetState::Healthy)])),
                ..all_healthy()
            },
            reason::TOO_FEW_HEALTHY_TARGETS,
        ),
    ];
    for (observed, expected) in cases {
        let mut d = run(&spec(), None, &observed, at(0));
        if expected != reason::NOT_IN_TARGET_GROUP {
            // A closed gate is waited for (the status says why), then fails the instance.
            assert_eq!(d.status.instances[0].phase, InstancePhase::Pending, "{expected}");
            assert_eq!(d.status.instances[0].waiting_since, Some(at(0)));
            let message = d.status.instances[0].message.clone().unwrap_or_default();
            assert!(message.contains(expected), "{message}");
            assert_eq!(d.requeue, Requeue::Poll);
            let still = run(&spec(), Some(&d.status), &observed, at(599));
            assert_eq!(still.status.instances[0].phase, InstancePhase::Pending, "{expected}");
            assert_eq!(still.action, None);
            d = run(&spec(), Some(&still.status), &observed, at(600));
        }
        assert_eq!(d.action, None, "{expected}: nothing is done on AWS");
        let a = &d.status.instances[0];
        assert_eq!(a.phase, InstancePhase::Failed, "{expected}");
        assert_eq!(a.failure_reason.as_deref(), Some(expected));
        assert!(!a.out_of_rotation);
        let d = run(&spec(), Some(&d.status), &observed, at(601));
        assert_eq!(d.status.phase, PlanPhase::Failed, "{expected}");
        assert_eq!(d.action, None);
    }
}

#[test]
fn min_healthy_targets_zero_allows_a_single_target_group() {
    let mut s = spec();
    s.instances = vec![A.into()];
    s.preflight.min_healthy_targets = Some(0);
    let observed = Observed {
        groups: in_group(group(&[(A, TargetState::Healthy)])),
        ..all_healthy()
    };
    let d = run(&s, None, &observed, at(0));
    assert!(matches!(d.action, Some(Action::Deregister { .. })));
}

#[test]
fn invalid_spec_fails_without_any_action() {
    let mut s = spec();
    s.target_group_arn = "not-an-arn".into();
    s.instances.push(A.into());
    let d = run(&s, None, &Observed::default(), at(0));
    assert_eq!(d.status.phase, PlanPhase::Failed);
    assert_eq!(d.action, None);
    let accepted = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Accepted")
        .expect("Accepted condition");
    assert_eq!(accepted.status, "False");
    assert!(accepted.message.contains("targetGroupArn"), "{}", accepted.message);
    assert!(accepted.message.contains("more than once"), "{}", accepted.message);
}

#[test]
fn someone_registering_the_instance_during_maintenance_drains_it_again() {
    let status = draining_then_unused(&spec());
    let d = run(
        &spec(),
        Some(&status),
        &Observed {
            command: Some(CommandView::default()),
            ..with_a(TargetState::Healthy)
        },
        at(11),
    );
    assert_eq!(d.status.instances[0].phase, InstancePhase::Draining);
    assert!(
        matches!(d.action, Some(Action::Deregister { .. })),
        "never SendCommand to a registered instance"
    );
}

#[test]
fn rejected_send_fails_the_instance_and_it_goes_back() {
    let status = draining_then_unused(&spec());
    let d = run(&spec(), Some(&status), &command(None, None), at(11));
    let action = d.action.clone().expect("SendCommand");
    let mut status = d.status;
    let error = pitstop::aws::AwsError::new(
        "SendCommand",
        pitstop::aws::AwsErrorKind::NotFound,
        Some("InvalidDocument".into()),
        "no such document",
    );
    let transition = record_action_failed(&spec(), &mut status, &action, &error, at(11));
    assert!(transition.is_some());
    assert_eq!(
        status.instances[0].failure_reason.as_deref(),
        Some(reason::AWS_REJECTED)
    );
    let d = run(&spec(), Some(&status), &with_a(TargetState::Unused), at(12));
    assert!(matches!(d.action, Some(Action::Register { .. })));
    // Throttling changes nothing: the same action comes again.
    let mut unchanged = status.clone();
    let throttled =
        pitstop::aws::AwsError::new("SendCommand", pitstop::aws::AwsErrorKind::Throttled, None, "slow down");
    assert!(record_action_failed(&spec(), &mut unchanged, &action, &throttled, at(12)).is_none());
    assert_eq!(unchanged, status);
}

#[test]
fn conditions_keep_transition_times_until_status_flips() {
    let d1 = run(&spec(), None, &all_healthy(), at(0));
    let d2 = run(&spec(), Some(&d1.status), &with_a(TargetState::Draining), at(5));
    let progressing = |s: &MaintenancePlanStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Progressing")
            .map(|c| (c.status.clone(), c.last_transition_time))
    };
    assert_eq!(progressing(&d1.status), Some(("True".into(), at(0))));
    assert_eq!(progressing(&d2.status), progressing(&d1.status));
}

#[test]
fn finished_plans_stay_finished_and_acknowledge_edits() {
    let mut s = spec();
    s.instances = vec![A.into()];
    s.preflight.min_healthy_targets = Some(0);
    let mut status = MaintenancePlanStatus {
        phase: PlanPhase::Succeeded,
        ..Default::default()
    };
    status.instances.push(pitstop::api::InstanceStatus {
        instance_id: A.into(),
        phase: InstancePhase::Registered,
        ..Default::default()
    });
    let d = decide(
        PlanView {
            uid: UID,
            generation: Some(2),
            spec: &s,
            status: Some(&status),
        },
        &Observed::default(),
        at(0),
    );
    assert_eq!(d.status.phase, PlanPhase::Succeeded);
    assert_eq!(d.status.observed_generation, Some(2));
    assert_eq!(d.requeue, Requeue::Idle);
    assert_eq!(d.action, None);
}

#[test]
fn removing_an_instance_in_flight_still_finishes_it() {
    let d = run(&spec(), None, &all_healthy(), at(0));
    let mut s = spec();
    s.instances = vec![B.into(), C.into()];
    let d = run(&s, Some(&d.status), &with_a(TargetState::Draining), at(1));
    assert!(
        d.status
            .instances
            .iter()
            .any(|i| i.instance_id == A && i.phase == InstancePhase::Draining)
    );
    assert_eq!(d.status.current_instance.as_deref(), Some(A));
}

#[test]
fn a_spec_turned_invalid_mid_reboot_cancels_the_command_then_puts_the_instance_back() {
    let mut status = draining_then_unused(&spec());
    record_sent(&mut status, A, CommandKind::Maintenance, "cmd-1");
    let mut broken = spec();
    broken.instances.push(B.into()); // a duplicate: invalid
    assert_eq!(
        wants(&broken, Some(&status)).instance_id.as_deref(),
        Some(A),
        "still reads for the instance out"
    );
    let d = run(
        &broken,
        Some(&status),
        &command(Some("cmd-1"), Some(CommandStatus::InProgress)),
        at(20),
    );
    assert_eq!(
        d.action,
        Some(Action::Cancel {
            command_id: "cmd-1".into(),
            instance_id: A.into()
        })
    );
    assert_eq!(
        d.status.instances[0].failure_reason.as_deref(),
        Some(reason::INVALID_SPEC)
    );
    let d = run(&broken, Some(&d.status), &with_a(TargetState::Unused), at(21));
    assert!(matches!(d.action, Some(Action::Register { .. })));
    let d = run(&broken, Some(&d.status), &with_a(TargetState::Initial), at(22));
    let d = run(&broken, Some(&d.status), &with_a(TargetState::Healthy), at(23));
    let d = run(&broken, Some(&d.status), &Observed::default(), at(24));
    assert_eq!(d.status.phase, PlanPhase::Failed);
    assert_eq!(
        wants(&broken, Some(&d.status)),
        Default::default(),
        "nothing more to read"
    );
}

#[test]
fn an_invalid_spec_with_nothing_in_flight_reads_nothing() {
    let mut s = spec();
    s.target_group_arn = "arn:aws:nope".into();
    assert_eq!(wants(&s, None), Default::default());
}

#[test]
fn a_gate_that_opens_while_waited_for_lets_the_instance_go() {
    let unhealthy_b = Observed {
        groups: in_group(group(&[
            (A, TargetState::Healthy),
            (B, TargetState::Unhealthy),
            (C, TargetState::Healthy),
        ])),
        ..all_healthy()
    };
    let d = run(&spec(), None, &unhealthy_b, at(0));
    assert_eq!(d.status.instances[0].phase, InstancePhase::Pending);
    let d = run(&spec(), Some(&d.status), &all_healthy(), at(30));
    assert_eq!(d.status.instances[0].phase, InstancePhase::Draining);
    assert_eq!(d.status.instances[0].waiting_since, None);
    assert!(matches!(d.action, Some(Action::Deregister { .. })));
}

#[test]
fn gate_timeout_is_configurable() {
    let mut s = spec();
    s.preflight.gate_timeout_seconds = Some(0);
    let observed = Observed {
        agent: Some(AgentPing::ConnectionLost),
        ..all_healthy()
    };
    let d = run(&s, None, &observed, at(0));
    assert_eq!(
        d.status.instances[0].failure_reason.as_deref(),
        Some(reason::AGENT_NOT_ONLINE)
    );
}

/// Drives instance A to Registered at `t`, returning the status.
fn a_registered(s: &MaintenancePlanSpec, t: i64) -> MaintenancePlanStatus {
    let d = maintenance_ended(s, CommandStatus::Success, t - 3);
    let d = run(s, Some(&d.status), &with_a(TargetState::Unused), at(t - 2));
    let d = run(s, Some(&d.status), &with_a(TargetState::Healthy), at(t));
    assert_eq!(d.status.instances[0].phase, InstancePhase::Registered);
    d.status
}

#[test]
fn suspend_finishes_the_instance_in_flight_then_pauses_and_resume_goes_on() {
    let mut s = spec();
    let d = run(&s, None, &all_healthy(), at(0));
    s.suspend = true;
    // A is in flight: it goes on.
    let d = run(&s, Some(&d.status), &with_a(TargetState::Unused), at(10));
    assert_eq!(d.status.instances[0].phase, InstancePhase::Rebooting);
    let status = a_registered(&spec(), 70);
    let d = run(&s, Some(&status), &all_healthy(), at(71));
    assert_eq!(d.status.phase, PlanPhase::Suspended);
    assert_eq!(d.action, None);
    assert_eq!(d.requeue, Requeue::Idle);
    assert_eq!(d.status.instances[1].phase, InstancePhase::Pending);
    assert_eq!(
        wants(&s, Some(&d.status)),
        Default::default(),
        "a suspended plan reads nothing"
    );
    s.suspend = false;
    let d = run(&s, Some(&d.status), &all_healthy(), at(500));
    assert_eq!(d.status.phase, PlanPhase::Running);
    assert_eq!(d.status.instances[1].phase, InstancePhase::Draining);
}

#[test]
fn a_plan_suspended_before_it_starts_touches_nothing() {
    let mut s = spec();
    s.suspend = true;
    let d = run(&s, None, &all_healthy(), at(0));
    assert_eq!(d.status.phase, PlanPhase::Suspended);
    assert_eq!(d.action, None);
}

#[test]
fn dry_run_checks_every_instance_and_changes_nothing() {
    let mut s = spec();
    s.dry_run = true;
    let blocked_c = Observed {
        groups: in_group(group(&[(A, TargetState::Healthy), (B, TargetState::Healthy)])),
        ..all_healthy()
    };
    let mut status: Option<MaintenancePlanStatus> = None;
    for round in 0..10 {
        let observed = if wants(&s, status.as_ref()).instance_id.as_deref() == Some(C) {
            blocked_c.clone()
        } else {
            all_healthy()
        };
        assert!(!wants(&s, status.as_ref()).deregistration_delay);
        let d = run(&s, status.as_ref(), &observed, at(round));
        assert_eq!(d.action, None, "a dry run never acts");
        status = Some(d.status);
        if status.as_ref().is_some_and(|st| st.phase.is_finished()) {
            break;
        }
    }
    let status = status.expect("status");
    assert_eq!(status.phase, PlanPhase::Failed, "C would be blocked");
    assert!(
        status
            .instances
            .iter()
            .all(|i| i.phase == InstancePhase::Pending && !i.out_of_rotation)
    );
    let results: Vec<&str> = status.instances.iter().filter_map(|i| i.dry_run.as_deref()).collect();
    assert!(results[0].starts_with("would deregister (port 8080)"), "{results:?}");
    assert!(results[2].starts_with("blocked (NotInTargetGroup)"), "{results:?}");
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("1 of 3 instances would be blocked")
    );

    // Turning the dry run off is a new generation: a real run starts.
    s.dry_run = false;
    let d = decide(
        PlanView {
            uid: UID,
            generation: Some(2),
            spec: &s,
            status: Some(&status),
        },
        &all_healthy(),
        at(100),
    );
    assert_eq!(d.status.phase, PlanPhase::Running);
    assert!(matches!(d.action, Some(Action::Deregister { .. })));
    assert!(d.status.instances.iter().all(|i| i.dry_run.is_none()));
}

#[test]
fn settle_seconds_waits_after_an_instance_before_the_next() {
    let mut s = spec();
    s.settle_seconds = 60;
    let status = a_registered(&s, 70);
    let d = run(&s, Some(&status), &all_healthy(), at(71));
    assert_eq!(d.action, None);
    assert_eq!(d.requeue, Requeue::After(Duration::from_secs(59)));
    assert_eq!(d.status.instances[1].phase, InstancePhase::Pending);
    let d = run(&s, Some(&d.status), &all_healthy(), at(130));
    assert_eq!(d.status.instances[1].phase, InstancePhase::Draining);
}

#[test]
fn max_attempts_retries_while_out_then_fails() {
    let mut s = spec();
    s.max_attempts = 2;
    let d = maintenance_ended(&s, CommandStatus::Failed, 60);
    let a = &d.status.instances[0];
    assert_eq!(a.phase, InstancePhase::Rebooting, "retried, still out");
    assert_eq!(a.attempt, 2);
    assert!(a.out_of_rotation);
    assert_eq!(a.maintenance_command_id, None);
    assert_eq!(a.next_attempt_at, Some(at(70)), "10 s backoff");
    assert!(d.transitions.iter().any(|t| t.reason == "Retrying"));
    // During the backoff nothing is sent.
    let wait = run(&s, Some(&d.status), &command(None, None), at(65));
    assert_eq!(wait.action, None);
    assert_eq!(wait.requeue, Requeue::After(Duration::from_secs(5)));
    // Then the second try goes out with its own tag.
    let d = run(&s, Some(&d.status), &command(None, None), at(71));
    let Some(Action::Send { request, .. }) = &d.action else {
        panic!("expected the second try, got {:?}", d.action);
    };
    assert_eq!(request.comment, format!("pitstop/{UID}/maintenance/2"));
    let d = command_seen(&s, d.status.clone(), "cmd-2", Some(CommandStatus::Failed), at(90));
    assert_eq!(d.status.instances[0].phase, InstancePhase::Failed, "out of tries");
    assert_eq!(
        d.status.instances[0].failure_reason.as_deref(),
        Some(reason::MAINTENANCE_FAILED)
    );
}

#[test]
fn a_failed_plan_whose_spec_is_fixed_runs_again_and_keeps_what_is_done() {
    let mut s = spec();
    s.max_failures = 0;
    let status = a_registered(&s, 70);
    // B fails preflight at once (not in the group), the plan fails.
    let not_b = Observed {
        groups: in_group(group(&[(A, TargetState::Healthy), (C, TargetState::Healthy)])),
        ..all_healthy()
    };
    let d = run(&s, Some(&status), &not_b, at(71));
    let d = run(&s, Some(&d.status), &not_b, at(72));
    assert_eq!(d.status.phase, PlanPhase::Failed);
    // Same generation: stays failed.
    let again = run(&s, Some(&d.status), &all_healthy(), at(80));
    assert_eq!(again.status.phase, PlanPhase::Failed);
    assert_eq!(again.action, None);
    // A new generation (B is back in the group, the user re-applies): a new run from B.
    let d = decide(
        PlanView {
            uid: UID,
            generation: Some(2),
            spec: &s,
            status: Some(&again.status),
        },
        &all_healthy(),
        at(90),
    );
    assert_eq!(
        d.status.instances[0].phase,
        InstancePhase::Registered,
        "A is not rebooted again"
    );
    assert_eq!(d.status.instances[1].phase, InstancePhase::Draining);
    assert!(d.transitions.iter().any(|t| t.reason == "SpecChanged"));
}

#[test]
fn a_new_run_never_adopts_the_command_of_an_earlier_run() {
    let s = spec();
    let d = maintenance_ended(&s, CommandStatus::Failed, 60);
    let d = run(&s, Some(&d.status), &with_a(TargetState::Unused), at(61));
    let d = run(&s, Some(&d.status), &with_a(TargetState::Healthy), at(62));
    let d = run(&s, Some(&d.status), &all_healthy(), at(63));
    assert_eq!(d.status.phase, PlanPhase::Failed);
    let edited = |status: &MaintenancePlanStatus, observed: &Observed, t: i64| {
        decide(
            PlanView {
                uid: UID,
                generation: Some(2),
                spec: &s,
                status: Some(status),
            },
            observed,
            at(t),
        )
    };
    let d = edited(&d.status, &all_healthy(), 100);
    assert_eq!(d.status.instances[0].phase, InstancePhase::Draining);
    assert_eq!(d.status.instances[0].attempt, 2, "attempts count across runs");
    let d = edited(&d.status, &with_a(TargetState::Unused), 110);
    let d = edited(&d.status, &command(None, None), 111);
    let Some(Action::Send { request, .. }) = &d.action else {
        panic!("expected a new command, got {:?}", d.action);
    };
    assert_eq!(
        request.comment,
        format!("pitstop/{UID}/maintenance/2"),
        "not the first run's tag"
    );
}

fn sunday_night(spec: &mut MaintenancePlanSpec) {
    spec.schedule = Some(pitstop::api::Schedule {
        cron: "0 22 * * SUN".into(),
        time_zone: "Europe/London".into(),
        window_minutes: 60,
    });
}

fn ts(s: &str) -> Timestamp {
    s.parse().expect("timestamp")
}

#[test]
fn a_scheduled_plan_starts_nothing_outside_its_window() {
    let mut s = spec();
    sunday_night(&mut s);
    // Monday 2026-11-23 10:00 UTC: the window opens next Sunday 22:00 GMT.
    let d = run(&s, None, &all_healthy(), ts("2026-11-23T10:00:00Z"));
    assert_eq!(d.action, None);
    assert_eq!(d.status.phase, PlanPhase::Pending);
    assert_eq!(d.status.next_window, Some(ts("2026-11-29T22:00:00Z")));
    assert_eq!(d.status.window_end, None);
    assert!(
        d.status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("waiting for the maintenance window")
    );
    let Requeue::After(wait) = d.requeue else {
        panic!("expected a wake-up at the window, got {:?}", d.requeue)
    };
    assert_eq!(wait, Duration::from_secs((6 * 24 + 12) * 3600));
}

#[test]
fn a_window_that_closes_mid_plan_finishes_the_instance_in_flight_and_the_next_window_resumes() {
    let mut s = spec();
    sunday_night(&mut s);
    let opens = ts("2026-11-29T22:00:00Z");
    let plus = |secs: i64| opens + SignedDuration::from_secs(secs);
    let d = run(&s, None, &all_healthy(), plus(0));
    assert!(
        matches!(d.action, Some(Action::Deregister { .. })),
        "the window is open"
    );
    assert_eq!(d.status.window_start, Some(opens));
    // A finishes after the window closed (22:00 + 60 min).
    let d = run(&s, Some(&d.status), &with_a(TargetState::Unused), plus(3000));
    let d = command_seen(&s, d.status, "cmd-1", Some(CommandStatus::Success), plus(3700));
    assert_eq!(
        d.status.instances[0].phase,
        InstancePhase::Verifying,
        "in flight when the window closed: goes on"
    );
    let d = run(&s, Some(&d.status), &with_a(TargetState::Unused), plus(3701));
    assert!(matches!(d.action, Some(Action::Register { .. })), "and is put back");
    let d = run(&s, Some(&d.status), &with_a(TargetState::Healthy), plus(3710));
    assert_eq!(d.status.instances[0].phase, InstancePhase::Registered);
    let d = run(&s, Some(&d.status), &all_healthy(), plus(3711));
    assert_eq!(d.action, None, "no new instance after the window closed");
    assert_eq!(d.status.instances[1].phase, InstancePhase::Pending);
    assert_eq!(d.status.phase, PlanPhase::Running);
    // The next Sunday: B goes.
    let next = ts("2026-12-06T22:00:00Z");
    let d = run(&s, Some(&d.status), &all_healthy(), next);
    assert_eq!(
        d.status.instances[1].phase,
        InstancePhase::Draining,
        "the next window resumes the run"
    );
    assert_eq!(
        d.status.instances[0].phase,
        InstancePhase::Registered,
        "A is not done twice in one run"
    );
}

#[test]
fn each_window_runs_every_instance_again_and_keeps_a_history() {
    let mut s = spec();
    s.instances = vec![A.into()];
    s.preflight.min_healthy_targets = Some(0);
    sunday_night(&mut s);
    let opens = ts("2026-11-29T22:00:00Z");
    let plus = |secs: i64| opens + SignedDuration::from_secs(secs);
    let d = run(&s, None, &all_healthy(), plus(0));
    let d = run(&s, Some(&d.status), &with_a(TargetState::Unused), plus(10));
    let d = command_seen(&s, d.status, "cmd-1", Some(CommandStatus::Success), plus(60));
    let d = run(&s, Some(&d.status), &with_a(TargetState::Unused), plus(61));
    let d = run(&s, Some(&d.status), &with_a(TargetState::Healthy), plus(70));
    let d = run(&s, Some(&d.status), &all_healthy(), plus(71));
    assert_eq!(d.status.phase, PlanPhase::Succeeded);
    // Still in the same window: nothing more.
    let same = run(&s, Some(&d.status), &all_healthy(), plus(600));
    assert_eq!(same.status.phase, PlanPhase::Succeeded);
    assert_eq!(same.action, None);
    assert!(
        matches!(same.requeue, Requeue::After(_)),
        "wakes up for the next window"
    );
    // The next window: a new run.
    let next = ts("2026-12-06T22:00:00Z");
    let d = run(&s, Some(&same.status), &all_healthy(), next);
    assert!(d.transitions.iter().any(|t| t.reason == "WindowOpened"));
    assert_eq!(d.status.runs.len(), 1);
    assert_eq!(d.status.runs[0].phase, PlanPhase::Succeeded);
    assert_eq!(d.status.runs[0].window_start, Some(opens));
    assert_eq!(d.status.instances[0].phase, InstancePhase::Draining);
    assert_eq!(d.status.instances[0].attempt, 2, "a new tag for the new run's command");
}

#[test]
fn a_bad_schedule_is_an_invalid_spec() {
    let mut s = spec();
    sunday_night(&mut s);
    if let Some(schedule) = s.schedule.as_mut() {
        schedule.time_zone = "Mars/Olympus".into();
    }
    let d = run(&s, None, &Observed::default(), at(0));
    assert_eq!(d.status.phase, PlanPhase::Failed);
    assert!(d.status.message.as_deref().unwrap_or_default().contains("Mars/Olympus"));
}

/// What kstatus (Flux, `kubectl wait`, cli-utils) makes of a plan's conditions, in its order:
/// a generation not yet seen or `Reconciling=True` is in progress, then `Stalled=True` failed,
/// then `Ready` says whether it is current.
fn kstatus(status: &MaintenancePlanStatus, generation: i64) -> &'static str {
    let is_true = |type_: &str| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True" && c.observed_generation == Some(generation))
    };
    if status.observed_generation != Some(generation) || is_true("Reconciling") {
        "InProgress"
    } else if is_true("Stalled") {
        "Failed"
    } else if is_true("Ready") {
        "Current"
    } else {
        "NotReady"
    }
}

/// What Argo CD makes of the plan through `deploy/argocd/health.lua`: (status, message).
fn argocd(spec: &MaintenancePlanSpec, status: &MaintenancePlanStatus, generation: i64) -> (String, String) {
    argocd_support::argocd_health(&serde_json::json!({
        "apiVersion": "pitstop.dev/v1alpha1",
        "kind": "MaintenancePlan",
        "metadata": {"name": "web", "namespace": "team-a", "generation": generation},
        "spec": spec,
        "status": status,
    }))
}

fn reason_of<'a>(status: &'a MaintenancePlanStatus, type_: &str) -> &'a str {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map_or("(none)", |c| c.reason.as_str())
}

#[test]
fn gitops_tools_see_a_running_plan_in_progress_and_a_finished_one_ready() {
    let mut one = spec();
    one.instances = vec![A.into()];
    let d = run(&one, None, &all_healthy(), at(0));
    assert_eq!(kstatus(&d.status, 1), "InProgress", "an instance is being taken out");
    assert_eq!(reason_of(&d.status, "Ready"), "InstanceInProgress");
    let (health, message) = argocd(&one, &d.status, 1);
    assert_eq!(health, "Progressing");
    assert!(message.starts_with(A), "{message}");
    let status = a_registered(&one, 70);
    let d = run(&one, Some(&status), &all_healthy(), at(71));
    assert_eq!(d.status.phase, PlanPhase::Succeeded);
    assert_eq!(kstatus(&d.status, 1), "Current");
    assert_eq!(reason_of(&d.status, "Ready"), "Succeeded");
    assert_eq!(
        argocd(&one, &d.status, 1),
        (
            "Healthy".to_owned(),
            "all 1 instances maintained and healthy".to_owned()
        )
    );
}

#[test]
fn gitops_tools_see_a_failed_or_invalid_plan_stalled() {
    let d = maintenance_ended(&spec(), CommandStatus::Failed, 60);
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Unused), at(61));
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Initial), at(62));
    let d = run(&spec(), Some(&d.status), &with_a(TargetState::Healthy), at(70));
    let d = run(&spec(), Some(&d.status), &all_healthy(), at(80));
    assert_eq!(d.status.phase, PlanPhase::Failed);
    assert_eq!(kstatus(&d.status, 1), "Failed");
    assert_eq!(reason_of(&d.status, "Stalled"), "MaintenanceFailed");
    let (health, message) = argocd(&spec(), &d.status, 1);
    assert_eq!(health, "Degraded");
    assert!(message.contains("failed"), "{message}");
    let mut invalid = spec();
    invalid.target_group_arn = "not-an-arn".into();
    let d = run(&invalid, None, &Observed::default(), at(0));
    assert_eq!(kstatus(&d.status, 1), "Failed");
    assert_eq!(reason_of(&d.status, "Stalled"), "InvalidSpec");
    let (health, message) = argocd(&invalid, &d.status, 1);
    assert_eq!(health, "Degraded");
    assert!(message.contains("targetGroupArn"), "{message}");
}

#[test]
fn a_suspended_plan_is_neither_in_progress_nor_failed_and_a_scheduled_one_between_windows_is_ready() {
    let mut s = spec();
    s.suspend = true;
    let d = run(&s, None, &all_healthy(), at(0));
    assert_eq!(kstatus(&d.status, 1), "NotReady");
    assert_eq!(reason_of(&d.status, "Ready"), "Suspended");
    assert_eq!(argocd(&s, &d.status, 1).0, "Suspended");
    let mut s = spec();
    sunday_night(&mut s);
    let d = run(&s, None, &all_healthy(), ts("2026-11-23T10:00:00Z"));
    assert_eq!(
        kstatus(&d.status, 1),
        "Current",
        "a sync that waits for health must not wait for next Sunday"
    );
    assert_eq!(reason_of(&d.status, "Ready"), "WaitingForWindow");
    let (health, message) = argocd(&s, &d.status, 1);
    assert_eq!(health, "Healthy");
    assert!(message.contains("waiting for the maintenance window"), "{message}");
    let d = run(&s, Some(&d.status), &all_healthy(), ts("2026-11-29T22:00:00Z"));
    assert_eq!(kstatus(&d.status, 1), "InProgress", "the window opened");
    assert_eq!(argocd(&s, &d.status, 1).0, "Progressing");
}

#[test]
fn a_status_from_an_older_generation_is_in_progress_whatever_it_says() {
    let mut one = spec();
    one.instances = vec![A.into()];
    let status = a_registered(&one, 70);
    let d = run(&one, Some(&status), &all_healthy(), at(71));
    assert_eq!(kstatus(&d.status, 1), "Current");
    assert_eq!(kstatus(&d.status, 2), "InProgress");
    assert_eq!(argocd(&one, &d.status, 2).0, "Progressing");
    let never_seen = MaintenancePlanStatus::default();
    assert_eq!(
        argocd(&one, &never_seen, 1).0,
        "Progressing",
        "no controller has seen it"
    );
}

#[test]
fn a_plan_whose_aws_calls_are_denied_is_stalled_for_gitops_tools_until_aws_answers() {
    use pitstop::k8s::aws_condition;
    let d = run(&spec(), None, &all_healthy(), at(0));
    let mut status = d.status;
    let denied = AwsError::new(
        "DeregisterTargets",
        AwsErrorKind::AccessDenied,
        Some("AccessDenied".into()),
        "not allowed",
    );
    aws_condition::mark(&mut status, &denied, "eu-west-1", Some(1), at(1));
    assert_eq!(kstatus(&status, 1), "Failed", "{:?}", status.conditions);
    assert_eq!(reason_of(&status, "Ready"), "AWSAccessDenied");
    let (health, message) = argocd(&spec(), &status, 1);
    assert_eq!(health, "Degraded");
    assert!(message.contains("elasticloadbalancing:DeregisterTargets"), "{message}");
    // The state machine keeps what `mark` set; the reconcile clears it on the first round that reaches AWS.
    let d = run(&spec(), Some(&status), &all_healthy(), at(2));
    assert_eq!(kstatus(&d.status, 1), "Failed");
    let mut status = d.status;
    assert!(aws_condition::clear(&mut status));
    pitstop::machine::summarize_again(&mut status, &spec(), Some(1), at(3));
    assert_eq!(kstatus(&status, 1), "InProgress");
    assert_eq!(argocd(&spec(), &status, 1).0, "Progressing");
}

/// `pitstop run` asks whether a finished scheduled plan has a window open that it has not
/// run in (then it runs the plan again rather than ending at once).
#[test]
fn a_new_window_is_open_only_for_a_finished_scheduled_plan_outside_its_last_window() {
    let mut s = spec();
    sunday_night(&mut s);
    // Sunday 4 January 2026, 22:00 in London (GMT), and the Sunday after.
    let first_window = ts("2026-01-04T22:00:00Z");
    let finished = MaintenancePlanStatus {
        phase: PlanPhase::Succeeded,
        window_start: Some(first_window),
        ..MaintenancePlanStatus::default()
    };
    let new_window_open = pitstop::machine::new_window_open;
    assert!(new_window_open(&s, Some(&finished), ts("2026-01-11T22:05:00Z")));
    assert!(
        !new_window_open(&s, Some(&finished), ts("2026-01-04T22:30:00Z")),
        "the window it ran in"
    );
    assert!(
        !new_window_open(&s, Some(&finished), ts("2026-01-08T12:00:00Z")),
        "no window open"
    );
    let running = MaintenancePlanStatus {
        phase: PlanPhase::Running,
        ..finished.clone()
    };
    assert!(
        !new_window_open(&s, Some(&running), ts("2026-01-11T22:05:00Z")),
        "not finished"
    );
    assert!(!new_window_open(&s, None, ts("2026-01-11T22:05:00Z")), "never ran");
    assert!(
        !new_window_open(&spec(), Some(&finished), ts("2026-01-11T22:05:00Z")),
        "no schedule"
    );
}

fn gated(ignore_read_failures: bool) -> MaintenancePlanSpec {
    MaintenancePlanSpec {
        gates: Some(pitstop::api::Gates {
            prometheus: Some(pitstop::api::PrometheusGate {
                url: Some("http://prometheus:9090".into()),
                ignore_read_failures,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..spec()
    }
}

#[test]
fn a_prometheus_gate_holds_the_next_instance_while_an_alert_fires_or_it_cannot_be_read() {
    use pitstop::gates::GateReading;
    let observed = |gates: Option<GateReading>| Observed { gates, ..all_healthy() };
    let firing = GateReading::Holding(r#"alert HighErrorRate{severity="critical"} firing"#.into());
    let unreadable = GateReading::Unreadable("GET http://prometheus:9090/api/v1/alerts failed".into());
    for (spec, reading, reason) in [
        (gated(false), Some(firing.clone()), "AlertFiring"),
        (gated(false), None, "AlertFiring"),
        (gated(false), Some(unreadable.clone()), "GateUnreadable"),
        (gated(true), Some(firing), "AlertFiring"),
    ] {
        let d = run(&spec, None, &observed(reading.clone()), at(0));
        assert_eq!(d.action, None, "{reading:?}: nothing goes out");
        let a = &d.status.instances[0];
        assert_eq!(a.phase, InstancePhase::Pending, "{reading:?}");
        assert_eq!(a.waiting_since, None, "{reading:?}: not a preflight gate's clock");
        let message = a.message.clone().unwrap_or_default();
        assert!(message.starts_with(&format!("waiting ({reason})")), "{message}");
        assert_eq!(d.status.current_instance.as_deref(), Some(A));
        // News once: an Event when the gate starts holding, none on the rounds after.
        assert_eq!(
            d.transitions.iter().filter(|t| t.reason == reason).count(),
            1,
            "{:?}",
            d.transitions
        );
        let again = run(&spec, Some(&d.status), &observed(reading.clone()), at(5));
        assert!(again.transitions.is_empty(), "{:?}", again.transitions);
    }
    // Quiet, or unreadable with ignoreReadFailures: the instance goes out.
    for (spec, reading) in [(gated(false), GateReading::Quiet), (gated(true), unreadable)] {
        let d = run(&spec, None, &observed(Some(reading.clone())), at(0));
        assert!(
            matches!(d.action, Some(Action::Deregister { .. })),
            "{reading:?}: {:?}",
            d.action
        );
    }
}

#[test]
fn the_gate_is_read_only_before_an_instance_starts() {
    let spec = gated(false);
    assert!(wants(&spec, None).gates, "a new plan reads its gate");
    let d = run(
        &spec,
        None,
        &Observed {
            gates: Some(pitstop::gates::GateReading::Quiet),
            ..all_healthy()
        },
        at(0),
    );
    assert!(
        !wants(&spec, Some(&d.status)).gates,
        "the instance in flight is finished whatever the gate says"
    );
}

fn alarmed(abort_in_flight: bool, ignore_read_failures: bool) -> MaintenancePlanSpec {
    MaintenancePlanSpec {
        gates: Some(pitstop::api::Gates {
            cloud_watch_alarms: Some(pitstop::api::CloudWatchAlarmsGate {
                names: vec!["web-5xx".into(), "web-latency".into()],
                abort_in_flight,
                ignore_read_failures,
            }),
            ..Default::default()
        }),
        ..spec()
    }
}

/// Drives instance A out (its alarms quiet when it starts) to the start of Rebooting.
fn rebooting_with_quiet_alarms(spec: &MaintenancePlanSpec) -> MaintenancePlanStatus {
    let quiet = Observed {
        alarms: Some(pitstop::gates::GateReading::Quiet),
        ..all_healthy()
    };
    draining_then_unused_from(spec, &quiet)
}

fn in_alarm() -> pitstop::gates::GateReading {
    pitstop::gates::GateReading::Holding("alarm web-5xx in ALARM".into())
}

#[test]
fn a_cloudwatch_alarm_holds_the_next_instance_while_in_alarm_or_unreadable() {
    use pitstop::gates::GateReading;
    let observed = |alarms: Option<GateReading>| Observed {
        alarms,
        ..all_healthy()
    };
    let unreadable = GateReading::Unreadable("DescribeAlarms: AccessDenied".into());
    for (spec, reading, reason) in [
        (alarmed(false, false), Some(in_alarm()), "AlarmFiring"),
        (alarmed(false, false), None, "AlarmFiring"),
        (alarmed(false, false), Some(unreadable.clone()), "GateUnreadable"),
        (alarmed(false, true), Some(in_alarm()), "AlarmFiring"),
    ] {
        let d = run(&spec, None, &observed(reading.clone()), at(0));
        assert_eq!(d.action, None, "{reading:?}: nothing goes out");
        let a = &d.status.instances[0];
        assert_eq!(a.phase, InstancePhase::Pending, "{reading:?}");
        assert_eq!(a.waiting_since, None, "{reading:?}: not a preflight gate's clock");
        let message = a.message.clone().unwrap_or_default();
        assert!(message.starts_with(&format!("waiting ({reason})")), "{message}");
        assert_eq!(d.transitions.iter().filter(|t| t.reason == reason).count(), 1);
        let again = run(&spec, Some(&d.status), &observed(reading.clone()), at(5));
        assert!(again.transitions.is_empty(), "{:?}", again.transitions);
    }
    for (spec, reading) in [
        (alarmed(false, false), GateReading::Quiet),
        (alarmed(false, true), unreadable),
    ] {
        let d = run(&spec, None, &observed(Some(reading.clone())), at(0));
        assert!(
            matches!(d.action, Some(Action::Deregister { .. })),
            "{reading:?}: {:?}",
            d.action
        );
    }
}

#[test]
fn the_alarms_are_read_in_flight_only_under_abort_in_flight_and_until_the_maintenance_ends() {
    for abort in [false, true] {
        let spec = alarmed(abort, false);
        assert!(wants(&spec, None).alarms, "a new plan reads its alarms");
        let d = run(
            &spec,
            None,
            &Observed {
                alarms: Some(pitstop::gates::GateReading::Quiet),
                ..all_healthy()
            },
            at(0),
        );
        assert_eq!(d.status.instances[0].phase, InstancePhase::Draining);
        assert_eq!(
            wants(&spec, Some(&d.status)).alarms,
            abort,
            "draining, abortInFlight: {abort}"
        );
        let rebooting = rebooting_with_quiet_alarms(&spec);
        assert_eq!(
            wants(&spec, Some(&rebooting)).alarms,
            abort,
            "rebooting, abortInFlight: {abort}"
        );
        let d = command_seen(&spec, rebooting, "cmd-1", Some(CommandStatus::Success), at(60));
        assert_eq!(d.status.instances[0].phase, InstancePhase::Verifying);
        assert!(
            !wants(&spec, Some(&d.status)).alarms,
            "verifying: the maintenance is over"
        );
    }
}

#[test]
fn the_maintenance_command_carries_the_alarms_only_under_abort_in_flight() {
    for (abort, ignore) in [(true, false), (true, true), (false, false)] {
        let spec = alarmed(abort, ignore);
        let status = rebooting_with_quiet_alarms(&spec);
        let d = run(&spec, Some(&status), &command(None, None), at(20));
        let Some(Action::Send { request, .. }) = d.action else {
            panic!("sends the maintenance command: {:?}", d.action);
        };
        let expected: Vec<String> = if abort {
            vec!["web-5xx".into(), "web-latency".into()]
        } else {
            Vec::new()
        };
        assert_eq!(request.alarms, expected);
        assert_eq!(request.ignore_alarm_read_failures, abort && ignore);
    }
}

#[test]
fn an_alarm_under_abort_in_flight_cancels_the_running_command_and_puts_the_instance_back() {
    let spec = alarmed(true, false);
    let mut status = rebooting_with_quiet_alarms(&spec);
    record_sent(&mut status, A, CommandKind::Maintenance, "cmd-1");
    let observed = Observed {
        alarms: Some(in_alarm()),
        ..command(Some("cmd-1"), Some(CommandStatus::InProgress))
    };
    let d = run(&spec, Some(&status), &observed, at(40));
    assert_eq!(
        d.action,
        Some(Action::Cancel {
            command_id: "cmd-1".into(),
            instance_id: A.into()
        })
    );
    let a = &d.status.instances[0];
    assert_eq!(a.phase, InstancePhase::Failed);
    assert_eq!(a.failure_reason.as_deref(), Some(reason::ABORTED_BY_ALARM));
    assert!(a.out_of_rotation, "still out until it is put back");
    let message = a.message.clone().unwrap_or_default();
    assert!(message.contains("alarm web-5xx in ALARM"), "{message}");
    assert!(message.contains("cancelled"), "{message}");
    assert!(message.contains("registering it again"), "{message}");
    // Put back, and no retry while the fleet is in trouble (maxAttempts would otherwise allow one).
    let d = run(&spec, Some(&d.status), &with_a(TargetState::Unused), at(41));
    assert!(matches!(d.action, Some(Action::Register { .. })), "{:?}", d.action);
    assert_eq!(d.status.instances[0].phase, InstancePhase::Failed);
}

#[test]
fn an_alarm_while_draining_under_abort_in_flight_fails_the_instance_before_any_command() {
    let spec = alarmed(true, false);
    let d = run(
        &spec,
        None,
        &Observed {
            alarms: Some(pitstop::gates::GateReading::Quiet),
            ..all_healthy()
        },
        at(0),
    );
    let observed = Observed {
        alarms: Some(in_alarm()),
        ..with_a(TargetState::Draining)
    };
    let d = run(&spec, Some(&d.status), &observed, at(5));
    assert_eq!(d.action, None, "nothing to cancel");
    let a = &d.status.instances[0];
    assert_eq!(a.phase, InstancePhase::Failed);
    assert_eq!(a.failure_reason.as_deref(), Some(reason::ABORTED_BY_ALARM));
    assert!(
        a.message
            .clone()
            .unwrap_or_default()
            .contains("maintenance not started")
    );
    let d = run(&spec, Some(&d.status), &with_a(TargetState::Draining), at(6));
    assert!(matches!(d.action, Some(Action::Register { .. })), "{:?}", d.action);
}

#[test]
fn an_instance_stopped_by_an_alarm_before_its_maintenance_goes_back_even_with_leave_out() {
    let spec = MaintenancePlanSpec {
        on_failure: pitstop::api::OnFailure::LeaveOut,
        ..alarmed(true, false)
    };
    let quiet = Observed {
        alarms: Some(pitstop::gates::GateReading::Quiet),
        ..all_healthy()
    };
    let d = run(&spec, None, &quiet, at(0));
    // Not even deregistered yet (the call was throttled, say) when the alarm fires.
    let firing = Observed {
        alarms: Some(in_alarm()),
        ..with_a(TargetState::Healthy)
    };
    let d = run(&spec, Some(&d.status), &firing, at(5));
    let a = &d.status.instances[0];
    assert_eq!(a.failure_reason.as_deref(), Some(reason::ABORTED_BY_ALARM));
    assert!(
        a.message.clone().unwrap_or_default().contains("registering it again"),
        "{a:?}"
    );
    let d = run(&spec, Some(&d.status), &with_a(TargetState::Healthy), at(6));
    assert!(
        !d.status.instances[0].out_of_rotation,
        "untouched, so LeaveOut does not apply: {:?}",
        d.status.instances[0]
    );
    // Once its maintenance began, LeaveOut applies as to any failure.
    let mut status = rebooting_with_quiet_alarms(&spec);
    record_sent(&mut status, A, CommandKind::Maintenance, "cmd-1");
    let observed = Observed {
        alarms: Some(in_alarm()),
        ..command(Some("cmd-1"), Some(CommandStatus::InProgress))
    };
    let d = run(&spec, Some(&status), &observed, at(40));
    assert!(matches!(d.action, Some(Action::Cancel { .. })));
    assert!(
        d.status.instances[0]
            .message
            .clone()
            .unwrap_or_default()
            .contains("left out")
    );
}

#[test]
fn an_alarm_in_flight_changes_nothing_without_abort_in_flight_and_an_unreadable_one_never_aborts() {
    use pitstop::gates::GateReading;
    for (spec, reading) in [
        (alarmed(false, false), in_alarm()),
        (alarmed(true, false), GateReading::Unreadable("throttled".into())),
    ] {
        let mut status = rebooting_with_quiet_alarms(&spec);
        record_sent(&mut status, A, CommandKind::Maintenance, "cmd-1");
        let observed = Observed {
            alarms: Some(reading.clone()),
            ..command(Some("cmd-1"), Some(CommandStatus::InProgress))
        };
        let d = run(&spec, Some(&status), &observed, at(40));
        assert_eq!(d.action, None, "{reading:?}");
        assert_eq!(d.status.instances[0].phase, InstancePhase::Rebooting, "{reading:?}");
    }
}

#[test]
fn an_abort_waits_for_a_command_sent_without_an_answer_before_putting_the_instance_back() {
    let spec = alarmed(true, false);
    let status = rebooting_with_quiet_alarms(&spec);
    // The SendCommand goes out (written ahead) and its answer is lost.
    let d = run(&spec, Some(&status), &command(None, None), at(20));
    assert!(matches!(d.action, Some(Action::Send { .. })));
    let in_alarm_with = |id: Option<&str>| Observed {
        alarms: Some(in_alarm()),
        ..command(id, id.map(|_| CommandStatus::InProgress))
    };
    let d = run(&spec, Some(&d.status), &in_alarm_with(None), at(25));
    assert_eq!(d.action, None, "the command is looked for, not left running");
    assert_eq!(d.status.instances[0].phase, InstancePhase::Rebooting);
    let d = run(&spec, Some(&d.status), &in_alarm_with(Some("cmd-9")), at(30));
    assert_eq!(
        d.action,
        Some(Action::Cancel {
            command_id: "cmd-9".into(),
            instance_id: A.into()
        }),
        "found by its tag, then cancelled"
    );
    assert_eq!(d.status.instances[0].phase, InstancePhase::Failed);
}
