//! The loop that drives plans round after round until they finish.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use crate::api::validate::plan_region;
use crate::api::{MaintenancePlanSpec, MaintenancePlanStatus};
use crate::aws::problem::{describe, reason};
use crate::aws::shared_reads::SharedGroupReads;
use crate::aws::{AwsErrorKind, AwsProvider};
use crate::engine::{StepReport, step};
use crate::machine::{PlanView, Requeue, TurnView, holds_turn, in_flight, needs_turn, new_window_open};

use super::group_turns::{GroupTurn, PlanTurns};
use super::put_back::put_back_after_failure;
use super::state_file::FileStore;

/// How plans are driven.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Wait between rounds while AWS is doing something (draining, a command, health checks).
    pub poll_interval: Duration,
    /// Longest wait after repeated errors.
    pub max_backoff: Duration,
    /// How long AWS may keep failing in a way that could pass by itself (unreachable, 5xx,
    /// throttled) before the run stops anyway, putting back what is out if it can.
    pub give_up_after: Duration,
    /// The readers of `spec.gates` (Prometheus).
    pub gates: crate::gates::GateReaders,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(5),
            max_backoff: Duration::from_secs(60),
            give_up_after: Duration::from_secs(600),
            gates: crate::gates::GateReaders::http(None),
        }
    }
}

/// A plan to run.
#[derive(Debug)]
pub struct PlanRun {
    /// `metadata.name`.
    pub name: String,
    /// UID used in command tags (kept across resumes by the state file).
    pub uid: String,
    /// The spec.
    pub spec: MaintenancePlanSpec,
    /// Where its status goes.
    pub store: FileStore,
}

/// Something that happened while running, for progress displays and reports.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// A round completed.
    Step {
        /// Plan name.
        plan: &'a str,
        /// What it did.
        report: &'a StepReport,
        /// When.
        at: Timestamp,
    },
    /// A round failed and will be retried.
    Retry {
        /// Plan name.
        plan: &'a str,
        /// The error, in one line; for an AWS error the operation, region and cause.
        error: String,
        /// For an AWS error, its cause (the status condition reason, e.g. `AWSUnreachable`);
        /// the same cause in a row is the same problem still going on.
        cause: Option<&'static str>,
        /// How long until the retry.
        after: Duration,
    },
    /// The plan waits for another plan on the same target group.
    Queued {
        /// Plan name.
        plan: &'a str,
        /// The plan ahead of it.
        behind: &'a str,
    },
}

/// Receives [`RunEvent`]s.
pub trait RunObserver: Send + Sync {
    /// Called for every event.
    fn event(&self, event: RunEvent<'_>);
}

/// How a plan's run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanOutcome {
    /// Plan name.
    pub name: String,
    /// Its last status.
    pub status: Option<MaintenancePlanStatus>,
    /// True when the run stopped early on request, with no instance out of rotation.
    pub interrupted: bool,
    /// Set when the run stopped on an AWS failure that waiting does not fix (or that lasted
    /// [`RunOptions::give_up_after`]): one line saying what failed, the usual fix, and
    /// whether an instance is still out of its target group.
    pub aws_failure: Option<String>,
    /// True when the run stopped on an AWS failure with an instance it could not put back:
    /// the plan keeps its target group's turn, so no other plan of the run takes a second
    /// instance of the group out.
    pub still_out: bool,
}

/// Runs all plans side by side. Plans on the same target group take turns instance by
/// instance (one instance out per group, across plans; a plan that waits goes before the
/// plan that just gave the group back); plans on different groups do not wait for each other.
///
/// When `interrupt` turns true, no new instance is started: the one in flight is finished
/// (and so put back) first, then the run returns with `interrupted` set.
pub async fn run_plans(
    aws: Arc<dyn AwsProvider>,
    plans: Vec<PlanRun>,
    options: &RunOptions,
    observer: &dyn RunObserver,
    interrupt: watch::Receiver<bool>,
) -> Vec<PlanOutcome> {
    let mut turns: BTreeMap<String, Arc<GroupTurn>> = BTreeMap::new();
    let released = Arc::new(tokio::sync::watch::Sender::new(0));
    // Plans on one group share its health reads, one per poll tick (see `aws::shared_reads`).
    let group_reads = SharedGroupReads::new(options.poll_interval);
    let group_reads = &group_reads;
    // A plan that stops on an AWS failure stops the whole run (the others finish the instance
    // they have out, start no other, and return as interrupted): the run ends with exit 4.
    let (stop_all, stopping) = watch::channel(*interrupt.borrow());
    let stop_all = &stop_all;
    let forward = async move {
        let mut interrupt = interrupt;
        while interrupt.changed().await.is_ok() {
            if *interrupt.borrow() {
                stop_all.send_replace(true);
            }
        }
    };
    let drives = plans.into_iter().map(|mut plan| {
        let groups = plan
            .spec
            .target_groups_in_lock_order()
            .into_iter()
            .map(|arn| {
                turns
                    .entry(arn.to_owned())
                    .or_insert_with(|| Arc::new(GroupTurn::notifying(released.clone())))
                    .clone()
            })
            .collect();
        let turn = PlanTurns::new(groups, released.clone());
        let aws = aws.clone();
        let stopping = stopping.clone();
        async move {
            let outcome = drive(aws.as_ref(), group_reads, &mut plan, &turn, options, observer, stopping).await;
            if outcome.aws_failure.is_some() {
                stop_all.send_replace(true);
            }
            // However it ended, it no longer waits for the group, and holds it only while an
            // instance it could not put back is still out.
            if !outcome.still_out {
                turn.release(&plan.name);
            }
            turn.stop_waiting(&plan.name);
            outcome
        }
    });
    let all = futures::future::join_all(drives.collect::<Vec<_>>());
    tokio::pin!(all, forward);
    tokio::select! {
        outcomes = &mut all => outcomes,
        // The interrupt's sender is gone: nobody can interrupt any more; the drives go on.
        () = &mut forward => all.await,
    }
}

async fn drive(
    aws: &dyn AwsProvider,
    group_reads: &SharedGroupReads,
    plan: &mut PlanRun,
    turn: &PlanTurns,
    options: &RunOptions,
    observer: &dyn RunObserver,
    mut interrupt: watch::Receiver<bool>,
) -> PlanOutcome {
    // Validation already passed, so a region is known; "" would only reach the SDK's own default.
    let region = plan_region(&plan.spec).unwrap_or_default().to_owned();
    let apis = group_reads.wrap(&region, aws.for_region(&region).await, Arc::new(Timestamp::now));
    let generation = plan.store.generation_for(&plan.spec);
    let mut releases = turn.releases();
    let mut errors: u32 = 0;
    let mut queued = false;
    let mut failing_since: Option<Timestamp> = None;
    loop {
        // Whoever runs `pitstop run` approves its runs (`approval: Manual`): they are at the
        // keyboard, starting it.
        let recorded = plan.store.current().map(|mut status| {
            status.approved_run.clone_from(&status.run_id);
            status
        });
        let busy = recorded.as_ref().and_then(|s| in_flight(&plan.spec, s)).is_some();
        // A finished plan is done unless its spec changed since, or (scheduled) a window it
        // has not run in is open: then the engine starts a new run.
        if recorded
            .as_ref()
            .is_some_and(|s| s.phase.is_finished() && s.observed_generation == Some(generation))
            && !busy
            && !new_window_open(&plan.spec, recorded.as_ref(), Timestamp::now())
        {
            return outcome(plan, recorded, false);
        }
        if *interrupt.borrow() && !busy {
            return outcome(plan, recorded, true);
        }
        let now = Timestamp::now();
        // Releases from here on wake this plan if it is turned away.
        releases.mark_unchanged();
        let held_by = if busy || needs_turn(&plan.spec, recorded.as_ref(), now) {
            turn.take(&plan.name, busy, now).err()
        } else {
            turn.stop_waiting(&plan.name);
            None
        };
        match &held_by {
            Some(behind) if !queued => {
                queued = true;
                observer.event(RunEvent::Queued {
                    plan: &plan.name,
                    behind,
                });
            }
            Some(_) => {}
            None => queued = false,
        }
        let view = PlanView {
            uid: &plan.uid,
            generation: Some(generation),
            spec: &plan.spec,
            status: recorded.as_ref(),
        };
        let turn_view = TurnView {
            wanted: held_by.is_none() && turn.wanted(&plan.name, now),
            held_by,
        };
        let wait = match step(&apis, view, now, &turn_view, &options.gates, &mut plan.store).await {
            Ok(report) => {
                errors = 0;
                if !holds_turn(&plan.spec, &report.status, now) {
                    turn.release(&plan.name);
                }
                failing_since = None;
                observer.event(RunEvent::Step {
                    plan: &plan.name,
                    report: &report,
                    at: now,
                });
                match report.requeue {
                    // Let the other plans of the run have their round first.
                    Requeue::Now => {
                        tokio::task::yield_now().await;
                        continue;
                    }
                    Requeue::Poll => options.poll_interval,
                    // Short sleeps even for a long wait (next week's window): a wall clock
                    // that jumps (a laptop's sleep) is noticed; rounds that wait read nothing.
                    Requeue::After(d) => d.min(options.poll_interval),
                    Requeue::Idle => return outcome(plan, Some(report.status), false),
                }
            }
            Err(error) => {
                errors = errors.saturating_add(1);
                let since = *failing_since.get_or_insert(now);
                if let Some(aws) = error.aws() {
                    let failing_for: Duration = now.duration_since(since).try_into().unwrap_or_default();
                    let line = if aws.kind.is_permanent() {
                        Some(describe(aws, &region))
                    } else if failing_for >= options.give_up_after {
                        Some(format!(
                            "{} for {}, giving up",
                            describe(aws, &region).trim_end_matches("; retrying"),
                            humantime::format_duration(options.give_up_after)
                        ))
                    } else {
                        None
                    };
                    if let Some(line) = line {
                        let status = plan.store.current();
                        let left = put_back_after_failure(&apis, &plan.uid, &plan.spec, status.as_ref()).await;
                        let line = std::iter::once(line).chain(left.notes).collect::<Vec<_>>().join("; ");
                        return PlanOutcome {
                            aws_failure: Some(line),
                            still_out: left.still_out,
                            ..outcome(plan, plan.store.current(), false)
                        };
                    }
                }
                let throttled = error.aws().is_some_and(|e| e.kind == AwsErrorKind::Throttled);
                let after = if throttled {
                    Duration::from_secs(2)
                } else {
                    backoff(errors, options.max_backoff)
                };
                observer.event(RunEvent::Retry {
                    plan: &plan.name,
                    error: error.aws().map_or_else(|| error.to_string(), |e| describe(e, &region)),
                    cause: error.aws().map(|e| reason(e.kind)),
                    after,
                });
                after
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            // A plan waiting for the group goes as soon as it is given back.
            Ok(()) = releases.changed(), if turn_view.held_by.is_some() => {}
            changed = interrupt.changed() => {
                // The sender is gone: nobody can interrupt any more, so just wait.
                if changed.is_err() {
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

fn backoff(errors: u32, max: Duration) -> Duration {
    let exp = Duration::from_millis(500).saturating_mul(2u32.saturating_pow(errors.min(16)));
    exp.min(max)
}

fn outcome(plan: &PlanRun, status: Option<MaintenancePlanStatus>, interrupted: bool) -> PlanOutcome {
    PlanOutcome {
        name: plan.name.clone(),
        status,
        interrupted,
        aws_failure: None,
        still_out: false,
    }
}
