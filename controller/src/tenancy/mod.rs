//! Multi-tenancy: whether a MaintenancePlan may have the controller act for it at all.
//!
//! Whoever may create a MaintenancePlan in a namespace asks the controller to use *its*
//! AWS credentials (a confused deputy, if nothing stops it). [`evaluate`] decides, from the
//! namespace's [`crate::api::MaintenancePolicy`] objects (owned by the platform team), or the
//! controller's [`DefaultPolicy`] when none selects the namespace, whether a plan's target
//! group, region, account and SSM documents are allowed. It is pure, and runs before the
//! controller reads or changes anything on AWS for the plan. A policy may also ask for tags
//! on the plan's target groups and instances: [`check_tags`] decides those from the tags the
//! controller read (the only AWS calls made for a plan not yet allowed, and read-only).

mod evaluate;
mod glob;
mod tags;

pub use evaluate::{Allowance, Allowed, NamespaceView, Refusal, evaluate, selects};
pub use tags::{SeenTags, TagConditions, check as check_tags};

/// What the plans of a namespace that no MaintenancePolicy selects may do.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DefaultPolicy {
    /// Only the built-in graceful reboot (no `maintenance`) and `AWS-RunPatchBaseline`,
    /// with no verification command and no free-form `commands`, on any target group.
    #[default]
    Restricted,
    /// Anything, as before policies existed: any document, any parameters, free-form
    /// commands included. For single-tenant clusters, where everyone who may create a plan
    /// may also run code as root on every instance the controller's IAM role reaches.
    Unrestricted,
}
