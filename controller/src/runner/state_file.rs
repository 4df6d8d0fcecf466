//! The status store of `pitstop run`: memory, plus an optional JSON file written atomically
//! (temp file, fsync, rename), so that a run killed mid-instance resumes with the same
//! plan UID and status and finds the command it already sent.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::api::MaintenancePlanStatus;
use crate::engine::StatusStore;

/// The state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// I/O.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not a pitstop state file.
    #[error("state file {path} is not readable as pitstop state: {source}")]
    Format {
        /// The file.
        path: String,
        /// Why.
        source: serde_json::Error,
    },
}

/// What the file holds: per plan name, its UID and status.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SavedState {
    /// Plans by name.
    pub plans: BTreeMap<String, SavedPlan>,
}

/// One plan's memory.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SavedPlan {
    /// The UID used in command tags.
    pub uid: String,
    /// The last status written.
    pub status: Option<MaintenancePlanStatus>,
    /// The spec the plan last ran with, to notice a changed plan file.
    #[serde(default)]
    pub spec: Option<serde_json::Value>,
    /// Goes up by one each time the plan file's spec changes, as `metadata.generation` does
    /// in a cluster: a finished plan whose spec changed starts a new run.
    #[serde(default = "first_generation")]
    pub generation: i64,
}

fn first_generation() -> i64 {
    1
}

/// Shared by the stores of all plans of one run.
#[derive(Clone, Debug)]
struct Shared {
    path: Option<PathBuf>,
    state: Arc<Mutex<SavedState>>,
}

/// A plan's status store.
#[derive(Clone, Debug)]
pub struct FileStore {
    shared: Shared,
    plan: String,
}

impl FileStore {
    /// Opens (or starts) the state at `path`; None keeps everything in memory.
    pub fn open(path: Option<&Path>) -> Result<FileStoreSet, StateFileError> {
        let state = match path {
            Some(p) if p.exists() => {
                let shown = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| StateFileError::Io {
                    path: shown.clone(),
                    source,
                })?;
                serde_json::from_str(&text).map_err(|source| StateFileError::Format { path: shown, source })?
            }
            _ => SavedState::default(),
        };
        Ok(FileStoreSet {
            shared: Shared {
                path: path.map(Path::to_path_buf),
                state: Arc::new(Mutex::new(state)),
            },
        })
    }

    /// The generation of `spec` for this plan: the saved one if the spec is the one saved,
    /// else the next (and `spec` becomes the saved one with the next status write).
    pub fn generation_for(&self, spec: &crate::api::MaintenancePlanSpec) -> i64 {
        let current = serde_json::to_value(spec).ok();
        let mut state = self.shared.lock();
        let Some(saved) = state.plans.get_mut(&self.plan) else {
            return first_generation();
        };
        if saved.spec.is_some() && saved.spec != current {
            saved.generation += 1;
        }
        saved.spec = current;
        saved.generation
    }

    /// The status last saved for this plan.
    pub fn current(&self) -> Option<MaintenancePlanStatus> {
        let state = self.shared.lock();
        state.plans.get(&self.plan).and_then(|p| p.status.clone())
    }
}

/// Every plan's store, over one file.
#[derive(Clone, Debug)]
pub struct FileStoreSet {
    shared: Shared,
}

impl FileStoreSet {
    /// The store of `plan`, and the UID it runs under: the saved one when resuming, else
    /// `fresh_uid`.
    pub fn plan(&self, plan: &str, fresh_uid: impl FnOnce() -> String) -> (FileStore, String) {
        let mut state = self.shared.lock();
        let saved = state.plans.entry(plan.to_owned()).or_insert_with(|| SavedPlan {
            uid: fresh_uid(),
            status: None,
            spec: None,
            generation: first_generation(),
        });
        let uid = saved.uid.clone();
        (
            FileStore {
                shared: self.shared.clone(),
                plan: plan.to_owned(),
            },
            uid,
        )
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, SavedState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn persist(&self, state: &SavedState) -> Result<(), StateFileError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let shown = path.display().to_string();
        let io = |source| StateFileError::Io {
            path: shown.clone(),
            source,
        };
        let text = serde_json::to_string_pretty(state).map_err(|source| StateFileError::Format {
            path: shown.clone(),
            source,
        })?;
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl StatusStore for FileStore {
    type Error = StateFileError;

    async fn save(&mut self, status: &MaintenancePlanStatus) -> Result<(), StateFileError> {
        let snapshot = {
            let mut state = self.shared.lock();
            if let Some(plan) = state.plans.get_mut(&self.plan) {
                plan.status = Some(status.clone());
            }
            state.clone()
        };
        self.shared.persist(&snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reopened_state_file_gives_back_uid_and_status() {
        let dir = std::env::temp_dir().join(format!("pitstop-state-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("state.json");
        let set = FileStore::open(Some(&path)).expect("open");
        let (mut store, uid) = set.plan("web", || "uid-1".into());
        assert_eq!(uid, "uid-1");
        let status = MaintenancePlanStatus {
            message: Some("hello".into()),
            ..Default::default()
        };
        store.save(&status).await.expect("save");
        let set = FileStore::open(Some(&path)).expect("reopen");
        let (store, uid) = set.plan("web", || "uid-2".into());
        assert_eq!(uid, "uid-1", "a resumed run keeps its UID, so its command tags match");
        assert_eq!(store.current(), Some(status));
        std::fs::write(&path, "not json").expect("write");
        assert!(matches!(
            FileStore::open(Some(&path)),
            Err(StateFileError::Format { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}
