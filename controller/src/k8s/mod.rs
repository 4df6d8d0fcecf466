//! The Kubernetes side: a controller over MaintenancePlans.
//!
//! Each reconcile is a short pipeline, one file a step: [`reconcile`] reads the object
//! through a [`kube::core::DeserializeGuard`], lets the [`finalizer`] decide between a
//! round and the clean-up of a deleted plan, runs one [`crate::engine::step`] with the
//! status written by server-side apply ([`status_store`]), and records what happened as
//! Events ([`events`]). [`policy`] turns the result or the [`error`] into when to come
//! back; [`controller`] wires it all into a kube-runtime `Controller`.

pub mod args;
pub mod auto_scaling_undo;
pub mod aws_condition;
mod backoff;
mod change_ticks;
pub mod cleanup;
pub mod context;
pub mod controller;
pub mod error;
pub mod events;
pub mod finalizer;
pub mod global_stop;
pub mod notify;
pub mod policy;
mod policy_tags;
pub mod reconcile;
pub mod recovery;
mod round_inputs;
pub mod status_cache;
pub mod status_store;
pub mod target_group_lock;
pub mod tenancy;

pub use args::ControllerArgs;
pub use context::{Clock, Context, MANAGER};
pub use controller::run;
pub use error::{Error, ErrorKind};
pub use finalizer::FINALIZER;
pub use policy::error_policy;
pub use reconcile::reconcile;
