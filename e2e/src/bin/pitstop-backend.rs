//! `pitstop-backend`: the web service of one sandbox instance, the seed's "Hello, World! From <host>" server.
//!
//! `GET /` answers `Hello, World! From <instance-id>`; `GET /health` answers 200, or 503 while the file given by
//! `--health-file` exists (the sandbox's `unhealthy_after_boot` fault). Listens on 127.0.0.1 only.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use clap::Parser;
use tokio::net::TcpListener;

/// Command line of the backend.
#[derive(Debug, Parser)]
#[command(name = "pitstop-backend", about = "Web service of one pitstop sandbox instance")]
struct Args {
    /// EC2 instance ID this process plays.
    #[arg(long)]
    instance_id: String,
    /// Loopback port to listen on.
    #[arg(long)]
    port: u16,
    /// While this file exists, `/health` answers 503.
    #[arg(long)]
    health_file: Option<PathBuf>,
}

/// What the handlers need.
struct Backend {
    instance_id: String,
    health_file: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = bind(args.port).await?;
    let backend = Arc::new(Backend {
        instance_id: args.instance_id,
        health_file: args.health_file,
    });
    eprintln!(
        "pitstop-backend {} listening on 127.0.0.1:{}",
        backend.instance_id, args.port
    );
    let app = Router::new()
        .route("/", get(hello))
        .route("/health", get(health))
        .with_state(backend);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop_signal())
        .await
        .context("serve")?;
    Ok(())
}

/// Binds the port, retrying for a while: after a reboot the previous process's socket may take a moment to go.
async fn bind(port: u16) -> anyhow::Result<TcpListener> {
    let mut last_error = None;
    for _ in 0..100 {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => return Ok(listener),
            Err(err) => last_error = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last_error
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
    .with_context(|| format!("bind 127.0.0.1:{port}"))
}

async fn hello(State(backend): State<Arc<Backend>>) -> impl IntoResponse {
    let header = HeaderValue::from_str(&backend.instance_id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    (
        [(HeaderName::from_static("x-pitstop-instance"), header)],
        format!("Hello, World! From {}\n", backend.instance_id),
    )
}

async fn health(State(backend): State<Arc<Backend>>) -> impl IntoResponse {
    let sick = match &backend.health_file {
        Some(path) => tokio::fs::try_exists(path).await.unwrap_or(false),
        None => false,
    };
    if sick {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

/// Resolves on SIGTERM or SIGINT, for a clean stop when not killed outright.
async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
