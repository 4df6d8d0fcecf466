//! `spec.notify` in the controller: after a round's status is recorded, its transitions go to
//! the plan's webhook, whose URL is read from a Secret in the plan's own namespace.
//!
//! The Secret is read only when a round has something to send (a few times per instance),
//! so it is not cached: a rotated URL applies from the next event on.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::events::EventType;

use crate::api::{MaintenancePlan, MaintenancePlanStatus, SecretKeyRef};
use crate::machine::Transition;
use crate::notify::{Delivery, Notifier, PlanRef, from_transitions, webhook_url};

use super::context::Context;
use super::events::PlanEvents;

/// Reason of the Warning for a plan whose webhook URL cannot be read.
pub const REASON_NOTIFY_UNAVAILABLE: &str = "NotificationsUnavailable";

/// The webhook deliveries of the controller, and which plans were told that theirs cannot
/// be sent.
#[derive(Debug, Default)]
pub struct Notifications {
    /// The queue to the delivery task.
    pub notifier: Notifier,
    /// UIDs of plans whose Secret could not be used, told once with a Warning; forgotten
    /// once it can be.
    warned: Mutex<HashSet<String>>,
}

impl Notifications {
    /// Deliveries through `notifier`.
    pub fn new(notifier: Notifier) -> Self {
        Self {
            notifier,
            warned: Mutex::default(),
        }
    }

    /// True the first time `uid` is warned about (until [`Self::forget`]).
    fn first_warning(&self, uid: &str) -> bool {
        self.warned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(uid.to_owned())
    }

    /// Forgets `uid`: its Secret works now, or the plan is gone.
    pub fn forget(&self, uid: &str) {
        self.warned.lock().unwrap_or_else(PoisonError::into_inner).remove(uid);
    }
}

/// Queues the notifications of a round whose status (`status`) was recorded. Never fails the
/// round: a Secret that cannot be read gets one Warning Event (and a log line each time) and
/// the plan goes on.
pub async fn notify_round(
    ctx: &Context,
    plan: &MaintenancePlan,
    transitions: &[Transition],
    status: &MaintenancePlanStatus,
    events: &PlanEvents,
    now: Timestamp,
) {
    let Some(spec) = plan.spec.notify.as_ref() else {
        return;
    };
    let (Some(namespace), Some(name), Some(uid)) = (
        plan.metadata.namespace.as_deref(),
        plan.metadata.name.as_deref(),
        plan.metadata.uid.as_deref(),
    ) else {
        return;
    };
    let plan_ref = PlanRef {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    let notifications: Vec<_> = from_transitions(&plan_ref, transitions, status, now)
        .into_iter()
        .filter(|n| spec.wants(n.kind))
        .collect();
    if notifications.is_empty() {
        return;
    }
    let url = match read_url(ctx.client.clone(), namespace, &spec.secret_ref).await {
        Ok(url) => {
            ctx.notify.forget(uid);
            url
        }
        Err(why) => {
            let message = format!("notifications (spec.notify) are not sent: {why}; the plan goes on without them");
            tracing::warn!(dropped = notifications.len(), "{message}");
            for _ in &notifications {
                ctx.metrics.notification(false);
            }
            if ctx.notify.first_warning(uid) {
                events
                    .plan(EventType::Warning, REASON_NOTIFY_UNAVAILABLE, &message)
                    .await;
            }
            return;
        }
    };
    for notification in notifications {
        ctx.notify.notifier.send(
            Delivery {
                url: url.clone(),
                format: spec.format,
                notification,
            },
            &ctx.metrics,
        );
    }
}

/// The webhook URL in `secret_ref`'s Secret, in `namespace` (the plan's: a plan never reads
/// another namespace's Secret); the error says what is missing, never the URL.
async fn read_url(client: kube::Client, namespace: &str, secret_ref: &SecretKeyRef) -> Result<String, String> {
    let (name, key) = (&secret_ref.name, &secret_ref.key);
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|e| format!("the Secret {namespace}/{name} cannot be read ({e})"))?
        .ok_or_else(|| format!("the Secret {namespace}/{name} does not exist"))?;
    let value = secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .ok_or_else(|| format!("the Secret {namespace}/{name} has no key {key}"))?;
    let text = std::str::from_utf8(&value.0)
        .map_err(|_| format!("the key {key} of the Secret {namespace}/{name} is not text"))?;
    webhook_url(text).map_err(|why| format!("the key {key} of the Secret {namespace}/{name} is no webhook URL: {why}"))
}
