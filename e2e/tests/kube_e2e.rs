//! pitstop against a real Kubernetes API server: the CRD, the chart's RBAC, a token of the
//! chart's ServiceAccount, and the real `pitstop controller` binary driving the sandbox fleet
//! (real HAProxy and backends behind the AWS stand-in).
//!
//! The API server comes from `KUBECONFIG`, from `~/.kube/config` with `PITSTOP_E2E_KUBE=1`,
//! or is started here from `KUBE_APISERVER` + `ETCD` (envtest-style). With none of them each
//! cluster test prints a `SKIPPED:` banner and passes without having run; see
//! `e2e/KUBE_E2E.md`. Run with `make e2e-kube`
//! (`cargo test -p pitstop-e2e --test kube_e2e -- --nocapture --test-threads=1`).
//!
//! The limits below only keep a broken run from hanging; no test asserts a duration.

mod kube_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::DeleteParams;
use pitstop::api::{InstancePhase, PlanPhase};
use pitstop::k8s::FINALIZER;
use pitstop::k8s::aws_condition::CONDITION_STALLED;
use pitstop::k8s::target_group_lock::{ANNOTATION_WAITING, lease_name};
use pitstop::machine::{CONDITION_COMPLETE, reason};
use pitstop_e2e::sandbox::CallOutcome;

use kube_support::{Fleet, Harness, describe_event, instance_in, phase};

/// Upper bound on a plan of three instances (each: drain 2 s, reboot 2 s, health checks).
const PLAN_LIMIT: Duration = Duration::from_secs(180);
/// Upper bound on a plan whose leader is killed: the Lease (15 s) must expire first.
const FAILOVER_LIMIT: Duration = Duration::from_secs(240);
/// Upper bound on smaller waits.
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// Transitions every instance goes through on its way to Registered, as Event reasons.
const INSTANCE_REASONS: [&str; 4] = ["Deregistering", "Drained", "MaintenanceSucceeded", "Healthy"];
/// The plan's own transitions, as Event reasons.
const PLAN_REASONS: [&str; 2] = ["PlanStarted", "PlanSucceeded"];

fn reboots(before: &[u64], after: &[u64]) -> Vec<u64> {
    after.iter().zip(before).map(|(a, b)| a.saturating_sub(*b)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_runs_to_completion_under_the_charts_rbac() {
    kube_support::run(
        "a_plan_runs_to_completion_under_the_charts_rbac",
        |h: Harness| async move {
            let mut fleet = Fleet::start(&h, &["controller"], |_| Vec::new()).await;
            let ids = fleet.sandbox.instance_ids();
            let before = fleet.boots();

            let name = "monthly-reboot";
            fleet.apply_plan(name).await;
            let plan = fleet
                .wait_for_plan(name, "phase Succeeded", PLAN_LIMIT, |p| {
                    phase(p) == Some(PlanPhase::Succeeded)
                })
                .await;

            // The status: for this generation, complete, every instance back.
            let generation = plan.metadata.generation;
            assert!(generation.is_some(), "the apiserver sets metadata.generation");
            let status = plan.status.clone().expect("a status");
            assert_eq!(status.observed_generation, generation, "{status:#?}");
            assert_eq!(status.progress.as_deref(), Some("3/3"), "{status:#?}");
            let complete = status
                .conditions
                .iter()
                .find(|c| c.type_ == CONDITION_COMPLETE)
                .unwrap_or_else(|| panic!("no Complete condition: {status:#?}"));
            assert_eq!(complete.status, "True", "{complete:#?}");
            assert_eq!(complete.observed_generation, generation, "{complete:#?}");
            let instances: Vec<_> = status.instances.iter().map(|i| i.instance_id.clone()).collect();
            assert_eq!(instances, ids, "one status entry per instance, in the spec's order");
            assert!(
                status
                    .instances
                    .iter()
                    .all(|i| i.phase == InstancePhase::Registered && !i.out_of_rotation),
                "{status:#?}"
            );
            assert!(
                plan.finalizers().iter().any(|f| f == FINALIZER),
                "the controller put its finalizer on the plan: {:?}",
                plan.finalizers()
            );

            // The fleet: each instance rebooted exactly once, all serving again.
            assert_eq!(
                reboots(&before, &fleet.boots()),
                [1, 1, 1],
                "each instance rebooted exactly once"
            );
            let rotation = fleet.sandbox.rotation_states().await.expect("HAProxy's server states");
            assert!(rotation.values().all(|s| s.in_rotation()), "{rotation:#?}");

            // The target group's Lease, in the controller's namespace: taken for each instance
            // (created, then taken again twice after being given back), given back at the end.
            let lease_name = lease_name(fleet.sandbox.target_group_arn());
            let lease = h.leases().get(&lease_name).await.expect("the target group's Lease");
            let spec = lease.spec.unwrap_or_default();
            assert_eq!(spec.holder_identity, None, "given back: {spec:?}");
            assert_eq!(spec.lease_transitions, Some(2), "taken once per instance: {spec:?}");

            // `kubectl get mp`: the printer columns, as the apiserver renders them in a Table.
            let url = format!("{}/{name}", fleet.plans.resource_url());
            let request = http::Request::get(url)
                .header(http::header::ACCEPT, "application/json;as=Table;v=v1;g=meta.k8s.io")
                .body(Vec::new())
                .expect("a request");
            let table: serde_json::Value = fleet.client.request(request).await.expect("the plan as a Table");
            assert_eq!(table["kind"], "Table", "{table:#}");
            let columns: Vec<&str> = table["columnDefinitions"]
                .as_array()
                .map(|c| c.iter().filter_map(|d| d["name"].as_str()).collect())
                .unwrap_or_default();
            let cell = |column: &str| {
                let index = columns
                    .iter()
                    .position(|c| *c == column)
                    .unwrap_or_else(|| panic!("no {column} column in {columns:?}"));
                table["rows"][0]["cells"][index].clone()
            };
            assert_eq!(cell("Name"), name, "{table:#}");
            assert_eq!(cell("Phase"), "Succeeded", "{table:#}");
            assert_eq!(cell("Progress"), "3/3", "{table:#}");

            // An Event for every transition: the plan's, and each instance's on its way through.
            let events = fleet
                .wait_for_events(name, "every transition recorded", |events| {
                    let reasons: BTreeSet<&str> = events.iter().filter_map(|e| e.reason.as_deref()).collect();
                    PLAN_REASONS.iter().all(|r| reasons.contains(r))
                        && ids.iter().all(|id| {
                            let of_instance: BTreeSet<&str> = events
                                .iter()
                                .filter(|e| e.action.as_deref() == Some(id.as_str()))
                                .filter_map(|e| e.reason.as_deref())
                                .collect();
                            INSTANCE_REASONS.iter().all(|r| of_instance.contains(r))
                        })
                })
                .await;
            assert!(
                events.iter().all(|e| e.type_.as_deref() == Some("Normal")),
                "no warnings on a clean run: {:#?}",
                events.iter().map(describe_event).collect::<Vec<_>>()
            );

            fleet.shutdown().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_deleted_mid_flight_puts_its_instance_back_before_it_goes() {
    kube_support::run(
        "a_plan_deleted_mid_flight_puts_its_instance_back_before_it_goes",
        |h: Harness| async move {
            let mut fleet = Fleet::start(&h, &["controller"], |_| Vec::new()).await;
            let ids = fleet.sandbox.instance_ids();
            let before = fleet.boots();
            let name = "deleted-mid-flight";
            fleet.apply_plan(name).await;

            // Catch an instance out of the target group, then have AWS throttle every call, so
            // that the controller cannot put it back yet: the plan must then stay (with its
            // finalizer) for as long as the instance is out.
            let deadline = kube_support::Deadline::new("an instance Draining or Rebooting", PLAN_LIMIT);
            let in_flight = loop {
                fleet.assert_running();
                let plan = fleet.plans.get(name).await.expect("read the plan");
                if let Some(id) = instance_in(&plan, &[InstancePhase::Draining, InstancePhase::Rebooting])
                    && fleet.is_out(&id).await
                {
                    fleet
                        .sandbox
                        .faults()
                        .set_throttle_rate(1.0)
                        .expect("throttle everything");
                    if fleet.is_out(&id).await {
                        break id;
                    }
                    // It went back in between the two looks; let the plan go on and try again.
                    fleet.sandbox.faults().set_throttle_rate(0.0).expect("stop throttling");
                }
                assert!(
                    !phase(&plan).is_some_and(PlanPhase::is_finished),
                    "the plan finished before an instance was seen out of the target group: {:#?}",
                    plan.status
                );
                deadline.tick(&format!("{:#?}", plan.status)).await;
            };
            let index = ids.iter().position(|id| *id == in_flight).expect("a sandbox instance");
            eprintln!("deleting plan {name} while {in_flight} is out of the target group");

            let calls_before = fleet.sandbox.call_log().len() as u64;
            fleet
                .plans
                .delete(name, &DeleteParams::default())
                .await
                .expect("delete the plan");

            // The controller tries to put the instance back and is refused...
            let deadline = kube_support::Deadline::new("a clean-up call for the instance, refused", STEP_LIMIT);
            loop {
                fleet.assert_running();
                let refused = fleet.sandbox.call_log().records().into_iter().any(|c| {
                    c.seq >= calls_before
                        && c.outcome == CallOutcome::Throttled
                        && matches!(
                            c.operation.as_str(),
                            "RegisterTargets" | "CancelCommand" | "ListCommands"
                        )
                        && c.instance_ids.contains(&in_flight)
                });
                if refused {
                    break;
                }
                deadline.tick("no throttled clean-up call yet").await;
            }
            // ...so the plan is still there, held by the finalizer, while the instance is out.
            let held = fleet
                .plans
                .get_opt(name)
                .await
                .expect("read the plan")
                .expect("the plan must not go while its instance is out of the target group");
            assert!(held.metadata.deletion_timestamp.is_some(), "{:#?}", held.metadata);
            assert!(held.finalizers().iter().any(|f| f == FINALIZER), "{:#?}", held.metadata);
            assert!(fleet.is_out(&in_flight).await, "nothing else registers the instance");

            // AWS answers again: the instance goes back, and only then the plan.
            fleet.sandbox.faults().set_throttle_rate(0.0).expect("stop throttling");
            let deadline = kube_support::Deadline::new("the deleted plan to disappear", PLAN_LIMIT);
            loop {
                fleet.assert_running();
                let Some(plan) = fleet.plans.get_opt(name).await.expect("read the plan") else {
                    break;
                };
                assert!(plan.finalizers().iter().any(|f| f == FINALIZER), "{:#?}", plan.metadata);
                deadline.tick(&format!("{:#?}", plan.status)).await;
            }
            let health = fleet.sandbox.target_health().await.expect("target health");
            assert!(
                !fleet.is_out(&in_flight).await,
                "the plan went before {in_flight} was registered again: {health:#?}"
            );
            fleet.wait_all_in_rotation(STEP_LIMIT).await;

            // The clean-up is on record, and nothing was rebooted twice or after the delete.
            fleet
                .wait_for_events(name, "the PlanDeleted clean-up", |events| {
                    events.iter().any(|e| {
                        e.reason.as_deref() == Some(reason::PLAN_DELETED)
                            && e.note.as_deref().is_some_and(|n| n.contains(in_flight.as_str()))
                    })
                })
                .await;
            let rebooted = reboots(&before, &fleet.boots());
            for (i, count) in rebooted.iter().enumerate() {
                match i.cmp(&index) {
                    std::cmp::Ordering::Less => assert_eq!(*count, 1, "finished before the delete: {rebooted:?}"),
                    std::cmp::Ordering::Equal => assert!(*count <= 1, "at most one reboot: {rebooted:?}"),
                    std::cmp::Ordering::Greater => assert_eq!(*count, 0, "never started: {rebooted:?}"),
                }
            }
            fleet.shutdown().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_finishes_the_plan_when_the_leader_is_killed() {
    kube_support::run(
        "a_standby_finishes_the_plan_when_the_leader_is_killed",
        |h: Harness| async move {
            let lease_name = "e2e";
            let namespace = h.namespace.clone();
            let mut fleet = Fleet::start(&h, &["a", "b"], |identity| {
                [
                    "--leader-election",
                    "--lease-name",
                    lease_name,
                    "--lease-namespace",
                    &namespace,
                    "--identity",
                    identity,
                ]
                .map(str::to_owned)
                .to_vec()
            })
            .await;
            let leases = h.leases();
            let holder = || async {
                leases
                    .get_opt(lease_name)
                    .await
                    .expect("read the Lease")
                    .and_then(|lease| lease.spec)
                    .and_then(|spec| spec.holder_identity)
            };

            let deadline = kube_support::Deadline::new("one replica to hold the Lease", STEP_LIMIT);
            loop {
                fleet.assert_running();
                if holder().await.is_some_and(|h| h == "a" || h == "b") {
                    break;
                }
                deadline.tick("no holder yet").await;
            }

            let before = fleet.boots();
            let name = "leader-failover";
            fleet.apply_plan(name).await;
            let plan = fleet
                .wait_for_plan(name, "an instance in flight", PLAN_LIMIT, |p| {
                    instance_in(
                        p,
                        &[
                            InstancePhase::Draining,
                            InstancePhase::Rebooting,
                            InstancePhase::Verifying,
                        ],
                    )
                    .is_some()
                })
                .await;
            assert_eq!(phase(&plan), Some(PlanPhase::Running), "{:#?}", plan.status);

            let leader = holder().await.expect("the Lease has a holder");
            let survivor = if leader == "a" { "b" } else { "a" };
            eprintln!(
                "killing the leader {leader} while {:?} is in flight",
                instance_in(
                    &plan,
                    &[
                        InstancePhase::Draining,
                        InstancePhase::Rebooting,
                        InstancePhase::Verifying
                    ]
                )
            );
            fleet.kill(&leader).await;

            let plan = fleet
                .wait_for_plan(name, "phase Succeeded after the failover", FAILOVER_LIMIT, |p| {
                    phase(p) == Some(PlanPhase::Succeeded)
                })
                .await;
            let status = plan.status.clone().expect("a status");
            assert_eq!(status.progress.as_deref(), Some("3/3"), "{status:#?}");
            assert!(
                status
                    .instances
                    .iter()
                    .all(|i| i.phase == InstancePhase::Registered && !i.out_of_rotation),
                "{status:#?}"
            );
            assert_eq!(
                reboots(&before, &fleet.boots()),
                [1, 1, 1],
                "each instance rebooted exactly once, across the failover"
            );
            assert_eq!(
                holder().await.as_deref(),
                Some(survivor),
                "the standby took the Lease over"
            );
            let rotation = fleet.sandbox.rotation_states().await.expect("HAProxy's server states");
            assert!(rotation.values().all(|s| s.in_rotation()), "{rotation:#?}");
            fleet.shutdown().await;
        },
    )
    .await;
}

/// Two plans of two instances each on one target group, applied together: the controller's
/// instances alternate between them (a,b,a,b) instead of one plan doing both its instances
/// first. The plan that gives the group back finds the other waiting on the Lease; the
/// Lease watch wakes the waiter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_plans_on_one_target_group_alternate_instance_by_instance() {
    kube_support::run(
        "two_plans_on_one_target_group_alternate_instance_by_instance",
        |h: Harness| async move {
            let mut fleet = Fleet::start_with_instances(&h, 4, &["controller"], |_| Vec::new()).await;
            let ids = fleet.sandbox.instance_ids();
            let before = fleet.boots();
            fleet.sandbox.call_log().clear();
            fleet.apply_plan_of("plan-a", &ids[..2]).await;
            fleet.apply_plan_of("plan-b", &ids[2..]).await;
            for name in ["plan-a", "plan-b"] {
                fleet
                    .wait_for_plan(name, "phase Succeeded", PLAN_LIMIT, |p| {
                        phase(p) == Some(PlanPhase::Succeeded)
                    })
                    .await;
            }

            let writes = fleet.sandbox.call_log().writes();
            let order: Vec<&str> = writes
                .iter()
                .filter(|w| w.operation == "DeregisterTargets" && w.outcome == CallOutcome::Ok)
                .flat_map(|w| w.instance_ids.iter())
                .map(|id| if ids[..2].contains(id) { "a" } else { "b" })
                .collect();
            println!("instances taken out, by plan: {}", order.join(","));
            assert_eq!(order.len(), 4, "four instances taken out: {order:?}");
            assert!(
                order.windows(2).all(|pair| pair[0] != pair[1]),
                "the plans alternate: {order:?}"
            );
            assert_eq!(reboots(&before, &fleet.boots()), [1, 1, 1, 1]);
            assert_eq!(fleet.sandbox.max_out_of_rotation(), 1, "never two out");

            let lease = h
                .leases()
                .get(&lease_name(fleet.sandbox.target_group_arn()))
                .await
                .expect("the target group's Lease");
            assert_eq!(lease.spec.unwrap_or_default().holder_identity, None, "given back");
            let annotations = lease.metadata.annotations.unwrap_or_default();
            assert!(
                !annotations.contains_key(ANNOTATION_WAITING),
                "nobody waits any more: {annotations:?}"
            );
            fleet.shutdown().await;
        },
    )
    .await;
}

/// Two plans on one target group, one allowed two instances out at once and the other 50%
/// (a percentage through the CRD's int-or-string), run by the real controller: each wave goes
/// out together, the plans never have instances out at the same time (the group's Lease
/// passes between waves), and HAProxy never shows more than two out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_plans_with_max_unavailable_take_the_group_by_waves_within_the_bound() {
    kube_support::run(
        "two_plans_with_max_unavailable_take_the_group_by_waves_within_the_bound",
        |h: Harness| async move {
            let mut fleet = Fleet::start_with_instances(&h, 6, &["controller"], |_| Vec::new()).await;
            let ids = fleet.sandbox.instance_ids();
            let before = fleet.boots();
            fleet.sandbox.call_log().clear();
            fleet.sandbox.reset_rotation_history();
            fleet
                .apply_plan_with("wave-a", &ids[..3], serde_json::json!({ "maxUnavailable": 2 }))
                .await;
            fleet
                .apply_plan_with("wave-b", &ids[3..], serde_json::json!({ "maxUnavailable": "50%" }))
                .await;
            for name in ["wave-a", "wave-b"] {
                fleet
                    .wait_for_plan(name, "phase Succeeded", PLAN_LIMIT, |p| {
                        phase(p) == Some(PlanPhase::Succeeded)
                    })
                    .await;
            }
            let plan_b = h.plans().get("wave-b").await.expect("wave-b");
            let resolved = plan_b.status.and_then(|s| s.max_unavailable);
            println!("wave-b's 50% of the group resolved to {resolved:?}");
            assert_eq!(resolved, Some(3), "50% of six registered targets");

            let history = fleet.sandbox.rotation_history();
            let mut most = 0;
            for snapshot in &history {
                let out = snapshot.out_of_rotation();
                let of_a = out.iter().filter(|id| ids[..3].contains(id)).count();
                let of_b = out.len() - of_a;
                assert!(
                    of_a == 0 || of_b == 0,
                    "both plans out at {:?}: {out:?}",
                    snapshot.elapsed
                );
                most = most.max(out.len());
            }
            let max = fleet.sandbox.max_out_of_rotation();
            println!("at most {max} out at once in {} HAProxy samples", history.len());
            assert!((2..=3).contains(&max), "waves of two (a) and up to three (b): {max}");
            assert_eq!(most, max);
            assert_eq!(reboots(&before, &fleet.boots()), [1, 1, 1, 1, 1, 1]);
            fleet.shutdown().await;
        },
    )
    .await;
}

/// `maxUnavailable` is a count from 1 to 1000 or a percentage from 1% to 100%; the CRD's
/// rule refuses anything else at `kubectl apply`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_takes_max_unavailable_as_a_count_or_a_percentage() {
    kube_support::run("max-unavailable-field", |harness| async move {
        let plans = harness.plans();
        let web = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";
        for (value, accepted) in [
            (serde_json::json!(3), true),
            (serde_json::json!("25%"), true),
            (serde_json::json!("100%"), true),
            (serde_json::json!(0), false),
            (serde_json::json!(1001), false),
            (serde_json::json!("0%"), false),
            (serde_json::json!("150%"), false),
            (serde_json::json!("a quarter"), false),
        ] {
            let object = serde_json::json!({
                "apiVersion": "pitstop.dev/v1alpha1",
                "kind": "MaintenancePlan",
                "metadata": { "name": "bounded", "namespace": harness.namespace },
                "spec": {
                    "targetGroupArn": web,
                    "instances": ["i-0123456789abcdef0"],
                    "suspend": true,
                    "maxUnavailable": value,
                    "autoScaling": { "mode": "Ignore" },
                },
            });
            let result = plans
                .patch(
                    "bounded",
                    &kube::api::PatchParams::apply(kube_support::FIELD_MANAGER).force(),
                    &kube::api::Patch::Apply(&object),
                )
                .await;
            match (result, accepted) {
                (Ok(stored), true) => {
                    let back = serde_json::to_value(stored.spec.max_unavailable).expect("serializes");
                    println!("maxUnavailable {value}: stored as {back}");
                    assert_eq!(back, value);
                }
                (Err(error), false) => {
                    let message = error.to_string();
                    println!("maxUnavailable {value}: {message}");
                    assert!(message.contains("maxUnavailable must be a count"), "{message}");
                }
                (Ok(_), false) => panic!("maxUnavailable {value} was accepted"),
                (Err(error), true) => panic!("maxUnavailable {value} was refused: {error}"),
            }
        }
    })
    .await;
}

/// How long the apiserver is stopped in the outage test.
const OUTAGE: Duration = Duration::from_secs(20);

/// The kube-apiserver is stopped for 20 s while an instance is in maintenance (Rebooting),
/// then started again on the same etcd data. The controller's status writes fail meanwhile;
/// with an instance out they are retried within the poll interval (no exponential backoff),
/// and once the apiserver answers, a probe reconciles the plans at once. Prints how long
/// after the apiserver's return the status was written and the instance was back, and each
/// instance's time out of rotation from the controller's metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_out_during_an_apiserver_outage_is_back_without_an_extra_backoff() {
    kube_support::run(
        "an_instance_out_during_an_apiserver_outage_is_back_without_an_extra_backoff",
        |h: Harness| async move {
            let Some(apiserver) = h.apiserver.clone() else {
                eprintln!(
                    "SKIPPED: an_instance_out_during_an_apiserver_outage_is_back_without_an_extra_backoff: \
                     it stops and starts the API server, so it needs one started here \
                     (KUBE_APISERVER + ETCD); this test did NOT run"
                );
                return;
            };
            let mut fleet = Fleet::start(&h, &["controller"], |_| Vec::new()).await;
            let ids = fleet.sandbox.instance_ids();
            let before = fleet.boots();
            let name = "outage";
            fleet.apply_plan(name).await;

            let target = ids[1].clone();
            fleet
                .wait_for_plan(name, "the second instance Rebooting", PLAN_LIMIT, |p| {
                    p.status.as_ref().is_some_and(|s| {
                        s.instances
                            .iter()
                            .any(|i| i.instance_id == target && i.phase == InstancePhase::Rebooting)
                    })
                })
                .await;
            apiserver.stop().await;
            eprintln!("kube-apiserver stopped while {target} is Rebooting; starting it again in {OUTAGE:?}");
            tokio::time::sleep(OUTAGE).await;
            apiserver.start(&fleet.client).await;
            let back = Instant::now();
            let version_at_return = fleet.plans.get(name).await.expect("read the plan").resource_version();

            // The status written again, then the instance back.
            let deadline = kube_support::Deadline::new("the status written after the outage", STEP_LIMIT);
            let written_after = loop {
                fleet.assert_running();
                let plan = fleet.plans.get(name).await.expect("read the plan");
                if plan.resource_version() != version_at_return {
                    break back.elapsed();
                }
                deadline.tick(&format!("{:#?}", plan.status)).await;
            };
            let registered_after = {
                let deadline = kube_support::Deadline::new(format!("{target} Registered"), PLAN_LIMIT);
                loop {
                    fleet.assert_running();
                    let plan = fleet.plans.get(name).await.expect("read the plan");
                    let registered = plan.status.as_ref().is_some_and(|s| {
                        s.instances
                            .iter()
                            .any(|i| i.instance_id == target && i.phase == InstancePhase::Registered)
                    });
                    if registered {
                        break back.elapsed();
                    }
                    deadline.tick(&format!("{:#?}", plan.status)).await;
                }
            };
            fleet
                .wait_for_plan(name, "phase Succeeded", PLAN_LIMIT, |p| {
                    phase(p) == Some(PlanPhase::Succeeded)
                })
                .await;
            assert_eq!(reboots(&before, &fleet.boots()), [1, 1, 1], "each rebooted once");

            let metrics = fleet.controllers[0].metrics().await;
            let logs = without_ansi_colours(&fleet.controllers[0].logs());
            println!(
                "FIGURES (poll interval 500ms, outage {OUTAGE:?}, Kubernetes {}):",
                h.client
                    .apiserver_version()
                    .await
                    .map(|v| v.git_version)
                    .unwrap_or_default()
            );
            println!("  status written {written_after:.2?} after the apiserver was ready again");
            println!("  {target} Registered {registered_after:.2?} after the apiserver was ready again");
            for id in &ids {
                let seconds = out_of_rotation_seconds(&metrics, id);
                let note = if *id == target { " (out during the outage)" } else { "" };
                println!("  {id} out of rotation {seconds:.1} s{note}");
            }

            // What the policy did, from the controller's own log: the apiserver failures while
            // the instance was out were retried at the poll interval, never on the long backoff,
            // and the probe reconciled the plans once the apiserver answered.
            let kube_failures: Vec<&str> = logs
                .lines()
                .filter(|l| l.contains("reconcile failed") && l.contains("kind=kube"))
                .collect();
            assert!(!kube_failures.is_empty(), "the outage was seen:\n{logs}");
            assert!(
                kube_failures.iter().all(|l| l.contains("500ms")),
                "retried within the poll interval, not on the backoff:\n{}",
                kube_failures.join("\n")
            );
            assert!(
                logs.contains("the apiserver answers again; reconciling the plans"),
                "the probe saw the apiserver back:\n{logs}"
            );
            fleet.shutdown().await;
        },
    )
    .await;
}

/// The text of a log without its ANSI colour codes (`ESC [ ... m`).
fn without_ansi_colours(log: &str) -> String {
    let mut text = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip up to and including the final letter of the sequence.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            text.push(c);
        }
    }
    text
}

/// `pitstop_instance_out_of_rotation_seconds` of instance `id` in a metrics page.
fn out_of_rotation_seconds(metrics: &str, id: &str) -> f64 {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("pitstop_instance_out_of_rotation_seconds{") && l.contains(&format!("instance=\"{id}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no pitstop_instance_out_of_rotation_seconds for {id} in:\n{metrics}"))
}

/// What can be checked without a cluster, so that the parts of the real path that do not
/// need one run everywhere: the CRD the test installs, the kubeconfig it writes for the
/// ServiceAccount, and (with the project's venv) the chart's RBAC it applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_deregister_stalls_the_plan_until_the_policy_allows_it() {
    kube_support::run(
        "a_denied_deregister_stalls_the_plan_until_the_policy_allows_it",
        |h: Harness| async move {
            let mut fleet = Fleet::start(&h, &["controller"], |_| Vec::new()).await;
            fleet.sandbox.faults().set_denied("DeregisterTargets", true);
            let name = "denied";
            fleet.apply_plan(name).await;

            let stalled_with = |plan: &pitstop::api::MaintenancePlan, reason: &str| {
                plan.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == CONDITION_STALLED && c.status == "True" && c.reason == reason)
                })
            };
            let plan = fleet
                .wait_for_plan(name, "Stalled AWSAccessDenied", STEP_LIMIT, |p| {
                    stalled_with(p, "AWSAccessDenied")
                })
                .await;
            let status = plan.status.clone().expect("a status");
            let message = status.message.clone().unwrap_or_default();
            println!("status.message: {message}");
            let action = "elasticloadbalancing:DeregisterTargets";
            assert!(
                message.starts_with(&format!(
                    "AWS denied {action} in {} (AccessDenied (HTTP 403): User: ",
                    fleet.sandbox.region()
                )),
                "{status:#?}"
            );
            assert!(
                message.ends_with(&format!(
                    "allow {action} in the IAM policy of the identity pitstop runs as"
                )),
                "{message}"
            );
            assert!(
                status.instances.iter().all(|i| i.phase != InstancePhase::Failed),
                "{status:#?}"
            );
            let events = fleet
                .wait_for_events(name, "a Warning AWSAccessDenied", |events| {
                    events.iter().any(|e| e.reason.as_deref() == Some("AWSAccessDenied"))
                })
                .await;
            let denied: Vec<_> = events
                .iter()
                .filter(|e| e.reason.as_deref() == Some("AWSAccessDenied"))
                .collect();
            assert_eq!(
                denied.len(),
                1,
                "{:#?}",
                events.iter().map(describe_event).collect::<Vec<_>>()
            );
            assert_eq!(denied[0].type_.as_deref(), Some("Warning"));
            assert_eq!(denied[0].note.as_deref(), Some(message.as_str()));
            let ids = fleet.sandbox.instance_ids();
            for id in &ids {
                assert!(!fleet.is_out(id).await, "{id} never left the group");
            }

            // Retries wait for the backoff: the status writes of a failed round wake the
            // controller through its watch once, and a retry that changes nothing writes nothing.
            tokio::time::sleep(Duration::from_secs(5)).await;
            let tries = fleet
                .sandbox
                .call_log()
                .writes()
                .iter()
                .filter(|w| w.operation == "DeregisterTargets")
                .count();
            println!("DeregisterTargets tried {tries} times while denied");
            assert!(tries <= 3, "no retry loop: {tries} tries");

            // The policy is fixed; the plan is not touched. The next try (after the long
            // backoff's first minute) goes through and the condition goes away.
            fleet.sandbox.faults().set_denied("DeregisterTargets", false);
            fleet
                .wait_for_plan(name, "Stalled gone", Duration::from_secs(150), |p| {
                    !stalled_with(p, "AWSAccessDenied")
                })
                .await;
            let plan = fleet
                .wait_for_plan(name, "phase Succeeded", PLAN_LIMIT, |p| {
                    phase(p) == Some(PlanPhase::Succeeded)
                })
                .await;
            let status = plan.status.clone().expect("a status");
            // As kstatus, Flux and `kubectl wait --for=condition=Ready` read it: current.
            let generation = plan.metadata.generation;
            let condition = |type_: &str| {
                status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == type_)
                    .map(|c| (c.status.as_str(), c.observed_generation))
            };
            assert_eq!(condition(CONDITION_STALLED), Some(("False", generation)), "{status:#?}");
            assert_eq!(condition("Reconciling"), Some(("False", generation)), "{status:#?}");
            assert_eq!(condition("Ready"), Some(("True", generation)), "{status:#?}");
            let events = fleet.events_for(name).await;
            let denied = events
                .iter()
                .filter(|e| e.reason.as_deref() == Some("AWSAccessDenied"))
                .count();
            assert_eq!(denied, 1, "one Event for the cause, none per retry");
            assert!(
                events
                    .iter()
                    .filter(|e| e.reason.as_deref() == Some("AWSAccessDenied"))
                    .all(|e| e.series.is_none()),
                "not repeated as a series"
            );
            fleet.shutdown().await;
        },
    )
    .await;
}

#[tokio::test]
async fn the_objects_the_cluster_tests_apply_are_well_formed() {
    let crd = kube_support::crd_from_repo();
    assert_eq!(crd.name_any(), "maintenanceplans.pitstop.dev");
    let columns: Vec<String> = crd
        .spec
        .versions
        .iter()
        .flat_map(|v| v.additional_printer_columns.iter().flatten())
        .map(|c| c.name.clone())
        .collect();
    for column in ["Phase", "Progress"] {
        assert!(columns.iter().any(|c| c == column), "{columns:?}");
    }

    // The ServiceAccount's kubeconfig keeps the admin's server and TLS settings, swaps the
    // user for the token, and reads back through the same loader the controller uses.
    let admin = kube::config::Kubeconfig::from_yaml(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
         clusters:\n- name: c\n  cluster:\n    server: https://203.0.113.7:6443\n    certificate-authority-data: Zm9v\n    tls-server-name: kubernetes\n\
         users:\n- name: admin\n  user:\n    client-certificate-data: YmFy\n\
         contexts:\n- name: test\n  context:\n    cluster: c\n    user: admin\n",
    )
    .expect("a kubeconfig");
    let value = kube_support::service_account_kubeconfig(&admin, "ns-1", "pitstop", "t0ken");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, value.to_string()).expect("write");
    let parsed = kube::config::Kubeconfig::read_from(&path).expect("the written kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(parsed, &kube::config::KubeConfigOptions::default())
        .await
        .expect("the written kubeconfig is usable");
    assert_eq!(config.cluster_url.to_string(), "https://203.0.113.7:6443/");
    assert_eq!(config.default_namespace, "ns-1");
    assert_eq!(config.tls_server_name.as_deref(), Some("kubernetes"));
    assert_eq!(value["clusters"][0]["cluster"]["certificate-authority-data"], "Zm9v");
    let user = value["users"][0]["user"].clone();
    assert_eq!(
        user,
        serde_json::json!({ "token": "t0ken" }),
        "only the token, no admin credentials"
    );

    let python = kube_support::repo_root().join(".venv").join("bin").join("python");
    if !python.is_file() && std::env::var_os("PITSTOP_E2E_PYTHON").is_none() {
        eprintln!(
            "SKIPPED: the chart-rendering part of this check: {} not found (`make venv`)",
            python.display()
        );
        return;
    }
    let docs = kube_support::render_chart_rbac("ns-1").await;
    let kube_support::ChartRbac {
        account,
        roles,
        bindings,
        cluster_roles,
        cluster_bindings,
    } = kube_support::typed_chart_rbac("ns-1", kube_support::Install::Namespaced, docs);
    assert_eq!(account.name_any(), kube_support::RELEASE);
    let mut cluster_role_names: Vec<String> = cluster_roles.iter().map(|r| r.name_any()).collect();
    cluster_role_names.sort();
    assert_eq!(
        cluster_role_names,
        kube_support::TENANCY_CLUSTER_ROLES,
        "only the tenancy roles are cluster-wide"
    );
    assert!(
        cluster_bindings
            .iter()
            .all(|b| b.role_ref.name == "pitstop-policy-reader"),
        "the controller is bound cluster-wide only to read policies and namespaces"
    );
    let mut role_names: Vec<String> = roles.iter().map(|r| r.name_any()).collect();
    role_names.sort();
    assert_eq!(role_names, ["pitstop", "pitstop-leases"]);
    for binding in &bindings {
        let subjects = binding.subjects.clone().unwrap_or_default();
        assert!(
            subjects
                .iter()
                .all(|s| s.kind == "ServiceAccount" && s.name == "pitstop" && s.namespace.as_deref() == Some("ns-1")),
            "{subjects:?}"
        );
    }
    let leases = roles
        .iter()
        .find(|r| r.name_any() == "pitstop-leases")
        .expect("the lease Role");
    assert!(
        leases
            .rules
            .iter()
            .flatten()
            .any(|r| r.resources.iter().flatten().any(|x| x == "leases")),
        "the controller may take the leader Lease"
    );
}

/// Whether the plan was refused by policy: Failed, with the `NotAllowed` reason.
fn not_allowed(plan: &pitstop::api::MaintenancePlan) -> bool {
    plan.status.as_ref().is_some_and(pitstop::machine::is_refused)
}

/// Waits until plan `name` of `plans` is refused by policy.
async fn wait_not_allowed(
    plans: &kube::Api<pitstop::api::MaintenancePlan>,
    name: &str,
) -> pitstop::api::MaintenancePlan {
    let deadline = kube_support::Deadline::new(format!("plan {name}: NotAllowed"), STEP_LIMIT);
    loop {
        let plan = plans
            .get_opt(name)
            .await
            .unwrap_or_else(|err| panic!("cannot read plan {name}: {err}"));
        if let Some(plan) = plan.as_ref().filter(|p| not_allowed(p)) {
            return plan.clone();
        }
        deadline.tick(&format!("{:#?}", plan.and_then(|p| p.status))).await;
    }
}

async fn apply_json<K>(api: &kube::Api<K>, name: &str, object: serde_json::Value) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    api.patch(
        name,
        &kube::api::PatchParams::apply(kube_support::FIELD_MANAGER),
        &kube::api::Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|err| panic!("cannot apply {name}: {err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_lets_one_tenants_plan_run_and_refuses_the_others_without_an_aws_call() {
    kube_support::run_with(
        "a_policy_lets_one_tenants_plan_run_and_refuses_the_others_without_an_aws_call",
        kube_support::Install::ClusterWide,
        |h: Harness| async move {
            use k8s_openapi::api::core::v1::Namespace;
            use kube::api::{Api, Patch, PatchParams, PostParams};
            use pitstop::api::{MaintenancePlan, MaintenancePolicy};
            use serde_json::json;

            // Tenant A is the harness namespace, selected by a label; tenant B is another
            // namespace that no policy selects (the restricted default applies there).
            let team_a = h.namespace.clone();
            let namespaces: Api<Namespace> = Api::all(h.client.clone());
            let label = json!({ "metadata": { "labels": { "pitstop.dev/e2e-tenant": "a" } } });
            namespaces
                .patch(&team_a, &PatchParams::default(), &Patch::Merge(&label))
                .await
                .expect("label tenant A's namespace");
            let team_b = format!("{team_a}-b");
            namespaces
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({
                        "metadata": { "name": team_b, "labels": { kube_support::NAMESPACE_LABEL: "true" } }
                    }))
                    .expect("a Namespace"),
                )
                .await
                .expect("create tenant B's namespace");

            let mut fleet = Fleet::start(&h, &["controller"], |_| Vec::new()).await;
            let arn = fleet.sandbox.target_group_arn().to_owned();
            let ids = fleet.sandbox.instance_ids();
            // Same account and region, another group: what tenant A must not touch.
            let (prefix, _) = arn.split_once(":targetgroup/").expect("a target group ARN");
            let other_arn = format!("{prefix}:targetgroup/team-b-web/0123456789abcdef");

            let policy_name = format!("{team_a}-policy");
            let policies = h.policies();
            apply_json::<MaintenancePolicy>(
                &policies,
                &policy_name,
                json!({
                    "apiVersion": "pitstop.dev/v1alpha1",
                    "kind": "MaintenancePolicy",
                    "metadata": { "name": policy_name },
                    "spec": {
                        "namespaces": { "selector": { "matchLabels": { "pitstop.dev/e2e-tenant": "a" } } },
                        "targetGroups": [arn],
                        "allowGracefulReboot": true,
                    },
                }),
            )
            .await;

            // The refused plans first, while nothing else runs: any AWS call in the sandbox's
            // log before the allowed plan starts would be theirs.
            let plan = |name: &str, target: &str, extra: serde_json::Value| {
                let mut spec = json!({ "targetGroupArn": target, "instances": ids, "timeouts": { "healthySeconds": 60 }, "autoScaling": { "mode": "Ignore" } });
                if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
                    spec.extend(extra.clone());
                }
                json!({ "apiVersion": "pitstop.dev/v1alpha1", "kind": "MaintenancePlan", "metadata": { "name": name }, "spec": spec })
            };
            let shell = json!({ "verify": { "documentName": "AWS-RunShellScript", "parameters": { "commands": ["id"] } } });
            let plans_a: Api<MaintenancePlan> = Api::namespaced(h.client.clone(), &team_a);
            let plans_b: Api<MaintenancePlan> = Api::namespaced(h.client.clone(), &team_b);
            apply_json(&plans_a, "other-group", plan("other-group", &other_arn, json!({}))).await;
            apply_json(&plans_a, "free-form", plan("free-form", &arn, shell.clone())).await;
            apply_json(&plans_b, "free-form", plan("free-form", &arn, shell)).await;

            let other = wait_not_allowed(&plans_a, "other-group").await;
            let message = other.status.and_then(|s| s.message).unwrap_or_default();
            eprintln!("other-group: {message}");
            assert_eq!(
                message,
                format!("not allowed by MaintenancePolicy {policy_name} (target group {other_arn} matches none of its targetGroups)")
            );
            let free_form = wait_not_allowed(&plans_a, "free-form").await;
            let message = free_form.status.and_then(|s| s.message).unwrap_or_default();
            eprintln!("free-form in A: {message}");
            assert!(
                message.contains("verify document AWS-RunShellScript is not in its documents"),
                "{message}"
            );
            let default_refusal = wait_not_allowed(&plans_b, "free-form").await;
            let message = default_refusal.status.and_then(|s| s.message).unwrap_or_default();
            eprintln!("free-form in B: {message}");
            assert!(
                message.starts_with(&format!("not allowed in namespace {team_b}: no MaintenancePolicy selects it")),
                "{message}"
            );
            let warnings = fleet
                .wait_for_events("other-group", "a NotAllowed warning", |events| {
                    events
                        .iter()
                        .any(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some("NotAllowed"))
                })
                .await;
            eprintln!("{:#?}", warnings.iter().map(describe_event).collect::<Vec<_>>());
            let calls = fleet.sandbox.call_log().records();
            assert!(calls.is_empty(), "the refused plans made AWS calls: {calls:#?}");

            // Labelling tenant B's namespace brings it under the policy: the controller checks
            // its plan again at once (a namespace watch), and now the policy refuses it.
            namespaces
                .patch(&team_b, &PatchParams::default(), &Patch::Merge(&label))
                .await
                .expect("label tenant B's namespace");
            let deadline = kube_support::Deadline::new("tenant B's plan checked against the policy", STEP_LIMIT);
            loop {
                let plan = plans_b.get("free-form").await.expect("the plan");
                let message = plan.status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default();
                if not_allowed(&plan) && message.starts_with(&format!("not allowed by MaintenancePolicy {policy_name}")) {
                    eprintln!("free-form in B, labelled: {message}");
                    break;
                }
                deadline.tick(&message).await;
            }
            let calls = fleet.sandbox.call_log().records();
            assert!(calls.is_empty(), "the refused plans made AWS calls: {calls:#?}");

            // The allowed plan runs to the end.
            let before = fleet.boots();
            fleet.apply_plan("allowed").await;
            fleet
                .wait_for_plan("allowed", "phase Succeeded", PLAN_LIMIT, |p| {
                    phase(p) == Some(PlanPhase::Succeeded)
                })
                .await;
            assert_eq!(reboots(&before, &fleet.boots()), [1, 1, 1]);
            let calls = fleet.sandbox.call_log().records();
            eprintln!("AWS calls of the allowed plan: {}", calls.len());
            assert!(
                calls.iter().all(|c| !c.summary.contains("team-b-web")),
                "no call names the refused plan's target group"
            );
            // The refused ones are still refused, and never touched AWS.
            for (plans, name) in [(&plans_a, "other-group"), (&plans_a, "free-form"), (&plans_b, "free-form")] {
                let plan = plans.get(name).await.expect("the plan");
                assert!(not_allowed(&plan), "{name}: {:#?}", plan.status);
            }

            // A tenant with namespace edit rights: plans yes, policies no. The built-in `edit`
            // role gets the chart's plan rules by aggregation, which kube-controller-manager
            // does; a bare API server has none, so the aggregated role is bound as well.
            let rbac: Api<k8s_openapi::api::rbac::v1::RoleBinding> = Api::namespaced(h.client.clone(), &team_a);
            for role in ["edit", "pitstop-plans-edit"] {
                apply_json(
                    &rbac,
                    &format!("tenant-{role}"),
                    json!({
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "RoleBinding",
                        "metadata": { "name": format!("tenant-{role}"), "namespace": team_a },
                        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
                        "subjects": [{ "kind": "ServiceAccount", "name": "tenant", "namespace": team_a }],
                    }),
                )
                .await;
            }
            let tenant = h.client_as("tenant").await;
            let tenant_plans: Api<MaintenancePlan> = Api::namespaced(tenant.clone(), &team_a);
            let dry_run = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            let probe: MaintenancePlan =
                serde_json::from_value(plan("tenant-probe", &arn, json!({}))).expect("a plan");
            let deadline = kube_support::Deadline::new("the tenant's RoleBindings in force", STEP_LIMIT);
            loop {
                match tenant_plans.create(&dry_run, &probe).await {
                    Ok(_) => break,
                    Err(err) => deadline.tick(&err.to_string()).await,
                }
            }
            let tenant_policies: Api<MaintenancePolicy> = Api::all(tenant);
            let mine: MaintenancePolicy = serde_json::from_value(json!({
                "apiVersion": "pitstop.dev/v1alpha1",
                "kind": "MaintenancePolicy",
                "metadata": { "name": format!("{team_a}-tenant") },
                "spec": { "namespaces": { "names": [team_a] }, "targetGroups": ["*"], "allowFreeformCommands": true },
            }))
            .expect("a policy");
            let forbidden = |result: Result<MaintenancePolicy, kube::Error>, what: &str| match result {
                Err(kube::Error::Api(status)) if status.is_forbidden() => eprintln!("tenant {what}: forbidden"),
                other => panic!("a tenant must not {what}: {other:?}"),
            };
            forbidden(tenant_policies.create(&PostParams::default(), &mine).await, "create a policy");
            let widen = json!({ "spec": { "targetGroups": ["*"], "allowFreeformCommands": true } });
            forbidden(
                tenant_policies
                    .patch(&policy_name, &PatchParams::default(), &Patch::Merge(&widen))
                    .await,
                "widen the policy",
            );

            fleet.shutdown().await;
            let _ = policies.delete(&policy_name, &kube::api::DeleteParams::default()).await;
            for plan in plans_b.list(&Default::default()).await.map(|l| l.items).unwrap_or_default() {
                let name = plan.metadata.name.unwrap_or_default();
                let patch = json!({ "metadata": { "finalizers": null } });
                let _ = plans_b.patch_metadata(&name, &PatchParams::default(), &Patch::Merge(&patch)).await;
            }
            let _ = namespaces.delete(&team_b, &kube::api::DeleteParams::background()).await;
        },
    )
    .await;
}

/// A policy's tag conditions on the real apiserver, with the sandbox's EC2 and ELBv2 tags: a
/// plan whose instances lack the tag the policy asks for is refused with `NotAllowed` after
/// read-only calls only (the sandbox's log shows DescribeTags and DescribeInstances, no
/// write), and goes on to the end once the policy asks for a tag they carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_asking_for_tags_refuses_untagged_instances_after_reads_only() {
    kube_support::run_with(
        "a_policy_asking_for_tags_refuses_untagged_instances_after_reads_only",
        kube_support::Install::ClusterWide,
        |h: Harness| async move {
            use pitstop::api::MaintenancePolicy;
            use serde_json::json;

            let fleet = Fleet::start(&h, &["controller"], |_| Vec::new()).await;
            let arn = fleet.sandbox.target_group_arn().to_owned();
            let ids = fleet.sandbox.instance_ids();
            let policy_name = format!("{}-tags", h.namespace);
            let policies = h.policies();
            let policy = |instance_tags: serde_json::Value| {
                json!({
                    "apiVersion": "pitstop.dev/v1alpha1",
                    "kind": "MaintenancePolicy",
                    "metadata": { "name": policy_name },
                    "spec": {
                        "namespaces": { "names": [h.namespace] },
                        "targetGroups": [arn],
                        "targetGroupTags": { "pitstop.dev/fleet": "sandbox" },
                        "instanceTags": instance_tags,
                    },
                })
            };
            apply_json::<MaintenancePolicy>(
                &policies,
                &policy_name,
                policy(json!({ "pitstop.dev/managed": "true" })),
            )
            .await;
            fleet.apply_plan("tagged").await;

            let refused = wait_not_allowed(&fleet.plans, "tagged").await;
            let message = refused.status.and_then(|s| s.message).unwrap_or_default();
            eprintln!("untagged: {message}");
            let lacking: Vec<String> = ids
                .iter()
                .map(|id| format!("{id} lacks pitstop.dev/managed=true"))
                .collect();
            assert_eq!(
                message,
                format!(
                    "not allowed by MaintenancePolicy {policy_name} (instances must carry its instanceTags: {})",
                    lacking.join(", ")
                )
            );
            let calls = fleet.sandbox.call_log().records();
            let operations: BTreeSet<&str> = calls.iter().map(|c| c.operation.as_str()).collect();
            eprintln!("AWS calls of the refused plan: {} ({operations:?})", calls.len());
            assert_eq!(
                operations,
                BTreeSet::from(["DescribeInstances", "DescribeTags"]),
                "only the tags are read: {calls:#?}"
            );
            assert!(calls.iter().all(|c| !c.write), "nothing is changed: {calls:#?}");

            // The platform team asks for a tag the fleet carries: the policy watch wakes the
            // plan, which goes on and finishes.
            let before = fleet.boots();
            apply_json::<MaintenancePolicy>(
                &policies,
                &policy_name,
                policy(json!({ "pitstop.dev/fleet": "sandbox" })),
            )
            .await;
            let deadline = kube_support::Deadline::new("the tagged plan allowed and finished", PLAN_LIMIT);
            loop {
                let plan = fleet.plans.get("tagged").await.expect("the plan");
                if phase(&plan) == Some(PlanPhase::Succeeded) {
                    break;
                }
                deadline
                    .tick(&format!("{:?}", plan.status.map(|s| (s.phase, s.message))))
                    .await;
            }
            assert_eq!(reboots(&before, &fleet.boots()), [1, 1, 1]);
            fleet.shutdown().await;
            let _ = policies.delete(&policy_name, &DeleteParams::default()).await;
        },
    )
    .await;
}

/// The largest plan the schema accepts, with the largest status pitstop writes for it (see
/// `pitstop_e2e::largest_plan`), is stored by the real apiserver and its etcd; one instance
/// more is refused by the schema with a message naming the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_plan_and_its_status_are_stored_and_one_instance_more_is_refused() {
    kube_support::run_with(
        "the_largest_plan_and_its_status_are_stored_and_one_instance_more_is_refused",
        kube_support::Install::ClusterWide,
        |h: Harness| async move {
            use kube::api::{Patch, PatchParams, PostParams};
            use pitstop::api::{MAX_INSTANCES, MaintenancePlan};

            let plans = h.plans();
            let largest = pitstop_e2e::largest_plan::largest_plan().await;
            let status = largest.status.clone().expect("a status");
            let mut plan = MaintenancePlan::new("largest", largest.spec.clone());
            plan.metadata.namespace = Some(h.namespace.clone());
            plans
                .create(&PostParams::default(), &plan)
                .await
                .expect("the largest plan is accepted");
            let body = serde_json::json!({
                "apiVersion": "pitstop.dev/v1alpha1",
                "kind": "MaintenancePlan",
                "status": status,
            });
            plans
                .patch_status(
                    "largest",
                    &PatchParams::apply(kube_support::FIELD_MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .await
                .expect("its largest status is stored");
            let stored = plans.get("largest").await.expect("read back");
            let size = serde_json::to_vec(&stored).map(|json| json.len()).unwrap_or_default();
            eprintln!(
                "stored: {} instances, {size} bytes, managedFields included",
                stored.status.map(|s| s.instances.len()).unwrap_or_default()
            );
            let limit = pitstop_e2e::largest_plan::ETCD_REQUEST_LIMIT;
            assert!(
                size < limit / 2,
                "{size} bytes leaves too little room below etcd's {limit}"
            );

            let mut too_many = plan.clone();
            too_many.metadata.name = Some("too-many".to_owned());
            too_many.spec.instances.push(format!("i-{:017x}", MAX_INSTANCES + 1));
            match plans.create(&PostParams::default(), &too_many).await {
                Err(kube::Error::Api(status)) if status.code == 422 => {
                    eprintln!("one more: {}", status.message);
                    assert!(status.message.contains("spec.instances"), "{}", status.message);
                    assert!(status.message.contains("1000"), "{}", status.message);
                }
                other => panic!("a plan of {} instances must be refused: {other:?}", MAX_INSTANCES + 1),
            }
            let _ = plans.delete("largest", &DeleteParams::default()).await;
        },
    )
    .await;
}

/// The global stop with the real binary under the chart's RBAC (which lets it read only the
/// stop ConfigMap): a plan applied while the ConfigMap carries `pitstop.dev/paused` waits,
/// says why, and changes nothing on AWS; removing the annotation lets it run to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_stop_holds_plans_until_it_is_lifted() {
    kube_support::run_with(
        "the_global_stop_holds_plans_until_it_is_lifted",
        kube_support::Install::ClusterWide,
        |h: Harness| async move {
            use k8s_openapi::api::core::v1::ConfigMap;
            use kube::api::{Api, Patch, PatchParams};
            use serde_json::json;

            const STOP: &str = "pitstop-stop";
            let config_maps: Api<ConfigMap> = Api::namespaced(h.client.clone(), &h.namespace);
            apply_json(
                &config_maps,
                STOP,
                json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": { "name": STOP, "annotations": { "pitstop.dev/paused": "change freeze" } },
                }),
            )
            .await;
            let fleet = Fleet::start(&h, &["controller"], |_| {
                vec!["--stop-configmap".to_owned(), STOP.to_owned()]
            })
            .await;
            fleet.apply_plan("held").await;
            let deadline = kube_support::Deadline::new("the plan held by the global stop", STEP_LIMIT);
            loop {
                let plan = fleet.plans.get("held").await.expect("the plan");
                let status = plan.status.clone().unwrap_or_default();
                if phase(&plan) == Some(PlanPhase::Suspended) && status.held_by.is_some() {
                    let message = status.message.unwrap_or_default();
                    eprintln!("held: {message}");
                    assert!(message.contains("change freeze"), "{message}");
                    assert!(
                        message.contains(&format!("ConfigMap {}/{STOP}", h.namespace)),
                        "{message}"
                    );
                    break;
                }
                deadline.tick(&format!("{:?}", (status.phase, status.message))).await;
            }
            let calls = fleet.sandbox.call_log().records();
            assert!(
                calls.iter().all(|c| !c.write),
                "nothing changed on AWS while stopped: {calls:#?}"
            );

            let before = fleet.boots();
            let lift = json!({ "metadata": { "annotations": { "pitstop.dev/paused": null } } });
            config_maps
                .patch(STOP, &PatchParams::default(), &Patch::Merge(&lift))
                .await
                .expect("lift the stop");
            let deadline = kube_support::Deadline::new("the plan finished once the stop is lifted", PLAN_LIMIT);
            loop {
                let plan = fleet.plans.get("held").await.expect("the plan");
                if phase(&plan) == Some(PlanPhase::Succeeded) {
                    assert_eq!(plan.status.and_then(|s| s.held_by), None);
                    break;
                }
                deadline
                    .tick(&format!("{:?}", plan.status.map(|s| (s.phase, s.message))))
                    .await;
            }
            assert_eq!(reboots(&before, &fleet.boots()), [1, 1, 1]);
            fleet.shutdown().await;
        },
    )
    .await;
}

/// `approval: Manual` with the real binary on a real apiserver: the run waits (reason
/// `AwaitingApproval`, no AWS write) until `kubectl annotate` names its run ID, then runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_plan_waits_for_its_approval_then_runs() {
    kube_support::run_with(
        "a_manual_plan_waits_for_its_approval_then_runs",
        kube_support::Install::ClusterWide,
        |h: Harness| async move {
            use kube::api::{Patch, PatchParams};
            use serde_json::json;

            let mut fleet = Fleet::start(&h, &["controller"], |_| Vec::new()).await;
            let plan = json!({
                "apiVersion": "pitstop.dev/v1alpha1",
                "kind": "MaintenancePlan",
                "metadata": { "name": "approved" },
                "spec": {
                    "targetGroupArn": fleet.sandbox.target_group_arn(),
                    "instances": fleet.sandbox.instance_ids(),
                    "timeouts": { "healthySeconds": 60 },
                    "autoScaling": { "mode": "Ignore" },
                    "approval": "Manual",
                },
            });
            apply_json(&fleet.plans, "approved", plan).await;
            let deadline = kube_support::Deadline::new("the plan awaiting approval", STEP_LIMIT);
            let run_id = loop {
                let plan = fleet.plans.get("approved").await.expect("the plan");
                let status = plan.status.clone().unwrap_or_default();
                let awaiting = status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == "Progressing" && c.reason == pitstop::machine::AWAITING_APPROVAL);
                if let (true, Some(run_id)) = (awaiting, status.run_id.clone()) {
                    eprintln!("awaiting: {}", status.message.unwrap_or_default());
                    break run_id;
                }
                deadline.tick(&format!("{:?}", (status.phase, status.message))).await;
            };
            let calls = fleet.sandbox.call_log().records();
            assert!(
                calls.iter().all(|c| !c.write),
                "nothing changed on AWS before approval: {calls:#?}"
            );

            let before = fleet.boots();
            let approve = json!({ "metadata": { "annotations": { pitstop::machine::ANNOTATION_APPROVE: run_id } } });
            fleet
                .plans
                .patch("approved", &PatchParams::default(), &Patch::Merge(&approve))
                .await
                .expect("kubectl annotate");
            fleet
                .wait_for_plan("approved", "phase Succeeded", PLAN_LIMIT, |p| {
                    phase(p) == Some(PlanPhase::Succeeded)
                })
                .await;
            assert_eq!(reboots(&before, &fleet.boots()), [1, 1, 1]);
            fleet.shutdown().await;
        },
    )
    .await;
}

/// `gates.cloudWatchAlarms` through the real controller on a real apiserver: a plan whose alarm
/// is in ALARM waits (the instance says `waiting (AlarmFiring)`, one Warning Event, no AWS
/// write) and runs once the alarm is back to OK; the apiserver refuses more than 10 alarms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_waits_while_its_cloudwatch_alarm_is_in_alarm_then_runs() {
    kube_support::run_with(
        "a_plan_waits_while_its_cloudwatch_alarm_is_in_alarm_then_runs",
        kube_support::Install::ClusterWide,
        |h: Harness| async move {
            use serde_json::json;

            let mut fleet = Fleet::start(&h, &["controller"], |_| Vec::new()).await;
            fleet
                .sandbox
                .set_alarm("web-5xx", "ALARM", "Threshold Crossed")
                .expect("alarm");
            let plan = |name: &str, names: Vec<String>| {
                json!({
                    "apiVersion": "pitstop.dev/v1alpha1",
                    "kind": "MaintenancePlan",
                    "metadata": { "name": name },
                    "spec": {
                        "targetGroupArn": fleet.sandbox.target_group_arn(),
                        "instances": fleet.sandbox.instance_ids(),
                        "timeouts": { "healthySeconds": 60 },
                        "autoScaling": { "mode": "Ignore" },
                        "gates": { "cloudWatchAlarms": { "names": names, "abortInFlight": true } },
                    },
                })
            };
            let too_many: Vec<String> = (0..11).map(|i| format!("alarm-{i}")).collect();
            let refused = fleet
                .plans
                .create(
                    &kube::api::PostParams::default(),
                    &serde_json::from_value(plan("too-many", too_many)).expect("plan"),
                )
                .await
                .expect_err("11 alarms refused by the schema");
            eprintln!("11 alarms: {refused}");
            assert!(refused.to_string().contains("names"), "{refused}");

            apply_json(&fleet.plans, "alarmed", plan("alarmed", vec!["web-5xx".to_owned()])).await;
            let deadline = kube_support::Deadline::new("the plan held by its alarm", STEP_LIMIT);
            loop {
                let plan = fleet.plans.get("alarmed").await.expect("the plan");
                let status = plan.status.clone().unwrap_or_default();
                let held = status
                    .instances
                    .first()
                    .and_then(|i| i.message.clone())
                    .unwrap_or_default();
                if held.starts_with("waiting (AlarmFiring)") {
                    eprintln!("held: {held}");
                    assert!(held.contains("alarm web-5xx in ALARM (Threshold Crossed)"), "{held}");
                    break;
                }
                deadline.tick(&format!("{:?}", (status.phase, held))).await;
            }
            fleet
                .wait_for_events("alarmed", "an AlarmFiring warning", |events| {
                    events
                        .iter()
                        .any(|e| e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some("AlarmFiring"))
                })
                .await;
            let calls = fleet.sandbox.call_log().records();
            assert!(
                calls.iter().all(|c| !c.write),
                "nothing changed on AWS while the alarm fired: {calls:#?}"
            );
            assert!(calls.iter().any(|c| c.operation == "DescribeAlarms"), "{calls:#?}");

            let before = fleet.boots();
            fleet.sandbox.set_alarm("web-5xx", "OK", "").expect("alarm clears");
            fleet
                .wait_for_plan("alarmed", "phase Succeeded", PLAN_LIMIT, |p| {
                    phase(p) == Some(PlanPhase::Succeeded)
                })
                .await;
            assert_eq!(reboots(&before, &fleet.boots()), [1, 1, 1]);
            fleet.shutdown().await;
        },
    )
    .await;
}

/// `spec.notify` through the real controller, under the chart's namespaced RBAC: the webhook URL
/// comes from a Secret in the plan's namespace, and a receiver on 127.0.0.1 gets the run's
/// CloudEvents (started, each instance maintained, finished).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_in_the_plans_secret_gets_the_runs_events() {
    kube_support::run_with(
        "the_webhook_in_the_plans_secret_gets_the_runs_events",
        kube_support::Install::Namespaced,
        |h: Harness| async move {
            use k8s_openapi::api::core::v1::Secret;
            use kube::api::Api;
            use serde_json::json;

            let received: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> = std::sync::Arc::default();
            let inbox = received.clone();
            let app = axum::Router::new().route(
                "/hook",
                axum::routing::post(move |body: axum::Json<serde_json::Value>| async move {
                    inbox.lock().expect("inbox").push(body.0);
                    axum::http::StatusCode::NO_CONTENT
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let url = format!("http://{}/hook", listener.local_addr().expect("address"));
            let receiver = tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });

            let secrets: Api<Secret> = Api::namespaced(h.client.clone(), &h.namespace);
            apply_json(
                &secrets,
                "webhook",
                json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "webhook" }, "stringData": { "url": url } }),
            )
            .await;
            let mut fleet = Fleet::start(&h, &["controller"], |_| Vec::new()).await;
            let plan = json!({
                "apiVersion": "pitstop.dev/v1alpha1",
                "kind": "MaintenancePlan",
                "metadata": { "name": "notified" },
                "spec": {
                    "targetGroupArn": fleet.sandbox.target_group_arn(),
                    "instances": fleet.sandbox.instance_ids(),
                    "timeouts": { "healthySeconds": 60 },
                    "autoScaling": { "mode": "Ignore" },
                    "notify": { "secretRef": { "name": "webhook" } },
                },
            });
            apply_json(&fleet.plans, "notified", plan).await;
            fleet
                .wait_for_plan("notified", "phase Succeeded", PLAN_LIMIT, |p| {
                    phase(p) == Some(PlanPhase::Succeeded)
                })
                .await;
            let deadline = kube_support::Deadline::new("the run.finished event", STEP_LIMIT);
            let events = loop {
                let events = received.lock().expect("inbox").clone();
                if events.iter().any(|e| e["type"] == "dev.pitstop.run.finished") {
                    break events;
                }
                deadline.tick(&format!("{events:#?}")).await;
            };
            let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
            eprintln!("received: {types:?}");
            assert_eq!(
                types,
                [
                    "dev.pitstop.run.started",
                    "dev.pitstop.instance.maintained",
                    "dev.pitstop.instance.maintained",
                    "dev.pitstop.instance.maintained",
                    "dev.pitstop.run.finished"
                ]
            );
            let ids: std::collections::BTreeSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
            assert_eq!(ids.len(), events.len(), "each event its own id");
            assert!(
                events
                    .iter()
                    .all(|e| e["specversion"] == "1.0" && e["source"].as_str().is_some_and(|s| s.contains("notified"))),
                "{events:#?}"
            );
            receiver.abort();
            fleet.shutdown().await;
        },
    )
    .await;
}

/// The target group fields on the real apiserver: exactly one of `targetGroupArn` and
/// `targetGroupArns` (CEL), at most 10 groups (schema), and neither can be changed nor
/// swapped for the other once the plan exists (CEL transition rules), while a plan naming
/// one group the old way stays valid and editable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_takes_exactly_one_of_the_target_group_fields_and_keeps_them_immutable() {
    kube_support::run("target-group-fields", |harness| async move {
        let plans = harness.plans();
        let web = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";
        let tls = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-tls/fedcba9876543210";
        let plan = |name: &str, fields: serde_json::Value| {
            let mut spec = serde_json::json!({ "instances": ["i-0123456789abcdef0"], "suspend": true });
            if let (Some(spec), Some(fields)) = (spec.as_object_mut(), fields.as_object()) {
                spec.extend(fields.clone());
            }
            serde_json::json!({
                "apiVersion": "pitstop.dev/v1alpha1",
                "kind": "MaintenancePlan",
                "metadata": { "name": name, "namespace": harness.namespace },
                "spec": spec,
            })
        };
        let apply = |name: &str, object: serde_json::Value| {
            let plans = plans.clone();
            let name = name.to_owned();
            async move {
                plans
                    .patch(
                        &name,
                        &kube::api::PatchParams::apply(kube_support::FIELD_MANAGER).force(),
                        &kube::api::Patch::Apply(&object),
                    )
                    .await
                    .map_err(|err| err.to_string())
            }
        };
        let eleven: Vec<String> = (0..11).map(|i| format!("{}{i:x}", &web[..web.len() - 1])).collect();
        for (what, fields, expected) in [
            (
                "both fields",
                serde_json::json!({ "targetGroupArn": web, "targetGroupArns": [tls] }),
                "set exactly one of targetGroupArn and targetGroupArns",
            ),
            (
                "neither field",
                serde_json::json!({}),
                "set exactly one of targetGroupArn and targetGroupArns",
            ),
            (
                "11 target groups",
                serde_json::json!({ "targetGroupArns": eleven }),
                "must have at most 10 items",
            ),
        ] {
            let refused = apply("refused", plan("refused", fields)).await;
            let message = refused.expect_err(what);
            println!("{what}: {message}");
            assert!(message.contains(expected), "{what}: {message}");
        }

        // Several groups: accepted; the list cannot change, nor become the single field.
        apply(
            "several",
            plan("several", serde_json::json!({ "targetGroupArns": [web, tls] })),
        )
        .await
        .expect("a plan of two target groups");
        let changed = apply(
            "several",
            plan("several", serde_json::json!({ "targetGroupArns": [web] })),
        )
        .await
        .expect_err("the list is immutable");
        println!("changed list: {changed}");
        assert!(changed.contains("targetGroupArns is immutable"), "{changed}");
        let swapped = apply("several", plan("several", serde_json::json!({ "targetGroupArn": web })))
            .await
            .expect_err("cannot swap for the single field");
        println!("swapped: {swapped}");
        assert!(swapped.contains("targetGroupArns is immutable"), "{swapped}");

        // One group the old way: still valid, still editable elsewhere, not swappable.
        apply("single", plan("single", serde_json::json!({ "targetGroupArn": web })))
            .await
            .expect("a plan of one target group, as before");
        let mut edited = plan("single", serde_json::json!({ "targetGroupArn": web }));
        edited["spec"]["maxFailures"] = serde_json::json!(1);
        apply("single", edited).await.expect("other fields stay editable");
        let swapped = apply(
            "single",
            plan("single", serde_json::json!({ "targetGroupArns": [web] })),
        )
        .await
        .expect_err("cannot swap for the list");
        println!("swapped single: {swapped}");
        assert!(swapped.contains("targetGroupArn is immutable"), "{swapped}");
    })
    .await;
}

/// The fleet fields on the real apiserver: exactly one of `instances` and `selector` (CEL),
/// a selector that selects exactly one way, by group membership or by tags (CEL), while a plan listing its instances as before
/// stays valid, and a plan can move from a list to a selector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_takes_exactly_one_of_instances_and_selector() {
    kube_support::run("fleet-fields", |harness| async move {
        let plans = harness.plans();
        let web = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";
        let plan = |name: &str, fields: serde_json::Value| {
            let mut spec = serde_json::json!({ "targetGroupArn": web, "suspend": true });
            if let (Some(spec), Some(fields)) = (spec.as_object_mut(), fields.as_object()) {
                spec.extend(fields.clone());
            }
            serde_json::json!({
                "apiVersion": "pitstop.dev/v1alpha1",
                "kind": "MaintenancePlan",
                "metadata": { "name": name, "namespace": harness.namespace },
                "spec": spec,
            })
        };
        let apply = |name: &str, object: serde_json::Value| {
            let plans = plans.clone();
            let name = name.to_owned();
            async move {
                plans
                    .patch(
                        &name,
                        &kube::api::PatchParams::apply(kube_support::FIELD_MANAGER).force(),
                        &kube::api::Patch::Apply(&object),
                    )
                    .await
                    .map_err(|err| err.to_string())
            }
        };
        for (what, fields, expected) in [
            (
                "both instances and selector",
                serde_json::json!({
                    "instances": ["i-0123456789abcdef0"],
                    "selector": { "targetGroupMembers": true }
                }),
                "set exactly one of instances and selector",
            ),
            (
                "neither instances nor selector",
                serde_json::json!({}),
                "set exactly one of instances and selector",
            ),
            (
                "a selector that selects nothing",
                serde_json::json!({ "selector": {} }),
                "the selector must select one way",
            ),
            (
                "a selector that selects two ways",
                serde_json::json!({ "selector": { "targetGroupMembers": true, "tags": { "app": "web" } } }),
                "the selector must select one way",
            ),
            (
                "a selector by tags and by Auto Scaling group",
                serde_json::json!({ "selector": { "tags": { "app": "web" }, "autoScalingGroupName": "web-asg" } }),
                "the selector must select one way",
            ),
            (
                "an empty Auto Scaling group name",
                serde_json::json!({ "selector": { "autoScalingGroupName": "" } }),
                "autoScalingGroupName",
            ),
        ] {
            let refused = apply("refused", plan("refused", fields)).await;
            let message = refused.expect_err(what);
            println!("{what}: {message}");
            assert!(message.contains(expected), "{what}: {message}");
        }
        apply(
            "selected",
            plan(
                "selected",
                serde_json::json!({ "selector": { "targetGroupMembers": true } }),
            ),
        )
        .await
        .expect("a plan with a selector");
        apply(
            "listed",
            plan("listed", serde_json::json!({ "instances": ["i-0123456789abcdef0"] })),
        )
        .await
        .expect("a plan listing its instances, as before");
        apply(
            "listed",
            plan(
                "listed",
                serde_json::json!({ "selector": { "targetGroupMembers": true } }),
            ),
        )
        .await
        .expect("a list can become a selector");
        apply(
            "tagged",
            plan(
                "tagged",
                serde_json::json!({ "selector": { "tags": { "app": "web", "env": "prod" } } }),
            ),
        )
        .await
        .expect("a plan with a tag selector");
        apply(
            "grouped",
            plan(
                "grouped",
                serde_json::json!({ "selector": { "autoScalingGroupName": "web-asg" } }),
            ),
        )
        .await
        .expect("a plan with an Auto Scaling group selector");
    })
    .await;
}

/// A plan with a selector through the real controller and apiserver: the selection is
/// written to the status (and kept by the CRD's schema), an instance terminated while the
/// first one is out is Skipped (InstanceGone) with an Event, and the plan succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selected_plan_skips_an_instance_terminated_mid_run() {
    kube_support::run(
        "a_selected_plan_skips_an_instance_terminated_mid_run",
        |h: Harness| async move {
            let mut fleet = Fleet::start(&h, &["controller"], |_| Vec::new()).await;
            let ids = fleet.sandbox.instance_ids();
            // By ID: the terminated instance leaves `instance_ids()`.
            let before = fleet.sandbox.boot_counts();
            let name = "selected";
            let plan = serde_json::json!({
                "apiVersion": "pitstop.dev/v1alpha1",
                "kind": "MaintenancePlan",
                "metadata": { "name": name },
                "spec": {
                    "targetGroupArn": fleet.sandbox.target_group_arn(),
                    "selector": { "targetGroupMembers": true },
                    "timeouts": { "healthySeconds": 60 },
                    "autoScaling": { "mode": "Ignore" },
                },
            });
            fleet
                .plans
                .patch(
                    name,
                    &kube::api::PatchParams::apply(kube_support::FIELD_MANAGER),
                    &kube::api::Patch::Apply(&plan),
                )
                .await
                .expect("a plan with a selector");
            let out = fleet
                .wait_for_plan(name, "the first instance out", PLAN_LIMIT, |p| {
                    p.status
                        .as_ref()
                        .is_some_and(|s| s.instances.first().is_some_and(|i| i.out_of_rotation))
                })
                .await;
            let selection = out
                .status
                .as_ref()
                .and_then(|s| s.selection.clone())
                .expect("the selection is in the status");
            assert_eq!(selection.instances, ids);
            assert!(selection.resolved_at.is_some());
            fleet.sandbox.terminate_instance(&ids[2]).await.expect("terminate");

            let plan = fleet
                .wait_for_plan(name, "phase Succeeded", PLAN_LIMIT, |p| {
                    phase(p) == Some(PlanPhase::Succeeded)
                })
                .await;
            let status = plan.status.clone().expect("a status");
            println!("status.message: {}", status.message.clone().unwrap_or_default());
            let gone = status
                .instances
                .iter()
                .find(|i| i.instance_id == ids[2])
                .expect("still listed");
            assert_eq!(gone.phase, InstancePhase::Skipped, "{status:#?}");
            assert_eq!(gone.failure_reason.as_deref(), Some("InstanceGone"));
            assert_eq!(status.selection.map(|s| s.instances), Some(ids.clone()));
            let after = fleet.sandbox.boot_counts();
            let rebooted: Vec<u64> = ids.iter().map(|id| after[id] - before[id]).collect();
            assert_eq!(rebooted, [1, 1, 0], "the gone instance untouched");
            let events = fleet
                .wait_for_events(name, "the InstanceGone Event", |events| {
                    events.iter().any(|e| e.reason.as_deref() == Some("InstanceGone"))
                })
                .await;
            let gone_event = events
                .iter()
                .find(|e| e.reason.as_deref() == Some("InstanceGone"))
                .expect("found");
            assert_eq!(gone_event.type_.as_deref(), Some("Normal"));
            assert_eq!(gone_event.action.as_deref(), Some(ids[2].as_str()));
            fleet.shutdown().await;
        },
    )
    .await;
}

/// The controller's status writes are conditional on the version of the plan the round
/// decided from (`metadata.resourceVersion` in the apply): on a real apiserver, a round that
/// decided from an outdated plan (a watch lagging behind, as `make bench-scale` saw under
/// load) is refused with 409 Conflict and cannot write an older status over a newer one,
/// while a round that decided from the controller's own last write goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_decided_from_an_outdated_plan_is_refused() {
    use pitstop::api::MaintenancePlanStatus;
    use pitstop::engine::StatusStore;
    use pitstop::k8s::status_cache::StatusCache;
    use pitstop::k8s::status_store::KubeStatusStore;

    kube_support::run("conditional-status", |harness| async move {
        let plans = harness.plans();
        let object = serde_json::json!({
            "apiVersion": "pitstop.dev/v1alpha1",
            "kind": "MaintenancePlan",
            "metadata": { "name": "conditional", "namespace": harness.namespace },
            "spec": {
                "targetGroupArn": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef",
                "instances": ["i-0123456789abcdef0"],
                "suspend": true,
            },
        });
        let created = plans
            .patch(
                "conditional",
                &kube::api::PatchParams::apply(kube_support::FIELD_MANAGER).force(),
                &kube::api::Patch::Apply(&object),
            )
            .await
            .expect("the plan is created");
        let uid = created.metadata.uid.clone().expect("a uid");
        let read = created.metadata.resource_version.clone();
        let status = |phase| MaintenancePlanStatus {
            phase,
            ..MaintenancePlanStatus::default()
        };

        // A round of the plan read at `read`, deciding from the status at `version`.
        let store = |version: Option<&str>, cache| {
            KubeStatusStore::new(plans.clone(), "conditional", &uid, read.as_deref(), version, cache)
        };
        // A round decides from the plan as created and writes.
        let cache = StatusCache::default();
        let recorded = cache.freshest(&uid, read.as_deref(), None);
        let mut round = store(recorded.version.as_deref(), &cache);
        round.save(&status(PlanPhase::Running)).await.expect("the first write");

        // Another round decides from the same, now outdated, plan without knowing of that write.
        let unaware = StatusCache::default();
        let mut stale = store(read.as_deref(), &unaware);
        let refused = stale
            .save(&status(PlanPhase::Pending))
            .await
            .expect_err("a write decided from an outdated plan");
        println!("the outdated write: {refused}");
        assert!(
            matches!(&refused, kube::Error::Api(status) if status.code == 409),
            "{refused:?}"
        );
        let stored = plans.get_status("conditional").await.expect("the plan");
        assert_eq!(stored.status.map(|s| s.phase), Some(PlanPhase::Running), "the newer status stays");

        // A round served from the cache (the watch still at the created plan) writes on top.
        let recorded = cache.freshest(&uid, read.as_deref(), None);
        assert_eq!(recorded.status.as_ref().map(|s| s.phase), Some(PlanPhase::Running));
        let mut next = store(recorded.version.as_deref(), &cache);
        next.save(&status(PlanPhase::Succeeded)).await.expect("a write on our own last one");
        let stored = plans.get_status("conditional").await.expect("the plan");
        assert_eq!(stored.status.map(|s| s.phase), Some(PlanPhase::Succeeded));
    })
    .await;
}
