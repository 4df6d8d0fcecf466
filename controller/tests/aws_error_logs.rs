//! No `Debug` dump of an AWS error reaches a log line (text or JSON), a status message or an
//! Event: the real SDK fails (a port nobody listens on, a credential provider that finds
//! nothing) under a reconcile against the mock apiserver, with the controller's log layers
//! capturing everything. Alone in its binary: tracing caches per call site whether anyone
//! listens, and tests running beside it without a subscriber would race that cache.

mod reconcile_support;

use std::sync::Arc;

use pitstop::api::MaintenancePlanStatus;
use pitstop::k8s::aws_condition::CONDITION_STALLED;
use pitstop::k8s::{Context, error_policy};
use reconcile_support::*;
use serde_json::json;

/// The `Stalled` condition's (status, reason, message), if any.
fn stalled(status: Option<&MaintenancePlanStatus>) -> Option<(String, String, String)> {
    status?
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_STALLED)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Captured log output, shared with the subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

/// What `Debug` makes of an SDK error (and what the SDK's `DisplayErrorContext` appends).
const DEBUG_MARKERS: &[&str] = &[
    "DispatchFailure(",
    "ConnectorError {",
    "ServiceError(",
    "ConstructionFailure(",
    "TimeoutError(",
    "ResponseError(",
    "CredentialsNotLoaded(",
    "{ source",
];

fn assert_no_debug(what: &str, text: &str) {
    for marker in DEBUG_MARKERS {
        assert!(!text.contains(marker), "{marker:?} in the {what}:\n{text}");
    }
}

/// The real SDK against a port nobody listens on (a real DispatchFailure), and with a real
/// credential provider that finds nothing: the reconcile's log lines (text and JSON, as the
/// controller writes them) and the plan's status carry the causes in words, not `Debug` dumps.
#[tokio::test(flavor = "current_thread")]
async fn no_debug_dump_of_an_aws_error_reaches_a_log_line_or_the_status() {
    use pitstop::aws::sdk::{SdkProvider, SdkSettings};
    use tracing_subscriber::layer::SubscriberExt;

    let text = Captured::default();
    let json_logs = Captured::default();
    let (text_writer, json_writer) = (text.clone(), json_logs.clone());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info,pitstop=debug"))
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || text_writer.clone()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_writer(move || json_writer.clone()),
        );
    let _logs = tracing::subscriber::set_default(subscriber);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let dir = std::env::temp_dir().join(format!("pitstop-no-debug-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let empty = dir.join("credentials");
    std::fs::write(&empty, "").expect("empty credentials file");
    #[allow(deprecated)] // ProfileFiles is aws-runtime's EnvConfigFiles, a crate pitstop does not depend on
    let files = aws_config::profile::profile_file::ProfileFiles::builder()
        .with_file(aws_config::profile::profile_file::ProfileFileKind::Credentials, &empty)
        .with_file(aws_config::profile::profile_file::ProfileFileKind::Config, &empty)
        .build();
    // The provider reaches for IMDS through the HTTP client it is configured with; pitstop's loader passes its own
    // (the SDK's default client is off), so this one is given the same.
    let provider_config = aws_config::provider_config::ProviderConfig::default()
        .with_http_client(pitstop::aws::sdk::http_client::https_client());
    let no_credentials = aws_config::profile::ProfileFileCredentialsProvider::builder()
        .configure(&provider_config)
        .profile_files(files)
        .profile_name("pitstop-test-missing")
        .build();
    let refused = aws_sdk_ssm::config::SharedCredentialsProvider::new(aws_sdk_ssm::config::Credentials::new(
        "AKIDTEST", "secret", None, None, "test",
    ));
    for (credentials, reason) in [
        (refused, "AWSUnreachable"),
        (
            aws_sdk_ssm::config::SharedCredentialsProvider::new(no_credentials),
            "AWSCredentials",
        ),
    ] {
        let sdk = SdkProvider::new(SdkSettings {
            max_attempts: 1,
            endpoint_url: Some(format!("http://127.0.0.1:{port}")),
            credentials: Some(credentials),
            ..SdkSettings::default()
        });
        let (mut server, client) = ApiServer::start();
        let ctx = Arc::new(Context::with_reporter(
            client,
            Arc::new(sdk),
            POLL,
            "pitstop-test".into(),
        ));
        server.insert(plan_json("web", &IDS, json!({})));
        server.reconcile(&ctx, "web").await.expect("finalizer round");
        for _ in 0..2 {
            let error = server.reconcile(&ctx, "web").await.expect_err("AWS fails");
            error_policy(server.plan("web"), &error, ctx.clone());
        }
        let status = server.status("web").expect("the failure is on the status");
        let (_, shown, message) = stalled(Some(&status)).expect("Stalled");
        assert_eq!(shown, reason);
        println!("{message}");
        assert_no_debug("status message", &message);
        assert_no_debug("status", &serde_json::to_string(&status).unwrap_or_default());
        for call in server.take_calls() {
            if let Call::Event(event) = call {
                assert_no_debug("Event", &event.note);
            }
        }
        server.stop(ctx).await;
    }
    std::fs::remove_dir_all(&dir).ok();

    let (text, json_logs) = (text.text(), json_logs.text());
    assert!(text.contains("reconcile failed"), "the failures were logged:\n{text}");
    assert!(text.contains("Connection refused"), "{text}");
    assert!(text.contains("the credential provider was not enabled"), "{text}");
    assert!(json_logs.lines().count() >= 4, "{json_logs}");
    assert_no_debug("text log", &text);
    assert_no_debug("JSON log", &json_logs);
}
