//! What the tests of the pure state machine share: one round of `decide` for a plan of a
//! fixed uid at generation 1.

use jiff::Timestamp;
use pitstop::api::{MaintenancePlanSpec, MaintenancePlanStatus};
use pitstop::machine::{Decision, Observed, PlanView, decide};

/// The plan's `metadata.uid` (part of every command's tag).
pub const UID: &str = "5b1d2a8e-0000-4000-8000-000000000001";

/// One round of the state machine for the plan at generation 1.
pub fn run(
    spec: &MaintenancePlanSpec,
    status: Option<&MaintenancePlanStatus>,
    observed: &Observed,
    now: Timestamp,
) -> Decision {
    decide(
        PlanView {
            uid: UID,
            generation: Some(1),
            spec,
            status,
        },
        observed,
        now,
    )
}
