//! The `pitstop` command line.

pub mod crd;
pub mod logging;
pub mod run;
