//! The `pitstop-load` binary against a local test server: a full run, and a run stopped with SIGINT.

mod load_common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use load_common::{TestServer, always_ok, wait_until};
use pitstop_e2e::report::{RunMode, read_json};

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("load_cli");
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn pitstop_load(server: &TestServer, duration: &str, json: &PathBuf) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pitstop-load"));
    command
        .args([
            "--url",
            &server.url(),
            "--rate",
            "50",
            "--duration",
            duration,
            "--title",
            "cli test",
        ])
        .arg("--json")
        .arg(json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_for_its_duration_and_writes_the_report() {
    let server = TestServer::start(always_ok("i-aaaa1111")).await;
    let json = scratch("full.json");
    let svg = scratch("full.svg");
    let mut command = pitstop_load(&server, "1s", &json);
    command
        .args(["--mode", "naive", "--max-failed", "0"])
        .arg("--svg")
        .arg(&svg);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("joined")
        .expect("ran");

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("cli test (mode: naive)"), "{stdout}");
    let report = read_json(&json).expect("report written");
    assert_eq!(report.mode, RunMode::Naive);
    assert_eq!(report.load.totals.scheduled, 50);
    assert_eq!(report.load.totals.success, report.load.totals.sent);
    assert!(!report.load.stopped_early);
    assert_eq!(server.served().len() as u64, report.load.totals.sent);
    roxmltree::Document::parse(&std::fs::read_to_string(&svg).expect("chart written")).expect("well-formed SVG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_early_and_still_writes_the_report() {
    let server = TestServer::start(always_ok("i-aaaa1111")).await;
    let json = scratch("interrupted.json");
    let child = pitstop_load(&server, "60s", &json).spawn().expect("started");

    wait_until("the first requests", Duration::from_secs(20), || {
        server.served().len() >= 10
    })
    .await;
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill ran");
    assert!(interrupted.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("joined")
        .expect("waited");

    assert!(
        output.status.success(),
        "stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = read_json(&json).expect("report written");
    assert!(report.load.stopped_early);
    assert!(report.load.totals.scheduled < 3000);
    assert_eq!(report.load.totals.completed(), report.load.totals.sent);
    assert!(String::from_utf8_lossy(&output.stdout).contains("(stopped early)"));
}

#[test]
fn refuses_a_remote_url() {
    let output = Command::new(env!("CARGO_BIN_EXE_pitstop-load"))
        .args(["--url", "http://192.0.2.1/", "--duration", "1s"])
        .output()
        .expect("ran");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a loopback address"));
}
