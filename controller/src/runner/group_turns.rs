//! The target group turn of `pitstop run`: one instance out of a group at a time across the
//! plans of one run, with the same fair queue as the controller's Lease
//! ([`crate::machine::TurnQueue`]), kept in memory.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use crate::machine::TurnQueue;

/// Waiters of one process leave the queue explicitly, so none goes stale by time.
const NEVER: Duration = Duration::MAX;

/// The turn of one target group among the plans of a run.
#[derive(Debug)]
pub struct GroupTurn {
    state: Mutex<State>,
    /// Bumped whenever the group is given back, to wake the waiting plans (shared by all
    /// the groups of a run: a plan waiting for several groups wakes on any of them).
    released: Arc<watch::Sender<u64>>,
}

#[derive(Debug, Default)]
struct State {
    holder: Option<String>,
    queue: TurnQueue,
}

impl Default for GroupTurn {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            released: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl GroupTurn {
    /// A group whose releases are told through `released`, shared with the run's other groups.
    pub fn notifying(released: Arc<watch::Sender<u64>>) -> Self {
        Self {
            state: Mutex::default(),
            released,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the turn for `plan`, or tells who has it (or goes next) and puts `plan` in line.
    /// A plan with an instance out gets the turn whoever waits (it is its own instance's),
    /// unless another plan holds it.
    pub fn take(&self, plan: &str, instance_out: bool, now: Timestamp) -> Result<(), String> {
        let mut state = self.state();
        match state.holder.as_deref() {
            Some(holder) if holder == plan => return Ok(()),
            Some(holder) => {
                let holder = holder.to_owned();
                if !instance_out {
                    state.queue.ask(plan, "", now, NEVER);
                }
                return Err(holder);
            }
            None => {}
        }
        if !instance_out && let Some(next) = state.queue.ahead_of(plan, now, NEVER).first() {
            let next = format!("{} (next in line)", next.plan);
            state.queue.ask(plan, "", now, NEVER);
            return Err(next);
        }
        state.queue.leave(plan);
        state.holder = Some(plan.to_owned());
        Ok(())
    }

    /// Gives the turn back if `plan` has it, and wakes the waiting plans.
    pub fn release(&self, plan: &str) {
        let mut state = self.state();
        if state.holder.as_deref() == Some(plan) {
            state.holder = None;
            drop(state);
            self.released.send_modify(|count| *count = count.wrapping_add(1));
        }
    }

    /// Whether another plan waits for this group (see [`crate::machine::TurnView::wanted`]).
    pub fn wanted(&self, plan: &str, now: Timestamp) -> bool {
        !self.state().queue.ahead_of(plan, now, NEVER).is_empty()
    }

    /// `plan` no longer asks for the turn (finished, suspended, between windows).
    pub fn stop_waiting(&self, plan: &str) {
        if self.state().queue.leave(plan) {
            // The next in line may go now.
            self.released.send_modify(|count| *count = count.wrapping_add(1));
        }
    }
}

/// The turns of all of one plan's target groups, taken in the fixed sorted order so that
/// two plans sharing groups can never wait for each other in a circle.
#[derive(Debug)]
pub struct PlanTurns {
    /// One per target group, sorted by ARN.
    groups: Vec<Arc<GroupTurn>>,
    /// The run's release notifier, shared by all its groups.
    released: Arc<watch::Sender<u64>>,
}

impl PlanTurns {
    /// The turns of `groups` (in lock order) with the run's notifier.
    pub fn new(groups: Vec<Arc<GroupTurn>>, released: Arc<watch::Sender<u64>>) -> Self {
        Self { groups, released }
    }

    /// Takes every group's turn in order, or tells who holds the first one it cannot have.
    /// A plan with nothing out stops there (the groups it took are given back after its
    /// round, as it then holds no turn); a plan with an instance out takes every one it can.
    pub fn take(&self, plan: &str, instance_out: bool, now: Timestamp) -> Result<(), String> {
        let mut held_by = None;
        for group in &self.groups {
            if let Err(holder) = group.take(plan, instance_out, now) {
                held_by.get_or_insert(holder);
                if !instance_out {
                    break;
                }
            }
        }
        held_by.map_or(Ok(()), Err)
    }

    /// Gives back every group `plan` holds.
    pub fn release(&self, plan: &str) {
        for group in &self.groups {
            group.release(plan);
        }
    }

    /// Whether another plan waits for one of the groups.
    pub fn wanted(&self, plan: &str, now: Timestamp) -> bool {
        self.groups.iter().any(|group| group.wanted(plan, now))
    }

    /// `plan` no longer waits for any of its groups.
    pub fn stop_waiting(&self, plan: &str) {
        for group in &self.groups {
            group.stop_waiting(plan);
        }
    }

    /// A receiver that changes whenever a group of the run is given back.
    pub fn releases(&self) -> watch::Receiver<u64> {
        self.released.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_sharing_groups_take_them_in_one_order_and_never_both_hold_one() {
        let now = Timestamp::UNIX_EPOCH;
        let released = Arc::new(watch::Sender::new(0));
        let a = Arc::new(GroupTurn::notifying(released.clone()));
        let b = Arc::new(GroupTurn::notifying(released.clone()));
        let first = PlanTurns::new(vec![a.clone(), b.clone()], released.clone());
        let second = PlanTurns::new(vec![a.clone(), b.clone()], released.clone());
        assert_eq!(first.take("ns/first", false, now), Ok(()));
        assert_eq!(second.take("ns/second", false, now), Err("ns/first".to_owned()));
        // The second plan stopped at the first group: it holds neither.
        first.release("ns/first");
        assert_eq!(second.take("ns/second", false, now), Ok(()));
        assert_eq!(first.take("ns/first", false, now), Err("ns/second".to_owned()));
        let mut woken = second.releases();
        woken.mark_unchanged();
        second.release("ns/second");
        assert!(
            woken.has_changed().unwrap_or(false),
            "a release of any group wakes the waiters"
        );
    }

    #[test]
    fn the_holder_is_told_while_another_plan_waits() {
        let now = Timestamp::UNIX_EPOCH;
        let released = Arc::new(watch::Sender::new(0));
        let group = Arc::new(GroupTurn::notifying(released.clone()));
        let first = PlanTurns::new(vec![group.clone()], released.clone());
        let second = PlanTurns::new(vec![group], released);
        assert_eq!(first.take("a", false, now), Ok(()));
        assert!(!first.wanted("a", now), "nobody waits yet");
        assert_eq!(second.take("b", false, now), Err("a".to_owned()));
        assert!(first.wanted("a", now), "b waits for the group");
        second.stop_waiting("b");
        assert!(!first.wanted("a", now));
    }

    #[test]
    fn the_plan_that_gives_the_group_back_goes_behind_the_one_that_waits() {
        let now = Timestamp::UNIX_EPOCH;
        let turn = GroupTurn::default();
        let mut wake = turn.released.subscribe();
        assert_eq!(turn.take("a", false, now), Ok(()));
        assert_eq!(turn.take("b", false, now), Err("a".to_owned()));
        turn.release("a");
        assert!(wake.has_changed().unwrap_or(false), "the waiter is woken");
        wake.mark_unchanged();
        assert_eq!(turn.take("a", false, now), Err("b (next in line)".to_owned()));
        assert_eq!(turn.take("b", false, now), Ok(()));
        turn.release("b");
        assert_eq!(turn.take("a", false, now), Ok(()));
    }

    #[test]
    fn an_instance_out_keeps_its_turn_and_a_plan_that_stops_asking_leaves_the_line() {
        let now = Timestamp::UNIX_EPOCH;
        let turn = GroupTurn::default();
        assert_eq!(turn.take("b", false, now), Ok(()));
        turn.release("b");
        assert_eq!(turn.take("c", false, now), Ok(()));
        assert_eq!(turn.take("b", false, now), Err("c".to_owned()));
        turn.release("c");
        assert_eq!(turn.take("a", true, now), Ok(()), "an instance out is not held back");
        turn.release("a");
        turn.stop_waiting("b");
        assert_eq!(turn.take("c", false, now), Ok(()), "b left the line");
    }
}
