//! One round of a plan: observe → decide → record → act → record. Shared by the Kubernetes
//! controller and `pitstop run`; they differ only in where the status is stored.

mod act;
mod observe;
mod step;

pub use act::{ActOutcome, act};
pub use observe::{ObserveError, observe};
pub use step::{StatusStore, StepError, StepReport, step};
