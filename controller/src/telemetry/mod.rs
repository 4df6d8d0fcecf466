//! What the controller tells the outside: Prometheus metrics, and the health and readiness
//! answers the kubelet asks for, on one small HTTP server.

pub mod health;
pub mod metrics;
pub mod server;

pub use health::HealthState;
pub use metrics::Metrics;
pub use server::{OPENMETRICS_CONTENT_TYPE, router, serve, serve_on};
