//! The whole round, with the status writes placed for crash safety.

use jiff::Timestamp;

use crate::api::{MaintenancePlanSpec, MaintenancePlanStatus};
use crate::aws::{AwsApis, AwsError, AwsErrorKind};
use crate::gates::GateReaders;
use crate::machine::{self, Action, Decision, Observed, PlanView, Requeue, Transition, TurnView};

use super::act::{ActOutcome, act};
use super::observe::{ObserveError, observe};

/// Where a plan's status lives: the apiserver's `/status`, or memory in `pitstop run`.
#[async_trait::async_trait]
pub trait StatusStore: Send {
    /// The error a write can fail with.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Writes the status. Must be durable when it returns: the action that follows relies on it.
    async fn save(&mut self, status: &MaintenancePlanStatus) -> Result<(), Self::Error>;
}

/// A round failed part-way; what was written so far stands, and the next round picks up.
#[derive(Debug, thiserror::Error)]
pub enum StepError<E: std::error::Error + 'static> {
    /// Reading AWS failed before anything was decided.
    #[error(transparent)]
    Observe(#[from] ObserveError),
    /// A status write failed; the action it guarded was not made.
    #[error("could not record the status: {0}")]
    Store(#[source] E),
    /// The AWS action failed in a way worth retrying (throttled, transient). The status of
    /// the round was already recorded (write-ahead), so its transitions happened: they are
    /// handed back for events and metrics.
    #[error("AWS action failed: {error}")]
    Act {
        /// The failure.
        #[source]
        error: AwsError,
        /// The status recorded before the action.
        status: Box<MaintenancePlanStatus>,
        /// Phase changes already recorded this round.
        transitions: Vec<Transition>,
    },
}

impl<E: std::error::Error + 'static> StepError<E> {
    /// The AWS error behind this failure, if any.
    pub fn aws(&self) -> Option<&AwsError> {
        match self {
            Self::Observe(ObserveError(e)) | Self::Act { error: e, .. } => Some(e),
            Self::Store(_) => None,
        }
    }
}

/// What a round did.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// The status now recorded.
    pub status: MaintenancePlanStatus,
    /// The action made, if any.
    pub action: Option<Action>,
    /// When to come back.
    pub requeue: Requeue,
    /// Phase changes, for events and metrics.
    pub transitions: Vec<Transition>,
}

/// Runs one round for a plan. `turn` says whether another plan holds the target group's
/// turn (see [`machine::needs_turn`]): then no instance is taken out, and with none out
/// nothing is read.
///
/// Order matters: the decided status is written *before* the action (write-ahead), so a
/// crash between the two leaves a status from which the same, repeat-safe action is chosen
/// again; a command ID is written right after SendCommand returns, and if that write is
/// lost the command is found again by its tag. Status writes that change nothing are
/// skipped.
pub async fn step<S: StatusStore>(
    apis: &AwsApis,
    plan: PlanView<'_>,
    now: Timestamp,
    turn: &TurnView,
    gates: &GateReaders,
    store: &mut S,
) -> Result<StepReport, StepError<S::Error>> {
    let (spec, recorded) = (plan.spec, plan.status);
    let busy = recorded.is_some_and(|status| machine::in_flight(spec, status).is_some());
    let mut observed = match &turn.held_by {
        // Nothing is out and nothing may go out: there is nothing to read.
        Some(_) if !busy => Observed::default(),
        _ => {
            let wants = machine::wants_at(spec, recorded, now);
            observe(apis, spec, plan.uid, recorded, &wants, gates).await?
        }
    };
    observed.turn_held_by.clone_from(&turn.held_by);
    observed.turn_wanted = turn.wanted;
    let Decision {
        mut status,
        action,
        requeue,
        mut transitions,
    } = machine::decide(plan, &observed, now);
    if recorded != Some(&status) {
        store.save(&status).await.map_err(StepError::Store)?;
    }
    if let Some(action) = &action {
        match act(apis, action).await {
            Ok(ActOutcome::Done) => {}
            Ok(ActOutcome::Sent {
                kind,
                instance_id,
                command_id,
            }) => {
                machine::record_sent(&mut status, &instance_id, kind, &command_id);
                store.save(&status).await.map_err(StepError::Store)?;
            }
            Err(error) => match refused_because_gone(apis, spec, &mut status, action, &error, now)
                .await
                .or_else(|| machine::record_action_failed(spec, &mut status, action, &error, now))
            {
                Some(transition) => {
                    transitions.push(transition);
                    store.save(&status).await.map_err(StepError::Store)?;
                    return Ok(StepReport {
                        status,
                        action: Some(action.clone()),
                        requeue: Requeue::Now,
                        transitions,
                    });
                }
                None => {
                    // A SendCommand that certainly did not happen may be sent again at once;
                    // one whose answer was lost is looked for first (see the status field).
                    if machine::record_send_not_made(&mut status, action, &error)
                        || machine::record_auto_scaling_not_made(&mut status, action, &error)
                    {
                        store.save(&status).await.map_err(StepError::Store)?;
                    }
                    return Err(StepError::Act {
                        error,
                        status: Box::new(status),
                        transitions,
                    });
                }
            },
        }
    }
    Ok(StepReport {
        status,
        action,
        requeue,
        transitions,
    })
}

/// A call for the instance in flight refused for good (SendCommand's `InvalidInstanceId`,
/// RegisterTargets' `InvalidTarget`...): if EC2 says the instance is gone (terminated while
/// it was out), its turn ends as gone instead of failing over the refusal (a refused
/// RegisterTargets would leave it `RegisterRejected`). None for anything else, or when EC2
/// cannot be asked (then the refusal stands).
async fn refused_because_gone(
    apis: &AwsApis,
    spec: &MaintenancePlanSpec,
    status: &mut MaintenancePlanStatus,
    action: &Action,
    error: &AwsError,
    now: Timestamp,
) -> Option<Transition> {
    if !matches!(error.kind, AwsErrorKind::Rejected | AwsErrorKind::NotFound) {
        return None;
    }
    let instance_id = action.instance_id();
    let ids = [instance_id.to_owned()];
    let gone = apis.instances.gone(&ids).await.ok()?;
    let said = gone.get(instance_id)?;
    machine::record_instance_gone(spec, status, instance_id, said, now)
}
