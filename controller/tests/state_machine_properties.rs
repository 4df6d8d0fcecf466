//! Safety properties of the whole round (observe → decide → record → act) over random AWS
//! behaviour, random throttling and random crashes at every point where a controller can
//! die: before the status write, between the write and the AWS call, and between
//! SendCommand and the write of its ID; and over writes whose answer is lost after AWS
//! carried them out, with ListCommands lagging behind a fresh command.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use pitstop::api::{
    AutoScalingMode, AutoScalingSpec, CloudWatchAlarmsGate, CommandSpec, FleetSelector, Gates, InstancePhase,
    MaintenancePlanSpec, MaintenancePlanStatus, MaxUnavailable, OnFailure, Preflight, Timeouts,
};
use pitstop::aws::fake::FakeAws;
use pitstop::aws::{AwsErrorKind, CommandKind, CommandTag};
use pitstop::engine::{StatusStore, step};
use pitstop::machine::PlanView;
use proptest::prelude::*;

/// Up to three target groups (HTTP, HTTPS, an NLB's), each on its own port.
const ARNS: [&str; 3] = [
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef",
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-tls/1123456789abcdef",
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/nlb/2123456789abcdef",
];
const PORTS: [i32; 3] = [8080, 8443, 9000];
/// The Auto Scaling group of the scenarios that have one.
const GROUP: &str = "web-asg";
/// The alarm of the scenarios with an alarm gate.
const ALARM: &str = "web-5xx";
const UID: &str = "0f6c7a52-1111-4222-8333-944455556666";
const IDS: [&str; 5] = [
    "i-00000000000000001",
    "i-00000000000000002",
    "i-00000000000000003",
    "i-00000000000000004",
    "i-00000000000000005",
];

/// What happens to one status write.
#[derive(Clone, Copy, Debug)]
enum WriteFate {
    /// Written.
    Ok,
    /// Written, then the controller dies: whatever was to follow does not happen.
    CrashAfter,
    /// The controller dies before the write lands.
    CrashBefore,
}

#[derive(Debug, thiserror::Error)]
#[error("simulated crash")]
struct Crash;

struct CrashingStore {
    durable: Option<MaintenancePlanStatus>,
    fates: Vec<WriteFate>,
    next: usize,
}

#[async_trait::async_trait]
impl StatusStore for CrashingStore {
    type Error = Crash;

    async fn save(&mut self, status: &MaintenancePlanStatus) -> Result<(), Crash> {
        // Each scheduled fate is used once; later writes land, so every run can finish.
        let fate = self.fates.get(self.next).copied().unwrap_or(WriteFate::Ok);
        self.next += 1;
        match fate {
            WriteFate::Ok => {
                self.durable = Some(status.clone());
                Ok(())
            }
            WriteFate::CrashAfter => {
                self.durable = Some(status.clone());
                Err(Crash)
            }
            WriteFate::CrashBefore => Err(Crash),
        }
    }
}

#[derive(Clone, Debug)]
struct Scenario {
    instances: usize,
    drain_time: u64,
    healthy_time: u64,
    command_time: u64,
    invocation_delay: u64,
    failing: Vec<bool>,
    never_healthy: Vec<bool>,
    hanging: Vec<bool>,
    on_failure: OnFailure,
    max_failures: u32,
    with_verify: bool,
    max_attempts: u32,
    dry_run: bool,
    fates: Vec<WriteFate>,
    throttle_rounds: Vec<bool>,
    lost_answer_rounds: Vec<bool>,
    list_lag: u64,
    steps: Vec<u64>,
    /// How many target groups the plan names (1: the single `targetGroupArn`).
    groups: usize,
    /// Per instance, whether it is registered in each group at the start.
    membership: Vec<[bool; 3]>,
    /// The plan selects its instances (`selector.targetGroupMembers`) instead of listing them.
    selector: bool,
    /// Per instance, the round from which it is gone (terminated: out of every group), if
    /// then it is still untouched (only with a selector) or in flight (any plan).
    gone_at: Vec<Option<usize>>,
    /// Every instance belongs to one Auto Scaling group at its MinSize, maintained in this
    /// `autoScaling.mode`; None: in no group (the default mode, which then changes nothing).
    auto_scaling: Option<AutoScalingMode>,
    /// How long the group's DescribeAutoScalingInstances goes on showing a member's lifecycle
    /// state from before a Standby change, in seconds.
    auto_scaling_lag: u64,
    /// `gates.cloudWatchAlarms` with this `abortInFlight`; None: no alarm gate.
    alarm_gate: Option<bool>,
    /// Per round from the start, whether the gate's alarm is in ALARM (OK afterwards, so the
    /// plan can end).
    alarm_rounds: Vec<bool>,
    /// `spec.maxUnavailable` (1: the default, one at a time). Above one only without an Auto
    /// Scaling mode, as validation requires.
    max_unavailable: u32,
}

impl Scenario {
    fn arns(&self) -> &[&'static str] {
        &ARNS[..self.groups]
    }

    /// The groups `id` was registered in at the start, among the plan's.
    fn groups_of(&self, id: &str) -> Vec<&'static str> {
        let index = IDS.iter().position(|i| *i == id).unwrap_or(0);
        self.arns()
            .iter()
            .enumerate()
            .filter(|(g, _)| self.membership[index][*g])
            .map(|(_, arn)| *arn)
            .collect()
    }
}

fn fate() -> impl Strategy<Value = WriteFate> {
    prop_oneof![
        8 => Just(WriteFate::Ok),
        1 => Just(WriteFate::CrashAfter),
        1 => Just(WriteFate::CrashBefore),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        2usize..=5,
        (0u64..40, 0u64..40, 0u64..90, 0u64..10),
        (
            prop::collection::vec(prop::bool::weighted(0.2), 5),
            prop::collection::vec(prop::bool::weighted(0.1), 5),
            prop::collection::vec(prop::bool::weighted(0.1), 5),
        ),
        prop_oneof![Just(OnFailure::Register), Just(OnFailure::LeaveOut)],
        0u32..3,
        (any::<bool>(), 1u32..=3, prop::bool::weighted(0.1)),
        prop::collection::vec(fate(), 1..80),
        (
            prop::collection::vec(prop::bool::weighted(0.2), 1..200),
            prop::collection::vec(prop::bool::weighted(0.1), 1..200),
            0u64..30,
        ),
        (
            prop::collection::vec(1u64..20, 1..50),
            1usize..=3,
            prop::collection::vec(
                (
                    prop::bool::weighted(0.9),
                    prop::bool::weighted(0.7),
                    prop::bool::weighted(0.7),
                ),
                5,
            ),
        ),
        (
            prop::bool::weighted(0.4),
            prop::collection::vec(prop::option::weighted(0.25, 0usize..60), 5),
        ),
        (
            prop_oneof![
                Just(None),
                Just(Some(AutoScalingMode::Standby)),
                Just(Some(AutoScalingMode::SuspendProcesses))
            ],
            0u64..60,
        ),
        (
            prop::option::weighted(0.3, any::<bool>()),
            prop::collection::vec(prop::bool::weighted(0.3), 0..100),
            prop_oneof![2 => Just(1u32), 1 => Just(2u32), 1 => Just(3u32)],
        ),
    )
        .prop_map(
            |(
                instances,
                (drain, healthy, command, delay),
                (failing, never_healthy, hanging),
                on_failure,
                max_failures,
                (with_verify, max_attempts, dry_run),
                fates,
                (throttle_rounds, lost_answer_rounds, list_lag),
                (steps, groups, membership),
                (selector, gone_at),
                (auto_scaling, auto_scaling_lag),
                (alarm_gate, alarm_rounds, max_unavailable),
            )| Scenario {
                instances,
                drain_time: drain,
                healthy_time: healthy,
                command_time: command,
                invocation_delay: delay,
                failing,
                never_healthy,
                hanging,
                on_failure,
                max_failures,
                with_verify,
                max_attempts,
                dry_run,
                fates,
                throttle_rounds,
                lost_answer_rounds,
                list_lag,
                steps,
                groups,
                membership: membership.into_iter().map(|(a, b, c)| [a, b, c]).collect(),
                gone_at,
                selector,
                // Several out at once is refused with an Auto Scaling mode that protects the group.
                max_unavailable: if auto_scaling.is_some() { 1 } else { max_unavailable },
                auto_scaling,
                auto_scaling_lag,
                alarm_gate,
                alarm_rounds,
            },
        )
}

fn spec_for(s: &Scenario) -> MaintenancePlanSpec {
    let command = CommandSpec {
        document_name: "AWS-RunShellScript".into(),
        document_version: None,
        parameters: [("commands".to_owned(), vec!["true".to_owned()])].into(),
        timeout_seconds: Some(120),
    };
    let (single, several) = match s.arns() {
        [one] => ((*one).to_owned(), Vec::new()),
        // Listed in another order than the lock order, which must not matter.
        several => (String::new(), several.iter().rev().map(|a| (*a).to_owned()).collect()),
    };
    MaintenancePlanSpec {
        target_group_arn: single,
        target_group_arns: several,
        region: None,
        instances: if s.selector {
            Vec::new()
        } else {
            IDS[..s.instances].iter().map(|s| (*s).to_owned()).collect()
        },
        selector: s.selector.then_some(FleetSelector {
            target_group_members: true,
            ..FleetSelector::default()
        }),
        maintenance: None,
        verify: s.with_verify.then_some(command),
        preflight: Preflight {
            require_healthy_target_group: false,
            min_healthy_targets: Some(0),
            require_agent_online: true,
            gate_timeout_seconds: None,
            min_healthy_percent: None,
        },
        max_unavailable: (s.max_unavailable > 1).then_some(MaxUnavailable::Count(s.max_unavailable)),
        timeouts: Timeouts {
            drain_seconds: Some(60),
            healthy_seconds: Some(60),
        },
        on_failure: s.on_failure,
        max_failures: s.max_failures,
        max_attempts: s.max_attempts,
        dry_run: s.dry_run,
        auto_scaling: AutoScalingSpec {
            // Several out at once needs `Ignore` (validation); in no group it changes nothing.
            mode: s.auto_scaling.unwrap_or(if s.max_unavailable > 1 {
                AutoScalingMode::Ignore
            } else {
                AutoScalingMode::default()
            }),
        },
        gates: s.alarm_gate.map(|abort_in_flight| Gates {
            cloud_watch_alarms: Some(CloudWatchAlarmsGate {
                names: vec![ALARM.to_owned()],
                abort_in_flight,
                ignore_read_failures: false,
            }),
            ..Gates::default()
        }),
        ..Default::default()
    }
}

fn pick(flags: &[bool], n: usize) -> Vec<String> {
    IDS[..n]
        .iter()
        .zip(flags)
        .filter(|(_, f)| **f)
        .map(|(id, _)| (*id).to_owned())
        .collect()
}

/// What the simulation did besides the plan's rounds.
#[derive(Debug, Default)]
struct World {
    /// Instances made gone, with the number of AWS writes made before.
    gone: Vec<(String, usize)>,
    /// Those of them that were in flight (out of rotation) when they went.
    gone_in_flight: Vec<String>,
}

/// Runs the scenario to the end; returns the fake and the last durable status.
async fn simulate(s: &Scenario) -> (FakeAws, MaintenancePlanSpec, Option<MaintenancePlanStatus>, World) {
    let start: Timestamp = "2026-11-23T00:00:00Z".parse().expect("timestamp");
    let spec = spec_for(s);
    let ids: Vec<&str> = IDS[..s.instances].to_vec();
    let members = |g: usize| -> Vec<&str> {
        ids.iter()
            .enumerate()
            .filter(|(i, _)| s.membership[*i][g])
            .map(|(_, id)| *id)
            .collect()
    };
    let fake = FakeAws::new(ARNS[0], &members(0), start);
    for g in 1..s.groups {
        fake.add_group(ARNS[g], &members(g), PORTS[g]);
    }
    fake.behave(|b| {
        b.drain_time = Duration::from_secs(s.drain_time);
        b.healthy_time = Duration::from_secs(s.healthy_time);
        b.command_time = Duration::from_secs(s.command_time);
        b.invocation_delay = Duration::from_secs(s.invocation_delay);
        b.failing_commands = pick(&s.failing, s.instances);
        b.never_healthy = pick(&s.never_healthy, s.instances);
        b.hanging_commands = pick(&s.hanging, s.instances);
        b.list_lag = Duration::from_secs(s.list_lag);
        b.auto_scaling_lag = Duration::from_secs(s.auto_scaling_lag);
    });
    if s.auto_scaling.is_some() {
        let members: Vec<(&str, &str, &str)> = ids.iter().map(|id| (*id, "eu-west-1a", "InService")).collect();
        fake.set_auto_scaling_group(GROUP, &members);
    }
    let apis = fake.apis();
    let mut store = CrashingStore {
        durable: None,
        fates: s.fates.clone(),
        next: 0,
    };
    let mut now = start;
    let mut world = World::default();
    // Long enough for the slowest legal run: every try of every instance using every limit
    // (drain 60 s, the default maintenance limit 1800 s, the longest backoff 300 s, verify
    // 120 s, healthy 60 s twice, and the look-up grace of a lost SendCommand answer for both
    // commands), so a plan still running after it is stuck, not slow.
    let per_try = 60 + 1800 + 300 + 120 + 2 * 60 + 2 * 90 + 100 + 2 * 20 * 3;
    // An alarm holds for at most its rounds, each at most 20 s.
    let held = s.alarm_rounds.len() as i64 * 20;
    let horizon = start + SignedDuration::from_secs((s.instances as u32 * s.max_attempts * per_try) as i64 + held);
    for round in 0.. {
        if now > horizon {
            break;
        }
        // Throttling comes in a burst at the start; AWS that throttles forever would be a
        // plan that never ends, which no controller can help.
        if s.throttle_rounds.get(round).copied().unwrap_or(false) {
            fake.behave(|b| b.fail_next = Some((1, AwsErrorKind::Throttled)));
        }
        // The next write is carried out and its answer lost (a reset, a timeout, a 5xx).
        if s.lost_answer_rounds.get(round).copied().unwrap_or(false) {
            fake.behave(|b| b.lose_next_answers = 1);
        }
        fake.set_now(now);
        let firing = s.alarm_rounds.get(round).copied().unwrap_or(false);
        fake.set_alarm(ALARM, if firing { "ALARM" } else { "OK" });
        let recorded = store.durable.clone();
        // An instance whose time has come is terminated, if the plan (a selector) has not
        // touched it or it is in flight (an Auto Scaling group replacing it mid-reboot, say):
        // AWS takes it out of every group.
        for (index, id) in ids.iter().enumerate() {
            let entry = recorded
                .as_ref()
                .and_then(|st| st.instances.iter().find(|i| i.instance_id == *id));
            let untouched = entry.is_none_or(|i| i.phase == InstancePhase::Pending && !i.out_of_rotation);
            // Not in Standby mode: the fake does not model what a group does with the capacity of a
            // Standby member terminated from outside (it is left out of the scenarios, not proven).
            let in_flight =
                entry.is_some_and(|i| i.out_of_rotation) && s.auto_scaling != Some(AutoScalingMode::Standby);
            let due = s.gone_at[index].is_some_and(|at| at <= round);
            if due && ((untouched && s.selector) || in_flight) && !world.gone.iter().any(|(g, _)| g == id) {
                world.gone.push(((*id).to_owned(), fake.writes().len()));
                if in_flight {
                    world.gone_in_flight.push((*id).to_owned());
                }
                fake.terminate(id);
            }
        }
        let finished = recorded.as_ref().is_some_and(|st| st.phase.is_finished());
        if finished && round > 0 {
            break;
        }
        // A crash or a throttled call ends the round; the next one starts from the durable status.
        let result = step(
            &apis,
            PlanView {
                uid: UID,
                generation: Some(1),
                spec: &spec,
                status: recorded.as_ref(),
            },
            now,
            &pitstop::machine::TurnView::default(),
            &pitstop::gates::GateReaders::http(None),
            &mut store,
        )
        .await;
        if std::env::var_os("SIM_DEBUG").is_some() {
            eprintln!("round {round}: {:?}", result.as_ref().map(|r| (&r.action, r.requeue)));
        }
        now += SignedDuration::from_secs(s.steps[round % s.steps.len()] as i64);
    }
    let durable = store.durable.clone();
    (fake, spec, durable, world)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn safety_holds_across_crashes_throttling_and_lost_answers(s in scenario()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (fake, spec, status, world) = runtime.block_on(simulate(&s));
        let is_gone = |id: &str| world.gone.iter().any(|(g, _)| g == id);
        let status = status.expect("at least one status write landed");

        // The plan ends.
        prop_assert!(status.phase.is_finished(), "plan did not finish: {:?}", status.phase);

        // At most maxUnavailable instances of the plan out of rotation at any time, in every
        // group (one by default).
        prop_assert!(
            fake.max_out_at_once() <= s.max_unavailable as usize,
            "{} instances were out of one group at once (maxUnavailable {})",
            fake.max_out_at_once(),
            s.max_unavailable
        );

        // No maintenance command to an instance that is registered or draining in any group.
        for write in fake.writes().iter().filter(|w| w.operation == "SendCommand") {
            prop_assert_eq!(write.state_before, pitstop::aws::TargetState::Unused, "command sent to {:?}", write);
        }

        // Each group's calls carry the instance's own port in that group.
        for write in fake.writes().iter().filter(|w| w.target_group_arn.is_some()) {
            let arn = write.target_group_arn.as_deref().unwrap_or_default();
            prop_assert_eq!(write.port, fake.port(arn), "{:?}", write);
            prop_assert!(s.arns().contains(&arn), "a call to a group the plan does not name: {:?}", write);
        }

        // A dry run writes nothing at all.
        if s.dry_run {
            prop_assert!(fake.writes().is_empty(), "dry run wrote: {:?}", fake.writes());
        }

        // At most one maintenance command per instance per attempt, across restarts.
        let planned: Vec<String> = status.instances.iter().map(|i| i.instance_id.clone()).collect();
        for id in &planned {
            for (kind, attempt) in [CommandKind::Maintenance, CommandKind::Verify].into_iter().flat_map(|k| (1..=s.max_attempts).map(move |a| (k, a))) {
                let tag = CommandTag { plan_uid: UID.into(), kind, attempt }.comment();
                prop_assert!(fake.sends_with_comment(id, &tag) <= 1, "{} sends of {} to {}", fake.sends_with_comment(id, &tag), tag, id);
            }
        }

        // Every instance pitstop deregistered is back in every group it was in, unless the
        // plan says LeaveOut for a failed one; and the status says out exactly when it is out
        // of one of them.
        for instance in &status.instances {
            let groups = s.groups_of(&instance.instance_id);
            if world.gone_in_flight.contains(&instance.instance_id) {
                // Gone while out: its turn ends as gone, and it no longer counts as out (nothing
                // is left to put back), unless it had already been left out on purpose.
                let left_out = spec.on_failure == OnFailure::LeaveOut
                    && instance.phase == InstancePhase::Failed
                    && instance.out_of_rotation;
                if !left_out {
                    prop_assert!(!instance.out_of_rotation, "gone in flight: {:?}", instance);
                    prop_assert!(
                        matches!(instance.phase, InstancePhase::Skipped | InstancePhase::Failed),
                        "gone in flight: {:?}", instance
                    );
                    if instance.phase == InstancePhase::Skipped {
                        prop_assert_eq!(instance.failure_reason.as_deref(), Some(pitstop::machine::reason::GONE));
                    }
                    if !s.selector {
                        prop_assert_eq!(instance.phase, InstancePhase::Failed, "gone in flight: {:?}", instance);
                    }
                }
                continue;
            }
            if is_gone(&instance.instance_id) {
                // A gone instance is skipped untouched (or never reached), never failed.
                prop_assert!(
                    matches!(instance.phase, InstancePhase::Skipped | InstancePhase::Pending)
                        || s.dry_run,
                    "gone instance {:?}", instance
                );
                prop_assert!(!instance.out_of_rotation);
                continue;
            }
            let left_out = spec.on_failure == OnFailure::LeaveOut && instance.phase == pitstop::api::InstancePhase::Failed;
            let mut out_somewhere = false;
            for arn in &groups {
                let state = fake.state(arn, &instance.instance_id);
                out_somewhere |= !state.is_registered();
                if !left_out {
                    prop_assert!(state.is_registered(), "{} ended {} in {} ({:?})", instance.instance_id, state, arn, instance);
                }
            }
            if !left_out {
                prop_assert!(!instance.out_of_rotation);
            }
            prop_assert_eq!(instance.out_of_rotation, out_somewhere, "status agrees with AWS for {}", instance.instance_id);
            // An instance in none of the groups fails before anything is done to it (or is
            // never reached, when an earlier failure stopped the plan).
            if groups.is_empty() && !s.dry_run && instance.phase != pitstop::api::InstancePhase::Pending {
                prop_assert_eq!(instance.failure_reason.as_deref(), Some(pitstop::machine::reason::NOT_IN_TARGET_GROUP));
            }
        }
        for write in fake.writes() {
            prop_assert!(
                !s.groups_of(&write.instance_id).is_empty(),
                "a call for an instance in none of the groups: {:?}", write
            );
        }
        // Nothing is done to an instance once it is gone.
        let writes = fake.writes();
        for (id, before) in &world.gone {
            prop_assert!(
                writes[*before..].iter().all(|w| &w.instance_id != id),
                "a call for {} after it was gone: {:?}", id, &writes[*before..]
            );
        }
        check_auto_scaling(&s, &fake, &status)?;
        if s.selector {
            // The selection is every member at the start of the run, in ID order (less any
            // gone before the run resolved it).
            let selection = status.selection.clone().expect("a selected plan records its selection");
            let members: Vec<String> = IDS[..s.instances]
                .iter()
                .filter(|id| !s.groups_of(id).is_empty())
                .map(|id| (*id).to_owned())
                .collect();
            prop_assert!(
                selection.instances.iter().all(|id| members.contains(id)),
                "selected a non-member: {:?} of {:?}", selection.instances, members
            );
            prop_assert!(
                members.iter().all(|id| selection.instances.contains(id) || is_gone(id)),
                "left out a member: {:?} of {:?}", selection.instances, members
            );
            // Skipped instances never fail the plan.
            let failed = status.instances.iter().any(|i| i.phase == InstancePhase::Failed);
            if !failed && !s.dry_run && !selection.instances.is_empty() {
                prop_assert_eq!(status.phase, pitstop::api::PlanPhase::Succeeded, "{:?}", status);
            }
        }
    }
}

/// The Auto Scaling properties: whatever crashed, throttled or lost its answer, no instance
/// entered or left Standby twice, and once the plan has finished the group is as it was
/// (sizes, lifecycle states, processes), except for an instance left in Standby on purpose
/// (`onFailure: LeaveOut`), which keeps its decrement and the lowered MinSize.
fn check_auto_scaling(s: &Scenario, fake: &FakeAws, status: &MaintenancePlanStatus) -> Result<(), TestCaseError> {
    let writes = fake.auto_scaling_writes();
    let Some(mode) = s.auto_scaling else {
        prop_assert!(writes.is_empty(), "{:?}", writes);
        return Ok(());
    };
    if s.dry_run {
        prop_assert!(writes.is_empty(), "dry run wrote: {:?}", writes);
        return Ok(());
    }
    let group = fake.auto_scaling_group(GROUP).expect("the group");
    for id in &IDS[..s.instances] {
        for operation in ["EnterStandby", "ExitStandby"] {
            let calls = writes
                .iter()
                .filter(|(op, _, detail)| *op == operation && detail == id)
                .count();
            prop_assert!(calls <= 1, "{} {} times for {}: {:?}", operation, calls, id, writes);
        }
    }
    let left_in_standby: Vec<&str> = status
        .instances
        .iter()
        .filter(|i| {
            i.auto_scaling
                .as_ref()
                .is_some_and(|r| r.entered_standby && !r.exited_standby)
        })
        .map(|i| i.instance_id.as_str())
        .collect();
    for member in &group.instances {
        let expected = if left_in_standby.contains(&member.instance_id.as_str()) {
            prop_assert_eq!(
                s.on_failure,
                OnFailure::LeaveOut,
                "left in Standby without LeaveOut: {:?}",
                status
            );
            "Standby"
        } else {
            "InService"
        };
        prop_assert_eq!(&member.lifecycle_state, expected, "{:?}; {:?}", member, writes);
    }
    let size = s.instances as i32;
    let decrement = left_in_standby.len() as i32;
    prop_assert_eq!(group.desired_capacity, size - decrement, "{:?}", writes);
    prop_assert_eq!(
        group.min_size,
        size - decrement,
        "MinSize: {:?} {:#?}",
        writes,
        status.instances
    );
    prop_assert!(
        group.suspended_processes.is_empty(),
        "left suspended: {:?}; {:?}",
        group.suspended_processes,
        writes
    );
    if mode == AutoScalingMode::SuspendProcesses {
        prop_assert!(!writes.iter().any(|(op, _, _)| op.contains("Standby")), "{:?}", writes);
    }
    Ok(())
}
