//! A real Prometheus server (Debian's `prometheus` package) for the alert gate's tests: it scrapes a one-metric
//! exporter the test controls and fires `PitstopTestAlert` while that metric is above zero. Everything listens on
//! 127.0.0.1 and stops with the value.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use tokio::process::{Child, Command};

use crate::sandbox::{http_get, tie_to_parent};

/// The alert the rule fires, with the label `severity="page"`.
pub const ALERT_NAME: &str = "PitstopTestAlert";

/// How long Prometheus may take to start answering.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A Prometheus server and the exporter it scrapes.
pub struct TestPrometheus {
    child: Child,
    addr: SocketAddr,
    level: Arc<AtomicU64>,
    exporter: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl TestPrometheus {
    /// Starts the exporter (metric at 0: the alert is quiet) and Prometheus, scraping and evaluating every second;
    /// returns once Prometheus is ready.
    pub async fn start() -> anyhow::Result<Self> {
        let binary =
            which("prometheus").context("prometheus not found: `make prometheus` installs Debian's package")?;
        let level = Arc::new(AtomicU64::new(0));
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("bind the exporter")?;
        let exporter_addr = listener.local_addr()?;
        let app = Router::new()
            .route("/metrics", get(metrics))
            .with_state(Arc::clone(&level));
        let exporter = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });

        let dir = tempfile::tempdir().context("temp dir")?;
        let rules = dir.path().join("rules.yml");
        std::fs::write(
            &rules,
            format!(
                "groups:\n- name: pitstop-test\n  interval: 1s\n  rules:\n  - alert: {ALERT_NAME}\n    expr: pitstop_test_alarm > 0\n    labels:\n      severity: page\n"
            ),
        )?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n- {}\nscrape_configs:\n- job_name: exporter\n  static_configs:\n  - targets: ['{exporter_addr}']\n",
                rules.display()
            ),
        )?;
        // The kernel's choice of port, given back for Prometheus to bind: nothing else here binds fixed ports.
        let addr = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?;
        let mut command = Command::new(binary);
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit());
        tie_to_parent(&mut command);
        let child = command.spawn().context("start prometheus")?;
        let mut prometheus = Self {
            child,
            addr,
            level,
            exporter,
            _dir: dir,
        };
        prometheus.wait_ready().await?;
        Ok(prometheus)
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("prometheus exited at start: {status}");
            }
            if http_get(self.addr, "/-/ready").await.is_ok_and(|r| r.status == 200) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("prometheus not ready after {}s", START_LIMIT.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Its base URL, for `spec.gates.prometheus.url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes the alert fire (`true`) or clear (`false`) from the next scrape and evaluation on.
    pub fn set_alarm(&self, on: bool) {
        self.level.store(u64::from(on), Ordering::SeqCst);
    }

    /// Whether Prometheus lists the alert as firing now.
    pub async fn firing(&self) -> anyhow::Result<bool> {
        let answer = http_get(self.addr, "/api/v1/alerts").await?;
        let body: serde_json::Value = serde_json::from_str(&answer.body)?;
        Ok(body["data"]["alerts"].as_array().is_some_and(|alerts| {
            alerts
                .iter()
                .any(|a| a["labels"]["alertname"] == ALERT_NAME && a["state"] == "firing")
        }))
    }

    /// Waits until the alert's firing state is `firing`.
    pub async fn wait_firing(&self, firing: bool, limit: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        while self.firing().await? != firing {
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "the alert's firing state did not become {firing} within {}s",
                    limit.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }
}

impl Drop for TestPrometheus {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        self.exporter.abort();
    }
}

async fn metrics(State(level): State<Arc<AtomicU64>>) -> String {
    format!(
        "# TYPE pitstop_test_alarm gauge\npitstop_test_alarm {}\n",
        level.load(Ordering::SeqCst)
    )
}

/// The first `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join(name))
        .find(|path| path.is_file())
}
