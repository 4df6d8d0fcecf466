//! Plans over several target groups (`targetGroupArns`), reconciled against the mock
//! apiserver (tower-test) with its Leases, and the in-memory AWS.
//!
//! An instance goes out of, and back into, every group it is in, on its own port in each;
//! its plan holds every group's Lease while it is out; plans that share groups, whatever
//! order they list them in, finish without deadlock and never have two instances out of
//! one group; a plan deleted mid-flight puts its instance back into every group and gives
//! every Lease back.

mod reconcile_support;

use std::sync::Arc;

use pitstop::aws::TargetState;
use pitstop::aws::fake::FakeAws;
use pitstop::k8s::Context;
use pitstop::k8s::target_group_lock::lease_name;
use reconcile_support::*;
use serde_json::json;

/// The second group of every instance: the HTTPS listener's, on its own port.
const TLS: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-tls/fedcba9876543210";
const TLS_PORT: i32 = 8443;

/// The usual scenario with every instance in both groups.
fn two_group_scenario() -> (FakeAws, ApiServer, Arc<Context>) {
    let (fake, server, ctx) = scenario();
    fake.add_group(TLS, &IDS, TLS_PORT);
    (fake, server, ctx)
}

/// A plan over `instances` naming `groups` in `targetGroupArns` (and no `targetGroupArn`).
fn groups_plan(name: &str, instances: &[&str], groups: &[&str]) -> serde_json::Value {
    let mut plan = plan_json(name, instances, json!({ "targetGroupArns": groups }));
    if let Some(spec) = plan["spec"].as_object_mut() {
        spec.remove("targetGroupArn");
    }
    plan
}

fn finished(server: &ApiServer, name: &str) -> bool {
    server.status(name).is_some_and(|s| s.phase.is_finished())
}

/// The groups' calls of one operation, as (instance, group, port).
fn calls(fake: &FakeAws, operation: &str) -> Vec<(String, String, Option<i32>)> {
    fake.writes()
        .into_iter()
        .filter(|w| w.operation == operation)
        .map(|w| (w.instance_id, w.target_group_arn.unwrap_or_default(), w.port))
        .collect()
}

/// Out of rotation in a group: anything but healthy.
fn out_of(fake: &FakeAws, arn: &str) -> usize {
    IDS.iter()
        .filter(|id| fake.state(arn, id) != TargetState::Healthy)
        .count()
}

/// Reconciles the plans in turn, one round each per tick, until all are finished; after
/// every round, checks that no group has two instances out and that a plan with an instance
/// out holds the Lease of every group it names.
async fn round_robin(server: &mut ApiServer, ctx: &Arc<Context>, fake: &FakeAws, names: &[&str], groups: &[&[&str]]) {
    for _ in 0..600 {
        for name in names {
            if finished(server, name) {
                continue;
            }
            server.reconcile(ctx, name).await.expect("the round succeeds");
            server.take_calls();
            for arn in [ARN, TLS] {
                assert!(
                    out_of(fake, arn) <= 1,
                    "{} instances out of {arn} at once",
                    out_of(fake, arn)
                );
            }
            for (other, its_groups) in names.iter().zip(groups) {
                let out = server
                    .status(other)
                    .is_some_and(|s| s.instances.iter().any(|i| i.out_of_rotation));
                if out {
                    for arn in *its_groups {
                        assert_eq!(
                            server.lease_holder(&lease_name(arn)).as_deref(),
                            Some(format!("{NAMESPACE}/{other}").as_str()),
                            "a plan with an instance out holds every group it names"
                        );
                    }
                }
            }
        }
        if names.iter().all(|name| finished(server, name)) {
            return;
        }
        fake.set_now(fake.now() + POLL);
    }
    panic!("the plans did not finish in 600 rounds (a deadlock?)");
}

#[tokio::test]
async fn an_instance_goes_out_of_and_back_into_every_group_on_its_own_port() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = two_group_scenario();
        server.insert(with_finalizer(groups_plan("web", &IDS[..1], &[ARN, TLS])));
        round_robin(&mut server, &ctx, &fake, &["web"], &[&[ARN, TLS]]).await;
        let status = server.status("web").expect("status");
        assert_eq!(status.phase, pitstop::api::PlanPhase::Succeeded, "{status:?}");
        let id = IDS[0].to_owned();
        assert_eq!(
            calls(&fake, "DeregisterTargets"),
            [
                (id.clone(), ARN.to_owned(), Some(8080)),
                (id.clone(), TLS.to_owned(), Some(TLS_PORT))
            ]
        );
        assert_eq!(
            calls(&fake, "RegisterTargets"),
            [
                (id.clone(), ARN.to_owned(), Some(8080)),
                (id.clone(), TLS.to_owned(), Some(TLS_PORT))
            ]
        );
        // The maintenance ran only once it was out of both.
        for send in fake.writes().iter().filter(|w| w.operation == "SendCommand") {
            assert_eq!(send.state_before, TargetState::Unused, "{send:?}");
        }
        for arn in [ARN, TLS] {
            assert_eq!(fake.state(arn, IDS[0]), TargetState::Healthy);
            assert_eq!(server.lease_holder(&lease_name(arn)).as_deref(), Some(""), "given back");
        }
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

/// Three plans sharing the two groups, listing them in opposite orders: the Leases are
/// taken in one sorted order, so none waits for another in a circle; all finish, and no
/// group ever has two instances out.
#[tokio::test]
async fn plans_sharing_groups_in_any_order_finish_without_deadlock_and_one_out_per_group() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = two_group_scenario();
        server.insert(with_finalizer(groups_plan("forward", &IDS[..1], &[ARN, TLS])));
        server.insert(with_finalizer(groups_plan("backward", &IDS[1..2], &[TLS, ARN])));
        server.insert(with_finalizer(plan_json(
            "tls-only",
            &IDS[2..],
            json!({ "targetGroupArn": TLS }),
        )));
        round_robin(
            &mut server,
            &ctx,
            &fake,
            &["forward", "backward", "tls-only"],
            &[&[ARN, TLS], &[ARN, TLS], &[TLS]],
        )
        .await;
        for name in ["forward", "backward", "tls-only"] {
            assert_eq!(
                server.status(name).map(|s| s.phase),
                Some(pitstop::api::PlanPhase::Succeeded),
                "{name}"
            );
        }
        assert_eq!(fake.max_out_at_once(), 1);
        // The TLS-only plan left its instance in the web group.
        assert!(
            !calls(&fake, "DeregisterTargets")
                .iter()
                .any(|(id, arn, _)| id == IDS[2] && arn == ARN)
        );
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_plan_deleted_mid_flight_puts_its_instance_back_into_every_group_and_gives_every_lease_back() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = two_group_scenario();
        server.insert(with_finalizer(groups_plan("web", &IDS[..2], &[ARN, TLS])));
        server.reconcile(&ctx, "web").await.expect("deregisters from web");
        server.reconcile(&ctx, "web").await.expect("deregisters from tls");
        assert_eq!(calls(&fake, "DeregisterTargets").len(), 2);
        let status = server.status("web").expect("status");
        assert_eq!(status.instances[0].target_groups.len(), 2, "{status:?}");
        for arn in [ARN, TLS] {
            assert_eq!(server.lease_holder(&lease_name(arn)).as_deref(), Some("default/web"));
        }

        server.mark_deleted("web");
        server.reconcile(&ctx, "web").await.expect("the clean-up round");
        assert!(server.raw("web").is_none(), "the finalizer is gone, and so the plan");
        assert_eq!(
            calls(&fake, "RegisterTargets"),
            [
                (IDS[0].to_owned(), ARN.to_owned(), Some(8080)),
                (IDS[0].to_owned(), TLS.to_owned(), Some(TLS_PORT))
            ]
        );
        for arn in [ARN, TLS] {
            assert!(fake.state(arn, IDS[0]).is_registered(), "back in {arn}");
            assert_eq!(server.lease_holder(&lease_name(arn)).as_deref(), Some(""));
        }
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}
