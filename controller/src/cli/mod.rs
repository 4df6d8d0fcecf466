//! The `pitstop` command line.

pub mod aws_args;
pub mod crd;
pub mod logging;
pub mod run;
