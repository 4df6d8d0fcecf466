//! Which instances HAProxy sends traffic to, as HAProxy itself reports it, and a record of how that changed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// HAProxy's administrative state of a server, set through the runtime API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    /// Takes traffic when its checks pass (a registered target).
    Ready,
    /// Finishes what it has but gets no new requests (a draining target).
    Drain,
    /// Out of the backend entirely, checks stopped (an unused target).
    Maint,
}

/// HAProxy's operational state of a server, driven by its health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationalState {
    /// Checks pass (or HAProxy has not yet seen `fall` failures).
    Up,
    /// Checks fail, or the server has not yet passed `rise` checks.
    Down,
    /// Up but refusing new traffic (HAProxy's NOLB).
    Stopping,
}

/// One server's state as HAProxy reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationState {
    /// Administrative state.
    pub admin: AdminState,
    /// Operational state.
    pub operational: OperationalState,
    /// HAProxy's last check status (`L7OK`, `L7STS`, `L4CON`, `L4TOUT`, ...); empty before the first check.
    pub check_status: String,
    /// HTTP status of the last check, when it got one.
    pub check_code: Option<u16>,
    /// HAProxy's check health counter (`0` down .. `rise + fall - 1` fully up).
    pub check_health: u32,
    /// HAProxy's status column (`UP`, `DOWN 1/2`, `DRAIN`, `MAINT`, ...), for humans.
    pub haproxy_status: String,
}

impl RotationState {
    /// Whether HAProxy would send a new request to this server.
    pub fn in_rotation(&self) -> bool {
        self.admin == AdminState::Ready && self.operational == OperationalState::Up
    }
}

/// The rotation states of every instance at one moment, as seen by the sandbox's poll of HAProxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationSnapshot {
    /// Time since the sandbox started.
    pub elapsed: Duration,
    /// State per instance ID.
    pub states: BTreeMap<String, RotationState>,
}

impl RotationSnapshot {
    /// Instance IDs HAProxy would not send a new request to.
    pub fn out_of_rotation(&self) -> Vec<String> {
        self.states
            .iter()
            .filter(|(_, s)| !s.in_rotation())
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// Snapshots kept; older ones are dropped, the maximum below is kept regardless.
const HISTORY_LIMIT: usize = 10_000;

/// Keeps a snapshot each time the states change, and the largest number of instances out of rotation at once.
#[derive(Debug, Default)]
pub(crate) struct RotationRecorder {
    inner: Mutex<RecorderInner>,
}

#[derive(Debug, Default)]
struct RecorderInner {
    last: Option<BTreeMap<String, RotationState>>,
    history: VecDeque<RotationSnapshot>,
    max_out: usize,
}

/// What decides a change: admin and operational state, not the check counters that move on every check.
fn same_rotation(a: &BTreeMap<String, RotationState>, b: &BTreeMap<String, RotationState>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ida, sa), (idb, sb))| ida == idb && sa.admin == sb.admin && sa.operational == sb.operational)
}

impl RotationRecorder {
    /// Records `states` if they differ from the last ones.
    pub(crate) fn observe(&self, elapsed: Duration, states: &BTreeMap<String, RotationState>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.last.as_ref().is_some_and(|last| same_rotation(last, states)) {
            return;
        }
        let snapshot = RotationSnapshot {
            elapsed,
            states: states.clone(),
        };
        inner.max_out = inner.max_out.max(snapshot.out_of_rotation().len());
        inner.last = Some(states.clone());
        if inner.history.len() == HISTORY_LIMIT {
            inner.history.pop_front();
        }
        inner.history.push_back(snapshot);
    }

    /// Snapshots recorded since the start (or the last reset), oldest first.
    pub(crate) fn history(&self) -> Vec<RotationSnapshot> {
        self.inner
            .lock()
            .map(|inner| inner.history.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Largest number of instances out of rotation at once since the start (or the last reset).
    pub(crate) fn max_out_of_rotation(&self) -> usize {
        self.inner.lock().map(|inner| inner.max_out).unwrap_or_default()
    }

    /// Forgets the history and starts it again at `elapsed` from `current` (HAProxy's states
    /// read now), or, without them, from the states last polled (up to one poll old).
    pub(crate) fn reset(&self, elapsed: Duration, current: Option<BTreeMap<String, RotationState>>) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.history.clear();
            inner.max_out = 0;
            if let Some(states) = current.or_else(|| inner.last.clone()) {
                inner.max_out = states.values().filter(|s| !s.in_rotation()).count();
                inner.last = Some(states.clone());
                inner.history.push_back(RotationSnapshot { elapsed, states });
            }
        }
    }
}

/// The most members of each target group out of rotation at once (deregistered, draining, or registered but not
/// passing checks), over every state the sandbox read: a safety bound checked across a fleet of groups.
#[derive(Debug, Default)]
pub(crate) struct MostOutPerGroup {
    most: Mutex<Vec<usize>>,
}

impl MostOutPerGroup {
    /// Notes that `out` members of group `index` are out now.
    pub(crate) fn note(&self, index: usize, out: usize) {
        let mut most = self.most.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if most.len() <= index {
            most.resize(index + 1, 0);
        }
        most[index] = most[index].max(out);
    }

    /// The most out at once per group, in group order, since the start or the last [`Self::reset`].
    pub(crate) fn get(&self) -> Vec<usize> {
        self.most
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Starts counting afresh.
    pub(crate) fn reset(&self) {
        self.most
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(admin: AdminState, operational: OperationalState) -> RotationState {
        RotationState {
            admin,
            operational,
            check_status: "L7OK".into(),
            check_code: Some(200),
            check_health: 3,
            haproxy_status: String::new(),
        }
    }

    #[test]
    fn records_changes_and_the_worst_moment() {
        let recorder = RotationRecorder::default();
        let up = state(AdminState::Ready, OperationalState::Up);
        let mut states = BTreeMap::from([("a".to_owned(), up.clone()), ("b".to_owned(), up.clone())]);
        recorder.observe(Duration::ZERO, &states);
        recorder.observe(Duration::from_secs(1), &states);
        assert_eq!(recorder.history().len(), 1, "unchanged states are not recorded twice");
        states.insert("a".into(), state(AdminState::Drain, OperationalState::Up));
        recorder.observe(Duration::from_secs(2), &states);
        states.insert("a".into(), up);
        recorder.observe(Duration::from_secs(3), &states);
        assert_eq!(recorder.history().len(), 3);
        assert_eq!(recorder.max_out_of_rotation(), 1);
        recorder.reset(Duration::from_secs(4), None);
        assert_eq!(recorder.max_out_of_rotation(), 0);
        assert_eq!(recorder.history().len(), 1);
        assert_eq!(
            recorder.history()[0].elapsed,
            Duration::from_secs(4),
            "stamped when reset"
        );

        // Fresh states given at the reset win over the last poll's.
        states.insert("b".into(), state(AdminState::Ready, OperationalState::Down));
        recorder.reset(Duration::from_secs(5), Some(states.clone()));
        assert_eq!(recorder.max_out_of_rotation(), 1);
        assert_eq!(recorder.history()[0].states, states);
    }
}
