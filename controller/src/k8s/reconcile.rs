//! One reconcile of a plan: read guard → finalizer → engine round → record (status through
//! the [`KubeStatusStore`], events, logs).

use std::sync::Arc;

use jiff::Timestamp;
use kube::api::Api;
use kube::core::{DeserializeGuard, Resource, ResourceExt};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use tracing::field::Empty;

use crate::api::validate::{plan_region, validate};
use crate::api::{MaintenancePlan, MaintenancePlanStatus};
use crate::engine::{self, StatusStore};
use crate::machine::{self, Observed, PlanView, Transition, TurnView, WAITING_FOR_TURN};

use super::aws_condition::{self, FailedRound, show_failure};
use super::cleanup::cleanup_for;
use super::context::Context;
use super::error::Error;
use super::events::{PlanEvents, REASON_TOOK_OVER, REASON_WAITING};
use super::finalizer::{FINALIZER, clean_up};
use super::notify::notify_round;
use super::policy::requeue_action;
use super::round_inputs::{with_approval, with_hold};
use super::status_store::KubeStatusStore;
use super::target_group_lock::{Asker, Takeover, Turn};
use super::tenancy::screen;

/// `namespace/name` of a plan, for logs and the per-plan backoff.
pub fn plan_key(plan: &DeserializeGuard<MaintenancePlan>) -> String {
    format!("{}/{}", plan.namespace().unwrap_or_default(), plan.name_any())
}

/// Reconciles one MaintenancePlan. A malformed object gets a Warning Event and waits for
/// a change; a deleted one is released after its clean-up; any other runs one engine round.
#[tracing::instrument(name = "reconcile", skip_all, fields(plan = %plan_key(&object), instance = Empty))]
pub async fn reconcile(object: Arc<DeserializeGuard<MaintenancePlan>>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled();
    let key = plan_key(&object);
    let events = PlanEvents::new(ctx.client.clone(), ctx.reporter.clone(), object.object_ref(&()));
    let plan = match &object.0 {
        Ok(plan) => plan,
        Err(invalid) => {
            let mut error = invalid.error.clone();
            if invalid.metadata.deletion_timestamp.is_some() && object.finalizers().iter().any(|f| f == FINALIZER) {
                error.push_str(&format!(
                    "; it is being deleted, but pitstop cannot tell which instances to put back until it is fixed \
                     (or the finalizer {FINALIZER} is removed by hand)"
                ));
            }
            tracing::warn!(%error, "malformed MaintenancePlan; waiting for it to change");
            events.invalid_object(&error).await;
            return Ok(Action::await_change());
        }
    };
    let namespace = plan.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<MaintenancePlan> = Api::namespaced(ctx.client.clone(), &namespace);
    let action = finalizer(&api, FINALIZER, Arc::new(plan.clone()), |event| async {
        match event {
            FinalizerEvent::Apply(plan) => apply(&plan, &key, &api, &ctx, &events).await,
            FinalizerEvent::Cleanup(plan) => release(&plan, &key, &ctx, &events).await,
        }
    })
    .await
    .map_err(Error::from)?;
    ctx.backoff.succeeded(&key);
    Ok(action)
}

/// One engine round for a live plan.
async fn apply(
    plan: &MaintenancePlan,
    key: &str,
    api: &Api<MaintenancePlan>,
    ctx: &Context,
    events: &PlanEvents,
) -> Result<Action, Error> {
    let name = plan.metadata.name.as_deref().ok_or(Error::MissingMetadata("name"))?;
    let uid = plan.metadata.uid.as_deref().ok_or(Error::MissingMetadata("uid"))?;
    let read_version = plan.metadata.resource_version.as_deref();
    let freshest = ctx.statuses.freshest(uid, read_version, plan.status.as_ref());
    let recorded = freshest.status;
    let span = tracing::Span::current();
    if let Some(instance) = recorded.as_ref().and_then(|s| s.current_instance.as_deref()) {
        span.record("instance", instance);
    }
    let mut store = KubeStatusStore::new(
        api.clone(),
        name,
        uid,
        read_version,
        freshest.version.as_deref(),
        &ctx.statuses,
    );
    let now = ctx.now();
    // Tenancy: nothing is read or changed on AWS for a plan its namespace's policies refuse.
    if let Some(action) = screen(plan, key, recorded.as_ref(), &mut store, ctx, events, now).await? {
        return Ok(action);
    }
    // The global stop and an approval on the plan go into the status the round starts from:
    // the machine then holds the plan as it holds a suspended one (and says why), or lets an
    // approved run start.
    let recorded = with_approval(plan, with_hold(recorded, ctx.stop.reason()));
    let plan_view = PlanView {
        uid,
        generation: plan.metadata.generation,
        spec: &plan.spec,
        status: recorded.as_ref(),
    };

    let busy = recorded
        .as_ref()
        .and_then(|status| machine::in_flight(&plan.spec, status))
        .is_some();
    if !busy && let Err(invalid) = validate(&plan.spec) {
        // Nothing to read from AWS (the target group may not even be addressable): the
        // state machine fails the plan from its spec alone.
        tracing::warn!(%invalid, "invalid spec");
        let mut decision = machine::decide(plan_view, &Observed::default(), now);
        // No AWS call is made for an invalid spec: an AWS problem shown before is not current.
        if aws_condition::clear(&mut decision.status) {
            machine::summarize_again(&mut decision.status, &plan.spec, plan.metadata.generation, now);
        }
        if recorded.as_ref() != Some(&decision.status) {
            store.save(&decision.status).await.map_err(Error::RecordInvalid)?;
        }
        ctx.locks
            .release_all(&ctx.client, &plan.spec.target_groups_in_lock_order(), key, false, now)
            .await
            .map_err(Error::TargetGroupLock)?;
        record(
            ctx,
            key,
            recorded.as_ref(),
            &decision.status,
            &decision.transitions,
            now,
        );
        events.transitions(&decision.transitions, &decision.status).await;
        notify_round(ctx, plan, &decision.transitions, &decision.status, events, now).await;
        return Ok(requeue_action(decision.requeue, ctx.poll_interval));
    }

    // Every group of the plan, in the one order all plans take them in (no deadlock).
    let groups = plan.spec.target_groups_in_lock_order();
    let asker = Asker {
        key,
        uid,
        instance_out: busy,
    };
    let needs_turn = !busy && machine::needs_turn(&plan.spec, recorded.as_ref(), now);
    let mut turn = TurnView::default();
    let mut waiting_event = None;
    if busy || needs_turn {
        match ctx
            .locks
            .take_all(&ctx.client, &groups, asker, now)
            .await
            .map_err(Error::TargetGroupLock)?
        {
            Turn::Ours { took_over, wanted } => {
                turn.wanted = wanted;
                if let Some(Takeover { holder, why }) = took_over {
                    let message = format!("took over the target group from plan {holder}, which {why}");
                    tracing::warn!("{message}");
                    events.plan(EventType::Warning, REASON_TOOK_OVER, &message).await;
                }
            }
            // An instance of this plan is out already (since before the lock, or a holder
            // that took over wrongly): it is finished and put back whatever the lease says,
            // and no other is started.
            Turn::HeldBy { holder, .. } if busy => {
                tracing::warn!(%holder, "the target group's lease names another plan while this one has an instance out");
                turn.held_by = Some(holder);
            }
            Turn::HeldBy { holder, first } => {
                if first {
                    let message = format!("{WAITING_FOR_TURN} {holder}: one instance out of a target group at a time");
                    tracing::info!("{message}");
                    // Published after the round's status, like every event of a round.
                    waiting_event = Some(message);
                }
                turn.held_by = Some(holder);
            }
        }
    } else {
        ctx.locks
            .stop_waiting_all(&ctx.client, &groups, key, false)
            .await
            .map_err(Error::TargetGroupLock)?;
    }

    // A valid spec always names a region (the target group ARN has one).
    let region = plan_region(&plan.spec).unwrap_or_default();
    let apis = ctx.apis(region).await;
    let report = engine::step(&apis, plan_view, now, &turn, &ctx.gates, &mut store).await;
    let failed_round = |recorded, error| FailedRound {
        recorded,
        error,
        region,
        generation: plan.metadata.generation,
        failures_before: ctx.backoff.failures(key),
        now,
    };
    let report = match report {
        Ok(mut report) => {
            // AWS answered: a problem shown on the status is over.
            if aws_condition::clear(&mut report.status) {
                machine::summarize_again(&mut report.status, &plan.spec, plan.metadata.generation, now);
                store
                    .save(&report.status)
                    .await
                    .map_err(|e| Error::Step(engine::StepError::Store(e)))?;
            }
            report
        }
        Err(engine::StepError::Act {
            error,
            status,
            transitions,
        }) => {
            // The round's status was recorded before the call failed: its transitions
            // happened, so they still get their events and metrics.
            record(ctx, key, recorded.as_ref(), &status, &transitions, now);
            events.transitions(&transitions, &status).await;
            notify_round(ctx, plan, &transitions, &status, events, now).await;
            show_failure(&mut store, events, failed_round(Some(&status), &error)).await;
            return Err(engine::StepError::Act {
                error,
                status,
                transitions,
            }
            .into());
        }
        Err(engine::StepError::Observe(observe)) => {
            show_failure(&mut store, events, failed_round(recorded.as_ref(), &observe.0)).await;
            return Err(engine::StepError::Observe(observe).into());
        }
        Err(other) => return Err(other.into()),
    };
    let instance = report
        .status
        .current_instance
        .as_deref()
        .or(report.action.as_ref().map(machine::Action::instance_id));
    if let Some(instance) = instance {
        span.record("instance", instance);
    }
    if let Some(action) = &report.action {
        tracing::debug!(
            action = action.name(),
            instance = action.instance_id(),
            "AWS action made"
        );
    }
    if !machine::holds_turn(&plan.spec, &report.status, now) {
        // After a round that had an instance out, read the lease in any case: it may be held
        // since before a restart, which this process does not remember.
        ctx.locks
            .release_all(&ctx.client, &groups, key, busy, now)
            .await
            .map_err(Error::TargetGroupLock)?;
    }
    record(ctx, key, recorded.as_ref(), &report.status, &report.transitions, now);
    events.transitions(&report.transitions, &report.status).await;
    // Only after the round's status is recorded: a round retried after a conflict made no
    // transition that was recorded, and so sends nothing twice.
    notify_round(ctx, plan, &report.transitions, &report.status, events, now).await;
    if let Some(message) = waiting_event {
        events.plan(EventType::Normal, REASON_WAITING, &message).await;
    }
    Ok(requeue_action(report.requeue, ctx.poll_interval))
}

/// Logs and counts what a round changed.
fn record(
    ctx: &Context,
    key: &str,
    before: Option<&MaintenancePlanStatus>,
    after: &MaintenancePlanStatus,
    transitions: &[Transition],
    now: Timestamp,
) {
    ctx.metrics.set_plan_phase(key, Some(after.phase));
    for instance in &after.instances {
        let went_out = instance.draining_since.or(instance.phase_since);
        ctx.metrics
            .observe_rotation(key, &instance.instance_id, instance.out_of_rotation, went_out, now);
    }
    for transition in transitions {
        tracing::info!(
            instance = transition.instance_id.as_deref().unwrap_or("plan"),
            from = %transition.from,
            to = %transition.to,
            reason = %transition.reason,
            "{}",
            transition.message
        );
        // How long the instance spent in the phase it left, from the status before the round.
        let spent = transition.instance_id.as_deref().and_then(|id| {
            let since = before?.instances.iter().find(|i| i.instance_id == id)?.phase_since?;
            now.duration_since(since).try_into().ok()
        });
        ctx.metrics.observe_transition(transition, spent);
    }
}

/// The clean-up of a deleted plan; the finalizer is removed when this returns Ok.
async fn release(plan: &MaintenancePlan, key: &str, ctx: &Context, events: &PlanEvents) -> Result<Action, Error> {
    let uid = plan.metadata.uid.as_deref().ok_or(Error::MissingMetadata("uid"))?;
    let recorded = ctx
        .statuses
        .freshest(uid, plan.metadata.resource_version.as_deref(), plan.status.as_ref())
        .status;
    let cleanup = cleanup_for(uid, &plan.spec, recorded.as_ref());
    if !cleanup.is_empty() {
        if let Some(first) = cleanup.returns.first() {
            tracing::Span::current().record("instance", first.instance_id.as_str());
        }
        let region = plan_region(&plan.spec).unwrap_or_default();
        let apis = ctx.apis(region).await;
        clean_up(&apis, &cleanup, events).await?;
    }
    tracing::info!("plan deleted; released");
    ctx.statuses.forget(uid);
    ctx.notify.forget(uid);
    ctx.metrics.set_plan_phase(key, None);
    ctx.metrics.forget_plan_instances(key);
    let groups = plan.spec.target_groups_in_lock_order();
    ctx.locks
        .stop_waiting_all(&ctx.client, &groups, key, true)
        .await
        .map_err(Error::TargetGroupLock)?;
    ctx.locks
        .release_all(&ctx.client, &groups, key, true, ctx.now())
        .await
        .map_err(Error::TargetGroupLock)?;
    Ok(Action::await_change())
}
