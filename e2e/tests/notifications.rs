//! Webhook notifications of `pitstop run --notify-url`, end to end: the real `pitstop` binary against the sandbox,
//! posting to a real HTTP receiver (axum, on 127.0.0.1) that records every POST.
//!
//! The receiver gets a CloudEvent for the run's start, each instance maintained or failed, and the run's end, each
//! with its own id; a receiver that answers 500 at first gets the same event again (same id) and the plan is not
//! held up; a receiver that is down changes nothing about the plan; a Prometheus alert (a real Prometheus server,
//! `make prometheus`) that holds the next instance is one gate.blocked event.
//!
//! Build the binaries first (`cargo build --workspace --bins`; `make test` does).

mod pitstop_support;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use pitstop::api::{InstancePhase, PlanPhase};
use pitstop_e2e::prometheus::{ALERT_NAME, TestPrometheus};
use pitstop_e2e::sandbox::{Sandbox, SandboxConfig};
use serde_json::Value;

use pitstop_support::{assert_all_in_rotation, instance, plan, start_pitstop_with};

/// One fleet at a time: a 2-core machine running two fleets would measure the machine.
static ONE_FLEET_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One POST the receiver got.
#[derive(Clone, Debug)]
struct Post {
    content_type: String,
    body: Value,
    /// What the receiver answered.
    answered: StatusCode,
}

#[derive(Default)]
struct Inbox {
    posts: Mutex<Vec<Post>>,
    /// POSTs still to be answered 500 (then 204).
    fail_first: AtomicUsize,
}

/// A webhook receiver on 127.0.0.1, recording every POST.
struct Receiver {
    addr: SocketAddr,
    inbox: Arc<Inbox>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// A receiver that answers the first `fail_first` POSTs with 500.
    async fn start(fail_first: usize) -> Self {
        let inbox = Arc::new(Inbox {
            fail_first: AtomicUsize::new(fail_first),
            ..Inbox::default()
        });
        let app = Router::new().route("/hook", post(hook)).with_state(inbox.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver serves");
        });
        Self { addr, inbox, server }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn posts(&self) -> Vec<Post> {
        self.inbox.posts.lock().expect("inbox").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn hook(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let failing = inbox
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let answered = if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    };
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    inbox.posts.lock().expect("inbox").push(Post {
        content_type,
        body,
        answered,
    });
    answered
}

/// Asserts that `event` is a CloudEvent 1.0 in structured mode, from plan `plan` of namespace `default`.
fn assert_cloud_event(post: &Post, plan: &str) {
    assert_eq!(post.content_type, "application/cloudevents+json", "{post:?}");
    let event = &post.body;
    assert_eq!(event["specversion"], "1.0", "{event}");
    assert!(event["id"].as_str().is_some_and(|id| !id.is_empty()), "{event}");
    assert_eq!(event["source"], format!("pitstop/default/{plan}"), "{event}");
    assert!(
        event["type"].as_str().is_some_and(|t| t.starts_with("dev.pitstop.")),
        "{event}"
    );
    let time = event["time"].as_str().expect("time");
    time.parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("time {time} is not RFC 3339: {e}"));
    assert_eq!(event["datacontenttype"], "application/json", "{event}");
    assert_eq!(event["data"]["plan"], plan, "{event}");
    assert_eq!(event["data"]["namespace"], "default", "{event}");
    if let Some(subject) = event.get("subject") {
        assert_eq!(event["data"]["instance"], *subject, "{event}");
    }
}

/// `(type, subject)` of each event, in the order received.
fn kinds(posts: &[Post]) -> Vec<(String, Option<String>)> {
    posts
        .iter()
        .map(|p| {
            (
                p.body["type"].as_str().unwrap_or_default().to_owned(),
                p.body["subject"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_gets_a_cloud_event_for_the_run_each_instance_and_the_end() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)");
    let ids = sandbox.instance_ids();
    let receiver = Receiver::start(0).await;
    // The last instance's maintenance fails: an instance.failed event, and a run that ends Failed.
    let failing = ids.last().expect("instances").clone();
    sandbox
        .faults()
        .set_command_failure(&failing, Some(1))
        .expect("fault set");
    let yaml = plan(&sandbox, "notified", &ids, "");
    let url = receiver.url();
    let finished = start_pitstop_with(&sandbox, &yaml, None, &["--notify-url", &url])
        .finish()
        .await;
    assert_eq!(finished.code, Some(1), "the plan failed:\n{}", finished.stderr);
    let status = finished.status("notified");
    assert_eq!(status.phase, PlanPhase::Failed, "{status:#?}");
    assert_eq!(instance(status, &failing).phase, InstancePhase::Failed);

    let posts = receiver.posts();
    println!("{:#?}", kinds(&posts));
    for post in &posts {
        assert_cloud_event(post, "notified");
        assert_eq!(post.answered, StatusCode::NO_CONTENT);
    }
    let mut expected = vec![("dev.pitstop.run.started".to_owned(), None)];
    for id in &ids[..ids.len() - 1] {
        expected.push(("dev.pitstop.instance.maintained".to_owned(), Some(id.clone())));
    }
    expected.push(("dev.pitstop.instance.failed".to_owned(), Some(failing.clone())));
    expected.push(("dev.pitstop.run.finished".to_owned(), None));
    assert_eq!(kinds(&posts), expected, "every event once, in order");
    let ids_seen: BTreeSet<_> = posts
        .iter()
        .map(|p| p.body["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ids_seen.len(), posts.len(), "distinct ids");
    let failed = &posts[posts.len() - 2].body;
    assert_eq!(failed["data"]["to"], "Failed", "{failed}");
    assert!(
        failed["data"]["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{failed}"
    );
    let end = &posts[posts.len() - 1].body;
    assert_eq!(end["data"]["run"]["phase"], "Failed", "{end}");
    assert_eq!(end["data"]["to"], "Failed", "{end}");

    sandbox
        .faults()
        .set_command_failure(&failing, None)
        .expect("fault cleared");
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_fails_at_first_gets_the_same_event_again_and_the_plan_goes_on() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)");
    let ids = sandbox.instance_ids();
    // Two 500s: the first event's first two attempts fail, its third (the last one allowed) goes through.
    let receiver = Receiver::start(2).await;
    let yaml = plan(&sandbox, "retried", &ids, "");
    let url = receiver.url();
    let finished = start_pitstop_with(&sandbox, &yaml, None, &["--notify-url", &url])
        .finish()
        .await;
    assert_eq!(finished.code, Some(0), "the plan succeeded:\n{}", finished.stderr);
    assert_eq!(finished.status("retried").phase, PlanPhase::Succeeded);
    assert_all_in_rotation(&sandbox).await;

    let posts = receiver.posts();
    println!("{:#?}", kinds(&posts));
    let answered: Vec<_> = posts.iter().map(|p| p.answered).collect();
    assert_eq!(
        answered[..3],
        [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::NO_CONTENT
        ]
    );
    // The retries are the same event: same id, same body.
    assert_eq!(posts[0].body, posts[1].body);
    assert_eq!(posts[1].body, posts[2].body);
    assert_eq!(posts[0].body["type"], "dev.pitstop.run.started");
    let mut attempts: HashMap<&str, usize> = HashMap::new();
    for post in &posts {
        assert_cloud_event(post, "retried");
        *attempts
            .entry(post.body["id"].as_str().unwrap_or_default())
            .or_default() += 1;
    }
    let delivered: Vec<_> = posts.iter().filter(|p| p.answered == StatusCode::NO_CONTENT).collect();
    let mut expected = vec![("dev.pitstop.run.started".to_owned(), None)];
    for id in &ids {
        expected.push(("dev.pitstop.instance.maintained".to_owned(), Some(id.clone())));
    }
    expected.push(("dev.pitstop.run.finished".to_owned(), None));
    let delivered_kinds = kinds(&delivered.into_iter().cloned().collect::<Vec<_>>());
    assert_eq!(delivered_kinds, expected, "each event delivered once");
    assert_eq!(attempts.len(), expected.len(), "one id per event: {attempts:?}");
    assert_eq!(attempts[posts[0].body["id"].as_str().unwrap_or_default()], 3);
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_is_down_does_not_hold_the_plan_up() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)");
    let ids = sandbox.instance_ids();
    // A port that was just free and now has no listener: every POST is refused.
    let url = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        format!("http://{}/hook", listener.local_addr().expect("address"))
    };
    let yaml = plan(&sandbox, "unheard", &ids, "");
    let finished = start_pitstop_with(&sandbox, &yaml, None, &["--notify-url", &url])
        .finish()
        .await;
    assert_eq!(finished.code, Some(0), "the plan succeeded:\n{}", finished.stderr);
    assert_eq!(finished.status("unheard").phase, PlanPhase::Succeeded);
    assert!(
        finished.stderr.contains("notification dropped"),
        "the drops are logged:\n{}",
        finished.stderr
    );
    assert!(
        !finished.stderr.contains(&url),
        "the URL (it may carry a token) is not logged:\n{}",
        finished.stderr
    );
    assert_all_in_rotation(&sandbox).await;
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slack_format_sends_one_text_line_per_event() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)");
    let ids = sandbox.instance_ids();
    let receiver = Receiver::start(0).await;
    // The plan's own spec.notify picks the events; its Secret means nothing to `pitstop run`.
    let yaml = plan(
        &sandbox,
        "chatty",
        &ids[..1],
        "  notify:\n    secretRef:\n      name: unused\n    events: [RunStarted, RunFinished]\n",
    );
    let url = receiver.url();
    let finished = start_pitstop_with(
        &sandbox,
        &yaml,
        None,
        &["--notify-url", &url, "--notify-format", "slack"],
    )
    .finish()
    .await;
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let texts: Vec<_> = receiver
        .posts()
        .iter()
        .map(|p| {
            assert_eq!(p.content_type, "application/json");
            p.body["text"].as_str().expect("a text field").to_owned()
        })
        .collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[0].starts_with("pitstop default/chatty: run started"), "{texts:?}");
    assert!(
        texts[1].starts_with("pitstop default/chatty: run succeeded"),
        "{texts:?}"
    );
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_that_starts_holding_is_one_gate_blocked_event() {
    let _fleet = ONE_FLEET_AT_A_TIME.lock().await;
    let limit = std::time::Duration::from_secs(120);
    let prometheus = TestPrometheus::start()
        .await
        .expect("prometheus starts (`make prometheus`)");
    prometheus.set_alarm(true);
    prometheus.wait_firing(true, limit).await.expect("the alert fires");
    let sandbox = Sandbox::start(SandboxConfig::default())
        .await
        .expect("sandbox starts (haproxy installed? `make haproxy`)");
    let ids = sandbox.instance_ids();
    let receiver = Receiver::start(0).await;
    let gate = format!(
        "  gates:\n    prometheus:\n      url: {}\n      alertNames: ['PitstopTest.*']\n      matchers: ['severity=\"page\"']\n",
        prometheus.url()
    );
    let yaml = plan(&sandbox, "gated", &ids, &gate);
    let url = receiver.url();
    let running = start_pitstop_with(&sandbox, &yaml, None, &["--notify-url", &url]);

    // The alert holds the first instance: the webhook hears it once, however long it holds.
    let deadline = tokio::time::Instant::now() + limit;
    while !receiver
        .posts()
        .iter()
        .any(|p| p.body["type"] == "dev.pitstop.gate.blocked")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no gate.blocked event: {:?}",
            kinds(&receiver.posts())
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    prometheus.set_alarm(false);
    prometheus.wait_firing(false, limit).await.expect("the alert clears");
    let finished = running.finish().await;
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);

    let posts = receiver.posts();
    println!("{:#?}", kinds(&posts));
    for post in &posts {
        assert_cloud_event(post, "gated");
    }
    let mut expected = vec![
        ("dev.pitstop.gate.blocked".to_owned(), Some(ids[0].clone())),
        ("dev.pitstop.run.started".to_owned(), None),
    ];
    for id in &ids {
        expected.push(("dev.pitstop.instance.maintained".to_owned(), Some(id.clone())));
    }
    expected.push(("dev.pitstop.run.finished".to_owned(), None));
    assert_eq!(kinds(&posts), expected);
    let blocked = &posts[0].body["data"];
    assert_eq!(blocked["reason"], "AlertFiring", "{blocked}");
    assert!(
        blocked["message"].as_str().is_some_and(|m| m.contains(ALERT_NAME)),
        "{blocked}"
    );
    sandbox.shutdown().await.expect("sandbox stops");
}
