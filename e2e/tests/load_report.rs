//! The report writers on a hand-built report: JSON round trip, a well-formed SVG chart, and the terminal tables.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pitstop_e2e::report::{
    Counts, LoadResult, Outcome, PhaseBand, RunMode, RunReport, SecondCounts, phase_durations, read_json,
    render_chart_svg, summary_table, write_chart_svg, write_json,
};

fn counts(sent: u64, outcomes: &[(Outcome, u64)]) -> Counts {
    let mut counts = Counts::default();
    for _ in 0..sent {
        counts.record_sent();
    }
    for (outcome, n) in outcomes {
        for _ in 0..*n {
            counts.record(*outcome);
        }
    }
    counts
}

fn band(instance: &str, phase: &str, start_s: f64, end_s: f64) -> PhaseBand {
    PhaseBand {
        instance_id: instance.into(),
        phase: phase.into(),
        start_s,
        end_s,
    }
}

/// Six seconds of 100 req/s; i-aaaa is rebooted without draining in seconds 2 and 3 (11 failures), then i-bbbb
/// goes through pitstop's phases.
fn report() -> RunReport {
    let seconds = [
        counts(100, &[(Outcome::Success, 100)]),
        counts(100, &[(Outcome::Success, 100)]),
        counts(
            100,
            &[
                (Outcome::Success, 93),
                (Outcome::ServerError(502), 5),
                (Outcome::ConnectionError, 2),
            ],
        ),
        counts(
            100,
            &[
                (Outcome::Success, 95),
                (Outcome::ServerError(502), 3),
                (Outcome::Timeout, 1),
                (Outcome::Other(404), 1),
            ],
        ),
        counts(100, &[(Outcome::Success, 100)]),
        counts(100, &[(Outcome::Success, 100)]),
    ];
    let mut totals = Counts::default();
    for second in &seconds {
        totals.scheduled += second.scheduled;
        totals.sent += second.sent;
        totals.success += second.success;
        totals.other += second.other;
        totals.server_errors += second.server_errors;
        totals.status_502 += second.status_502;
        totals.connection_errors += second.connection_errors;
        totals.timeouts += second.timeouts;
    }
    RunReport {
        title: "naive reboot & <friends>".into(),
        mode: RunMode::Naive,
        load: LoadResult {
            url: "http://127.0.0.1:8080/".into(),
            rate_per_s: 100.0,
            new_connection_share: 0.5,
            started_unix_ms: 1_700_000_000_000,
            elapsed_s: 6.0,
            stopped_early: false,
            keep_alive: totals.clone(),
            new_connection: Counts::default(),
            totals,
            per_second: seconds
                .into_iter()
                .enumerate()
                .map(|(second, counts)| SecondCounts {
                    second: second as u64,
                    counts,
                })
                .collect(),
            backends: BTreeMap::from([("i-aaaa".to_string(), 450), ("i-bbbb".to_string(), 138)]),
        },
        bands: vec![
            band("i-aaaa", "Rebooting", 2.0, 4.0),
            band("i-bbbb", "Draining", 3.5, 4.5),
            band("i-bbbb", "Rebooting", 4.5, 5.2),
            band("i-bbbb", "Verifying", 5.2, 5.8),
            band("i-bbbb", "Registered", 5.8, 6.0),
        ],
        extra: serde_json::json!({ "plan": "demo" }),
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("load_report");
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir.join(name)
}

#[test]
fn json_round_trips() {
    let report = report();
    let path = scratch("report.json");
    write_json(&report, &path).expect("written");
    assert_eq!(read_json(&path).expect("read back"), report);

    let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    assert_eq!(value["mode"], "naive");
    assert_eq!(value["load"]["per_second"][2]["second"], 2);
    assert_eq!(
        value["load"]["per_second"][2]["status_502"], 5,
        "per-second counts are flat objects"
    );
    assert_eq!(value["bands"][0]["phase"], "Rebooting");
    assert_eq!(value["extra"]["plan"], "demo");
}

#[test]
fn chart_is_well_formed_svg_with_both_series_bands_and_legend() {
    let report = report();
    let path = scratch("chart.svg");
    write_chart_svg(&report, &path).expect("written");
    let svg = std::fs::read_to_string(&path).expect("read");
    assert_eq!(svg, render_chart_svg(&report).expect("rendered"));

    let document = roxmltree::Document::parse(&svg).expect("the chart is well-formed XML");
    let root = document.root_element();
    assert_eq!(root.tag_name().name(), "svg");

    let texts: Vec<String> = document
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or_default().trim().to_string())
        .collect();
    let has_text = |needle: &str| texts.iter().any(|t| t.contains(needle));
    assert!(
        has_text("naive reboot & <friends> (naive): 11 of 600 requests failed"),
        "title, escaped and unescaped again: {texts:?}"
    );
    for label in [
        "requests / s",
        "failed requests / s",
        "5xx, connection errors, timeouts",
        "seconds since start",
        "i-aaaa",
        "i-bbbb",
        "Draining",
        "Rebooting",
    ] {
        assert!(has_text(label), "missing text {label:?} in {texts:?}");
    }
    // Phases are listed in pitstop's order, not alphabetically.
    let position = |needle: &str| texts.iter().position(|t| t == needle).expect("legend entry");
    assert!(position("Draining") < position("Rebooting"));
    assert!(position("Rebooting") < position("Verifying"));

    let polylines: Vec<(String, usize)> = document
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .map(|n| {
            (
                n.attribute("stroke").unwrap_or_default().to_string(),
                n.attribute("points").unwrap_or_default().split_whitespace().count(),
            )
        })
        .collect();
    assert!(
        polylines
            .iter()
            .any(|(colour, points)| colour == "#1F77B4" && *points == 12),
        "requests series: {polylines:?}"
    );
    assert!(
        polylines
            .iter()
            .any(|(colour, points)| colour == "#D62728" && *points == 12),
        "failures series: {polylines:?}"
    );
    // One marker per second with failures.
    let markers = document
        .descendants()
        .filter(|n| n.has_tag_name("circle") && n.attribute("fill") == Some("#D62728"))
        .count();
    assert_eq!(markers, 2);
    // Five bands, each a shaded rectangle in its phase's colour, plus legend swatches.
    let bands = document
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("opacity") == Some("0.25"))
        .count();
    assert_eq!(bands, 5);
}

#[test]
fn chart_of_an_empty_report_still_renders() {
    let report = RunReport {
        title: "nothing yet".into(),
        mode: RunMode::Pitstop,
        load: LoadResult::default(),
        bands: Vec::new(),
        extra: serde_json::Value::Null,
    };
    let svg = render_chart_svg(&report).expect("rendered");
    roxmltree::Document::parse(&svg).expect("well-formed XML");
}

#[test]
fn phase_durations_sum_bands_per_instance() {
    let durations = phase_durations(&report().bands);
    assert_eq!(durations.phases, ["Draining", "Rebooting", "Verifying", "Registered"]);
    let instances: Vec<&str> = durations.instances.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(instances, ["i-aaaa", "i-bbbb"]);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert!(close(durations.instance_total_s("i-aaaa"), 2.0));
    assert!(close(durations.instance_total_s("i-bbbb"), 2.5));
    assert!(close(durations.instances[1].1["Rebooting"], 0.7));
    assert!(close(durations.span_s, 4.0));
}

#[test]
fn summary_table_shows_outcomes_backends_phases_and_minimum() {
    let summary = summary_table(&report(), Some(3.0));
    println!("{summary}");

    // The row whose first cell is `first_cell`, in the first table after the line `after`.
    let row = |after: &str, first_cell: &str| -> Vec<String> {
        let line = summary
            .lines()
            .skip_while(|line| !line.starts_with(after))
            .find(|line| line.split('|').nth(1).is_some_and(|cell| cell.trim() == first_cell))
            .unwrap_or_else(|| panic!("no row {first_cell:?} in\n{summary}"));
        line.split('|')
            .map(|cell| cell.trim().to_string())
            .filter(|cell| !cell.is_empty())
            .collect()
    };
    // sent, 2xx, 3xx/4xx, 5xx, 502, 503, 504, connection errors, timeouts, dropped, failed, failure rate
    assert_eq!(
        row("load:", "all"),
        [
            "all", "600", "588", "1", "8", "8", "0", "0", "2", "1", "0", "11", "1.833%"
        ]
    );
    assert_eq!(row("load:", "i-aaaa"), ["i-aaaa", "450", "76.531%"]);
    // Draining, Rebooting, Verifying, Registered, total.
    assert_eq!(row("seconds per phase", "i-aaaa"), ["i-aaaa", "2.0", "2.0"]);
    assert_eq!(
        row("seconds per phase", "i-bbbb"),
        ["i-bbbb", "1.0", "0.7", "0.6", "0.2", "2.5"]
    );
    assert!(summary.starts_with("naive reboot & <friends> (mode: naive)"));
    assert!(
        summary.contains(
            "maintenance time (first instance out to last instance back): 4.0 s (minimum 3.0 s: +1.0 s, 1.33x)"
        ),
        "{summary}"
    );
}

#[test]
fn summary_table_without_bands_or_minimum() {
    let mut report = report();
    report.bands.clear();
    let summary = summary_table(&report, None);
    assert!(summary.contains("no instance phases recorded"));
    assert!(
        summary
            .trim_end()
            .ends_with("maintenance time (first instance out to last instance back): 0.0 s"),
        "{summary}"
    );
}
