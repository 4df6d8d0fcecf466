//! `maxUnavailable` across plans and controller restarts: the reconcile against a mock
//! apiserver (tower-test) that stores Leases with the apiserver's optimistic concurrency, and
//! the in-memory AWS.
//!
//! Two plans on one group, each allowed two out, never have more than two out between them:
//! the group's Lease is held by one plan at a time while it has instances out, and a holder
//! with another plan waiting starts no new instance, so the turn passes after its wave. A
//! controller restarted mid-wave counts the instances out from the status it wrote ahead.

mod reconcile_support;

use jiff::Timestamp;
use pitstop::api::PlanPhase;
use pitstop::aws::TargetState;
use pitstop::aws::fake::FakeAws;
use pitstop::k8s::target_group_lock::lease_name;
use reconcile_support::*;
use serde_json::json;

const SIX: [&str; 6] = [
    "i-0000000000000000a",
    "i-0000000000000000b",
    "i-0000000000000000c",
    "i-0000000000000000d",
    "i-0000000000000000e",
    "i-0000000000000000f",
];

fn six_instances() -> FakeAws {
    let start: Timestamp = "2026-01-01T00:00:00Z".parse().expect("valid timestamp");
    FakeAws::new(ARN, &SIX, start)
}

fn two_at_a_time() -> serde_json::Value {
    json!({ "maxUnavailable": 2, "autoScaling": { "mode": "Ignore" } })
}

fn out_now(fake: &FakeAws) -> Vec<&'static str> {
    SIX.into_iter()
        .filter(|id| fake.state(ARN, id) != TargetState::Healthy)
        .collect()
}

#[tokio::test]
async fn two_plans_allowed_two_each_never_have_more_than_two_out_and_pass_the_turn_by_wave() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let fake = six_instances();
        let (mut server, client) = ApiServer::start();
        let ctx = context(client, &fake);
        let plans: [(&str, &[&str]); 2] = [("first", &SIX[..3]), ("second", &SIX[3..])];
        for (name, ids) in plans {
            server.insert(with_finalizer(plan_json(name, ids, two_at_a_time())));
        }
        let mut most_out = 0;
        let mut order = Vec::new();
        for _ in 0..400 {
            for (name, _) in plans {
                if server.status(name).is_some_and(|s| s.phase.is_finished()) {
                    continue;
                }
                server.reconcile(&ctx, name).await.expect("the round succeeds");
                server.take_calls();
                let out = out_now(&fake);
                assert!(out.len() <= 2, "{} out at once: {out:?}", out.len());
                most_out = most_out.max(out.len());
                // Instances of one plan only are out, and that plan holds the group.
                let owners: Vec<&str> = plans
                    .iter()
                    .filter(|(_, ids)| ids.iter().any(|id| out.contains(id)))
                    .map(|(n, _)| *n)
                    .collect();
                assert!(owners.len() <= 1, "two plans out at once: {out:?}");
                if let Some(owner) = owners.first() {
                    assert_eq!(
                        server.lease_holder(&lease_name(ARN)),
                        Some(format!("{NAMESPACE}/{owner}"))
                    );
                }
            }
            for write in fake.writes() {
                if write.operation == "DeregisterTargets" && !order.contains(&write.instance_id) {
                    order.push(write.instance_id.clone());
                }
            }
            if plans
                .iter()
                .all(|(name, _)| server.status(name).is_some_and(|s| s.phase.is_finished()))
            {
                break;
            }
            fake.set_now(fake.now() + POLL);
        }
        for (name, _) in plans {
            assert_eq!(
                server.status(name).map(|s| s.phase),
                Some(PlanPhase::Succeeded),
                "{name}"
            );
        }
        assert_eq!(most_out, 2, "a wave of two went out");
        assert_eq!(fake.max_out_at_once(), 2);
        // A wave of the first plan, then the second's (it waited), then the rest of each.
        assert_eq!(&order[..2], &SIX[..2], "{order:?}");
        assert_eq!(
            &order[2..4],
            &SIX[3..5],
            "the waiting plan went next, a wave of two: {order:?}"
        );
        assert_eq!(server.lease_holder(&lease_name(ARN)).as_deref(), Some(""));
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_restarted_controller_counts_the_wave_out_from_the_status_and_adds_none_beyond_the_bound() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let fake = six_instances();
        let (mut server, client) = ApiServer::start();
        let before = context(client.clone(), &fake);
        server.insert(with_finalizer(plan_json("wave", &SIX, two_at_a_time())));
        server.reconcile(&before, "wave").await.expect("first instance");
        server.reconcile(&before, "wave").await.expect("second instance");
        assert_eq!(out_now(&fake).len(), 2);
        drop(before);

        // A new process remembers nothing; the status says which two are out.
        let ctx = context(client, &fake);
        let mut most_out = 0;
        for _ in 0..400 {
            server.reconcile(&ctx, "wave").await.expect("the round succeeds");
            server.take_calls();
            most_out = most_out.max(out_now(&fake).len());
            assert!(out_now(&fake).len() <= 2, "{:?}", out_now(&fake));
            if server.status("wave").is_some_and(|s| s.phase.is_finished()) {
                break;
            }
            fake.set_now(fake.now() + POLL);
        }
        assert_eq!(server.status("wave").map(|s| s.phase), Some(PlanPhase::Succeeded));
        assert_eq!(most_out, 2);
        assert_eq!(fake.max_out_at_once(), 2);
        let deregistrations = fake
            .writes()
            .iter()
            .filter(|w| w.operation == "DeregisterTargets")
            .count();
        assert_eq!(deregistrations, 6, "each instance went out once");
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

/// With a wave out, EC2 is asked about all of its instances in one DescribeInstances a
/// minute, not one call each; one terminated mid-wave ends its turn while the other goes on.
#[tokio::test]
async fn the_wave_out_is_looked_up_in_ec2_with_one_call_and_a_gone_member_ends_alone() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let fake = six_instances();
        // Long enough maintenance that both are still out when the minute's look comes.
        fake.behave(|b| b.command_time = std::time::Duration::from_secs(300));
        let (mut server, client) = ApiServer::start();
        let ctx = context(client, &fake);
        server.insert(with_finalizer(plan_json("wave", &SIX[..2], two_at_a_time())));
        for _ in 0..20 {
            server.reconcile(&ctx, "wave").await.expect("the round succeeds");
            fake.set_now(fake.now() + POLL);
        }
        let status = server.status("wave").expect("status");
        assert!(
            status
                .instances
                .iter()
                .all(|i| i.phase == pitstop::api::InstancePhase::Rebooting),
            "{status:?}"
        );
        let looks = fake.calls_of("DescribeInstances");
        println!("{looks} DescribeInstances for two instances out for 100 s");
        assert_eq!(looks, 1, "one call for both in the first minute, not one each");

        fake.terminate(SIX[0]);
        for _ in 0..30 {
            server.reconcile(&ctx, "wave").await.expect("the round succeeds");
            fake.set_now(fake.now() + POLL);
        }
        let status = server.status("wave").expect("status");
        let gone = &status.instances[0];
        assert_eq!(
            gone.failure_reason.as_deref(),
            Some(pitstop::machine::reason::GONE),
            "{gone:?}"
        );
        assert!(!gone.out_of_rotation);
        assert!(
            status.instances[1].out_of_rotation,
            "the other goes on: {:?}",
            status.instances[1]
        );
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}
