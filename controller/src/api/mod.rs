//! The `MaintenancePlan` custom resource: spec, status and their validation.

pub mod schedule;
pub mod spec;
pub mod status;
pub mod validate;

pub use spec::{CommandSpec, MaintenancePlan, MaintenancePlanSpec, OnFailure, Preflight, Schedule, Timeouts};
pub use status::{Condition, InstancePhase, InstanceStatus, MaintenancePlanStatus, PlanPhase, RunRecord};
