//! Kubernetes Events for what happens to a plan: every instance transition, the plan's
//! start, completion and failure, malformed objects, and the clean-up on delete.
//!
//! Events are best effort. The status is the record; an Event that cannot be published is
//! logged and the reconcile goes on, since failing it would not bring the Event back (the
//! next round sees no transition) and would only delay the plan.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::api::MaintenancePlanStatus;
use crate::machine::Transition;

/// Reason of the Warning for an object that cannot be read as a MaintenancePlan.
pub const REASON_INVALID_OBJECT: &str = "InvalidObject";
/// Reason of the Event for an instance put back because its plan was deleted.
pub const REASON_PLAN_DELETED: &str = crate::machine::reason::PLAN_DELETED;
/// Reason of the Warning for an instance a deleted plan leaves out of the target group.
pub const REASON_LEFT_OUT: &str = "LeftOutOfTargetGroup";
/// Reason of the Event for a plan waiting for another plan on the same target group.
pub const REASON_WAITING: &str = "WaitingForTargetGroup";
/// Reason of the Warning for a target group lease taken over from a stale holder.
pub const REASON_TOOK_OVER: &str = "TookOverTargetGroup";

/// Action of plan-level events.
const ACTION_PLAN: &str = "Plan";
/// Action of events about a malformed object.
const ACTION_VALIDATE: &str = "Validate";

/// The API's limit on `note`.
const NOTE_LIMIT: usize = 1024;

/// Publishes the events of one plan, for one round.
///
/// Each round gets its own kube [`Recorder`], as kube's documentation advises. A Recorder caches every Event it
/// published for six minutes, to turn repeats into a series: one shared by all plans held about 7,000 Events at
/// 1,000 plans (about a third of the controller's heap, issue 13) and scanned them all on every publish. pitstop
/// does not repeat Events across rounds (a transition, a new cause of failure or the start of a wait each
/// publish once), so the cache of one round is all the series logic needs.
pub struct PlanEvents {
    recorder: Recorder,
    reference: ObjectReference,
}

impl PlanEvents {
    /// Events about the object `reference`, published as `reporter`.
    pub fn new(client: kube::Client, reporter: Reporter, reference: ObjectReference) -> Self {
        Self {
            recorder: Recorder::new(client, reporter),
            reference,
        }
    }

    /// One Event per transition of a round.
    pub async fn transitions(&self, transitions: &[Transition], status: &MaintenancePlanStatus) {
        for transition in transitions {
            self.publish(transition_event(transition, status)).await;
        }
    }

    /// The Warning for an object that cannot be read.
    pub async fn invalid_object(&self, error: &str) {
        self.publish(Event {
            type_: EventType::Warning,
            reason: REASON_INVALID_OBJECT.to_owned(),
            note: Some(note(format!(
                "cannot read the MaintenancePlan, so it is not worked on until it changes: {error}"
            ))),
            action: ACTION_VALIDATE.to_owned(),
            secondary: None,
        })
        .await;
    }

    /// An Event about the plan as a whole.
    pub async fn plan(&self, type_: EventType, reason: &str, message: &str) {
        self.publish(Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note(message.to_owned())),
            action: ACTION_PLAN.to_owned(),
            secondary: None,
        })
        .await;
    }

    /// An Event about one instance.
    pub async fn instance(&self, type_: EventType, reason: &str, instance_id: &str, message: &str) {
        self.publish(Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note(format!("{instance_id}: {message}"))),
            action: instance_id.to_owned(),
            secondary: None,
        })
        .await;
    }

    async fn publish(&self, event: Event) {
        if let Err(error) = self.recorder.publish(&event, &self.reference).await {
            tracing::warn!(reason = %event.reason, %error, "could not publish an Event");
        }
    }
}

/// The Event for a transition: Warning for failures, the transition's reason, and a note
/// that names the instance. Instance events carry the instance as their action, because
/// the recorder folds events with the same action and reason into one series: without it,
/// the second instance's "Deregistering" would show up as a repeat of the first's.
pub fn transition_event(transition: &Transition, status: &MaintenancePlanStatus) -> Event {
    let type_ = if transition.warning {
        EventType::Warning
    } else {
        EventType::Normal
    };
    let (action, text) = match &transition.instance_id {
        Some(instance) => (
            instance.clone(),
            format!(
                "{instance}: {} -> {}{}",
                transition.from,
                transition.to,
                suffix(&transition.message)
            ),
        ),
        None => {
            // Plan transitions carry no message of their own; the status summary says it.
            let message = if transition.message.is_empty() {
                status.message.as_deref().unwrap_or_default()
            } else {
                &transition.message
            };
            (
                ACTION_PLAN.to_owned(),
                format!("plan {} -> {}{}", transition.from, transition.to, suffix(message)),
            )
        }
    };
    Event {
        type_,
        reason: transition.reason.clone(),
        note: Some(note(text)),
        action,
        secondary: None,
    }
}

fn suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// Cuts a note to the API's limit, on a character boundary.
fn note(mut text: String) -> String {
    if text.len() > NOTE_LIMIT {
        let mut end = NOTE_LIMIT - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::InstancePhase;

    #[test]
    fn instance_transitions_name_the_instance_and_failures_warn() {
        let status = MaintenancePlanStatus::default();
        let t = Transition::instance(
            "i-0000000a",
            InstancePhase::Rebooting,
            InstancePhase::Failed,
            "MaintenanceFailed",
            "exit code 1",
        );
        let event = transition_event(&t, &status);
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.reason, "MaintenanceFailed");
        assert_eq!(event.action, "i-0000000a");
        assert_eq!(
            event.note.as_deref(),
            Some("i-0000000a: Rebooting -> Failed: exit code 1")
        );

        let ok = Transition::instance(
            "i-0000000a",
            InstancePhase::Pending,
            InstancePhase::Draining,
            "Deregistering",
            "",
        );
        let event = transition_event(&ok, &status);
        assert_eq!(event.type_, EventType::Normal);
        assert_eq!(event.note.as_deref(), Some("i-0000000a: Pending -> Draining"));
    }

    #[test]
    fn plan_transitions_use_the_status_summary() {
        let status = MaintenancePlanStatus {
            message: Some("all 3 instances maintained and healthy".into()),
            ..MaintenancePlanStatus::default()
        };
        let t = Transition {
            instance_id: None,
            from: "Running".into(),
            to: "Succeeded".into(),
            reason: "PlanSucceeded".into(),
            message: String::new(),
            warning: false,
        };
        let event = transition_event(&t, &status);
        assert_eq!(event.action, "Plan");
        assert_eq!(
            event.note.as_deref(),
            Some("plan Running -> Succeeded: all 3 instances maintained and healthy")
        );
    }

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let cut = note("é".repeat(2000));
        assert!(cut.len() <= NOTE_LIMIT);
        assert!(cut.ends_with('…'));
        assert_eq!(note("short".into()), "short");
    }
}
