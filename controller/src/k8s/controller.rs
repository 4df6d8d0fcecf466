//! The long-running controller: a kube-runtime `Controller` over MaintenancePlans, behind
//! leader election, with the metrics and health server beside it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use kube::core::DeserializeGuard;
use kube::runtime::{Controller, WatchStreamExt, controller, reflector, watcher};
use tokio_util::sync::CancellationToken;

use crate::api::{MaintenancePlan, MaintenancePolicy};
use crate::aws::AwsProvider;
use crate::leader::{LeaderElector, LeaseConfig};
use crate::telemetry::{HealthState, Metrics, serve};

use super::args::ControllerArgs;
use super::change_ticks::coalesced_ticks;
use super::context::Context;
use super::global_stop::watch_global_stop;
use super::policy::error_policy;
use super::reconcile::reconcile;
use super::recovery::{PROBE_EVERY, trigger_backoff};
use super::target_group_lock::{LEASE_LABEL, plan_to_wake};
use super::tenancy::Tenancy;

/// How often the controller loop proves to `/healthz` that it is alive.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// How long without a heartbeat before `/healthz` fails.
const STALE_AFTER: Duration = Duration::from_secs(60);

/// Runs the controller until SIGTERM or Ctrl-C. Plans are read through
/// [`DeserializeGuard`], so one malformed object cannot stop the watch for the others.
///
/// With leader election, the replica waits (ready, as a standby) until it holds the Lease.
/// On SIGTERM it stops taking new reconciles, lets those in flight finish (so no round is
/// left half-recorded), then gives the Lease up so another replica takes over at once. A
/// replica that loses the Lease stops reconciling at once and exits with an error, so that
/// its restart enters the election afresh.
pub async fn run(args: ControllerArgs, aws: Arc<dyn AwsProvider>) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in a pod, or via KUBECONFIG)")?;
    let plans: Api<DeserializeGuard<MaintenancePlan>> = match &args.namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    // A missing CRD or RBAC rule would otherwise only show as watcher errors in a loop.
    plans.list_metadata(&ListParams::default().limit(1)).await.with_context(|| {
        format!(
            "listing MaintenancePlans in {} (is the CRD installed — `pitstop crd | kubectl apply -f -` — and may this account list them?)",
            args.namespace.as_deref().map_or_else(|| "all namespaces".to_owned(), |ns| format!("namespace {ns}"))
        )
    })?;

    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let metrics = Metrics::new();
    let health = HealthState::new(STALE_AFTER);
    let server = tokio::spawn(serve(args.http_addr, health.clone(), metrics.clone(), shutdown.clone()));
    health.set_ready(true);

    let election = if args.leader_election {
        let config = LeaseConfig::new(
            args.lease_name.clone(),
            args.lease_namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_owned()),
            args.identity
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        );
        tracing::info!(lease = %config.name, namespace = %config.namespace, identity = %config.holder_identity, "waiting for the leader lease");
        let stop = CancellationToken::new();
        let handle = LeaderElector::new(client.clone(), config)
            .context("leader election settings")?
            .spawn(stop.clone());
        let mut leadership = handle.leadership();
        health.pause_heartbeat();
        let acquired = tokio::select! {
            acquired = leadership.acquired() => acquired,
            () = shutdown.cancelled() => false,
        };
        if !acquired {
            stop.cancel();
            let _ = handle.join().await;
            shutdown.cancel();
            let _ = server.await;
            return Ok(());
        }
        tracing::info!("leading");
        Some((handle, stop, leadership))
    } else {
        None
    };
    metrics.set_leader(true);

    let (tenancy, policy_changes) = watch_tenancy(&client, args.default_policy, shutdown.clone()).await?;
    // The target group Leases (and the stop ConfigMap) live beside the leader Lease, in the
    // controller's namespace.
    let lock_namespace = args
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let mut context = Context::new(client.clone(), aws, args.poll_interval)
        .with_lock_namespace(lock_namespace.clone())
        .with_metrics(metrics.clone())
        .with_tenancy(tenancy)
        .with_gates(crate::gates::GateReaders::http(args.prometheus_url.clone()));
    let mut stop_changes = None;
    if let Some(name) = &args.stop_configmap {
        let (stop, changes) = watch_global_stop(&client, &lock_namespace, name, shutdown.clone()).await?;
        context = context.with_global_stop(stop);
        stop_changes = Some(changes);
    }
    let ctx = Arc::new(context);
    // The controller's cache holds every plan it watches; it keeps them slim (see `slim`).
    let (plan_store, plan_writer) = reflector::store();
    let plan_events = watcher(plans, watcher::Config::default())
        .modify(slim)
        .reflect(plan_writer)
        .applied_objects();
    let mut controller = Controller::for_stream(plan_events, plan_store)
        .with_config(controller::Config::default().concurrency(args.concurrency))
        .trigger_backoff(trigger_backoff(args.poll_interval))
        .reconcile_all_on(policy_changes)
        .graceful_shutdown_on(shutdown.clone().cancelled_owned());
    if let Some(changes) = stop_changes {
        controller = controller.reconcile_all_on(changes);
    }
    if let Some((_, _, leadership)) = &election {
        let mut leadership = leadership.clone();
        controller = controller.graceful_shutdown_on(async move { leadership.lost().await });
    }
    // A plan waiting for a target group is woken when the group is given back, not at its
    // next poll: otherwise the plan that gave it back would ask again first.
    let leases: Api<Lease> = Api::namespaced(client.clone(), &lock_namespace);
    let stale_after = ctx.locks.waiter_stale_after();
    controller = controller.watches(leases, watcher::Config::default().labels(LEASE_LABEL), move |lease| {
        plan_to_wake(&lease, Timestamp::now(), stale_after)
    });
    // After an apiserver outage, every plan is reconciled as soon as it answers again.
    let probe_client = client.clone();
    controller = controller.reconcile_all_on(ctx.recovery.clone().recoveries(PROBE_EVERY, move || {
        let client = probe_client.clone();
        async move { client.apiserver_version().await.is_ok() }
    }));
    tracing::info!(
        namespace = args.namespace.as_deref().unwrap_or("*"),
        poll_interval = %humantime::format_duration(args.poll_interval),
        "watching MaintenancePlans"
    );
    let mut results = controller.run(reconcile, error_policy, ctx).boxed();
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    health.heartbeat();
    loop {
        tokio::select! {
            result = results.next() => match result {
                Some(Ok((plan, action))) => tracing::debug!(%plan, ?action, "reconciled"),
                // Already logged, with its category, by the error policy.
                Some(Err(controller::Error::ReconcilerFailed(..))) => {}
                Some(Err(controller::Error::ObjectNotFound(plan))) => tracing::debug!(%plan, "plan gone before its turn"),
                Some(Err(error)) => tracing::warn!(%error, "controller"),
                None => break,
            },
            _ = heartbeat.tick() => health.heartbeat(),
        }
    }
    metrics.set_leader(false);
    health.pause_heartbeat();

    // The controller stream has ended only after the reconciles in flight finished.
    let lost_lease = election.as_ref().is_some_and(|(_, _, l)| !l.is_leader()) && !shutdown.is_cancelled();
    if let Some((handle, stop, _)) = election {
        stop.cancel();
        let _ = handle.join().await;
    }
    shutdown.cancel();
    let _ = server.await;
    if lost_lease {
        anyhow::bail!("lost the leader lease; exiting so that a restart enters the election again");
    }
    tracing::info!("controller stopped");
    Ok(())
}

/// What the controller's cache keeps of a plan: all but server-side apply's bookkeeping
/// (`metadata.managedFields`: one entry per field manager, listing every field it set, the
/// status's included, so often larger than the plan itself) and `kubectl apply`'s copy of
/// the last applied plan. Nothing pitstop decides reads either, and the cache holds every
/// plan in the watched namespaces, finished ones too: `make bench-scale` measured about
/// 17 KB per plan before (see the README's "At fleet scale").
fn slim(plan: &mut DeserializeGuard<MaintenancePlan>) {
    if let Ok(plan) = &mut plan.0 {
        slim_metadata(&mut plan.metadata);
    }
}

/// Drops `managedFields` and `kubectl apply`'s last-applied annotation from cached metadata.
fn slim_metadata(metadata: &mut kube::api::ObjectMeta) {
    metadata.managed_fields = None;
    if let Some(annotations) = &mut metadata.annotations {
        annotations.remove(LAST_APPLIED);
    }
}

/// The annotation in which `kubectl apply` (client-side) keeps the whole object it applied.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Starts the reflectors of MaintenancePolicies and namespaces (their labels select
/// policies), waits until both have listed once, and returns the [`Tenancy`] reading them,
/// with a stream that ticks whenever a policy or a namespace's labels change (bursts
/// coalesced), so that every plan is checked again: a plan refused yesterday may be allowed
/// today, and the other way round.
async fn watch_tenancy(
    client: &kube::Client,
    default: crate::tenancy::DefaultPolicy,
    shutdown: CancellationToken,
) -> anyhow::Result<(Tenancy, impl futures::Stream<Item = ()> + Send + 'static)> {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::runtime::predicates;

    let policies: Api<MaintenancePolicy> = Api::all(client.clone());
    policies
        .list_metadata(&ListParams::default().limit(1))
        .await
        .context("listing MaintenancePolicies (is their CRD installed — `pitstop crd policy | kubectl apply -f -` — and may this account list them?)")?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .list_metadata(&ListParams::default().limit(1))
        .await
        .context("listing namespaces (policies select them by label; may this account list them?)")?;

    let (policy_store, policy_writer) = reflector::store();
    let (namespace_store, namespace_writer) = reflector::store();
    let policy_events = watcher(policies, watcher::Config::default())
        .default_backoff()
        .modify(|policy: &mut MaintenancePolicy| slim_metadata(&mut policy.metadata))
        .reflect(policy_writer)
        .touched_objects()
        .map(|_| ());
    let namespace_events = watcher(namespaces, watcher::Config::default())
        .default_backoff()
        .modify(|namespace: &mut Namespace| slim_metadata(&mut namespace.metadata))
        .reflect(namespace_writer)
        .touched_objects()
        .predicate_filter(predicates::labels, Default::default())
        .map(|_| ());
    let ticks = coalesced_ticks(
        futures::stream::select(policy_events, namespace_events).boxed(),
        shutdown,
    );
    policy_store
        .wait_until_ready()
        .await
        .context("the MaintenancePolicy watch ended before its first list")?;
    namespace_store
        .wait_until_ready()
        .await
        .context("the namespace watch ended before its first list")?;
    tracing::info!(
        policies = policy_store.state().len(),
        default = ?default,
        "watching MaintenancePolicies"
    );
    Ok((Tenancy::new(policy_store, namespace_store, default), ticks))
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing the rounds in flight");
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slim_drops_managed_fields_and_the_last_applied_copy_and_keeps_the_rest() {
        let plan: MaintenancePlan = serde_json::from_value(serde_json::json!({
            "apiVersion": "pitstop.dev/v1alpha1",
            "kind": "MaintenancePlan",
            "metadata": {
                "name": "p",
                "namespace": "ns",
                "resourceVersion": "42",
                "finalizers": ["pitstop.dev/cleanup"],
                "annotations": {
                    LAST_APPLIED: "{\"spec\":{}}",
                    "pitstop.dev/approved": "true",
                },
                "managedFields": [
                    { "manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": { "f:spec": {} } },
                ],
            },
            "spec": { "targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/tg/0123456789abcdef", "instances": ["i-0123456789abcdef0"] },
        }))
        .expect("a plan");
        let mut guard = DeserializeGuard(Ok(plan.clone()));
        slim(&mut guard);
        let slimmed = guard.0.expect("still a plan");
        assert_eq!(slimmed.metadata.managed_fields, None);
        let annotations = slimmed.metadata.annotations.clone().unwrap_or_default();
        assert!(!annotations.contains_key(LAST_APPLIED), "{annotations:?}");
        assert_eq!(
            annotations.get("pitstop.dev/approved").map(String::as_str),
            Some("true")
        );
        assert_eq!(slimmed.metadata.resource_version, plan.metadata.resource_version);
        assert_eq!(slimmed.metadata.finalizers, plan.metadata.finalizers);
        assert_eq!(
            serde_json::to_value(&slimmed.spec).ok(),
            serde_json::to_value(&plan.spec).ok()
        );
    }
}
