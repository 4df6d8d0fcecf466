//! `pitstop run` against AWS failures that waiting does not fix, end to end: the real binary
//! against the sandbox, whose endpoint answers a denied operation with AWS's own AccessDenied
//! answer, and the SDK's real default credential chain with nothing to find. The run ends at
//! once with exit code 4 and one line saying what failed and the usual fix, and no instance is
//! left out of rotation.
//!
//! Build the binaries first (`cargo build --workspace --bins`; `make test` does).

mod pitstop_support;

use std::time::Instant;

use pitstop::cli::run::EXIT_AWS;
use pitstop_e2e::experiment::{default_pitstop_binary, pitstop_run_command, read_to_end};
use pitstop_e2e::sandbox::{CallOutcome, Sandbox, SandboxConfig};
use pitstop_support::{POLL_INTERVAL, RUN_LIMIT, assert_all_in_rotation, plan, run_pitstop};

/// One fleet at a time: a 2-core machine running two fleets would measure the machine.
static ONE_FLEET_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn sandbox() -> Sandbox {
    Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)")
}

/// The last line pitstop wrote on standard error.
fn last_line(stderr: &str) -> &str {
    stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default()
}

/// No `Debug` rendering of an SDK error anywhere in what pitstop printed.
fn assert_no_debug_dump(text: &str) {
    for debug in [
        "DispatchFailure(",
        "ConnectorError {",
        "ServiceError(",
        "{ source",
        "Some(",
    ] {
        assert!(!text.contains(debug), "{debug:?} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_deregister_ends_the_run_at_once_and_leaves_the_instance_in_the_group() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let sandbox = sandbox().await;
    let ids = sandbox.instance_ids();
    sandbox.faults().set_denied("DeregisterTargets", true);
    sandbox.call_log().clear();
    let yaml = plan(&sandbox, "denied", &ids, "");

    let started = Instant::now();
    let run = run_pitstop(&sandbox, &yaml).await;
    println!("pitstop run ended after {:?}", started.elapsed());
    println!("stderr:\n{}", run.stderr);

    assert_eq!(run.code, Some(i32::from(EXIT_AWS)), "stderr:\n{}", run.stderr);
    let line = last_line(&run.stderr);
    let action = "elasticloadbalancing:DeregisterTargets";
    assert!(
        line.starts_with(&format!(
            "pitstop: denied: AWS denied {action} in {} (AccessDenied (HTTP 403): User: ",
            sandbox.region()
        )),
        "{line}"
    );
    assert!(
        line.ends_with(&format!(
            "allow {action} in the IAM policy of the identity pitstop runs as"
        )),
        "{line}"
    );
    assert_no_debug_dump(&run.stderr);

    let writes = sandbox.call_log().writes();
    let denied: Vec<_> = writes.iter().filter(|w| w.operation == "DeregisterTargets").collect();
    assert_eq!(denied.len(), 1, "no retry of a denied call: {writes:?}");
    assert_eq!(
        denied[0].outcome,
        CallOutcome::Error {
            code: "AccessDenied".to_owned()
        }
    );
    assert!(
        writes.iter().all(|w| w.operation != "SendCommand"),
        "nothing else was tried: {writes:?}"
    );
    assert_all_in_rotation(&sandbox).await;
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_end_the_run_at_once_with_the_usual_fix() {
    no_credentials(Imds::Disabled).await;
}

/// The case a first run on a laptop meets: the chain asks the instance metadata service,
/// which refuses (here the sandbox's endpoint, which knows no IMDS path). The SDK's own
/// WARN line for it carries the error's `Debug` form; pitstop keeps it quiet and says it in
/// words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_with_an_imds_that_refuses_say_it_in_words() {
    no_credentials(Imds::Refusing).await;
}

/// What the instance metadata service does in [`no_credentials`].
enum Imds {
    /// `AWS_EC2_METADATA_DISABLED=true`.
    Disabled,
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT` is an HTTP server without the IMDS paths.
    Refusing,
}

async fn no_credentials(imds: Imds) {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let sandbox = sandbox().await;
    let ids = sandbox.instance_ids();
    let binary = default_pitstop_binary();
    assert!(
        binary.is_file(),
        "{} not found: `cargo build --workspace --bins`",
        binary.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let plan_file = dir.path().join("plans.yaml");
    std::fs::write(&plan_file, plan(&sandbox, "nocreds", &ids, "")).expect("plan file");
    let mut command = pitstop_run_command(
        &binary,
        &plan_file,
        &dir.path().join("state.json"),
        POLL_INTERVAL,
        &sandbox,
    );
    // The SDK's default chain with nothing to find: no keys, no profile, no web identity, no
    // container or instance metadata.
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        command.env_remove(name);
    }
    command
        .env_remove("AWS_CONFIG_FILE")
        .env_remove("AWS_SHARED_CREDENTIALS_FILE")
        .env("HOME", dir.path());
    match imds {
        Imds::Disabled => {
            command.env("AWS_EC2_METADATA_DISABLED", "true");
        }
        Imds::Refusing => {
            command
                .env_remove("AWS_EC2_METADATA_DISABLED")
                .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", sandbox.aws_endpoint_url());
        }
    }
    sandbox.call_log().clear();

    let started = Instant::now();
    let mut child = command.spawn().expect("pitstop starts");
    let stdout = read_to_end(child.stdout.take().expect("stdout piped"));
    let stderr = read_to_end(child.stderr.take().expect("stderr piped"));
    let status = tokio::time::timeout(RUN_LIMIT, child.wait())
        .await
        .expect("ends, no retrying forever")
        .expect("exit status");
    let stderr = stderr.await.unwrap_or_default();
    let _ = stdout.await;
    println!("pitstop run ended after {:?}", started.elapsed());
    println!("stderr:\n{stderr}");

    assert_eq!(status.code(), Some(i32::from(EXIT_AWS)), "stderr:\n{stderr}");
    let line = last_line(&stderr);
    assert!(
        line.starts_with(&format!(
            "pitstop: nocreds: no AWS credentials for DescribeTargetHealth in {} (",
            sandbox.region()
        )),
        "{line}"
    );
    assert!(
        line.contains(
            "set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run where an instance role is available"
        ),
        "{line}"
    );
    assert_no_debug_dump(&stderr);
    assert!(
        sandbox
            .call_log()
            .records()
            .iter()
            .all(|r| r.operation != "DescribeTargetHealth"),
        "nothing reached AWS"
    );
    assert_all_in_rotation(&sandbox).await;
    sandbox.shutdown().await.expect("sandbox stops");
}
