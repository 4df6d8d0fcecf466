//! The custom resources: `MaintenancePlan` (spec, status and their validation) and the
//! platform team's `MaintenancePolicy`.

pub mod auto_scaling;
pub mod concurrency;
pub mod gates;
pub mod maintenance_policy;
pub mod notify;
pub mod schedule;
pub mod spec;
pub mod status;
pub mod validate;

pub use auto_scaling::{AutoScalingMode, AutoScalingSpec, InstanceAutoScaling};
pub use concurrency::MaxUnavailable;
pub use gates::{CloudWatchAlarmsGate, Gates, PrometheusGate};
pub use maintenance_policy::{AllowedDocument, MaintenancePolicy, MaintenancePolicySpec, NamespaceSelection};
pub use notify::{Notify, NotifyEvent, NotifyFormat, SecretKeyRef};
pub use spec::{
    Approval, CommandSpec, FleetSelector, MAX_INSTANCES, MaintenancePlan, MaintenancePlanSpec, OnFailure, Order,
    Preflight, Schedule, Timeouts,
};
pub use status::{
    Condition, InstancePhase, InstanceStatus, MaintenancePlanStatus, PlanPhase, RunRecord, SelectionStatus,
    TargetGroupRegistration,
};
