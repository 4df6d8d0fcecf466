//! What a round's [`Transition`]s are worth telling a webhook, and how it is told: a
//! CloudEvents 1.0 JSON event (structured mode) or a Slack-compatible `{"text": ...}`.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::api::{InstancePhase, MaintenancePlanStatus, NotifyEvent, NotifyFormat, PlanPhase};
use crate::machine::Transition;

/// The `Content-Type` of a CloudEvent in structured mode.
pub const CLOUDEVENTS_CONTENT_TYPE: &str = "application/cloudevents+json";
/// The `Content-Type` of a Slack body.
pub const SLACK_CONTENT_TYPE: &str = "application/json";

/// The plan a notification is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanRef {
    /// `metadata.namespace` (`default` for a `pitstop run` plan that names none).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

/// One event for the webhook, made once and sent as it is on every attempt, so its `id`
/// lets a receiver drop a retry it already got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// A UUID, new for every event.
    pub id: String,
    /// What happened.
    pub kind: NotifyEvent,
    /// When (the round's time).
    pub time: Timestamp,
    /// The plan.
    pub plan: PlanRef,
    /// `status.runId`, when the run has one (`approval: Manual`).
    pub run_id: Option<String>,
    /// `status.startedAt` of the run.
    pub run_started_at: Option<Timestamp>,
    /// The plan's phase after the round.
    pub plan_phase: PlanPhase,
    /// The instance, for instance events and a gate holding one.
    pub instance: Option<String>,
    /// The phase left.
    pub from: String,
    /// The phase entered.
    pub to: String,
    /// The transition's CamelCase reason (`PlanStarted`, `MaintenanceFailed`, `AlertFiring`...).
    pub reason: String,
    /// What happened, in a sentence.
    pub message: String,
}

/// The notifications of a round's transitions, in their order. `status` is the status the
/// round recorded. Transitions that are not news for a webhook (an instance draining,
/// rebooting...) make none.
pub fn from_transitions(
    plan: &PlanRef,
    transitions: &[Transition],
    status: &MaintenancePlanStatus,
    time: Timestamp,
) -> Vec<Notification> {
    transitions
        .iter()
        .filter_map(|transition| {
            let kind = classify(transition, status)?;
            let message = if transition.message.is_empty() {
                // Plan transitions carry no message of their own; the status summary says it
                // (the global stop's says who holds the plan).
                match kind {
                    NotifyEvent::GateBlocked => status.held_by.clone(),
                    _ => status.message.clone(),
                }
                .unwrap_or_default()
            } else {
                transition.message.clone()
            };
            Some(Notification {
                id: uuid::Uuid::new_v4().to_string(),
                kind,
                time,
                plan: plan.clone(),
                run_id: status.run_id.clone(),
                run_started_at: status.started_at,
                plan_phase: status.phase,
                instance: transition.instance_id.clone(),
                from: transition.from.clone(),
                to: transition.to.clone(),
                reason: if kind == NotifyEvent::GateBlocked && transition.instance_id.is_none() {
                    crate::machine::GLOBAL_STOP.to_owned()
                } else {
                    transition.reason.clone()
                },
                message,
            })
        })
        .collect()
}

/// Which event a transition is, if any.
fn classify(transition: &Transition, status: &MaintenancePlanStatus) -> Option<NotifyEvent> {
    let phase = |p: InstancePhase| p.as_str();
    let plan = |p: PlanPhase| format!("{p:?}");
    let (from, to) = (transition.from.as_str(), transition.to.as_str());
    match &transition.instance_id {
        Some(_) if to == phase(InstancePhase::Failed) && from != to => Some(NotifyEvent::InstanceFailed),
        Some(_) if to == phase(InstancePhase::Registered) && from != to => Some(NotifyEvent::InstanceMaintained),
        // A gate starting to hold the next instance is the one Pending -> Pending transition,
        // made only when it starts holding (`machine::gates`), so a long hold is one event.
        Some(_) if from == phase(InstancePhase::Pending) && to == from && transition.warning => {
            Some(NotifyEvent::GateBlocked)
        }
        Some(_) => None,
        // A run starts from Pending (a new plan, a new generation, a new window); Suspended ->
        // Running is a hold that ended, not a new run.
        None if to == plan(PlanPhase::Running) && from == plan(PlanPhase::Pending) => Some(NotifyEvent::RunStarted),
        None if (to == plan(PlanPhase::Succeeded) || to == plan(PlanPhase::Failed)) && from != to => {
            Some(NotifyEvent::RunFinished)
        }
        // The global stop holds the plan; a plan its owner suspended (`spec.suspend`) is news
        // to nobody.
        None if to == plan(PlanPhase::Suspended) && from != to && status.held_by.is_some() => {
            Some(NotifyEvent::GateBlocked)
        }
        None => None,
    }
}

impl Notification {
    /// The CloudEvents `type`.
    pub fn event_type(&self) -> &'static str {
        match self.kind {
            NotifyEvent::RunStarted => "dev.pitstop.run.started",
            NotifyEvent::InstanceMaintained => "dev.pitstop.instance.maintained",
            NotifyEvent::InstanceFailed => "dev.pitstop.instance.failed",
            NotifyEvent::RunFinished => "dev.pitstop.run.finished",
            NotifyEvent::GateBlocked => "dev.pitstop.gate.blocked",
        }
    }

    /// The CloudEvents `source`: `pitstop/<namespace>/<plan>` (a URI reference).
    pub fn source(&self) -> String {
        format!("pitstop/{}/{}", self.plan.namespace, self.plan.name)
    }

    /// The event as a CloudEvents 1.0 JSON object (structured mode).
    pub fn cloud_event(&self) -> Value {
        let mut event = json!({
            "specversion": "1.0",
            "id": self.id,
            "source": self.source(),
            "type": self.event_type(),
            "time": self.time.to_string(),
            "datacontenttype": "application/json",
            "data": {
                "plan": self.plan.name,
                "namespace": self.plan.namespace,
                "run": {
                    "id": self.run_id,
                    "startedAt": self.run_started_at.map(|t| t.to_string()),
                    "phase": format!("{:?}", self.plan_phase),
                },
                "instance": self.instance,
                "from": self.from,
                "to": self.to,
                "reason": self.reason,
                "message": self.message,
            },
        });
        if let (Some(instance), Some(object)) = (&self.instance, event.as_object_mut()) {
            object.insert("subject".to_owned(), Value::String(instance.clone()));
        }
        event
    }

    /// One readable line for a chat channel.
    pub fn slack_text(&self) -> String {
        let plan = format!("{}/{}", self.plan.namespace, self.plan.name);
        let instance = self.instance.as_deref().unwrap_or("the next instance");
        let what = match self.kind {
            NotifyEvent::RunStarted => "run started".to_owned(),
            NotifyEvent::InstanceMaintained => format!("{instance} maintained and healthy again"),
            NotifyEvent::InstanceFailed => format!("{instance} failed ({})", self.reason),
            NotifyEvent::RunFinished if self.to == format!("{:?}", PlanPhase::Succeeded) => "run succeeded".to_owned(),
            NotifyEvent::RunFinished => format!("run failed ({})", self.reason),
            NotifyEvent::GateBlocked => format!("{instance} held ({})", self.reason),
        };
        if self.message.is_empty() {
            format!("pitstop {plan}: {what}")
        } else {
            format!("pitstop {plan}: {what}: {}", self.message)
        }
    }

    /// The body in `format`, with its `Content-Type`.
    pub fn body(&self, format: NotifyFormat) -> (&'static str, Vec<u8>) {
        let value = match format {
            NotifyFormat::CloudEvents => self.cloud_event(),
            NotifyFormat::Slack => json!({ "text": self.slack_text() }),
        };
        let content_type = match format {
            NotifyFormat::CloudEvents => CLOUDEVENTS_CONTENT_TYPE,
            NotifyFormat::Slack => SLACK_CONTENT_TYPE,
        };
        (content_type, value.to_string().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> PlanRef {
        PlanRef {
            namespace: "shop".into(),
            name: "web".into(),
        }
    }

    fn at() -> Timestamp {
        "2026-12-03T18:00:00Z".parse().unwrap()
    }

    fn plan_transition(from: PlanPhase, to: PlanPhase, reason: &str) -> Transition {
        Transition {
            instance_id: None,
            from: format!("{from:?}"),
            to: format!("{to:?}"),
            reason: reason.into(),
            message: String::new(),
            warning: to == PlanPhase::Failed,
        }
    }

    fn status(phase: PlanPhase, message: &str) -> MaintenancePlanStatus {
        MaintenancePlanStatus {
            phase,
            message: Some(message.into()),
            started_at: Some(at()),
            ..MaintenancePlanStatus::default()
        }
    }

    #[test]
    fn a_round_s_transitions_become_the_events_worth_sending() {
        let round = [
            plan_transition(PlanPhase::Pending, PlanPhase::Running, "PlanStarted"),
            Transition::instance(
                "i-1",
                InstancePhase::Pending,
                InstancePhase::Draining,
                "Deregistering",
                "deregistering",
            ),
            Transition::instance(
                "i-1",
                InstancePhase::Verifying,
                InstancePhase::Registered,
                "Healthy",
                "healthy",
            ),
            Transition::instance(
                "i-2",
                InstancePhase::Rebooting,
                InstancePhase::Failed,
                "MaintenanceFailed",
                "exit code 1",
            ),
            plan_transition(PlanPhase::Running, PlanPhase::Failed, "PlanFailed"),
        ];
        let status = status(PlanPhase::Failed, "1 of 2 instances failed");
        let events = from_transitions(&web(), &round, &status, at());
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                NotifyEvent::RunStarted,
                NotifyEvent::InstanceMaintained,
                NotifyEvent::InstanceFailed,
                NotifyEvent::RunFinished
            ]
        );
        assert_eq!(events[3].message, "1 of 2 instances failed", "the status summary");
        let ids: std::collections::HashSet<_> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids.len(), events.len(), "distinct ids");
    }

    #[test]
    fn an_instance_failure_is_a_cloud_event_with_the_instance_as_subject() {
        let failed = Transition::instance(
            "i-0abc",
            InstancePhase::Rebooting,
            InstancePhase::Failed,
            "MaintenanceFailed",
            "exit code 1",
        );
        let status = MaintenancePlanStatus {
            run_id: Some("run-1".into()),
            ..status(PlanPhase::Running, "")
        };
        let event = from_transitions(&web(), &[failed], &status, at()).remove(0);
        let json = event.cloud_event();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "dev.pitstop.instance.failed");
        assert_eq!(json["source"], "pitstop/shop/web");
        assert_eq!(json["subject"], "i-0abc");
        assert_eq!(json["time"], "2026-12-03T18:00:00Z");
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(json["id"], event.id.as_str());
        assert_eq!(json["data"]["plan"], "web");
        assert_eq!(json["data"]["namespace"], "shop");
        assert_eq!(json["data"]["run"]["id"], "run-1");
        assert_eq!(json["data"]["run"]["phase"], "Running");
        assert_eq!(json["data"]["instance"], "i-0abc");
        assert_eq!(json["data"]["reason"], "MaintenanceFailed");
        assert_eq!(json["data"]["message"], "exit code 1");
        assert_eq!(
            event.slack_text(),
            "pitstop shop/web: i-0abc failed (MaintenanceFailed): exit code 1"
        );
        let (content_type, body) = event.body(NotifyFormat::Slack);
        assert_eq!(content_type, "application/json");
        let slack: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(slack, json!({"text": event.slack_text()}));
    }

    #[test]
    fn plan_events_have_no_subject() {
        let started = plan_transition(PlanPhase::Pending, PlanPhase::Running, "PlanStarted");
        let event = from_transitions(&web(), &[started], &status(PlanPhase::Running, "0/3"), at()).remove(0);
        let json = event.cloud_event();
        assert_eq!(json["type"], "dev.pitstop.run.started");
        assert!(json.get("subject").is_none());
        assert_eq!(json["data"]["instance"], Value::Null);
        assert_eq!(event.slack_text(), "pitstop shop/web: run started: 0/3");
        let (content_type, _) = event.body(NotifyFormat::CloudEvents);
        assert_eq!(content_type, "application/cloudevents+json");
    }

    #[test]
    fn a_gate_that_starts_holding_and_the_global_stop_are_gate_blocked() {
        let mut held = Transition::instance(
            "i-2",
            InstancePhase::Pending,
            InstancePhase::Pending,
            "AlertFiring",
            "waiting (AlertFiring): HighErrorRate firing in Prometheus",
        );
        held.warning = true;
        let events = from_transitions(&web(), &[held], &status(PlanPhase::Running, ""), at());
        assert_eq!(events[0].kind, NotifyEvent::GateBlocked);
        assert_eq!(events[0].cloud_event()["type"], "dev.pitstop.gate.blocked");
        assert_eq!(
            events[0].slack_text(),
            "pitstop shop/web: i-2 held (AlertFiring): waiting (AlertFiring): HighErrorRate firing in Prometheus"
        );

        let suspended = plan_transition(PlanPhase::Running, PlanPhase::Suspended, "PlanSuspended");
        let stopped = MaintenancePlanStatus {
            held_by: Some("held by the global stop: change freeze".into()),
            ..status(PlanPhase::Suspended, "")
        };
        let events = from_transitions(&web(), std::slice::from_ref(&suspended), &stopped, at());
        assert_eq!(events[0].kind, NotifyEvent::GateBlocked);
        assert_eq!(events[0].reason, "GlobalStop");
        assert_eq!(events[0].message, "held by the global stop: change freeze");
        // Its owner's `spec.suspend` is not news.
        let own = status(PlanPhase::Suspended, "suspended");
        assert!(from_transitions(&web(), &[suspended], &own, at()).is_empty());
    }

    #[test]
    fn steps_on_the_way_and_resumes_are_not_sent() {
        let round = [
            Transition::instance("i-1", InstancePhase::Draining, InstancePhase::Rebooting, "Drained", ""),
            plan_transition(PlanPhase::Suspended, PlanPhase::Running, "PlanStarted"),
            plan_transition(PlanPhase::Succeeded, PlanPhase::Pending, "SpecChanged"),
        ];
        assert!(from_transitions(&web(), &round, &status(PlanPhase::Running, ""), at()).is_empty());
    }
}
