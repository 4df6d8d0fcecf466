//! The SVG chart: requests and failures per second, with each instance's phases as shaded bands behind them.
//!
//! Failures get their own right-hand axis: a few 502s a second next to 200 requests a second would otherwise be a
//! flat line on the floor, and those few are what the chart is for.

use std::fs;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::model::{ordered_instances, ordered_phases, phase_rank};
use super::{Counts, ReportError, RunReport};

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 600;
/// Width of the legend column on the right.
const LEGEND_WIDTH: u32 = 240;
const FONT: &str = "sans-serif";
/// Requests per second (the seed's RequestCount).
const REQUESTS_COLOUR: RGBColor = RGBColor(31, 119, 180);
/// Failed requests per second (the seed's HTTPCode_ELB_5XX_Count, plus what a client sees as broken connections).
const FAILED_COLOUR: RGBColor = RGBColor(214, 39, 40);
/// Phase colours, indexed like the known phases: Pending, Draining, Rebooting, Verifying, Registered, Failed.
const PHASE_COLOURS: [RGBColor; 6] = [
    RGBColor(170, 170, 170),
    RGBColor(255, 165, 0),
    RGBColor(148, 103, 189),
    RGBColor(23, 190, 207),
    RGBColor(44, 160, 44),
    RGBColor(140, 20, 20),
];
/// Colours for phases pitstop does not know, e.g. from another tool's plan.
const OTHER_PHASE_COLOURS: [RGBColor; 3] = [RGBColor(188, 189, 34), RGBColor(227, 119, 194), RGBColor(140, 86, 75)];
/// Opacity of the bands, light enough for the series drawn over them to stay readable.
const BAND_ALPHA: f64 = 0.25;

/// Writes the chart of `report` to `path` as an SVG file.
pub fn write_chart_svg(report: &RunReport, path: &Path) -> Result<(), ReportError> {
    let svg = render_chart_svg(report)?;
    fs::write(path, svg).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Draws the chart of `report` and returns the SVG document.
pub fn render_chart_svg(report: &RunReport) -> Result<String, ReportError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        draw(report, &root)?;
        root.present().map_err(chart_error)?;
    }
    Ok(svg)
}

fn draw<DB: DrawingBackend>(report: &RunReport, root: &DrawingArea<DB, Shift>) -> Result<(), ReportError> {
    let load = &report.load;
    // Steps, not a line through midpoints: a count belongs to its whole second, and a line would show failures
    // ramping up in the second before they happened.
    let steps = |value: fn(&Counts) -> u64| -> Vec<(f64, f64)> {
        load.per_second
            .iter()
            .flat_map(|s| {
                let y = value(&s.counts) as f64;
                [(s.second as f64, y), (s.second as f64 + 1.0, y)]
            })
            .collect()
    };
    let requests = steps(|c| c.sent);
    let failed = steps(Counts::failed);
    let failed_markers: Vec<(f64, f64)> = load
        .per_second
        .iter()
        .filter(|s| s.counts.failed() > 0)
        .map(|s| (s.second as f64 + 0.5, s.counts.failed() as f64))
        .collect();

    let band_end = report.bands.iter().map(|b| b.end_s).fold(0.0, f64::max);
    let x_max = load.elapsed_s.max(load.per_second.len() as f64).max(band_end).max(1.0);
    // Headroom above the highest point keeps the series clear of the legend; the floor keeps an idle run readable.
    let y_max = (requests.iter().map(|p| p.1).fold(0.0, f64::max) * 1.15).max(5.0);
    let y2_max = (failed.iter().map(|p| p.1).fold(0.0, f64::max) * 1.15).max(5.0);

    root.fill(&WHITE).map_err(chart_error)?;
    let totals = &load.totals;
    let caption = format!(
        "{} ({}): {} of {} requests failed",
        report.title,
        report.mode,
        totals.failed(),
        totals.completed()
    );
    let below_title = root.titled(&caption, (FONT, 20)).map_err(chart_error)?;
    // The legend gets its own column so that it never hides a series or a band.
    let (plot_area, legend_area) = below_title.split_horizontally(WIDTH - LEGEND_WIDTH);
    let mut chart = ChartBuilder::on(&plot_area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .right_y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(chart_error)?
        .set_secondary_coord(0.0..x_max, 0.0..y2_max);

    // Whole seconds read best, but a run of a few seconds needs tenths to have distinct ticks.
    let x_decimals = if x_max >= 10.0 { 0 } else { 1 };
    let x_formatter = move |v: &f64| format!("{v:.x_decimals$}");
    chart
        .configure_mesh()
        .x_desc("seconds since start of load")
        .y_desc("requests / s")
        .axis_desc_style((FONT, 14))
        // The fine grid would compete with the bands; the main grid lines are enough to read values.
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&x_formatter)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(chart_error)?;
    chart
        .configure_secondary_axes()
        .y_desc("failed requests / s")
        .axis_desc_style((FONT, 14).into_font().color(&FAILED_COLOUR))
        .y_labels(6)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(chart_error)?;

    // Bands first, so that the series are drawn over them. Each instance gets a horizontal lane, top to bottom in
    // the order the plan took them, so overlapping maintenance of two instances stays visible.
    let instances = ordered_instances(&report.bands);
    let lane_height = y_max / instances.len().max(1) as f64;
    let lane_top = |instance: &str| {
        let index = instances.iter().position(|i| i == instance).unwrap_or(0);
        y_max - index as f64 * lane_height
    };
    let mut legend = vec![
        LegendEntry {
            label: "requests / s".into(),
            note: None,
            swatch: Swatch::Line(REQUESTS_COLOUR),
        },
        LegendEntry {
            label: "failed requests / s".into(),
            note: Some("5xx, connection errors, timeouts".into()),
            swatch: Swatch::Line(FAILED_COLOUR),
        },
    ];
    let mut other_phases = 0;
    for phase in ordered_phases(&report.bands) {
        let colour = match PHASE_COLOURS.get(phase_rank(&phase)) {
            Some(colour) => *colour,
            None => {
                other_phases += 1;
                OTHER_PHASE_COLOURS[(other_phases - 1) % OTHER_PHASE_COLOURS.len()]
            }
        };
        let rectangles = report.bands.iter().filter(|b| b.phase == phase).map(|band| {
            let top = lane_top(&band.instance_id);
            Rectangle::new(
                [(band.start_s, top), (band.end_s, top - lane_height)],
                colour.mix(BAND_ALPHA).filled(),
            )
        });
        chart.draw_series(rectangles).map_err(chart_error)?;
        legend.push(LegendEntry {
            label: phase,
            note: None,
            swatch: Swatch::Band(colour),
        });
    }
    // Lane boundaries and names, so that a band can be read without the JSON next to it.
    let lane_line = BLACK.mix(0.3).stroke_width(1);
    chart
        .draw_series(instances.iter().skip(1).map(|instance| {
            let top = lane_top(instance);
            PathElement::new(vec![(0.0, top), (x_max, top)], lane_line)
        }))
        .map_err(chart_error)?;
    let label_style = (FONT, 12).into_font().color(&BLACK.mix(0.7));
    chart
        .draw_series(instances.iter().map(|instance| {
            Text::new(
                instance.clone(),
                (x_max * 0.005, lane_top(instance) - y_max * 0.01),
                label_style.clone(),
            )
        }))
        .map_err(chart_error)?;

    chart
        .draw_series(LineSeries::new(requests, REQUESTS_COLOUR.stroke_width(2)))
        .map_err(chart_error)?;
    chart
        .draw_secondary_series(LineSeries::new(failed, FAILED_COLOUR.stroke_width(2)))
        .map_err(chart_error)?;
    // Markers make a single bad second stand out even when the line around it is flat.
    chart
        .draw_secondary_series(
            failed_markers
                .into_iter()
                .map(|p| Circle::new(p, 3, FAILED_COLOUR.filled())),
        )
        .map_err(chart_error)?;

    draw_legend(&legend_area, &legend)
}

enum Swatch {
    Line(RGBColor),
    Band(RGBColor),
}

struct LegendEntry {
    label: String,
    note: Option<String>,
    swatch: Swatch,
}

fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, entries: &[LegendEntry]) -> Result<(), ReportError> {
    let mut y = 40;
    for entry in entries {
        match entry.swatch {
            Swatch::Line(colour) => area.draw(&PathElement::new(vec![(8, y), (32, y)], colour.stroke_width(2))),
            Swatch::Band(colour) => area.draw(&Rectangle::new([(8, y - 7), (32, y + 7)], colour.mix(0.5).filled())),
        }
        .map_err(chart_error)?;
        area.draw(&Text::new(entry.label.clone(), (40, y - 7), (FONT, 14)))
            .map_err(chart_error)?;
        y += 22;
        if let Some(note) = &entry.note {
            let style = (FONT, 12).into_font().color(&BLACK.mix(0.6));
            area.draw(&Text::new(note.clone(), (40, y - 9), style))
                .map_err(chart_error)?;
            y += 18;
        }
    }
    Ok(())
}

/// plotters' errors are generic over the backend; the report only needs their message.
fn chart_error<E: std::error::Error + Send + Sync>(error: DrawingAreaErrorKind<E>) -> ReportError {
    ReportError::Chart(error.to_string())
}
