//! The `pitstop` binary.

use clap::{Parser, Subcommand};

use pitstop::cli;

/// Zero-downtime maintenance of EC2 instances behind ELBv2 target groups.
#[derive(Parser, Debug)]
#[command(name = "pitstop", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    #[command(flatten)]
    aws: cli::aws_args::AwsArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a CustomResourceDefinition as YAML: MaintenancePlan (default) or MaintenancePolicy.
    Crd {
        /// Which CRD.
        #[arg(value_enum, default_value_t = cli::crd::CrdKind::Plan)]
        kind: cli::crd::CrdKind,
    },
    /// Run as a Kubernetes controller over MaintenancePlans.
    Controller(pitstop::k8s::ControllerArgs),
    /// Run the plans in a YAML file now, without Kubernetes, showing progress.
    Run(cli::run::RunArgs),
}

fn main() -> std::process::ExitCode {
    // ring is the only rustls crypto back-end built in (the AWS SDK's aws-lc-rs is off, see
    // aws/sdk/http_client.rs), but rustls refuses to pick one for clients that do not name it
    // as soon as a dependency turns on a second, and kube's would panic on its first HTTPS
    // connection. Name it for the whole process, so that cannot happen silently.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd { kind } => cli::crd::print_crd(kind),
        Command::Controller(args) => run_controller(args, &cli.aws),
        Command::Run(args) => return run_plans(args, &cli.aws),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pitstop: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `pitstop controller`: logs, a Tokio runtime, and the AWS SDK (credentials and region
/// settings from the SDK's usual sources; each plan's region from its target group).
fn run_controller(args: pitstop::k8s::ControllerArgs, aws: &cli::aws_args::AwsArgs) -> anyhow::Result<()> {
    cli::logging::init(args.log_format, "info");
    let aws = std::sync::Arc::new(pitstop::aws::sdk::SdkProvider::new(aws.sdk_settings()));
    tokio::runtime::Runtime::new()?.block_on(pitstop::k8s::run(args, aws))
}

/// `pitstop run`: warnings and errors only on the log (the progress display is the
/// interface), the plans' own exit code.
fn run_plans(args: cli::run::RunArgs, aws: &cli::aws_args::AwsArgs) -> std::process::ExitCode {
    cli::logging::init(cli::logging::LogFormat::Text, "warn");
    let aws = std::sync::Arc::new(pitstop::aws::sdk::SdkProvider::new(aws.sdk_settings()));
    let outcome = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(cli::run::run(args, aws)));
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("pitstop: {error:#}");
            std::process::ExitCode::from(cli::run::EXIT_BAD_INPUT)
        }
    }
}
