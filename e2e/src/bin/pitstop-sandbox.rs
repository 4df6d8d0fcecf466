//! `pitstop-sandbox`: runs a local sandbox fleet (real HAProxy, real backends, an AWS-compatible endpoint) until
//! SIGINT or SIGTERM, printing what a client needs to reach it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pitstop_e2e::sandbox::{Sandbox, SandboxConfig, default_backend_binary, default_haproxy_binary};

/// Command line of the sandbox.
#[derive(Debug, Parser)]
#[command(
    name = "pitstop-sandbox",
    about = "Local ELBv2 + SSM sandbox fleet behind a real HAProxy"
)]
struct Args {
    /// Number of instances.
    #[arg(long, default_value_t = 3)]
    instances: usize,
    /// Number of target groups every instance is registered in (each its own HAProxy frontend and backend).
    #[arg(long, default_value_t = 1)]
    target_groups: usize,
    /// Spare instances, in no target group until `POST /_sandbox/replace` or `/_sandbox/launch` launches one.
    #[arg(long, default_value_t = 0)]
    spare_instances: usize,
    /// Deregistration delay (e.g. `2s`, `500ms`).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    deregistration_delay: Duration,
    /// Health-check interval.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    health_interval: Duration,
    /// Passed checks before a target is healthy.
    #[arg(long, default_value_t = 2)]
    healthy_threshold: u32,
    /// Failed checks before a target is unhealthy.
    #[arg(long, default_value_t = 2)]
    unhealthy_threshold: u32,
    /// How long a reboot keeps an instance down.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    boot_time: Duration,
    /// How long `GetCommandInvocation` answers `InvocationDoesNotExist` after `SendCommand`.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    invocation_visibility_delay: Duration,
    /// The `pitstop-backend` binary (default: next to this one).
    #[arg(long)]
    backend_binary: Option<PathBuf>,
    /// The HAProxy binary (default: /usr/sbin/haproxy).
    #[arg(long)]
    haproxy_binary: Option<PathBuf>,
    /// Work directory to use and keep (default: a temporary one, removed at exit).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// AWS region.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Also write the connection details as JSON to this file once the sandbox is ready.
    #[arg(long)]
    info_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let cfg = SandboxConfig {
        instances: args.instances,
        target_groups: args.target_groups,
        spare_instances: args.spare_instances,
        deregistration_delay: args.deregistration_delay,
        health_interval: args.health_interval,
        healthy_threshold: args.healthy_threshold,
        unhealthy_threshold: args.unhealthy_threshold,
        boot_time: args.boot_time,
        invocation_visibility_delay: args.invocation_visibility_delay,
        backend_binary: args.backend_binary.unwrap_or_else(default_backend_binary),
        haproxy_binary: args.haproxy_binary.unwrap_or_else(default_haproxy_binary),
        work_dir: args.work_dir,
        region: args.region,
        ..SandboxConfig::default()
    };

    // Listen for signals before starting, so a stop during start-up still tears everything down.
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("listen for SIGTERM")?;
    let sandbox = tokio::select! {
        sandbox = Sandbox::start(cfg) => sandbox?,
        _ = tokio::signal::ctrl_c() => return Ok(()),
        _ = terminate.recv() => return Ok(()),
    };

    let info = sandbox.info();
    for (key, value) in &info.env {
        println!("export {key}={value}");
    }
    for (frontend, arn) in info.frontend_urls.iter().zip(&info.target_group_arns) {
        println!("# frontend:      {frontend}");
        println!("# target group:  {arn}");
    }
    println!("# instances:     {}", info.instance_ids.join(" "));
    println!(
        "# admin:         {0}/_sandbox/state {0}/_sandbox/calls {0}/_sandbox/faults",
        info.aws_endpoint_url
    );
    println!(
        "# fleet:         POST {0}/_sandbox/terminate?instance=ID {0}/_sandbox/replace?instance=ID {0}/_sandbox/launch",
        info.aws_endpoint_url
    );
    println!("# work dir:      {}", info.work_dir.display());
    if let Some(path) = &args.info_file {
        let json = serde_json::to_string_pretty(&info).context("encode the info file")?;
        // Written whole under a temporary name, so a reader polling for the file never sees half of it.
        let partial = path.with_extension("partial");
        std::fs::write(&partial, json).with_context(|| format!("write {}", partial.display()))?;
        std::fs::rename(&partial, path).with_context(|| format!("write {}", path.display()))?;
    }
    tracing::info!("sandbox ready; stop with Ctrl-C or SIGTERM");

    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping the sandbox");
    sandbox.shutdown().await
}
