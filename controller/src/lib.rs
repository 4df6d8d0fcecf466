//! pitstop: zero-downtime maintenance of EC2 instances behind ELBv2 target groups.
//!
//! The reconcile is a short pipeline, one module a step: [`engine::observe`] reads AWS,
//! [`machine::decide`] picks the next step as a pure function, [`engine::act`] makes the
//! AWS call, and the caller records the new status (the Kubernetes controller in [`k8s`],
//! or `pitstop run` in [`cli`]).

pub mod api;
pub mod aws;
pub mod cli;
pub mod crdgen;
pub mod engine;
pub mod gates;
pub mod http_client;
pub mod k8s;
pub mod leader;
pub mod machine;
pub mod notify;
pub mod runner;
pub mod schema_text;
pub mod telemetry;
pub mod tenancy;
