//! Who gets a target group's turn next: the plans waiting for it, first come first served.
//!
//! Without a queue the plan that gives a group back wins it again: its next instance asks a
//! few milliseconds later, while the plan that was turned away only looks again at its next
//! poll. So a plan that finds the group held records that it waits, and a plan that finds
//! the group free takes it only when no live waiter is ahead of it. The controller keeps
//! the queue on the target group's Lease (so it survives restarts and leader changes);
//! `pitstop run` keeps it in memory. The rule is the same, and lives here.
//!
//! A waiter that stops asking (its plan was deleted, finished, suspended, or its controller
//! went away) must not hold the group back for ever: each waiter records when it last
//! asked, refreshes that while it waits, and counts no more once it is older than the
//! staleness bound. Owners of the queue also remove waiters explicitly as soon as they
//! know (a plan that no longer needs the turn, a plan that is gone).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// A plan waiting for a target group's turn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    /// The plan: `namespace/name` in the controller, the plan's name in `pitstop run`.
    pub plan: String,
    /// The plan's `metadata.uid`, so that a plan recreated under the same name is not taken
    /// for the waiter (empty when unknown).
    #[serde(default)]
    pub uid: String,
    /// When the plan last asked for the turn.
    pub asked: Timestamp,
}

/// The plans waiting for one target group, in the order they first asked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TurnQueue {
    waiters: Vec<Waiter>,
}

impl TurnQueue {
    /// A queue of these waiters, in this order.
    pub fn new(waiters: Vec<Waiter>) -> Self {
        Self { waiters }
    }

    /// The waiters, first in line first.
    pub fn waiters(&self) -> &[Waiter] {
        &self.waiters
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// The live waiters ahead of `plan` (all live waiters when `plan` is not in line): the
    /// plans that get a free group before it. A waiter is live while it asked within
    /// `stale_after`.
    pub fn ahead_of(&self, plan: &str, now: Timestamp, stale_after: Duration) -> Vec<&Waiter> {
        self.waiters
            .iter()
            .take_while(|w| w.plan != plan)
            .filter(|w| is_live(w, now, stale_after))
            .collect()
    }

    /// The first live waiter: the plan to wake when the group is given back.
    pub fn next(&self, now: Timestamp, stale_after: Duration) -> Option<&Waiter> {
        self.waiters.iter().find(|w| is_live(w, now, stale_after))
    }

    /// Records that `plan` asks for the turn now: it joins the end of the line, or, already
    /// in line, keeps its place and refreshes its time when that is older than
    /// `refresh_after` (so that a waiting plan does not write at every poll). A waiter of
    /// the same name but another uid is a different plan: it is replaced, at the end.
    /// Returns whether the queue changed.
    pub fn ask(&mut self, plan: &str, uid: &str, now: Timestamp, refresh_after: Duration) -> bool {
        if let Some(waiter) = self.waiters.iter_mut().find(|w| w.plan == plan && w.uid == uid) {
            if age(waiter, now) < refresh_after {
                return false;
            }
            waiter.asked = now;
            return true;
        }
        self.leave(plan);
        self.waiters.push(Waiter {
            plan: plan.to_owned(),
            uid: uid.to_owned(),
            asked: now,
        });
        true
    }

    /// Takes `plan` out of the line. Returns whether it was in it.
    pub fn leave(&mut self, plan: &str) -> bool {
        let before = self.waiters.len();
        self.waiters.retain(|w| w.plan != plan);
        self.waiters.len() != before
    }

    /// Drops the waiters that stopped asking. Returns whether the queue changed.
    pub fn drop_stale(&mut self, now: Timestamp, stale_after: Duration) -> bool {
        let before = self.waiters.len();
        self.waiters.retain(|w| is_live(w, now, stale_after));
        self.waiters.len() != before
    }
}

fn age(waiter: &Waiter, now: Timestamp) -> Duration {
    // A time in the future (another host's clock ahead of ours) counts as just now.
    Duration::try_from(now.duration_since(waiter.asked).max(SignedDuration::ZERO)).unwrap_or(Duration::ZERO)
}

fn is_live(waiter: &Waiter, now: Timestamp, stale_after: Duration) -> bool {
    age(waiter, now) <= stale_after
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: Duration = Duration::from_secs(60);
    const REFRESH: Duration = Duration::from_secs(20);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("valid timestamp")
    }

    fn names(waiters: &[&Waiter]) -> Vec<String> {
        waiters.iter().map(|w| w.plan.clone()).collect()
    }

    #[test]
    fn first_come_first_served() {
        let mut queue = TurnQueue::default();
        assert!(queue.ask("ns/b", "uid-b", at(0), REFRESH));
        assert!(queue.ask("ns/c", "uid-c", at(1), REFRESH));
        assert_eq!(
            names(&queue.ahead_of("ns/a", at(2), STALE)),
            ["ns/b", "ns/c"],
            "a newcomer is behind both"
        );
        assert_eq!(names(&queue.ahead_of("ns/c", at(2), STALE)), ["ns/b"]);
        assert!(
            queue.ahead_of("ns/b", at(2), STALE).is_empty(),
            "the first in line goes next"
        );
        assert_eq!(queue.next(at(2), STALE).map(|w| w.plan.as_str()), Some("ns/b"));
        assert!(queue.leave("ns/b"));
        assert!(!queue.leave("ns/b"), "gone already");
        assert!(queue.ahead_of("ns/c", at(3), STALE).is_empty());
    }

    #[test]
    fn asking_again_keeps_the_place_and_refreshes_only_now_and_then() {
        let mut queue = TurnQueue::default();
        queue.ask("ns/b", "uid-b", at(0), REFRESH);
        queue.ask("ns/c", "uid-c", at(1), REFRESH);
        assert!(!queue.ask("ns/b", "uid-b", at(5), REFRESH), "fresh enough: no write");
        assert!(queue.ask("ns/b", "uid-b", at(25), REFRESH), "refreshed");
        assert_eq!(queue.waiters()[0].plan, "ns/b", "in the same place");
        assert_eq!(queue.waiters()[0].asked, at(25));
    }

    #[test]
    fn a_recreated_plan_goes_to_the_end_of_the_line() {
        let mut queue = TurnQueue::default();
        queue.ask("ns/b", "old", at(0), REFRESH);
        queue.ask("ns/c", "uid-c", at(1), REFRESH);
        assert!(queue.ask("ns/b", "new", at(2), REFRESH));
        assert_eq!(names(&queue.ahead_of("ns/b", at(3), STALE)), ["ns/c"]);
        assert_eq!(queue.waiters().len(), 2);
    }

    #[test]
    fn a_waiter_that_stopped_asking_no_longer_counts() {
        let mut queue = TurnQueue::default();
        queue.ask("ns/b", "uid-b", at(0), REFRESH);
        queue.ask("ns/c", "uid-c", at(50), REFRESH);
        assert_eq!(names(&queue.ahead_of("ns/a", at(61), STALE)), ["ns/c"], "b is stale");
        assert_eq!(queue.next(at(61), STALE).map(|w| w.plan.as_str()), Some("ns/c"));
        assert!(queue.drop_stale(at(61), STALE));
        assert!(!queue.drop_stale(at(61), STALE));
        assert_eq!(queue.waiters().len(), 1);
        assert!(queue.ahead_of("ns/a", at(200), STALE).is_empty(), "c too, later");
    }

    #[test]
    fn a_time_ahead_of_the_clock_counts_as_now() {
        let mut queue = TurnQueue::default();
        queue.ask("ns/b", "uid-b", at(100), REFRESH);
        assert_eq!(names(&queue.ahead_of("ns/a", at(0), STALE)), ["ns/b"]);
        assert!(!queue.ask("ns/b", "uid-b", at(0), REFRESH));
    }
}
