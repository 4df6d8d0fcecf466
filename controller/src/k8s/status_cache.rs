//! The statuses this controller wrote and may not have seen back yet.
//!
//! A reconcile reads the plan from the controller's cache, which is fed by a watch. When a
//! round writes the status and asks to come back at once, the next round can start before
//! the watch has delivered that write, and would decide again from the status before it.
//! So the controller remembers what it wrote, from which version of the object, and which
//! versions its writes produced: while the cache still serves one of those versions (the
//! one read, or one of its own writes but the last), the last written status is the truth;
//! as soon as the cache serves the last write, or any version of someone else's, the
//! object is.
//!
//! The round's status writes are conditional on the version its status belongs to (see
//! [`Recorded::version`]): if the plan changed on the apiserver since (a write this cache
//! did not see, a user's edit), the write is refused with a conflict and the round is
//! retried from the newer object. A decision made from an outdated status is therefore
//! never written over a newer one. Before that precondition, `make bench-scale` saw it
//! happen under load: a plan whose instance was already drained was decided again from its
//! status of before the start (found "not a registered target", it failed), and another
//! plan's out instance was briefly missing from its status, which let a third plan take the
//! target group's turn.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::api::MaintenancePlanStatus;

#[derive(Debug)]
struct Written {
    /// `metadata.resourceVersion` of the object the first of these writes was decided from.
    read_version: Option<String>,
    /// The versions these writes produced, oldest first, as the apiserver answered them.
    versions: Vec<String>,
    /// The last status written.
    status: MaintenancePlanStatus,
}

impl Written {
    /// Whether the object at `version` predates the last write: it is the version read, or
    /// one produced by an earlier write of ours.
    fn is_behind(&self, version: Option<&str>) -> bool {
        if version == self.read_version.as_deref() {
            return true;
        }
        let earlier = &self.versions[..self.versions.len().saturating_sub(1)];
        version.is_some_and(|v| earlier.iter().any(|w| w == v))
    }
}

/// The status a round decides from, and the version of the plan that status is part of.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recorded {
    /// The status (None for a plan never written).
    pub status: Option<MaintenancePlanStatus>,
    /// `metadata.resourceVersion` of the plan as it holds `status`: the precondition of the
    /// round's status writes. None when unknown (no precondition).
    pub version: Option<String>,
}

/// Last written status per plan UID.
#[derive(Debug, Default)]
pub struct StatusCache {
    entries: Mutex<HashMap<String, Written>>,
}

impl StatusCache {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Written>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The status to decide from: the one written last while the object the cache serves
    /// (`resource_version`) predates that write, else the object's own.
    pub fn freshest(
        &self,
        uid: &str,
        resource_version: Option<&str>,
        object_status: Option<&MaintenancePlanStatus>,
    ) -> Recorded {
        let mut entries = self.lock();
        let object = || Recorded {
            status: object_status.cloned(),
            version: resource_version.map(str::to_owned),
        };
        match entries.get(uid) {
            Some(written) if written.is_behind(resource_version) => Recorded {
                status: Some(written.status.clone()),
                // No version in the answers (a test double): the write is made as it was read.
                version: written
                    .versions
                    .last()
                    .cloned()
                    .or_else(|| resource_version.map(str::to_owned)),
            },
            Some(_) => {
                // Our last write arrived, or someone else's later one: the object is the truth.
                entries.remove(uid);
                object()
            }
            None => object(),
        }
    }

    /// Remembers a successful status write decided from the object at `read_version` (the
    /// version the round read), which produced `written_version`.
    pub fn wrote(
        &self,
        uid: &str,
        read_version: Option<&str>,
        status: &MaintenancePlanStatus,
        written_version: Option<&str>,
    ) {
        let mut entries = self.lock();
        match entries.get_mut(uid) {
            // Still behind the same writes: one more of ours on top.
            Some(written) if written.is_behind(read_version) => {
                written.versions.extend(written_version.map(str::to_owned));
                written.status = status.clone();
            }
            _ => {
                entries.insert(
                    uid.to_owned(),
                    Written {
                        read_version: read_version.map(str::to_owned),
                        versions: written_version.map(str::to_owned).into_iter().collect(),
                        status: status.clone(),
                    },
                );
            }
        }
    }

    /// Forgets a plan (it was released for deletion).
    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PlanPhase;

    fn status(phase: PlanPhase) -> MaintenancePlanStatus {
        MaintenancePlanStatus {
            phase,
            ..MaintenancePlanStatus::default()
        }
    }

    fn phase(recorded: &Recorded) -> Option<PlanPhase> {
        recorded.status.as_ref().map(|s| s.phase)
    }

    #[test]
    fn serves_the_written_status_until_the_write_arrives() {
        let cache = StatusCache::default();
        let stale = status(PlanPhase::Pending);
        let read = cache.freshest("u", Some("1"), Some(&stale));
        assert_eq!(
            (phase(&read), read.version.as_deref()),
            (Some(PlanPhase::Pending), Some("1"))
        );

        cache.wrote("u", Some("1"), &status(PlanPhase::Running), Some("2"));
        let read = cache.freshest("u", Some("1"), Some(&stale));
        assert_eq!(
            (phase(&read), read.version.as_deref()),
            (Some(PlanPhase::Running), Some("2")),
            "the watch has not caught up: our write is the truth, and the next write is conditional on it"
        );

        let arrived = status(PlanPhase::Running);
        let read = cache.freshest("u", Some("2"), Some(&arrived));
        assert_eq!(read.version.as_deref(), Some("2"));
        let read = cache.freshest("u", Some("1"), Some(&stale));
        assert_eq!(
            (phase(&read), read.version.as_deref()),
            (Some(PlanPhase::Pending), Some("1")),
            "the entry is gone once the write was seen (and a write from this is refused: the plan is at 2)"
        );
    }

    #[test]
    fn an_earlier_write_of_ours_arriving_late_does_not_hide_the_last_one() {
        let cache = StatusCache::default();
        cache.wrote("u", Some("1"), &status(PlanPhase::Running), Some("2"));
        // The next round decided from the cache (the object still at 1) and wrote again.
        let read = cache.freshest("u", Some("1"), Some(&status(PlanPhase::Pending)));
        assert_eq!(read.version.as_deref(), Some("2"));
        cache.wrote("u", Some("1"), &status(PlanPhase::Succeeded), Some("3"));
        // The watch delivers the first write: still behind the second.
        let read = cache.freshest("u", Some("2"), Some(&status(PlanPhase::Running)));
        assert_eq!(
            (phase(&read), read.version.as_deref()),
            (Some(PlanPhase::Succeeded), Some("3"))
        );
        // A round decided from version 2's view of the cache writes on top of 3.
        cache.wrote("u", Some("2"), &status(PlanPhase::Failed), Some("4"));
        let read = cache.freshest("u", Some("3"), Some(&status(PlanPhase::Succeeded)));
        assert_eq!(
            (phase(&read), read.version.as_deref()),
            (Some(PlanPhase::Failed), Some("4"))
        );
        let read = cache.freshest("u", Some("4"), Some(&status(PlanPhase::Failed)));
        assert_eq!(read.version.as_deref(), Some("4"), "caught up: the object");
    }

    #[test]
    fn someone_elses_version_is_the_object() {
        let cache = StatusCache::default();
        cache.wrote("u", Some("1"), &status(PlanPhase::Running), Some("2"));
        let edited = status(PlanPhase::Running);
        let read = cache.freshest("u", Some("7"), Some(&edited));
        assert_eq!(
            (phase(&read), read.version.as_deref()),
            (Some(PlanPhase::Running), Some("7"))
        );
    }

    #[test]
    fn plans_are_kept_apart_and_can_be_forgotten() {
        let cache = StatusCache::default();
        cache.wrote("a", Some("1"), &status(PlanPhase::Running), Some("2"));
        assert_eq!(
            cache.freshest("b", Some("1"), None),
            Recorded {
                status: None,
                version: Some("1".into())
            }
        );
        cache.forget("a");
        assert_eq!(cache.freshest("a", Some("1"), None).status, None);
    }
}
