//! The metrics and health server over real HTTP: bound to 127.0.0.1:0, asked with plain
//! HTTP/1.1 requests on a TCP socket. Every wait is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use pitstop::api::{InstancePhase, PlanPhase};
use pitstop::aws::AwsErrorKind;
use pitstop::machine::Transition;
use pitstop::telemetry::{self, HealthState, Metrics, OPENMETRICS_CONTENT_TYPE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

struct Reply {
    status: u16,
    content_type: Option<String>,
    body: String,
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&raw).into_owned())
    };
    let raw = match tokio::time::timeout(WAIT, exchange).await {
        Ok(Ok(raw)) => raw,
        Ok(Err(error)) => panic!("GET {path}: {error}"),
        Err(_) => panic!("GET {path}: no answer in time"),
    };
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("GET {path}: no status line in {raw:?}"));
    let content_type = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-type")
            .then(|| value.trim().to_owned())
    });
    Reply {
        status,
        content_type,
        body: dechunk(body),
    }
}

/// Undoes `Transfer-Encoding: chunked` if the body looks chunked, else returns it as is.
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return body.to_owned();
        };
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_owned();
        };
        if size == 0 {
            return out;
        }
        let Some(chunk) = after.get(..size) else {
            return body.to_owned();
        };
        out.push_str(chunk);
        rest = after.get(size..).unwrap_or("").trim_start_matches("\r\n");
    }
}

struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

async fn start(health: HealthState, metrics: Metrics) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(telemetry::serve_on(listener, health, metrics, shutdown.clone()));
    Server { addr, shutdown, task }
}

impl Server {
    async fn stop(self) {
        self.shutdown.cancel();
        match tokio::time::timeout(WAIT, self.task).await {
            Ok(Ok(Ok(()))) => {}
            other => panic!("server did not stop cleanly: {other:?}"),
        }
    }
}

#[tokio::test]
async fn metrics_are_served_as_openmetrics_with_the_registered_series() {
    let metrics = Metrics::new();
    metrics.set_plan_phase("default/patch-web", Some(PlanPhase::Running));
    metrics.observe_transition(
        &Transition::instance(
            "i-0abc",
            InstancePhase::Draining,
            InstancePhase::Rebooting,
            "Drained",
            "drained",
        ),
        Some(Duration::from_secs(12)),
    );
    metrics.aws_call("SendCommand", Err(AwsErrorKind::Throttled));
    metrics.reconciled();
    metrics.reconcile_error("aws");
    metrics.set_leader(true);
    let server = start(HealthState::new(Duration::from_secs(60)), metrics.clone()).await;

    let reply = get(server.addr, "/metrics").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type.as_deref(), Some(OPENMETRICS_CONTENT_TYPE));
    for line in [
        "pitstop_plans{phase=\"Running\"} 1",
        "pitstop_plans{phase=\"Pending\"} 0",
        "pitstop_instance_transitions_total{to=\"Rebooting\",reason=\"Drained\"} 1",
        "pitstop_phase_duration_seconds_count{phase=\"Draining\"} 1",
        "pitstop_aws_calls_total{operation=\"SendCommand\"} 1",
        "pitstop_aws_errors_total{operation=\"SendCommand\",kind=\"throttled\"} 1",
        "pitstop_aws_throttled_total{operation=\"SendCommand\"} 1",
        "pitstop_reconciles_total 1",
        "pitstop_reconcile_errors_total{kind=\"aws\"} 1",
        "pitstop_leader 1",
    ] {
        assert!(
            reply.body.lines().any(|l| l == line),
            "missing {line:?} in\n{}",
            reply.body
        );
    }
    assert!(reply.body.ends_with("# EOF\n"), "{}", reply.body);

    // The page is computed per scrape: a later change shows on the next one.
    metrics.set_leader(false);
    let reply = get(server.addr, "/metrics").await;
    assert!(reply.body.lines().any(|l| l == "pitstop_leader 0"), "{}", reply.body);
    server.stop().await;
}

#[tokio::test]
async fn readiness_is_503_until_the_controller_says_ready() {
    let health = HealthState::new(Duration::from_secs(60));
    let server = start(health.clone(), Metrics::new()).await;

    let reply = get(server.addr, "/readyz").await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("not started"), "{}", reply.body);

    health.set_ready(true);
    let reply = get(server.addr, "/readyz").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "ok\n");

    // Readiness says nothing about liveness, and the other way round.
    assert_eq!(get(server.addr, "/healthz").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn liveness_fails_with_a_reason_when_a_loop_dies() {
    let health = HealthState::new(Duration::from_secs(60));
    let server = start(health.clone(), Metrics::new()).await;

    health.heartbeat();
    let reply = get(server.addr, "/healthz").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content_type.as_deref(), Some("text/plain; charset=utf-8"));

    health.mark_dead("controller loop exited: watch stream ended");
    let reply = get(server.addr, "/healthz").await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("watch stream ended"), "{}", reply.body);
    server.stop().await;
}

#[tokio::test]
async fn liveness_fails_when_the_heartbeat_goes_stale_and_recovers_when_paused() {
    // A tiny limit so that "stale" only needs a short real wait; the assertion is about the
    // answer, not about how long it took.
    let health = HealthState::new(Duration::from_millis(1));
    let server = start(health.clone(), Metrics::new()).await;

    health.heartbeat();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let reply = get(server.addr, "/healthz").await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("not ticked"), "{}", reply.body);

    // A standby replica stops its controller loop on purpose.
    health.pause_heartbeat();
    assert_eq!(get(server.addr, "/healthz").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let server = start(HealthState::new(Duration::from_secs(60)), Metrics::new()).await;
    assert_eq!(get(server.addr, "/nope").await.status, 404);
    server.stop().await;
}

#[tokio::test]
async fn serve_reports_an_address_it_cannot_bind() {
    let taken = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = taken.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"));
    let result = tokio::time::timeout(
        WAIT,
        telemetry::serve(
            addr,
            HealthState::new(Duration::from_secs(60)),
            Metrics::new(),
            CancellationToken::new(),
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("serve neither bound nor failed"));
    let error = result.err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(error.contains("could not listen"), "{error}");
}
