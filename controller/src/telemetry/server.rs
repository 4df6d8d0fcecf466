//! The HTTP server for Prometheus and the kubelet: `/metrics`, `/healthz`, `/readyz`.

use std::net::SocketAddr;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::health::HealthState;
use super::metrics::Metrics;

/// Content type of `/metrics`: the OpenMetrics text format, which prometheus-client writes.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

#[derive(Clone)]
struct AppState {
    health: HealthState,
    metrics: Metrics,
}

/// The routes, for serving on a listener of one's own or for in-process tests.
pub fn router(health: HealthState, metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { health, metrics })
}

/// Binds `addr` and serves until `shutdown` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    health: HealthState,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("could not listen on {addr} for metrics and health"))?;
    serve_on(listener, health, metrics, shutdown).await
}

/// Serves on a listener already bound (tests bind port 0 and read the port back), until
/// `shutdown` is cancelled; requests in flight then finish.
pub async fn serve_on(
    listener: TcpListener,
    health: HealthState,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(health, metrics))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("metrics and health server failed")
}

async fn metrics_page(State(state): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

async fn healthz(State(state): State<AppState>) -> Response {
    check(state.health.liveness())
}

async fn readyz(State(state): State<AppState>) -> Response {
    check(state.health.readiness())
}

fn check(result: Result<(), String>) -> Response {
    let (status, body) = match result {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    };
    (status, [(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)], body).into_response()
}
