//! The report as a JSON file: the machine-readable record of a run, for CI artifacts and later comparison.

use std::fs;
use std::path::Path;

use super::{ReportError, RunReport};

/// Writes `report` to `path` as pretty-printed JSON, replacing any existing file.
pub fn write_json(report: &RunReport, path: &Path) -> Result<(), ReportError> {
    let mut text = serde_json::to_string_pretty(report)?;
    text.push('\n');
    fs::write(path, text).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a report written by [`write_json`].
pub fn read_json(path: &Path) -> Result<RunReport, ReportError> {
    let text = fs::read_to_string(path).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(serde_json::from_str(&text)?)
}
