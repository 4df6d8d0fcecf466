//! The `pitstop` binary.

use clap::{Parser, Subcommand};

use pitstop::cli;

/// Zero-downtime maintenance of EC2 instances behind ELBv2 target groups.
#[derive(Parser, Debug)]
#[command(name = "pitstop", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the MaintenancePlan CustomResourceDefinition as YAML.
    Crd,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => cli::crd::print_crd(),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pitstop: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
