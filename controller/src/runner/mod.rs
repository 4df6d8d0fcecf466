//! Running plans without Kubernetes: the same engine, with the status kept in memory and,
//! optionally, in a state file so an interrupted run resumes where it stopped.

mod driver;
mod group_turns;
mod plan_file;
mod put_back;
mod state_file;

pub use driver::{PlanOutcome, PlanRun, RunEvent, RunObserver, RunOptions, run_plans};
pub use plan_file::{PlanFileError, load_plans, parse_plans};
pub use state_file::{FileStore, FileStoreSet, StateFileError};
