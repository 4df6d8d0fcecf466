//! The global stop against the mock apiserver (tower-test) and the in-memory AWS: while the
//! stop ConfigMap carries `pitstop.dev/paused`, a plan starts no instance (no AWS write), its
//! status says why and who to ask; an instance already out is finished and put back first;
//! removing the annotation lets the plan go on to the end.

mod reconcile_support;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use pitstop::api::{InstancePhase, MaintenancePlanStatus, PlanPhase};
use pitstop::aws::fake::FakeAws;
use pitstop::k8s::Context;
use pitstop::k8s::global_stop::{ANNOTATION_PAUSED, GlobalStop};
use reconcile_support::*;
use serde_json::json;

const STOP_NAMESPACE: &str = "pitstop-system";
const STOP_NAME: &str = "pitstop-stop";

fn context_with_stop(server_client: kube::Client, fake: &FakeAws) -> (Arc<Context>, Writer<ConfigMap>) {
    let (store, writer) = reflector::store();
    let clock_source = fake.clone();
    let ctx = Context::with_reporter(server_client, Arc::new(fake.clone()), POLL, "pitstop-test".into())
        .with_clock(Arc::new(move || clock_source.now()))
        .with_global_stop(GlobalStop::new(store, STOP_NAMESPACE, STOP_NAME));
    (Arc::new(ctx), writer)
}

/// The stop ConfigMap, with `paused` as its annotation's value (None: no annotation).
fn set_stop(writer: &mut Writer<ConfigMap>, paused: Option<&str>) {
    let mut config_map = ConfigMap::default();
    config_map.metadata.name = Some(STOP_NAME.to_owned());
    config_map.metadata.namespace = Some(STOP_NAMESPACE.to_owned());
    config_map.metadata.annotations =
        paused.map(|why| BTreeMap::from([(ANNOTATION_PAUSED.to_owned(), why.to_owned())]));
    writer.apply_watcher_event(&watcher::Event::Apply(config_map));
}

fn held(status: &MaintenancePlanStatus) -> bool {
    status.phase == PlanPhase::Suspended
        && status.held_by.is_some()
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == "Progressing" && c.status == "False" && c.reason == "GlobalStop")
}

#[tokio::test]
async fn a_stopped_controller_starts_nothing_says_why_and_goes_on_once_the_stop_is_lifted() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let fake = fake_aws();
        let (mut server, client) = ApiServer::start();
        let (ctx, mut stop) = context_with_stop(client, &fake);
        set_stop(&mut stop, Some("incident 4711"));
        server.insert(with_finalizer(plan_json("web", &IDS, json!({}))));
        let run = drive(&mut server, &ctx, &fake, "web", |s| {
            s.status("web").is_some_and(|s| held(&s))
        })
        .await;
        let status = server.status("web").expect("a status");
        assert!(held(&status), "{status:#?}");
        assert_eq!(
            status.message.as_deref(),
            Some(
                "held by the global stop (ConfigMap pitstop-system/pitstop-stop: incident 4711); remove its \
                 pitstop.dev/paused annotation to go on (after 0/3 instances)"
            )
        );
        for kstatus in ["Ready", "Reconciling", "Stalled"] {
            assert!(
                status
                    .conditions
                    .iter()
                    .any(|c| c.type_ == kstatus && c.status == "False"),
                "{kstatus}: {:#?}",
                status.conditions
            );
        }
        assert!(
            run.events().contains(&event("Normal", "PlanSuspended", "Plan")),
            "{:?}",
            run.events()
        );
        assert_eq!(aws_writes(&fake), [], "nothing is taken out while stopped");
        assert!(server.take_lease_calls().is_empty(), "nor a target group lease taken");

        set_stop(&mut stop, None);
        let run = drive(&mut server, &ctx, &fake, "web", |_| false).await;
        let last = server.status("web").expect("a status");
        assert_eq!(last.phase, PlanPhase::Succeeded, "{last:#?}");
        assert_eq!(last.held_by, None);
        assert!(
            run.events().contains(&event("Normal", "PlanStarted", "Plan")),
            "{:?}",
            run.events()
        );
        assert_eq!(aws_writes(&fake).len(), 9, "three instances, three writes each");
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn an_instance_out_when_the_stop_is_set_is_finished_and_put_back_before_the_plan_waits() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let fake = fake_aws();
        let (mut server, client) = ApiServer::start();
        let (ctx, mut stop) = context_with_stop(client, &fake);
        set_stop(&mut stop, Some("false"));
        server.insert(with_finalizer(plan_json("web", &IDS, json!({}))));
        server.reconcile(&ctx, "web").await.expect("first instance taken out");
        assert_eq!(
            aws_writes(&fake),
            [("DeregisterTargets", IDS[0].to_owned())],
            "`false` stops nothing"
        );
        server.take_calls();

        set_stop(&mut stop, Some(""));
        let run = drive(&mut server, &ctx, &fake, "web", |s| {
            s.status("web").is_some_and(|s| held(&s))
        })
        .await;
        use InstancePhase::*;
        assert_eq!(
            phases_of(&run.statuses(), IDS[0]),
            [Draining, Rebooting, Verifying, Registered],
            "the instance out is finished and put back"
        );
        let status = server.status("web").expect("a status");
        assert!(held(&status), "then the plan waits: {status:#?}");
        assert_eq!(status.progress.as_deref(), Some("1/3"));
        let writes = aws_writes(&fake);
        assert!(
            writes.iter().all(|(_, id)| id == IDS[0]),
            "no other instance is touched: {writes:?}"
        );
        assert_eq!(fake.state(ARN, IDS[0]), pitstop::aws::TargetState::Healthy);
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}
