//! The pure state machine with several target groups (`targetGroupArns`): out of every
//! group the instance is in, on its own port in each, one call per round; maintained only
//! once all show it `unused`; back in all and healthy in all before the next.

mod machine_support;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use machine_support::run;
use pitstop::api::{InstancePhase, MaintenancePlanSpec, OnFailure, TargetGroupRegistration};
use pitstop::aws::{AgentPing, CommandStatus, Invocation, Target, TargetHealth, TargetState};
use pitstop::machine::{Action, CommandView, InstanceGroupView, Observed, Requeue, reason};

const WEB: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";
const TLS: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-tls/fedcba9876543210";
const A: &str = "i-0000000000000000a";
const B: &str = "i-0000000000000000b";

fn spec() -> MaintenancePlanSpec {
    MaintenancePlanSpec {
        target_group_arns: vec![WEB.into(), TLS.into()],
        instances: vec![A.into(), B.into()],
        ..Default::default()
    }
}

fn at(seconds: i64) -> Timestamp {
    let t0: Timestamp = "2026-11-23T10:00:00Z".parse().expect("valid timestamp");
    t0 + SignedDuration::from_secs(seconds)
}

fn port(arn: &str) -> i32 {
    if arn == WEB { 8080 } else { 8443 }
}

/// Both groups, with A in the given state in each (`Unused`: not listed) and B healthy.
fn seen(web: TargetState, tls: TargetState) -> Observed {
    let group = |arn: &str, a: TargetState| -> Vec<TargetHealth> {
        [(A, a), (B, TargetState::Healthy)]
            .into_iter()
            .filter(|(_, s)| *s != TargetState::Unused)
            .map(|(id, state)| TargetHealth {
                target: Target {
                    instance_id: id.into(),
                    port: Some(port(arn)),
                },
                state,
                reason: None,
                description: None,
            })
            .collect()
    };
    Observed {
        groups: BTreeMap::from([(WEB.to_owned(), group(WEB, web)), (TLS.to_owned(), group(TLS, tls))]),
        deregistration_delay: Some(Duration::from_secs(30)),
        agent: Some(AgentPing::Online),
        // Read, and in no Auto Scaling group.
        instance_group: Some(InstanceGroupView::default()),
        ..Observed::default()
    }
}

fn deregister(arn: &str) -> Option<Action> {
    Some(Action::Deregister {
        target_group_arn: arn.into(),
        target: Target {
            instance_id: A.into(),
            port: Some(port(arn)),
        },
    })
}

fn register(arn: &str) -> Option<Action> {
    Some(Action::Register {
        target_group_arn: arn.into(),
        target: Target {
            instance_id: A.into(),
            port: Some(port(arn)),
        },
    })
}

use TargetState::{Draining, Healthy, Initial, Unused};

#[test]
fn an_instance_leaves_every_group_on_its_own_port_before_its_maintenance() {
    let s = spec();
    let d = run(&s, None, &seen(Healthy, Healthy), at(0));
    let a = &d.status.instances[0];
    assert_eq!(a.phase, InstancePhase::Draining);
    assert_eq!(
        a.target_groups,
        [
            TargetGroupRegistration {
                target_group_arn: WEB.into(),
                port: Some(8080)
            },
            TargetGroupRegistration {
                target_group_arn: TLS.into(),
                port: Some(8443)
            },
        ],
        "both groups are recorded before the first call (write-ahead)"
    );
    assert_eq!(d.action, deregister(WEB));
    assert_eq!(d.requeue, Requeue::Now, "the second group follows at once");

    let d = run(&s, Some(&d.status), &seen(Draining, Healthy), at(1));
    assert_eq!(d.action, deregister(TLS));
    assert_eq!(d.status.instances[0].phase, InstancePhase::Draining);

    // Out of one group only: not yet drained.
    let d = run(&s, Some(&d.status), &seen(Unused, Draining), at(20));
    assert_eq!(d.action, None);
    assert_eq!(d.status.instances[0].phase, InstancePhase::Draining);

    let d = run(&s, Some(&d.status), &seen(Unused, Unused), at(40));
    assert_eq!(d.status.instances[0].phase, InstancePhase::Rebooting);
}

#[test]
fn a_crash_after_the_first_deregistration_takes_it_out_of_the_rest() {
    let s = spec();
    let d = run(&s, None, &seen(Healthy, Healthy), at(0));
    // The call was made but the controller died: the next round sees web draining, tls
    // still healthy, and deregisters from tls without asking web again.
    let d = run(&s, Some(&d.status), &seen(Draining, Healthy), at(5));
    assert_eq!(d.action, deregister(TLS));
    // And one that died before any call asks web again first.
    let first = run(&s, None, &seen(Healthy, Healthy), at(0));
    let again = run(&s, Some(&first.status), &seen(Healthy, Healthy), at(5));
    assert_eq!(again.action, deregister(WEB));
}

#[test]
fn it_is_registered_in_every_group_and_counts_healthy_only_when_healthy_in_all() {
    let s = spec();
    let d = run(&s, None, &seen(Healthy, Healthy), at(0));
    let d = run(&s, Some(&d.status), &seen(Draining, Healthy), at(1));
    let d = run(&s, Some(&d.status), &seen(Unused, Unused), at(40));
    assert_eq!(d.status.instances[0].phase, InstancePhase::Rebooting);
    let mut status = d.status;
    status.instances[0].maintenance_command_id = Some("cmd-1".into());
    let done = Observed {
        command: Some(CommandView {
            command_id: Some("cmd-1".into()),
            invocation: Some(Invocation {
                status: CommandStatus::Success,
                status_details: None,
                response_code: Some(0),
                stderr_tail: None,
            }),
        }),
        ..seen(Unused, Unused)
    };
    let d = run(&s, Some(&status), &done, at(60));
    assert_eq!(d.status.instances[0].phase, InstancePhase::Verifying);
    let d = run(&s, Some(&d.status), &seen(Unused, Unused), at(61));
    assert_eq!(d.action, register(WEB));
    assert_eq!(d.requeue, Requeue::Now);
    let d = run(&s, Some(&d.status), &seen(Initial, Unused), at(62));
    assert_eq!(d.action, register(TLS));
    let d = run(&s, Some(&d.status), &seen(Healthy, Initial), at(70));
    assert_eq!(d.action, None);
    assert_eq!(
        d.status.instances[0].phase,
        InstancePhase::Verifying,
        "healthy in one group is not enough"
    );
    assert!(
        pitstop::machine::holds_turn(&s, &d.status, at(70)),
        "still counts as out until healthy in all"
    );
    let d = run(&s, Some(&d.status), &seen(Healthy, Healthy), at(80));
    assert_eq!(d.status.instances[0].phase, InstancePhase::Registered);
    assert!(!d.status.instances[0].out_of_rotation);
}

#[test]
fn an_instance_in_only_some_groups_leaves_only_those() {
    let s = spec();
    let d = run(&s, None, &seen(Unused, Healthy), at(0));
    let a = &d.status.instances[0];
    assert_eq!(
        a.target_groups
            .iter()
            .map(|g| g.target_group_arn.as_str())
            .collect::<Vec<_>>(),
        [TLS]
    );
    assert_eq!(d.action, deregister(TLS));
    assert_eq!(d.requeue, Requeue::Poll, "nothing else to call");
}

#[test]
fn an_instance_in_none_of_the_groups_fails_untouched() {
    let s = spec();
    let d = run(&s, None, &seen(Unused, Unused), at(0));
    let a = &d.status.instances[0];
    assert_eq!(a.phase, InstancePhase::Failed);
    assert_eq!(a.failure_reason.as_deref(), Some(reason::NOT_IN_TARGET_GROUP));
    assert!(!a.out_of_rotation);
    assert!(a.message.as_deref().unwrap_or_default().contains("any of"), "{a:?}");
    assert_eq!(d.action, None);
}

#[test]
fn the_gates_apply_in_each_group() {
    let s = spec();
    // B is unhealthy in tls only: the group gate of tls is closed.
    let mut observed = seen(Healthy, Healthy);
    if let Some(tls) = observed.groups.get_mut(TLS) {
        for target in tls.iter_mut().filter(|t| t.target.instance_id == B) {
            target.state = TargetState::Unhealthy;
        }
    }
    let d = run(&s, None, &observed, at(0));
    let a = &d.status.instances[0];
    assert_eq!(a.phase, InstancePhase::Pending);
    assert_eq!(d.action, None);
    let message = a.message.as_deref().unwrap_or_default();
    assert!(message.contains(reason::TARGET_GROUP_UNHEALTHY), "{message}");
    assert!(message.contains("target group web-tls"), "names the group: {message}");

    // minHealthyTargets counts in each group: B is the only other target of tls.
    let strict = MaintenancePlanSpec {
        preflight: pitstop::api::Preflight {
            min_healthy_targets: Some(2),
            ..Default::default()
        },
        ..spec()
    };
    let d = run(&strict, None, &seen(Healthy, Healthy), at(0));
    let message = d.status.instances[0].message.clone().unwrap_or_default();
    assert!(message.contains(reason::TOO_FEW_HEALTHY_TARGETS), "{message}");
    assert_eq!(d.action, None);
}

#[test]
fn a_failed_instance_goes_back_into_every_group_it_left() {
    let s = MaintenancePlanSpec {
        on_failure: OnFailure::Register,
        timeouts: pitstop::api::Timeouts {
            drain_seconds: Some(30),
            healthy_seconds: None,
        },
        ..spec()
    };
    let d = run(&s, None, &seen(Healthy, Healthy), at(0));
    let d = run(&s, Some(&d.status), &seen(Draining, Healthy), at(1));
    // tls never finishes draining: the drain limit fails the instance.
    let d = run(&s, Some(&d.status), &seen(Unused, Draining), at(2));
    let d = run(&s, Some(&d.status), &seen(Unused, Draining), at(40));
    assert_eq!(d.status.instances[0].phase, InstancePhase::Failed);
    assert_eq!(
        d.status.instances[0].failure_reason.as_deref(),
        Some(reason::DRAIN_TIMEOUT)
    );
    let d = run(&s, Some(&d.status), &seen(Unused, Draining), at(41));
    assert_eq!(d.action, register(WEB));
    let d = run(&s, Some(&d.status), &seen(Initial, Draining), at(42));
    assert_eq!(d.action, register(TLS));
    let d = run(&s, Some(&d.status), &seen(Healthy, Initial), at(43));
    assert!(d.status.instances[0].out_of_rotation, "initial in tls: not decided yet");
    let d = run(&s, Some(&d.status), &seen(Healthy, Healthy), at(60));
    assert!(!d.status.instances[0].out_of_rotation);
}
