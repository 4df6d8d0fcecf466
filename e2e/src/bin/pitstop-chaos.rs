//! `pitstop-chaos` (`make chaos`): kill -9 and lost answers, over and over, against the sandbox under load, and a
//! table of what they did: double reboots, instances left out, failed requests. Bounded in time.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use pitstop_e2e::chaos::{self, ChaosConfig, Scenario};
use pitstop_e2e::sandbox::Sandbox;

/// Repeat the failures a controller meets and report whether pitstop kept its promise.
#[derive(Parser, Debug)]
#[command(name = "pitstop-chaos")]
struct Args {
    /// Time for each scenario (a run that started within it is finished).
    #[arg(long, default_value = "80s", value_parser = humantime::parse_duration)]
    per_scenario: Duration,
    /// Scenarios to run (default: all).
    #[arg(long, value_enum)]
    scenario: Vec<Scenario>,
    /// Where to write plans, state files and `chaos.json`.
    #[arg(long, default_value = ".work/chaos")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("pitstop-chaos: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let config = ChaosConfig::new(args.per_scenario, args.out.clone());
    anyhow::ensure!(
        config.pitstop_binary.is_file(),
        "{} not found: build it first (`cargo build --workspace --bins`)",
        config.pitstop_binary.display()
    );
    let scenarios = if args.scenario.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenario.clone()
    };
    let sandbox = Sandbox::start(config.sandbox.clone()).await?;
    let mut reports = Vec::new();
    for scenario in scenarios {
        eprintln!("{scenario:?} for {} ...", humantime::format_duration(args.per_scenario));
        match chaos::run_scenario(&sandbox, &config, scenario).await {
            Ok(report) => reports.push(report),
            Err(error) => {
                sandbox.shutdown().await?;
                return Err(error);
            }
        }
    }
    sandbox.shutdown().await?;
    let table = chaos::table(&reports);
    println!("{table}");
    println!("pitstop controller against a real apiserver: `make e2e-kube` (KUBE_APISERVER + ETCD, or KUBECONFIG)");
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("chaos.json"), serde_json::to_string_pretty(&reports)?)?;
    Ok(reports.iter().all(chaos::ScenarioReport::kept_the_promise))
}
