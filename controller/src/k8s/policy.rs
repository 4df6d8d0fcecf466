//! When to look at a plan again: after a round (from the engine's [`Requeue`]) and after
//! a failure (from the error's [`ErrorKind`]).

use std::sync::Arc;
use std::time::Duration;

use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;

use crate::api::MaintenancePlan;
use crate::machine::Requeue;

use super::context::Context;
use super::error::{Error, ErrorKind};
use super::reconcile::plan_key;

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

/// The controller's error policy: an unusable object waits for a change, throttling and
/// conflicts retry soon, what waiting does not fix (AWS credentials, IAM, region) backs off
/// long (1 min doubling to 10 min), anything else backs off per plan (5 s doubling to 5 min).
pub fn error_policy(plan: Arc<DeserializeGuard<MaintenancePlan>>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = plan_key(&plan);
    let kind = error.kind();
    let action = match kind {
        ErrorKind::InvalidSpec => Action::await_change(),
        ErrorKind::Throttled => Action::requeue(THROTTLED_DELAY),
        ErrorKind::Conflict => Action::requeue(CONFLICT_DELAY),
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
}
