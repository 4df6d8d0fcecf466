//! A load generator in the spirit of the seed post's curl loop, made steady and countable: `GET` requests at a fixed
//! rate against the sandbox's load balancer, some on keep-alive connections and some on fresh ones, every outcome
//! counted by second and by class so that a run shows exactly when and how requests failed.
//!
//! ```no_run
//! # async fn example() -> Result<(), pitstop_e2e::load::LoadError> {
//! use std::time::Duration;
//! use pitstop_e2e::load::{self, LoadConfig};
//!
//! let handle = load::start(LoadConfig { url: "http://127.0.0.1:8080/".into(), ..LoadConfig::default() })?;
//! // ... run the maintenance, measuring phases from handle.started_at() ...
//! let result = handle.stop().await;
//! println!("{} of {} requests failed", result.totals.failed(), result.totals.sent);
//! # Ok(())
//! # }
//! ```

mod generator;
mod tally;

pub use generator::{
    LoadConfig, LoadError, LoadHandle, MAX_RATE_PER_S, MAX_RUN, SEQUENCE_HEADER, Stopper, run_for, start,
};
pub use tally::{OTHER_BACKENDS, UNKNOWN_BACKEND, backend_from_body};
