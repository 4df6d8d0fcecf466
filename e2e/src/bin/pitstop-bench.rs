//! `pitstop-bench`: the demo's experiment at several fleet sizes and load rates, with pitstop
//! and naively, printing the figures (failed requests, time against the fleet's minimum, AWS
//! calls per instance, the controller's peak memory). Figures, not assertions.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use pitstop_e2e::experiment::{self, ExperimentConfig};
use pitstop_e2e::report::{RunMode, write_chart_svg, write_json};

/// Benchmark pitstop against naive reboots on sandbox fleets.
#[derive(Parser, Debug)]
#[command(name = "pitstop-bench")]
struct Args {
    /// Cases as INSTANCES@RATE, e.g. `3@200 10@1000`.
    #[arg(default_values_t = ["3@200".to_owned(), "10@1000".to_owned()])]
    cases: Vec<String>,
    /// Only pitstop, no naive runs.
    #[arg(long)]
    pitstop_only: bool,
    /// Where to write each run's report and chart.
    #[arg(long, default_value = ".work/bench")]
    out: PathBuf,
    /// `pitstop run --poll-interval`: pitstop's own default unless given (the sandbox's phases
    /// take seconds where AWS's take minutes, so a shorter poll shows the time it could reach,
    /// at the cost of more calls).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    poll_interval: std::time::Duration,
    /// The plan's `maxUnavailable` (a count, or a percentage such as `30%`); pitstop runs only.
    /// The minimum time is then that of waves of this size.
    #[arg(long)]
    max_unavailable: Option<String>,
}

/// How many instances `max_unavailable` lets out at once in a fleet of `instances`.
fn wave_size(max_unavailable: Option<&str>, instances: usize) -> anyhow::Result<usize> {
    let Some(value) = max_unavailable else {
        return Ok(1);
    };
    let size = match value.strip_suffix('%') {
        Some(percent) => instances * percent.parse::<usize>()? / 100,
        None => value.parse()?,
    };
    Ok(size.clamp(1, instances.max(1)))
}

fn parse_case(case: &str) -> anyhow::Result<(usize, f64)> {
    let (instances, rate) = case
        .split_once('@')
        .ok_or_else(|| anyhow::anyhow!("case {case:?} is not INSTANCES@RATE"))?;
    Ok((instances.parse()?, rate.parse()?))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pitstop-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    let mut breakdowns = Vec::new();
    for case in &args.cases {
        let (instances, rate) = parse_case(case)?;
        let wave = wave_size(args.max_unavailable.as_deref(), instances)?;
        let modes: &[RunMode] = if args.pitstop_only || args.max_unavailable.is_some() {
            &[RunMode::Pitstop]
        } else {
            &[RunMode::Pitstop, RunMode::Naive]
        };
        for mode in modes {
            let name = if *mode == RunMode::Pitstop { "pitstop" } else { "naive" };
            let out = args.out.join(format!("{instances}x{rate}-{name}"));
            eprintln!("running {name} on {instances} instances at {rate} req/s ...");
            let mut config = ExperimentConfig::new(instances, rate, *mode, out.clone());
            config.poll_interval = args.poll_interval;
            if let Some(max) = &args.max_unavailable {
                config.extra_spec = format!("  maxUnavailable: {max:?}\n");
            }
            let result = experiment::run(&config).await?;
            // The fleet's minimum for waves of `wave` instances (one at a time without maxUnavailable).
            let waves = instances.div_ceil(wave) as f64;
            let minimum = result.minimum_time.as_secs_f64() / instances.max(1) as f64 * waves;
            if *mode == RunMode::Pitstop {
                // The fleet has one target group; a tick is one poll interval of the process's life.
                let ticks = result.process_time.as_secs_f64() / args.poll_interval.as_secs_f64().max(f64::EPSILON);
                let health_reads = result
                    .aws_calls_by_operation
                    .get("DescribeTargetHealth")
                    .copied()
                    .unwrap_or_default();
                breakdowns.push(format!(
                    "{instances} instances: {}; DescribeTargetHealth per target group per tick: {:.2} ({health_reads} in {ticks:.0} ticks)",
                    result
                        .aws_calls_by_operation
                        .iter()
                        .map(|(operation, calls)| format!("{operation} {:.1}", *calls as f64 / instances.max(1) as f64))
                        .collect::<Vec<_>>()
                        .join(", "),
                    health_reads as f64 / ticks.max(1.0),
                ));
            }
            write_json(&result.report, &out.join("report.json"))?;
            write_chart_svg(&result.report, &out.join("chart.svg"))?;
            let totals = &result.report.load.totals;
            rows.push(format!(
                "| {name:<7} | {instances:>9} | {rate:>6} | {:>8} | {:>6} | {:>6} | {:>7.1} | {:>10.1} | {:>7.1} | {:>5.2}x | {:>10.1} | {:>8} |",
                totals.sent,
                totals.failed(),
                result.max_out_of_rotation,
                result.maintenance_time().as_secs_f64(),
                result.process_time.as_secs_f64(),
                minimum,
                result.maintenance_time().as_secs_f64() / minimum.max(f64::EPSILON),
                result.aws_calls as f64 / instances.max(1) as f64,
                result
                    .pitstop
                    .as_ref()
                    .and_then(|p| p.peak_rss_kib)
                    .map_or_else(|| "-".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
            ));
        }
    }
    println!(
        "| mode    | instances |  req/s | requests | failed | most out | time, s | process, s | min., s | ratio  | AWS calls/instance | peak RSS |"
    );
    println!(
        "|---------|-----------|--------|----------|--------|----------|---------|------------|---------|--------|------------|----------|"
    );
    for row in rows {
        println!("{row}");
    }
    println!();
    println!("time: the maintenance time, from the first instance out to the last instance back; ratio: time / min.");
    println!(
        "most out: the most instances HAProxy saw out of rotation at once; min.: the fleet's least time {}.",
        match &args.max_unavailable {
            Some(max) => format!("in waves of maxUnavailable {max}"),
            None => "one instance at a time".to_owned(),
        }
    );
    println!("process: the pitstop process (or naive script) from start to exit, start-up and final output included.");
    println!(
        "pitstop polled every {}; its AWS calls per instance, by operation:",
        humantime::format_duration(args.poll_interval)
    );
    for breakdown in breakdowns {
        println!("  {breakdown}");
    }
    Ok(())
}
