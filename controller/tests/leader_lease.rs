//! Leader election against a mock apiserver (tower-test): the requests the elector makes, in
//! order, and what it concludes from the answers. Every wait is bounded, so a missing
//! request fails the test instead of hanging it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::client::Body;
use pitstop::leader::{LeaderElector, LeaseConfig, Round};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower_test::mock::{self, SendResponse};

const NAMESPACE: &str = "default";
const NAME: &str = "pitstop-leader";
const ME: &str = "pitstop-a";
const OTHER: &str = "pitstop-b";
const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases/pitstop-leader";
const LEASES_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
/// Upper bound of any single wait in these tests.
const WAIT: Duration = Duration::from_secs(30);

type Handle = mock::Handle<Request<Body>, Response<Body>>;

/// One side of the mock: the requests the client under test makes.
struct ApiServer(Handle);

/// A request received by the mock, with its decoded body and the means to answer it.
struct Received {
    method: Method,
    path: String,
    lease: Option<Lease>,
    respond: SendResponse<Response<Body>>,
}

impl Received {
    fn reply(self, status: StatusCode, body: Vec<u8>) {
        let response = Response::builder().status(status).body(Body::from(body));
        match response {
            Ok(response) => self.respond.send_response(response),
            Err(error) => panic!("bad response: {error}"),
        }
    }

    fn reply_lease(self, status: StatusCode, lease: &Lease) {
        let body = serde_json::to_vec(lease).unwrap_or_default();
        self.reply(status, body);
    }

    fn reply_status(self, code: u16, reason: &str) {
        let body = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("mock: {reason}"), "reason": reason, "code": code,
        });
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        self.reply(status, body.to_string().into_bytes());
    }

    /// Answers a create or replace with the object written, at `resource_version`.
    fn reply_written(self, resource_version: &str) -> Lease {
        let mut lease = self
            .lease
            .clone()
            .unwrap_or_else(|| panic!("{} {} had no lease body", self.method, self.path));
        lease.metadata.resource_version = Some(resource_version.to_owned());
        let status = if self.method == Method::POST {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        self.reply_lease(status, &lease);
        lease
    }
}

impl ApiServer {
    async fn next(&mut self) -> Received {
        let next = tokio::time::timeout(WAIT, self.0.next_request()).await;
        let Ok(Some((request, respond))) = next else {
            panic!("the elector made no request in time");
        };
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let bytes = tokio::time::timeout(WAIT, request.into_body().collect_bytes())
            .await
            .unwrap_or_else(|_| panic!("request body of {method} {path} never ended"))
            .unwrap_or_default();
        let lease = if bytes.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{method} {path}: not a Lease: {e}")))
        };
        Received {
            method,
            path,
            lease,
            respond,
        }
    }

    /// Expects the GET of the lease and answers it: the lease, or 404 when there is none.
    async fn reply_get(&mut self, lease: Option<&Lease>) {
        let get = self.expect(Method::GET, LEASE_PATH).await;
        match lease {
            Some(lease) => get.reply_lease(StatusCode::OK, lease),
            None => get.reply_status(404, "NotFound"),
        }
    }

    async fn expect(&mut self, method: Method, path: &str) -> Received {
        let received = self.next().await;
        assert_eq!(
            (&received.method, received.path.as_str()),
            (&method, path),
            "unexpected request"
        );
        received
    }
}

fn mock_client() -> (kube::Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, NAMESPACE), ApiServer(handle))
}

fn config(me: &str) -> LeaseConfig {
    LeaseConfig::new(NAME, NAMESPACE, me)
}

fn elector(client: kube::Client, config: LeaseConfig) -> LeaderElector {
    LeaderElector::new(client, config).unwrap_or_else(|e| panic!("{e}"))
}

/// `seconds` before now, at the microsecond precision a MicroTime keeps on the wire.
fn ago(seconds: i64) -> Timestamp {
    let then = Timestamp::now()
        .checked_sub(SignedDuration::from_secs(seconds))
        .unwrap_or(Timestamp::UNIX_EPOCH);
    Timestamp::from_microsecond(then.as_microsecond()).unwrap_or(then)
}

fn lease(holder: Option<&str>, renewed: Timestamp, transitions: i32, resource_version: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(NAME.to_owned()),
            namespace: Some(NAMESPACE.to_owned()),
            resource_version: Some(resource_version.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            acquire_time: Some(MicroTime(ago(3600))),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }),
    }
}

fn spec(lease: &Lease) -> LeaseSpec {
    lease
        .spec
        .clone()
        .unwrap_or_else(|| panic!("lease without spec: {lease:?}"))
}

/// Runs `future` (the elector's call) and `server` (the mock's script) together, both bounded.
async fn exchange<T, F, S>(future: F, server: S) -> T
where
    F: Future<Output = T>,
    S: Future<Output = ()>,
{
    let (result, ()) = tokio::time::timeout(WAIT, async { tokio::join!(future, server) })
        .await
        .unwrap_or_else(|_| panic!("exchange did not finish in time"));
    result
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

#[tokio::test]
async fn acquires_an_absent_lease_by_creating_it() {
    let (client, mut server) = mock_client();
    let elector = elector(client, config(ME));
    let round = exchange(elector.try_acquire_or_renew(), async {
        server.reply_get(None).await;
        let create = server.expect(Method::POST, LEASES_PATH).await;
        let written = create.lease.clone().unwrap_or_default();
        assert_eq!(written.metadata.name.as_deref(), Some(NAME));
        assert_eq!(written.metadata.resource_version, None);
        let spec = spec(&written);
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
        assert!(spec.renew_time.is_some() && spec.acquire_time == spec.renew_time);
        create.reply_written("1");
    })
    .await;
    assert_eq!(round.ok(), Some(Round::Leading { acquired: true }));
}

#[tokio::test]
async fn renews_its_own_lease_with_the_resource_version_it_read() {
    let (client, mut server) = mock_client();
    let elector = elector(client, config(ME));
    let before = Timestamp::now();
    let current = lease(Some(ME), ago(5), 2, "41");
    let round = exchange(elector.try_acquire_or_renew(), async {
        server.reply_get(Some(&current)).await;
        let replace = server.expect(Method::PUT, LEASE_PATH).await;
        let written = replace.lease.clone().unwrap_or_default();
        assert_eq!(written.metadata.resource_version.as_deref(), Some("41"));
        let (old, new) = (spec(&current), spec(&written));
        assert_eq!(new.holder_identity.as_deref(), Some(ME));
        assert_eq!(new.lease_transitions, Some(2), "a renewal is no transition");
        assert_eq!(new.acquire_time, old.acquire_time, "a renewal keeps the acquire time");
        assert!(new.renew_time.as_ref().is_some_and(|t| t.0 >= before));
        replace.reply_written("42");
    })
    .await;
    assert_eq!(round.ok(), Some(Round::Leading { acquired: false }));
}

#[tokio::test]
async fn a_conflict_on_replace_means_someone_else_won() {
    let (client, mut server) = mock_client();
    let elector = elector(client, config(ME));
    let round = exchange(elector.try_acquire_or_renew(), async {
        let current = lease(Some(ME), ago(1), 0, "7");
        server.reply_get(Some(&current)).await;
        server
            .expect(Method::PUT, LEASE_PATH)
            .await
            .reply_status(409, "Conflict");
    })
    .await;
    assert_eq!(round.ok(), Some(Round::Conflict));
}

#[tokio::test]
async fn a_conflict_on_create_means_someone_else_won() {
    let (client, mut server) = mock_client();
    let elector = elector(client, config(ME));
    let round = exchange(elector.try_acquire_or_renew(), async {
        server.reply_get(None).await;
        server
            .expect(Method::POST, LEASES_PATH)
            .await
            .reply_status(409, "AlreadyExists");
    })
    .await;
    assert_eq!(round.ok(), Some(Round::Conflict));
}

#[tokio::test]
async fn other_errors_are_errors_not_verdicts() {
    let (client, mut server) = mock_client();
    let elector = elector(client, config(ME));
    let round = exchange(elector.try_acquire_or_renew(), async {
        let current = lease(Some(ME), ago(1), 0, "7");
        server.reply_get(Some(&current)).await;
        server
            .expect(Method::PUT, LEASE_PATH)
            .await
            .reply_status(500, "InternalError");
    })
    .await;
    assert!(round.is_err(), "{round:?}");
}

#[tokio::test]
async fn takes_over_an_expired_lease_counting_a_transition() {
    let (client, mut server) = mock_client();
    let elector = elector(client, config(ME));
    let round = exchange(elector.try_acquire_or_renew(), async {
        let current = lease(Some(OTHER), ago(60), 4, "99");
        server.reply_get(Some(&current)).await;
        let replace = server.expect(Method::PUT, LEASE_PATH).await;
        let written = replace.lease.clone().unwrap_or_default();
        assert_eq!(written.metadata.resource_version.as_deref(), Some("99"));
        let new = spec(&written);
        assert_eq!(new.holder_identity.as_deref(), Some(ME));
        assert_eq!(new.lease_transitions, Some(5));
        assert_eq!(new.acquire_time, new.renew_time, "a takeover starts a new tenure");
        replace.reply_written("100");
    })
    .await;
    assert_eq!(round.ok(), Some(Round::Leading { acquired: true }));
}

#[tokio::test]
async fn follows_a_live_lease_of_another_without_writing() {
    let (client, mut server) = mock_client();
    let elector = elector(client, config(ME));
    let round = exchange(elector.try_acquire_or_renew(), async {
        let current = lease(Some(OTHER), ago(1), 4, "99");
        server.reply_get(Some(&current)).await;
    })
    .await;
    assert!(
        matches!(&round, Ok(Round::Following { holder, .. }) if holder == OTHER),
        "{round:?}"
    );
}

#[tokio::test]
async fn release_writes_an_empty_holder_and_an_expired_lease() {
    let (client, mut server) = mock_client();
    let elector = elector(client, config(ME));
    let released = exchange(elector.release(), async {
        let current = lease(Some(ME), ago(1), 3, "12");
        server.reply_get(Some(&current)).await;
        let replace = server.expect(Method::PUT, LEASE_PATH).await;
        let written = replace.lease.clone().unwrap_or_default();
        assert_eq!(written.metadata.resource_version.as_deref(), Some("12"));
        let new = spec(&written);
        assert_eq!(new.holder_identity, None);
        assert_eq!(new.lease_duration_seconds, Some(1));
        assert_eq!(new.lease_transitions, Some(3));
        replace.reply_written("13");
    })
    .await;
    assert_eq!(released.ok(), Some(true));
}

#[tokio::test]
async fn release_leaves_a_lease_of_another_alone() {
    let (client, mut server) = mock_client();
    let elector = elector(client, config(ME));
    let released = exchange(elector.release(), async {
        let current = lease(Some(OTHER), ago(1), 3, "12");
        server.reply_get(Some(&current)).await;
    })
    .await;
    assert_eq!(released.ok(), Some(false));
}

/// A config for the loop tests: the default 15 s lease, but tries every 200 ms so the tests
/// that run on the real clock stay short.
fn fast_config(me: &str) -> LeaseConfig {
    LeaseConfig {
        retry_period: Duration::from_millis(200),
        ..config(me)
    }
}

#[tokio::test]
async fn spawned_elector_leads_renews_and_releases_on_shutdown() {
    let (client, mut server) = mock_client();
    let shutdown = CancellationToken::new();
    let handle = elector(client, fast_config(ME)).spawn(shutdown.clone());
    let mut leadership = handle.leadership();
    assert!(!handle.is_leader());

    server.reply_get(None).await;
    let created = server.expect(Method::POST, LEASES_PATH).await.reply_written("1");
    assert!(within("leadership", leadership.acquired()).await);

    // The next try renews what we created.
    server.reply_get(Some(&created)).await;
    let renew = server.expect(Method::PUT, LEASE_PATH).await;
    assert_eq!(
        renew
            .lease
            .as_ref()
            .and_then(|l| l.metadata.resource_version.as_deref()),
        Some("1")
    );
    let renewed = renew.reply_written("2");

    shutdown.cancel();
    within("stepping down", leadership.lost()).await;
    let get = server.expect(Method::GET, LEASE_PATH).await;
    // The renew round may have been under way when shutdown came; the release reads afresh.
    get.reply_lease(StatusCode::OK, &renewed);
    let release = server.expect(Method::PUT, LEASE_PATH).await;
    let written = release.lease.clone().unwrap_or_default();
    assert_eq!(written.metadata.resource_version.as_deref(), Some("2"));
    assert_eq!(spec(&written).holder_identity, None);
    release.reply_written("3");
    assert!(within("the elector to end", handle.join()).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_renewals_hang_steps_down_at_the_renew_deadline() {
    let (client, mut server) = mock_client();
    let shutdown = CancellationToken::new();
    let config = fast_config(ME);
    let handle = elector(client, config.clone()).spawn(shutdown.clone());
    let mut leadership = handle.leadership();

    let started = tokio::time::Instant::now();
    server.reply_get(None).await;
    server.expect(Method::POST, LEASES_PATH).await.reply_written("1");
    assert!(within("leadership", leadership.acquired()).await);

    // The apiserver stops answering: requests arrive but no response ever comes back.
    let mut unanswered = Vec::new();
    let lost = async {
        loop {
            tokio::select! {
                () = leadership.lost() => break,
                received = server.next() => unanswered.push(received),
            }
        }
    };
    within("stepping down", lost).await;
    // Virtual time, so exact: the flip came at the renew deadline, before the 15 s lease
    // could have run out for the other replicas.
    assert!(started.elapsed() < config.lease_duration, "{:?}", started.elapsed());
    assert!(!handle.is_leader());

    shutdown.cancel();
    drop(server);
    assert!(within("the elector to end", handle.join()).await.is_ok());
    drop(unanswered);
}

#[tokio::test]
async fn a_conflict_while_leading_steps_down_at_once() {
    let (client, mut server) = mock_client();
    let shutdown = CancellationToken::new();
    let handle = elector(client, fast_config(ME)).spawn(shutdown.clone());
    let mut leadership = handle.leadership();

    server.reply_get(None).await;
    let created = server.expect(Method::POST, LEASES_PATH).await.reply_written("1");
    assert!(within("leadership", leadership.acquired()).await);

    server.reply_get(Some(&created)).await;
    server
        .expect(Method::PUT, LEASE_PATH)
        .await
        .reply_status(409, "Conflict");
    within("stepping down", leadership.lost()).await;

    // Next tries: the lease now names another replica, so we stay a follower.
    let taken = lease(Some(OTHER), Timestamp::now(), 1, "3");
    server.reply_get(Some(&taken)).await;
    server.reply_get(Some(&taken)).await;
    server.reply_get(Some(&taken)).await;
    assert!(!leadership.is_leader());
    shutdown.cancel();
    drop(server);
    assert!(within("the elector to end", handle.join()).await.is_ok());
    assert!(!leadership.is_leader());
}

#[tokio::test]
async fn a_follower_takes_over_once_the_lease_is_released() {
    let (client, mut server) = mock_client();
    let shutdown = CancellationToken::new();
    let handle = elector(client, fast_config(ME)).spawn(shutdown.clone());
    let mut leadership = handle.leadership();

    let held = lease(Some(OTHER), Timestamp::now(), 6, "20");
    server.reply_get(Some(&held)).await;
    server.reply_get(Some(&held)).await;
    assert!(!leadership.is_leader());

    // The other replica shut down cleanly and released.
    let mut released = lease(None, Timestamp::now(), 6, "21");
    if let Some(spec) = released.spec.as_mut() {
        spec.lease_duration_seconds = Some(1);
    }
    server.reply_get(Some(&released)).await;
    let take = server.expect(Method::PUT, LEASE_PATH).await;
    let new = spec(take.lease.as_ref().unwrap_or(&Lease::default()));
    assert_eq!(new.holder_identity.as_deref(), Some(ME));
    assert_eq!(new.lease_transitions, Some(7));
    take.reply_written("22");
    assert!(within("leadership", leadership.acquired()).await);

    shutdown.cancel();
    drop(server);
    assert!(within("the elector to end", handle.join()).await.is_ok());
}

/// An in-memory apiserver for one Lease with real optimistic concurrency, shared by several
/// clients; a client can be cut off (its requests are taken but never answered).
#[derive(Default)]
struct LeaseStore {
    lease: Option<Lease>,
    version: u64,
    /// The holder after every successful write, in order.
    history: Vec<Option<String>>,
    cut_off: HashMap<String, bool>,
}

fn serve_store(
    store: Arc<Mutex<LeaseStore>>,
    name: &'static str,
    mut server: ApiServer,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let next = server.0.next_request().await;
            let Some((request, respond)) = next else { return };
            let method = request.method().clone();
            let bytes = request.into_body().collect_bytes().await.unwrap_or_default();
            let received = Received {
                lease: serde_json::from_slice(&bytes).ok(),
                method,
                path: String::new(),
                respond,
            };
            let mut store = store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if store.cut_off.get(name).copied().unwrap_or(false) {
                held.push(received);
                continue;
            }
            match received.method.clone() {
                Method::GET => match store.lease.clone() {
                    Some(lease) => received.reply_lease(StatusCode::OK, &lease),
                    None => received.reply_status(404, "NotFound"),
                },
                Method::POST if store.lease.is_some() => received.reply_status(409, "AlreadyExists"),
                Method::PUT
                    if store.lease.as_ref().and_then(|l| l.metadata.resource_version.clone())
                        != received
                            .lease
                            .as_ref()
                            .and_then(|l| l.metadata.resource_version.clone()) =>
                {
                    received.reply_status(409, "Conflict")
                }
                Method::POST | Method::PUT => {
                    store.version += 1;
                    let written = received.reply_written(&store.version.to_string());
                    let holder = written.spec.as_ref().and_then(|s| s.holder_identity.clone());
                    store.history.push(holder);
                    store.lease = Some(written);
                }
                _ => received.reply_status(405, "MethodNotAllowed"),
            }
        }
    })
}

/// Watches two leadership channels and records whether both ever said "leader" at once.
fn overlap_checker(mut a: watch::Receiver<bool>, mut b: watch::Receiver<bool>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            if *a.borrow_and_update() && *b.borrow_and_update() {
                let _ = tx.send(true);
            }
            tokio::select! {
                changed = a.changed() => if changed.is_err() { return },
                changed = b.changed() => if changed.is_err() { return },
            }
        }
    });
    rx
}

/// Short timings on the real clock (the lease times are wall-clock): a 2 s lease.
fn replica_config(me: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1000),
        retry_period: Duration::from_millis(100),
        ..config(me)
    }
}

#[tokio::test]
async fn two_replicas_never_lead_together_through_a_partition_and_a_handover() {
    let store = Arc::new(Mutex::new(LeaseStore::default()));
    let (client_a, server_a) = mock_client();
    let (client_b, server_b) = mock_client();
    let _serve_a = serve_store(store.clone(), "a", server_a);
    let _serve_b = serve_store(store.clone(), "b", server_b);
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let a = elector(client_a, replica_config("replica-a")).spawn(stop_a.clone());
    let b = elector(client_b, replica_config("replica-b")).spawn(stop_b.clone());
    let overlap = overlap_checker(a.leadership().receiver(), b.leadership().receiver());
    let holder = || {
        store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .lease
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.clone())
    };

    // One of them wins; say it is `first`.
    let (mut la, mut lb) = (a.leadership(), b.leadership());
    within("a leader", async {
        tokio::select! {
            _ = la.acquired() => {},
            _ = lb.acquired() => {},
        }
    })
    .await;
    let (first, second, first_name, stop_first, stop_second) = if a.is_leader() {
        (a, b, "a", stop_a, stop_b)
    } else {
        (b, a, "b", stop_b, stop_a)
    };
    assert!(first.is_leader() && !second.is_leader());

    // Cut the leader off: it must step down by itself, and only then may the other lead.
    store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .cut_off
        .insert(first_name.to_owned(), true);
    within("the cut-off leader to step down", first.leadership().lost()).await;
    within("the other replica to take over", second.leadership().acquired()).await;
    assert!(!first.is_leader());
    let second_name = holder();

    // Reconnect the old leader: it finds the lease taken and stays a follower.
    store
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .cut_off
        .insert(first_name.to_owned(), false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!first.is_leader() && second.is_leader());

    // Clean shutdown of the leader releases the lease; the other takes over well before the
    // 2 s lease could have expired on its own.
    stop_second.cancel();
    assert!(within("release", second.join()).await.is_ok());
    within("takeover after release", first.leadership().acquired()).await;
    let (spec, history) = {
        let store = store.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let spec = store.lease.as_ref().and_then(|l| l.spec.clone()).unwrap_or_default();
        (spec, store.history.clone())
    };
    assert_ne!(spec.holder_identity, second_name);
    assert_eq!(spec.lease_transitions, Some(2), "partition takeover and handover");
    // The handover went through a release (no holder) rather than an expiry.
    let last_of_second = history.iter().rposition(|h| *h == second_name);
    assert_eq!(
        last_of_second.and_then(|i| history.get(i + 1)),
        Some(&None),
        "{history:?}"
    );

    stop_first.cancel();
    assert!(within("release", first.join()).await.is_ok());
    assert!(!*overlap.borrow(), "two replicas believed they led at the same time");
}
