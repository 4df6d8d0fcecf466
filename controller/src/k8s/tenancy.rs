//! The controller's view of the MaintenancePolicies and namespaces, kept by reflectors, and
//! the policy check a reconcile makes before anything touches AWS.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{self, ObjectRef, Store};

use crate::api::validate::plan_region;
use crate::api::validate::validate;
use crate::api::{MaintenancePlan, MaintenancePlanSpec, MaintenancePlanStatus, MaintenancePolicy};
use crate::engine::StatusStore;
use crate::machine::{self, NOT_ALLOWED, Requeue};
use crate::tenancy::{Allowance, DefaultPolicy, NamespaceView, Refusal, evaluate};

use super::aws_condition::{FailedRound, show_failure};
use super::context::Context;
use super::error::Error;
use super::events::PlanEvents;
use super::policy::requeue_action;
use super::policy_tags::{TAG_RECHECK, TagVerdict, tag_verdict};

/// The policies and namespace labels, as last seen through their watches, and the default
/// for namespaces no policy selects.
#[derive(Clone)]
pub struct Tenancy {
    policies: Store<MaintenancePolicy>,
    namespaces: Store<Namespace>,
    default: DefaultPolicy,
}

impl Tenancy {
    /// Policies and namespaces from these stores (fed by reflectors in the controller).
    pub fn new(policies: Store<MaintenancePolicy>, namespaces: Store<Namespace>, default: DefaultPolicy) -> Self {
        Self {
            policies,
            namespaces,
            default,
        }
    }

    /// Whether the plan in `namespace` may run, by the policies as last seen.
    pub fn evaluate(&self, spec: &MaintenancePlanSpec, namespace: &str) -> Result<Allowance, Refusal> {
        let labels = self
            .namespaces
            .get(&ObjectRef::new(namespace))
            .and_then(|ns| ns.metadata.labels.clone())
            .unwrap_or_default();
        let policies = self.policies.state();
        evaluate(
            spec,
            NamespaceView {
                name: namespace,
                labels: &labels,
            },
            policies.iter().map(AsRef::as_ref),
            self.default,
        )
    }

    /// The default for namespaces no policy selects.
    pub fn default_policy(&self) -> DefaultPolicy {
        self.default
    }
}

impl Default for Tenancy {
    /// No policy, no namespace labels, the restricted default: what a controller whose
    /// stores are not fed allows. Tests feed stores of their own through [`Tenancy::new`].
    fn default() -> Self {
        let (policies, _) = reflector::store();
        let (namespaces, _) = reflector::store();
        Self::new(policies, namespaces, DefaultPolicy::Restricted)
    }
}

/// Reason of the Event for a plan refused before, allowed now.
pub const REASON_ALLOWED: &str = "Allowed";

/// Checks the plan against its namespace's policies before the round reads or changes
/// anything on AWS (but the tags a policy asks for, read when an instance is about to go
/// out; see [`super::policy_tags`]). `None`: go on with the round. `Some(action)`: the round is over, the plan
/// was refused (come back when it or a policy changes) or a refusal was lifted (come back at
/// once, from the lifted status). A refused plan is recorded as Failed with reason
/// `NotAllowed` and gets a Warning; nothing else happens. An instance already out of rotation is not stopped here:
/// it is finished and put back first (the check is made again once it is back), since
/// leaving it out would hurt the service the policy protects.
pub(super) async fn screen<S: StatusStore<Error = kube::Error>>(
    plan: &MaintenancePlan,
    key: &str,
    recorded: Option<&MaintenancePlanStatus>,
    store: &mut S,
    ctx: &Context,
    events: &PlanEvents,
    now: Timestamp,
) -> Result<Option<Action>, Error> {
    let busy = recorded
        .and_then(|status| machine::in_flight(&plan.spec, status))
        .is_some();
    // An invalid spec is failed from its spec alone, with no AWS call either.
    if busy || validate(&plan.spec).is_err() {
        return Ok(None);
    }
    let namespace = plan.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let mut by_tags = false;
    let verdict = match ctx.tenancy.evaluate(&plan.spec, &namespace) {
        Ok(Allowance::Allowed(allowed)) => Ok(allowed),
        Ok(Allowance::IfTagged(conditions)) => {
            by_tags = true;
            match tag_verdict(&plan.spec, recorded, &conditions, ctx, now).await {
                TagVerdict::NotNeeded => return Ok(None),
                TagVerdict::Decided(verdict) => verdict,
                TagVerdict::Unreadable(error) => {
                    let round = FailedRound {
                        recorded,
                        error: &error,
                        region: plan_region(&plan.spec).unwrap_or_default(),
                        generation: plan.metadata.generation,
                        failures_before: ctx.backoff.failures(key),
                        now,
                    };
                    show_failure(store, events, round).await;
                    return Err(Error::PolicyTags(error));
                }
            }
        }
        Err(refusal) => Err(refusal),
    };
    let refusal = match verdict {
        Ok(allowed) => {
            let Some(refused) = recorded.filter(|s| machine::is_refused(s)) else {
                return Ok(None);
            };
            let message = format!("now allowed by {}; the plan goes on", allowed.by);
            tracing::info!("{message}");
            // A round of its own (status, then its event, as in every round); the next
            // round starts from the lifted status.
            let lifted = machine::lift_refusal(refused);
            store.save(&lifted).await.map_err(Error::RecordInvalid)?;
            ctx.metrics.set_plan_phase(key, Some(lifted.phase));
            events.plan(EventType::Normal, REASON_ALLOWED, &message).await;
            return Ok(Some(requeue_action(Requeue::Now, ctx.poll_interval)));
        }
        Err(refusal) => refusal,
    };
    // A plan that finished before the policy changed, and will not run again, keeps its record.
    let finished_for_good = plan.spec.schedule.is_none()
        && recorded.is_some_and(|s| {
            s.phase.is_finished() && !machine::is_refused(s) && s.observed_generation == plan.metadata.generation
        });
    if finished_for_good {
        return Ok(Some(Action::await_change()));
    }
    // A plan refused from its spec waits for it or a policy to change; one refused for the
    // tags AWS shows reads them again now and then, as a tag added on AWS wakes nothing.
    let wait = if by_tags {
        Action::requeue(TAG_RECHECK)
    } else {
        Action::await_change()
    };
    let (status, transition) = machine::refuse(&plan.spec, recorded, plan.metadata.generation, &refusal.message, now);
    if recorded != Some(&status) {
        store.save(&status).await.map_err(Error::RecordInvalid)?;
    }
    // It may have held the target group's turn at a preflight gate.
    ctx.locks
        .release_all(&ctx.client, &plan.spec.target_groups_in_lock_order(), key, false, now)
        .await
        .map_err(Error::TargetGroupLock)?;
    ctx.metrics.set_plan_phase(key, Some(status.phase));
    if let Some(transition) = transition {
        tracing::warn!(reason = NOT_ALLOWED, "{}", refusal.message);
        ctx.metrics.observe_transition(&transition, None);
        events.transitions(std::slice::from_ref(&transition), &status).await;
        super::notify::notify_round(ctx, plan, &[transition], &status, events, now).await;
    }
    Ok(Some(wait))
}
