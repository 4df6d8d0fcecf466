//! The terminal summary: what a person reads after a run, and what CI logs keep.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use comfy_table::presets::ASCII_MARKDOWN;
use comfy_table::{CellAlignment, Table};

use super::model::{ordered_instances, ordered_phases};
use super::{Counts, PhaseBand, RunReport};

/// Seconds each instance spent in each phase, summed from its bands.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhaseDurations {
    /// Phase names in display order: pitstop's phases in their natural order, then others alphabetically.
    pub phases: Vec<String>,
    /// One entry per instance, in order of first appearance: its seconds per phase.
    pub instances: Vec<(String, BTreeMap<String, f64>)>,
    /// Seconds from the earliest band start to the latest band end: how long the whole maintenance took.
    pub span_s: f64,
}

impl PhaseDurations {
    /// Total seconds `instance` spent in all its phases (0 for an unknown instance).
    pub fn instance_total_s(&self, instance: &str) -> f64 {
        self.instances
            .iter()
            .find(|(id, _)| id == instance)
            .map(|(_, phases)| phases.values().sum())
            .unwrap_or(0.0)
    }
}

/// Sums the bands per instance and phase.
pub fn phase_durations(bands: &[PhaseBand]) -> PhaseDurations {
    let instances = ordered_instances(bands)
        .into_iter()
        .map(|instance| {
            let mut phases: BTreeMap<String, f64> = BTreeMap::new();
            for band in bands.iter().filter(|b| b.instance_id == instance) {
                *phases.entry(band.phase.clone()).or_default() += band.duration_s();
            }
            (instance, phases)
        })
        .collect();
    let start = bands.iter().map(|b| b.start_s).fold(f64::INFINITY, f64::min);
    let end = bands.iter().map(|b| b.end_s).fold(f64::NEG_INFINITY, f64::max);
    let span_s = if bands.is_empty() { 0.0 } else { (end - start).max(0.0) };
    PhaseDurations {
        phases: ordered_phases(bands),
        instances,
        span_s,
    }
}

/// How the summary names its one maintenance time: from the first instance leaving rotation
/// to the last one back and healthy (the span of the phase bands). The time the pitstop
/// process (or the naive script) ran before and after that is reported apart.
pub const MAINTENANCE_TIME_LABEL: &str = "maintenance time (first instance out to last instance back)";

/// A plain-text summary of `report`: the requests by outcome and connection mode, the 2xx per backend, the seconds
/// each instance spent in each phase, and the total maintenance time against `minimum_s` (the least it could have
/// taken, e.g. the sum of the instances' reboot times), when given.
pub fn summary_table(report: &RunReport, minimum_s: Option<f64>) -> String {
    let load = &report.load;
    let mut out = String::new();
    // Writing to a String cannot fail, so the fmt::Results below are safe to ignore.
    let _ = writeln!(out, "{} (mode: {})", report.title, report.mode);
    let _ = writeln!(
        out,
        "load: {} req/s to {} for {:.1} s, {:.0}% on new connections{}",
        load.rate_per_s,
        load.url,
        load.elapsed_s,
        load.new_connection_share * 100.0,
        if load.stopped_early { " (stopped early)" } else { "" }
    );
    let _ = writeln!(out);

    let mut requests = table(&[
        "connection",
        "sent",
        "2xx",
        "3xx/4xx",
        "5xx",
        "502",
        "503",
        "504",
        "conn. errors",
        "timeouts",
        "dropped",
        "failed",
        "failure rate",
    ]);
    for (name, counts) in [
        ("all", &load.totals),
        ("keep-alive", &load.keep_alive),
        ("new", &load.new_connection),
    ] {
        requests.add_row(counts_row(name, counts));
    }
    let _ = writeln!(out, "{requests}");

    if !load.backends.is_empty() {
        let mut backends = table(&["backend", "2xx", "share of 2xx"]);
        let total: u64 = load.backends.values().sum();
        for (backend, count) in &load.backends {
            backends.add_row(vec![backend.clone(), count.to_string(), percent(*count, total)]);
        }
        let _ = writeln!(out, "\n{backends}");
    }

    let durations = phase_durations(&report.bands);
    if durations.instances.is_empty() {
        let _ = writeln!(out, "\nno instance phases recorded");
    } else {
        let mut header: Vec<&str> = vec!["instance"];
        header.extend(durations.phases.iter().map(String::as_str));
        header.push("total");
        let mut phases = table(&header);
        for (instance, seconds) in &durations.instances {
            let mut row = vec![instance.clone()];
            row.extend(
                durations
                    .phases
                    .iter()
                    .map(|phase| seconds.get(phase).map(|s| format!("{s:.1}")).unwrap_or_default()),
            );
            row.push(format!("{:.1}", durations.instance_total_s(instance)));
            phases.add_row(row);
        }
        let _ = writeln!(out, "\nseconds per phase\n{phases}");
    }

    let _ = write!(out, "\n{MAINTENANCE_TIME_LABEL}: {:.1} s", durations.span_s);
    match minimum_s {
        Some(minimum) if minimum > 0.0 => {
            let _ = write!(
                out,
                " (minimum {minimum:.1} s: {:+.1} s, {:.2}x)",
                durations.span_s - minimum,
                durations.span_s / minimum
            );
        }
        Some(minimum) => {
            let _ = write!(out, " (minimum {minimum:.1} s)");
        }
        None => {}
    }
    out.push('\n');
    out
}

/// A table in Markdown's pipe syntax: plain ASCII that reads well in a terminal, a CI log and an issue alike.
fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(ASCII_MARKDOWN).set_header(header.to_vec());
    // Numbers read best right-aligned; the first column holds names.
    for index in 1..header.len() {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

fn counts_row(name: &str, counts: &Counts) -> Vec<String> {
    let completed = counts.completed();
    vec![
        name.to_string(),
        counts.sent.to_string(),
        counts.success.to_string(),
        counts.other.to_string(),
        counts.server_errors.to_string(),
        counts.status_502.to_string(),
        counts.status_503.to_string(),
        counts.status_504.to_string(),
        counts.connection_errors.to_string(),
        counts.timeouts.to_string(),
        counts.dropped.to_string(),
        counts.failed().to_string(),
        percent(counts.failed(), completed),
    ]
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".to_string()
    } else {
        format!("{:.3}%", part as f64 * 100.0 / whole as f64)
    }
}
