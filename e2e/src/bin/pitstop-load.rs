//! `pitstop-load`: sends steady HTTP load to a URL, prints a summary and optionally writes the report and chart.
//!
//! The sandbox's equivalent of the seed post's `while true; do curl ...; done`, with counts instead of eyeballing.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use pitstop_e2e::load::{self, LoadConfig};
use pitstop_e2e::report::{RunMode, RunReport, summary_table, write_chart_svg, write_json};

/// Send a steady rate of GET requests to a URL and count how they end, second by second.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// URL to load, e.g. the sandbox's HAProxy frontend.
    #[arg(long)]
    url: String,
    /// Requests per second, kept whatever the target does.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// How long to send for (e.g. 30s, 2m); Ctrl-C stops earlier and still writes the report.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Share of requests sent on a fresh connection, 0 to 1; the rest reuse keep-alive connections.
    #[arg(long, default_value_t = 0.5)]
    new_connection_share: f64,
    /// Most requests in flight at once; requests due beyond that are dropped and counted.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// Time allowed for each request (e.g. 2s, 500ms).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the chart as SVG to this file.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Title of the report and chart.
    #[arg(long, default_value = "pitstop-load")]
    title: String,
    /// How the maintenance during this run is done, recorded in the report: pitstop or naive.
    #[arg(long, default_value = "pitstop")]
    mode: RunMode,
    /// Exit with status 1 when more than this many requests failed (5xx, connection errors, timeouts).
    #[arg(long)]
    max_failed: Option<u64>,
    /// Allow a URL whose host is not a loopback address.
    #[arg(long)]
    allow_non_loopback: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let config = LoadConfig {
        url: args.url.clone(),
        rate_per_s: args.rate,
        duration: Some(args.duration),
        new_connection_share: args.new_connection_share,
        max_in_flight: args.max_in_flight,
        request_timeout: args.timeout,
        allow_non_loopback: args.allow_non_loopback,
    };
    let handle = load::start(config)?;
    let stopper = handle.stopper();
    tokio::spawn(async move {
        // If the signal handler cannot be installed the run simply lasts its full duration.
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: stopping and waiting for requests in flight");
            stopper.stop();
        }
    });
    eprintln!(
        "sending {} req/s to {} for {}",
        args.rate,
        args.url,
        humantime::format_duration(args.duration)
    );
    let result = handle.wait().await;

    let failed = result.totals.failed();
    let report = RunReport {
        title: args.title,
        mode: args.mode,
        load: result,
        bands: Vec::new(),
        extra: serde_json::Value::Null,
    };
    if let Some(path) = &args.json {
        write_json(&report, path).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        write_chart_svg(&report, path).with_context(|| format!("writing {}", path.display()))?;
    }
    print!("{}", summary_table(&report, None));
    match args.max_failed {
        Some(max) if failed > max => {
            eprintln!("{failed} requests failed, more than the {max} allowed");
            Ok(ExitCode::FAILURE)
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}
