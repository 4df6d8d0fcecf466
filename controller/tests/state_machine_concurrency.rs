//! `maxUnavailable`, `maxUnavailablePerZone` and `preflight.minHealthyPercent` in the pure
//! state machine: waves of instances, the bound, zones, and the turn passing to another plan.

mod machine_support;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use machine_support::run;
use pitstop::api::{
    AutoScalingMode, AutoScalingSpec, InstancePhase, InstanceStatus, MaintenancePlanSpec, MaintenancePlanStatus,
    MaxUnavailable, PlanPhase, SelectionStatus,
};
use pitstop::aws::{AgentPing, Target, TargetHealth, TargetState};
use pitstop::machine::{
    Action, Decision, InstanceGroupView, InstanceObserved, Observed, Presence, Requeue, reason, wants,
};

const ARN: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";
const A: &str = "i-0000000000000000a";
const B: &str = "i-0000000000000000b";
const C: &str = "i-0000000000000000c";
const D: &str = "i-0000000000000000d";

fn plan(max: MaxUnavailable) -> MaintenancePlanSpec {
    MaintenancePlanSpec {
        target_group_arn: ARN.into(),
        instances: vec![A.into(), B.into(), C.into()],
        max_unavailable: Some(max),
        auto_scaling: AutoScalingSpec {
            mode: AutoScalingMode::Ignore,
        },
        ..Default::default()
    }
}

fn at(seconds: i64) -> Timestamp {
    "2026-12-03T10:00:00Z".parse::<Timestamp>().expect("timestamp") + SignedDuration::from_secs(seconds)
}

/// The group as AWS shows it (an `Unused` target is not listed), every agent online.
fn seen(states: &[(&str, TargetState)]) -> Observed {
    let targets = states
        .iter()
        .filter(|(_, s)| *s != TargetState::Unused)
        .map(|(id, state)| TargetHealth {
            target: Target {
                instance_id: (*id).to_owned(),
                port: Some(8080),
            },
            state: *state,
            reason: None,
            description: None,
        })
        .collect();
    Observed {
        groups: BTreeMap::from([(ARN.to_owned(), targets)]),
        deregistration_delay: Some(Duration::from_secs(30)),
        agent: Some(AgentPing::Online),
        instance_group: Some(InstanceGroupView::default()),
        ..Observed::default()
    }
}

fn deregistered(decision: &Decision) -> Option<&str> {
    match &decision.action {
        Some(Action::Deregister { target, .. }) => Some(target.instance_id.as_str()),
        _ => None,
    }
}

fn phase(status: &MaintenancePlanStatus, id: &str) -> InstancePhase {
    status
        .instances
        .iter()
        .find(|i| i.instance_id == id)
        .map(|i| i.phase)
        .expect("instance in the status")
}

use TargetState::{Draining, Healthy, Unused};

#[test]
fn a_wave_takes_up_to_max_unavailable_out_and_the_next_starts_when_one_is_back() {
    let spec = plan(MaxUnavailable::Count(2));
    let first = run(&spec, None, &seen(&[(A, Healthy), (B, Healthy), (C, Healthy)]), at(0));
    assert_eq!(deregistered(&first), Some(A));

    // A is draining: with requireHealthyTargetGroup (the default) the plan's own instance out
    // does not close the gate, so B goes too, written ahead like A.
    let second = run(
        &spec,
        Some(&first.status),
        &seen(&[(A, Draining), (B, Healthy), (C, Healthy)]),
        at(5),
    );
    assert_eq!(deregistered(&second), Some(B));
    assert_eq!(phase(&second.status, A), InstancePhase::Draining);
    assert_eq!(phase(&second.status, B), InstancePhase::Draining);
    assert!(
        second.status.instances[1].out_of_rotation,
        "written ahead before the call"
    );
    assert_eq!(
        second.status.message.as_deref(),
        Some(format!("2 instances out (at most 2): {A} Draining, {B} Draining; 0/3 done").as_str())
    );
    assert_eq!(
        second.status.current_instance.as_deref(),
        Some(A),
        "the first out stays current"
    );

    // Two out: the bound is reached, C waits and is not even read.
    let third = run(
        &spec,
        Some(&second.status),
        &seen(&[(A, Draining), (B, Draining), (C, Healthy)]),
        at(10),
    );
    assert_eq!(third.action, None);
    assert_eq!(phase(&third.status, C), InstancePhase::Pending);
    let reads = wants(&spec, Some(&third.status));
    assert_eq!(reads.instance_id.as_deref(), Some(A));
    assert_eq!(
        reads.more.iter().map(|m| m.instance_id.as_str()).collect::<Vec<_>>(),
        vec![B],
        "no reads for C while the bound is reached"
    );

    // A is back (Registered): C starts in the same round.
    let mut back = third.status.clone();
    back.instances[0].phase = InstancePhase::Registered;
    back.instances[0].out_of_rotation = false;
    let reads = wants(&spec, Some(&back));
    assert!(reads.more.iter().any(|m| m.instance_id == C && m.agent), "{reads:?}");
    let fourth = run(
        &spec,
        Some(&back),
        &seen(&[(A, Healthy), (B, Draining), (C, Healthy)]),
        at(60),
    );
    assert_eq!(deregistered(&fourth), Some(C));
    assert_eq!(fourth.status.phase, PlanPhase::Running);
}

#[test]
fn one_instance_at_a_time_stays_the_default() {
    let mut spec = plan(MaxUnavailable::Count(1));
    spec.max_unavailable = None;
    let first = run(&spec, None, &seen(&[(A, Healthy), (B, Healthy), (C, Healthy)]), at(0));
    assert_eq!(deregistered(&first), Some(A));
    let second = run(
        &spec,
        Some(&first.status),
        &seen(&[(A, Draining), (B, Healthy), (C, Healthy)]),
        at(5),
    );
    assert_eq!(second.action, None);
    assert_eq!(phase(&second.status, B), InstancePhase::Pending);
    assert!(wants(&spec, Some(&second.status)).more.is_empty());
}

#[test]
fn a_percentage_is_resolved_against_the_registered_targets_and_recorded() {
    let mut spec = plan(MaxUnavailable::Percent(50));
    spec.instances.push(D.into());
    let all = [(A, Healthy), (B, Healthy), (C, Healthy), (D, Healthy)];
    let first = run(&spec, None, &seen(&all), at(0));
    assert_eq!(first.status.max_unavailable, Some(2), "50% of 4 targets");
    let second = run(
        &spec,
        Some(&first.status),
        &seen(&[(A, Draining), (B, Healthy), (C, Healthy), (D, Healthy)]),
        at(5),
    );
    assert_eq!(deregistered(&second), Some(B));
    // A is deregistered (no longer listed) and B draining: the bound is still 50% of 4.
    let third = run(
        &spec,
        Some(&second.status),
        &seen(&[(A, Unused), (B, Draining), (C, Healthy), (D, Healthy)]),
        at(10),
    );
    assert_ne!(deregistered(&third), Some(C));
    assert_eq!(phase(&third.status, C), InstancePhase::Pending);

    // 30% of 3 rounds down to none: one at a time all the same.
    let small = plan(MaxUnavailable::Percent(30));
    let first = run(&small, None, &seen(&[(A, Healthy), (B, Healthy), (C, Healthy)]), at(0));
    assert_eq!(first.status.max_unavailable, Some(1));
    let second = run(
        &small,
        Some(&first.status),
        &seen(&[(A, Draining), (B, Healthy), (C, Healthy)]),
        at(5),
    );
    assert_eq!(second.action, None);
}

#[test]
fn a_full_zone_holds_its_instances_and_another_zone_goes_first() {
    let mut spec = plan(MaxUnavailable::Count(3));
    spec.max_unavailable_per_zone = Some(1);
    let zones: BTreeMap<String, String> = [(A, "eu-west-1a"), (B, "eu-west-1a"), (C, "eu-west-1b")]
        .into_iter()
        .map(|(id, zone)| (id.to_owned(), zone.to_owned()))
        .collect();
    // The run's first round resolves the zones (from EC2)...
    let mut zoned = seen(&[(A, Healthy), (B, Healthy), (C, Healthy)]);
    zoned.zones = Some(zones.clone());
    let reads = wants(&spec, None);
    assert!(reads.zones, "a per-zone limit reads the zones when the run starts");
    let resolved = run(&spec, None, &zoned, at(0));
    assert_eq!(resolved.action, None);
    assert_eq!(
        resolved.status.selection.as_ref().map(|s| s.instances.clone()),
        Some(vec![A.to_owned(), B.to_owned(), C.to_owned()]),
        "the listed order stays"
    );
    let first = run(&spec, Some(&resolved.status), &zoned, at(1));
    assert_eq!(deregistered(&first), Some(A));
    // B is in A's zone: C (the other zone) goes first.
    let second = run(
        &spec,
        Some(&first.status),
        &seen(&[(A, Draining), (B, Healthy), (C, Healthy)]),
        at(5),
    );
    assert_eq!(deregistered(&second), Some(C));
    // Both zones have one out: B waits although the plan's bound (3) has room.
    let third = run(
        &spec,
        Some(&second.status),
        &seen(&[(A, Draining), (B, Healthy), (C, Draining)]),
        at(10),
    );
    assert_eq!(third.action, None);
    assert_eq!(phase(&third.status, B), InstancePhase::Pending);
    assert!(third.status.phase == PlanPhase::Running);
}

#[test]
fn a_plan_waited_for_fills_its_wave_but_does_not_refill_it() {
    let spec = plan(MaxUnavailable::Count(2));
    let first = run(&spec, None, &seen(&[(A, Healthy), (B, Healthy), (C, Healthy)]), at(0));
    // Another plan waits already: the wave still fills up to the bound.
    let mut wanted = seen(&[(A, Draining), (B, Healthy), (C, Healthy)]);
    wanted.turn_wanted = true;
    let second = run(&spec, Some(&first.status), &wanted, at(5));
    assert_eq!(deregistered(&second), Some(B));

    // A is back, B still out: with the other plan waiting, C does not take A's place...
    let mut a_back = second.status.clone();
    a_back.instances[0].phase = InstancePhase::Registered;
    a_back.instances[0].phase_since = Some(at(60));
    a_back.instances[0].out_of_rotation = false;
    let mut wanted = seen(&[(A, Healthy), (B, Draining), (C, Healthy)]);
    wanted.turn_wanted = true;
    let held = run(&spec, Some(&a_back), &wanted, at(61));
    assert_eq!(held.action, None, "the wave is not refilled while another plan waits");
    assert_eq!(phase(&held.status, C), InstancePhase::Pending);
    assert_eq!(phase(&held.status, B), InstancePhase::Draining, "B goes on");

    // ...and with nobody waiting it does.
    wanted.turn_wanted = false;
    let refilled = run(&spec, Some(&a_back), &wanted, at(61));
    assert_eq!(deregistered(&refilled), Some(C));
}

#[test]
fn min_healthy_percent_counts_every_registered_target() {
    let mut spec = plan(MaxUnavailable::Count(2));
    spec.preflight.min_healthy_percent = Some(60);
    let all = seen(&[(A, Healthy), (B, Healthy), (C, Healthy)]);
    // A out leaves 2 of 3 healthy (67%): allowed.
    let first = run(&spec, None, &all, at(0));
    assert_eq!(deregistered(&first), Some(A));
    // B out too would leave 1 of 3 (33%): held, with the figures.
    let second = run(
        &spec,
        Some(&first.status),
        &seen(&[(A, Unused), (B, Healthy), (C, Healthy)]),
        at(5),
    );
    assert_eq!(deregistered(&second), None);
    let b = second.status.instances.iter().find(|i| i.instance_id == B).expect("B");
    let message = b.message.as_deref().unwrap_or_default();
    assert!(
        message.contains(reason::TOO_FEW_HEALTHY_TARGETS) && message.contains("1 of 3") && message.contains("60%"),
        "{message}"
    );
}

#[test]
fn several_at_once_with_an_auto_scaling_mode_that_protects_one_is_refused() {
    let mut spec = plan(MaxUnavailable::Count(2));
    spec.auto_scaling = AutoScalingSpec::default();
    let error = pitstop::api::validate::validate(&spec)
        .expect_err("refused")
        .to_string();
    assert!(error.contains("autoScaling.mode: Ignore"), "{error}");
    let first = run(&spec, None, &seen(&[(A, Healthy), (B, Healthy), (C, Healthy)]), at(0));
    assert_eq!(first.action, None);
    assert_eq!(first.status.phase, PlanPhase::Failed);
}

#[test]
fn an_invalid_spec_with_two_commands_running_cancels_each_in_turn() {
    let spec = plan(MaxUnavailable::Count(2));
    let rebooting = |id: &str, command: &str| InstanceStatus {
        instance_id: id.to_owned(),
        phase: InstancePhase::Rebooting,
        out_of_rotation: true,
        attempt: 1,
        first_attempt: 1,
        maintenance_command_id: Some(command.to_owned()),
        phase_since: Some(at(0)),
        ..InstanceStatus::default()
    };
    let status = MaintenancePlanStatus {
        phase: PlanPhase::Running,
        instances: vec![
            rebooting(A, "cmd-a"),
            rebooting(B, "cmd-b"),
            InstanceStatus {
                instance_id: C.to_owned(),
                ..InstanceStatus::default()
            },
        ],
        selection: None::<SelectionStatus>,
        ..MaintenancePlanStatus::default()
    };
    let mut broken = spec.clone();
    broken.target_group_arn = "not-an-arn".to_owned();
    let first = run(&broken, Some(&status), &Observed::default(), at(10));
    let cancelled = |d: &Decision| match &d.action {
        Some(Action::Cancel { command_id, .. }) => Some(command_id.clone()),
        _ => None,
    };
    assert_eq!(cancelled(&first).as_deref(), Some("cmd-a"));
    let second = run(&broken, Some(&first.status), &Observed::default(), at(11));
    assert_eq!(
        cancelled(&second).as_deref(),
        Some("cmd-b"),
        "B's command is not forgotten"
    );
}

#[test]
fn a_slot_freed_mid_round_is_filled_in_the_next_round_with_the_next_instances_own_reads() {
    let mut spec = plan(MaxUnavailable::Count(2));
    // A fixed drain limit: nothing but the next instance's own reads stands in the way.
    spec.timeouts.drain_seconds = Some(60);
    // A listed instance that is gone counts as failed; one failure may go on.
    spec.max_failures = 1;
    let first = run(&spec, None, &seen(&[(A, Healthy), (B, Healthy), (C, Healthy)]), at(0));
    let second = run(
        &spec,
        Some(&first.status),
        &seen(&[(A, Draining), (B, Healthy), (C, Healthy)]),
        at(5),
    );
    assert_eq!(deregistered(&second), Some(B));
    let full = wants(&spec, Some(&second.status));
    assert!(!full.more.iter().any(|m| m.instance_id == C), "no room, no reads for C");

    // EC2 says A is gone: its turn ends this round and frees a slot, but C was not read
    // (its agent, here): it is not judged on reads it did not have.
    let mut observed = seen(&[(B, Draining), (C, Healthy)]);
    observed.agent = None;
    observed.instance_id = Some(A.to_owned());
    observed.presence = Some(Presence::Gone("terminated".to_owned()));
    observed.more.insert(B.to_owned(), InstanceObserved::default());
    let third = run(&spec, Some(&second.status), &observed, at(70));
    assert_eq!(phase(&third.status, A), InstancePhase::Failed);
    assert_eq!(deregistered(&third), None);
    let c = third.status.instances.iter().find(|i| i.instance_id == C).expect("C");
    assert_eq!(
        (c.phase, c.waiting_since, c.message.as_deref()),
        (InstancePhase::Pending, None, None)
    );
    assert_eq!(third.requeue, Requeue::Now, "the next round reads C at once");

    let reads = wants(&spec, Some(&third.status));
    assert!(reads.more.iter().any(|m| m.instance_id == C && m.agent), "{reads:?}");
}
