//! The statuses this controller wrote and may not have seen back yet.
//!
//! A reconcile reads the plan from the controller's cache, which is fed by a watch. When a
//! round writes the status and asks to come back at once, the next round can start before
//! the watch has delivered that write, and would decide again from the status before it.
//! The engine is safe against that (every action is repeat-safe), but it would write an
//! older status over a newer one. So the controller remembers what it wrote, and which
//! version of the object it had read: while the cache still serves that same version, the
//! written status is the truth; as soon as any other version arrives, the object is.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::api::MaintenancePlanStatus;

#[derive(Debug)]
struct Written {
    /// `metadata.resourceVersion` of the object the round read.
    read_version: Option<String>,
    /// The last status the round wrote.
    status: MaintenancePlanStatus,
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

    /// The status to decide from: the one written by the last round while the object is
    /// still the version that round read, else the object's own.
    pub fn freshest(
        &self,
        uid: &str,
        resource_version: Option<&str>,
        object_status: Option<&MaintenancePlanStatus>,
    ) -> Option<MaintenancePlanStatus> {
        let mut entries = self.lock();
        match entries.get(uid) {
            Some(written) if written.read_version.as_deref() == resource_version => Some(written.status.clone()),
            Some(_) => {
                // A newer version arrived; it contains our write (or something later).
                entries.remove(uid);
                object_status.cloned()
            }
            None => object_status.cloned(),
        }
    }

    /// Remembers a successful status write made after reading `read_version`.
    pub fn wrote(&self, uid: &str, read_version: Option<&str>, status: &MaintenancePlanStatus) {
        self.lock().insert(
            uid.to_owned(),
            Written {
                read_version: read_version.map(str::to_owned),
                status: status.clone(),
            },
        );
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

    #[test]
    fn serves_the_written_status_until_a_new_version_arrives() {
        let cache = StatusCache::default();
        let stale = status(PlanPhase::Pending);
        assert_eq!(cache.freshest("u", Some("1"), Some(&stale)), Some(stale.clone()));

        cache.wrote("u", Some("1"), &status(PlanPhase::Running));
        assert_eq!(
            cache.freshest("u", Some("1"), Some(&stale)).map(|s| s.phase),
            Some(PlanPhase::Running),
            "the watch has not caught up: our write is the truth"
        );

        let newer = status(PlanPhase::Succeeded);
        assert_eq!(cache.freshest("u", Some("2"), Some(&newer)), Some(newer.clone()));
        assert_eq!(
            cache.freshest("u", Some("1"), Some(&stale)),
            Some(stale),
            "the entry is gone once a newer version was seen"
        );
    }

    #[test]
    fn plans_are_kept_apart_and_can_be_forgotten() {
        let cache = StatusCache::default();
        cache.wrote("a", Some("1"), &status(PlanPhase::Running));
        assert_eq!(cache.freshest("b", Some("1"), None), None);
        cache.forget("a");
        assert_eq!(cache.freshest("a", Some("1"), None), None);
    }
}
