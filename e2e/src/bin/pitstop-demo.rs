//! `pitstop-demo`: the seed's experiment on this machine. A fleet of real backends behind a
//! real HAProxy, a steady load, and `pitstop run` rebooting every instance — or, with
//! `--naive`, the same reboots without draining. Prints what the clients saw.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use pitstop_e2e::experiment::{self, ExperimentConfig, ExperimentResult};
use pitstop_e2e::report::{RunMode, summary_table, write_chart_svg, write_json};

/// Reboot a sandbox fleet under load, with pitstop or naively, and count failed requests.
#[derive(Parser, Debug)]
#[command(name = "pitstop-demo")]
struct Args {
    /// Instances in the fleet.
    #[arg(long, default_value_t = 3)]
    instances: usize,
    /// Target groups every instance serves through (1 to 10), each its own HAProxy frontend under the same load;
    /// pitstop's plan names all of them.
    #[arg(long, default_value_t = 1)]
    target_groups: usize,
    /// Requests per second sent to the load balancer (to each frontend).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Reboot in place, without draining (the seed's first runbook).
    #[arg(long)]
    naive: bool,
    /// The target group's deregistration delay.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    deregistration_delay: Duration,
    /// How long an instance is down when it reboots.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    boot_time: Duration,
    /// Health-check interval (healthy and unhealthy thresholds are 2).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    health_interval: Duration,
    /// Where to write the plan, the report and the chart.
    #[arg(long, default_value = ".work/demo")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("pitstop-demo: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mode = if args.naive { RunMode::Naive } else { RunMode::Pitstop };
    let mode_name = if args.naive { "naive" } else { "pitstop" };
    let out = args.out.join(mode_name);
    let mut config = ExperimentConfig::new(args.instances, args.rate, mode, out.clone());
    config.sandbox.deregistration_delay = args.deregistration_delay;
    config.sandbox.boot_time = args.boot_time;
    config.sandbox.health_interval = args.health_interval;
    config.sandbox.target_groups = args.target_groups;
    eprintln!(
        "starting a {}-instance fleet behind HAProxy in {} target group(s), {} req/s of load on each, maintenance \
         by {mode_name} ...",
        args.instances, args.target_groups, args.rate
    );
    let result = experiment::run(&config).await?;
    let json = out.join("report.json");
    let svg = out.join("chart.svg");
    write_json(&result.report, &json)?;
    write_chart_svg(&result.report, &svg)?;
    print_summary(&result);
    println!("report: {}", json.display());
    println!("chart:  {}", svg.display());
    let failed = result.failed_requests();
    Ok(if args.naive || failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_summary(result: &ExperimentResult) {
    println!();
    println!(
        "{}",
        summary_table(&result.report, Some(result.minimum_time.as_secs_f64()))
    );
    let reboots: Vec<String> = result
        .reboots()
        .iter()
        .map(|(id, count)| format!("{id} x{count}"))
        .collect();
    println!("reboots:            {}", reboots.join(", "));
    println!("most out at once:   {}", result.max_out_of_rotation);
    let maintenance = result.maintenance_time().as_secs_f64();
    let process = result.process_time.as_secs_f64();
    println!(
        "process start to exit: {process:.1} s ({:.1} s of it outside the maintenance time above: start-up, first reads, final status)",
        (process - maintenance).max(0.0)
    );
    println!(
        "AWS API calls:      {} ({:.1} per instance, {} writes)",
        result.aws_calls,
        result.aws_calls as f64 / result.boots_after.len().max(1) as f64,
        result.aws_writes
    );
    if let Some(run) = &result.pitstop {
        println!(
            "pitstop run:        exit code {}, peak memory {}",
            run.exit_code
                .map_or_else(|| "none (killed)".to_owned(), |c| c.to_string()),
            run.peak_rss_kib
                .map_or_else(|| "unknown".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
        );
    }
    if !result.other_frontends.is_empty() {
        let frontends = std::iter::once(&result.report.load).chain(&result.other_frontends);
        for (n, load) in frontends.enumerate() {
            println!(
                "  target group {}:   {} of {} failed ({})",
                n + 1,
                load.totals.failed(),
                load.totals.sent,
                load.url
            );
        }
    }
    println!(
        "failed requests:    {} of {}",
        result.failed_requests(),
        result.sent_requests()
    );
}
