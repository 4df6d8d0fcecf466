//! When to look at a plan again: after a round (from the engine's [`Requeue`]) and after
//! a failure (from the error's [`ErrorKind`]).

use std::sync::Arc;
use std::time::Duration;

use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;

use crate::api::MaintenancePlan;
use crate::machine::{Requeue, in_flight};

use super::context::Context;
use super::error::{Error, ErrorKind};
use super::reconcile::plan_key;
use super::recovery::unreachable;

/// Wait for `Requeue::Now`: not zero, so the watch can deliver the status just written
/// and a burst of rounds cannot spin.
pub const NOW_DELAY: Duration = Duration::from_millis(500);
/// Wait after throttling: short, because the throttled call is what the plan waits on,
/// and AWS's token buckets refill within seconds.
pub const THROTTLED_DELAY: Duration = Duration::from_secs(3);
/// Wait after a write conflict: the newer object is already on its way through the watch.
pub const CONFLICT_DELAY: Duration = Duration::from_secs(1);

/// The controller action for the engine's requeue.
pub fn requeue_action(requeue: Requeue, poll_interval: Duration) -> Action {
    match requeue {
        Requeue::Now => Action::requeue(NOW_DELAY),
        Requeue::Poll => Action::requeue(poll_interval),
        Requeue::After(delay) => Action::requeue(delay),
        Requeue::Idle => Action::await_change(),
    }
}

/// Whether a failure of this kind gets the short retry (1 s doubling up to the poll
/// interval) instead of the per-plan backoff: apiserver failures while the plan has an
/// instance out of rotation. Each step of a long backoff would be capacity lost for nothing
/// once the apiserver is back; AWS failures and plans with nothing out keep the backoff.
pub fn retries_short(kind: ErrorKind, instance_out: bool) -> bool {
    kind == ErrorKind::Kube && instance_out
}

/// Whether the plan, by its last known status, has an instance out of rotation (or on its
/// way back).
fn has_instance_out(plan: &DeserializeGuard<MaintenancePlan>, ctx: &Context) -> bool {
    let Ok(plan) = &plan.0 else {
        return false;
    };
    let Some(uid) = plan.metadata.uid.as_deref() else {
        return false;
    };
    ctx.statuses
        .freshest(uid, plan.metadata.resource_version.as_deref(), plan.status.as_ref())
        .status
        .is_some_and(|status| in_flight(&plan.spec, &status).is_some())
}

/// The controller's error policy: an unusable object waits for a change, throttling and
/// conflicts retry soon, apiserver failures with an instance out retry within the poll
/// interval, what waiting does not fix (AWS credentials, IAM, region) backs off long (1 min
/// doubling to 10 min), anything else backs off per plan (5 s doubling to 5 min). A call that
/// got no answer at all also starts the probe that reconciles every plan once the apiserver
/// is back.
pub fn error_policy(plan: Arc<DeserializeGuard<MaintenancePlan>>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = plan_key(&plan);
    let kind = error.kind();
    if unreachable(error) {
        ctx.recovery.noticed_outage();
    }
    let action = match kind {
        ErrorKind::InvalidSpec => Action::await_change(),
        ErrorKind::Throttled => Action::requeue(THROTTLED_DELAY),
        ErrorKind::Conflict => Action::requeue(CONFLICT_DELAY),
        _ if retries_short(kind, has_instance_out(&plan, &ctx)) => {
            Action::requeue(ctx.backoff.failed_short(&key, ctx.poll_interval))
        }
        ErrorKind::Kube | ErrorKind::Aws => Action::requeue(ctx.backoff.failed(&key)),
        ErrorKind::AwsPermanent => Action::requeue(ctx.backoff.failed_permanently(&key)),
    };
    ctx.metrics.reconcile_error(kind.as_str());
    tracing::warn!(plan = %key, kind = %kind, %error, next = ?action, "reconcile failed");
    action
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeues_follow_the_engine() {
        let poll = Duration::from_secs(5);
        assert_eq!(requeue_action(Requeue::Now, poll), Action::requeue(NOW_DELAY));
        assert_eq!(requeue_action(Requeue::Poll, poll), Action::requeue(poll));
        assert_eq!(
            requeue_action(Requeue::After(Duration::from_secs(42)), poll),
            Action::requeue(Duration::from_secs(42))
        );
        assert_eq!(requeue_action(Requeue::Idle, poll), Action::await_change());
    }

    #[test]
    fn only_apiserver_failures_with_an_instance_out_retry_short() {
        assert!(retries_short(ErrorKind::Kube, true));
        assert!(!retries_short(ErrorKind::Kube, false), "nothing out: the backoff");
        assert!(!retries_short(ErrorKind::Aws, true), "repeated AWS rejections back off");
        assert!(!retries_short(ErrorKind::InvalidSpec, true));
    }
}
