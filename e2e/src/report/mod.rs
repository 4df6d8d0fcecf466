//! What a load run measured, and three ways to show it: JSON, an SVG chart and a terminal summary.
//!
//! The chart is the sandbox's version of the CloudWatch chart in the seed post (RequestCount against
//! HTTPCode_ELB_5XX_Count), with the instances' maintenance phases drawn behind the two series.

mod chart;
mod json;
mod model;
mod summary;

use std::path::PathBuf;

pub use chart::{render_chart_svg, write_chart_svg};
pub use json::{read_json, write_json};
pub use model::{Counts, LoadResult, Outcome, PhaseBand, RunMode, RunReport, SecondCounts};
pub use summary::{MAINTENANCE_TIME_LABEL, PhaseDurations, phase_durations, summary_table};

/// Why a report could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Reading or writing a file failed.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The report could not be (de)serialised.
    #[error("invalid report JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// plotters failed to draw the chart.
    #[error("cannot draw chart: {0}")]
    Chart(String),
}
