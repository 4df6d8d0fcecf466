//! One plan at a time per target group.
//!
//! Two plans on the same group working side by side would each take an instance out, and
//! the second one's preflight cannot see the first's instance once it has left the group.
//! So, as `pitstop run` does, plans on one target group take turns: a plan holds its
//! group's lane from its first instance until it finishes (or is deleted), and a plan that
//! has not started waits while another holds it.
//!
//! The lanes live in memory; after a restart they are rebuilt from the plans themselves: a
//! plan whose status says Running holds its group even before its first reconcile.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use crate::api::{MaintenancePlan, PlanPhase};

#[derive(Debug, Default)]
struct State {
    /// Holder (`namespace/name`) per target group ARN.
    holders: HashMap<String, String>,
    /// Plans told they are waiting, so the Event is published once per wait.
    waiting: HashSet<String>,
}

/// The lanes of all target groups.
#[derive(Debug, Default)]
pub struct Lanes {
    state: Mutex<State>,
}

/// The outcome of [`Lanes::claim`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The plan holds the lane.
    Held,
    /// Another plan holds it.
    Busy {
        /// The plan ahead (`namespace/name`).
        holder: String,
        /// True the first time this plan is turned away in this wait.
        first: bool,
    },
}

impl Lanes {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the lane of `arn` for `plan` unless another plan holds it: in memory, unless
    /// `alive` says that holder has since gone (deleted with its finalizer removed by hand)
    /// or finished; or, as `running_elsewhere` tells from the plans' statuses, since before
    /// a restart.
    pub fn claim(
        &self,
        arn: &str,
        plan: &str,
        alive: impl FnOnce(&str) -> bool,
        running_elsewhere: impl FnOnce() -> Option<String>,
    ) -> Claim {
        let mut state = self.lock();
        let holder = match state.holders.get(arn) {
            Some(holder) if holder != plan && alive(holder) => Some(holder.clone()),
            Some(_) | None => running_elsewhere(),
        };
        match holder {
            None => {
                state.holders.insert(arn.to_owned(), plan.to_owned());
                state.waiting.remove(plan);
                Claim::Held
            }
            Some(holder) => {
                let first = state.waiting.insert(plan.to_owned());
                Claim::Busy { holder, first }
            }
        }
    }

    /// Records that `plan` holds the lane of `arn` (it is running, whatever the lanes
    /// said: after a restart, or when two plans were already running side by side).
    pub fn hold(&self, arn: &str, plan: &str) {
        let mut state = self.lock();
        state.holders.entry(arn.to_owned()).or_insert_with(|| plan.to_owned());
        state.waiting.remove(plan);
    }

    /// Gives up the lane of `arn` if `plan` holds it, and forgets that it waited.
    pub fn release(&self, arn: &str, plan: &str) {
        let mut state = self.lock();
        if state.holders.get(arn).is_some_and(|holder| holder == plan) {
            state.holders.remove(arn);
        }
        state.waiting.remove(plan);
    }
}

/// The first plan other than `plan` on target group `arn` whose status says Running.
pub fn running_on<'a>(plans: impl IntoIterator<Item = &'a MaintenancePlan>, arn: &str, plan: &str) -> Option<String> {
    plans
        .into_iter()
        .filter(|other| other.spec.target_group_arn == arn)
        .map(|other| {
            let key = format!(
                "{}/{}",
                other.metadata.namespace.as_deref().unwrap_or_default(),
                other.metadata.name.as_deref().unwrap_or_default()
            );
            (key, other.status.as_ref().map(|s| s.phase))
        })
        .find(|(key, phase)| key != plan && *phase == Some(PlanPhase::Running))
        .map(|(key, _)| key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{MaintenancePlanSpec, MaintenancePlanStatus};

    const A: &str = "arn:a";
    const B: &str = "arn:b";

    #[test]
    fn plans_on_one_group_take_turns() {
        let lanes = Lanes::default();
        assert_eq!(lanes.claim(A, "ns/one", |_| true, || None), Claim::Held);
        assert_eq!(
            lanes.claim(A, "ns/one", |_| true, || None),
            Claim::Held,
            "claiming again is fine"
        );
        assert_eq!(
            lanes.claim(A, "ns/two", |_| true, || None),
            Claim::Busy {
                holder: "ns/one".into(),
                first: true
            }
        );
        assert_eq!(
            lanes.claim(A, "ns/two", |_| true, || None),
            Claim::Busy {
                holder: "ns/one".into(),
                first: false
            }
        );
        assert_eq!(
            lanes.claim(B, "ns/three", |_| true, || None),
            Claim::Held,
            "other groups are free"
        );
        lanes.release(A, "ns/two");
        lanes.release(A, "ns/one");
        assert_eq!(lanes.claim(A, "ns/two", |_| true, || None), Claim::Held);
    }

    #[test]
    fn a_holder_that_is_gone_no_longer_blocks() {
        let lanes = Lanes::default();
        assert_eq!(lanes.claim(A, "ns/one", |_| true, || None), Claim::Held);
        assert_eq!(
            lanes.claim(A, "ns/two", |holder| holder != "ns/one", || None),
            Claim::Held
        );
    }

    #[test]
    fn a_plan_running_since_before_a_restart_holds_its_group() {
        let lanes = Lanes::default();
        let claim = lanes.claim(A, "ns/two", |_| true, || Some("ns/one".into()));
        assert!(matches!(claim, Claim::Busy { holder, .. } if holder == "ns/one"));
        lanes.hold(A, "ns/one");
        lanes.release(A, "ns/one");
        assert_eq!(lanes.claim(A, "ns/two", |_| true, || None), Claim::Held);
    }

    fn plan(name: &str, arn: &str, phase: Option<PlanPhase>) -> MaintenancePlan {
        let mut plan = MaintenancePlan::new(
            name,
            MaintenancePlanSpec {
                target_group_arn: arn.to_owned(),
                region: None,
                instances: vec!["i-0000000a".into()],
                maintenance: None,
                verify: None,
                preflight: Default::default(),
                timeouts: Default::default(),
                on_failure: Default::default(),
                max_failures: 0,
                ..Default::default()
            },
        );
        plan.metadata.namespace = Some("ns".into());
        plan.status = phase.map(|phase| MaintenancePlanStatus {
            phase,
            ..MaintenancePlanStatus::default()
        });
        plan
    }

    #[test]
    fn finds_another_running_plan_on_the_same_group() {
        let plans = [
            plan("me", A, Some(PlanPhase::Running)),
            plan("done", A, Some(PlanPhase::Succeeded)),
            plan("new", A, None),
            plan("elsewhere", B, Some(PlanPhase::Running)),
        ];
        assert_eq!(running_on(&plans, A, "ns/me"), None);
        let mut more = plans.to_vec();
        more.push(plan("busy", A, Some(PlanPhase::Running)));
        assert_eq!(running_on(&more, A, "ns/me").as_deref(), Some("ns/busy"));
    }
}
