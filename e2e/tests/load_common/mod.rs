//! A tiny HTTP server on 127.0.0.1 for the load generator's tests: it answers like the seed's sample app
//! (`Hello, World! From i-...`) and misbehaves on request, deciding per request by the generator's sequence number
//! so that tests can predict exactly which requests fail.

#![allow(dead_code)] // Each test crate uses a different part of this module.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONNECTION;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pitstop_e2e::load::SEQUENCE_HEADER;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the server does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with `Hello, World! From <backend>`.
    Ok(String),
    /// An empty response with this status.
    Status(u16),
    /// Close the connection without answering, like a backend that dies under a request.
    Close,
    /// Answer only after this long (longer than the client's timeout, in the tests that use it).
    Hang(Duration),
}

/// Decides the behaviour from the request's sequence number.
pub type Policy = Arc<dyn Fn(u64) -> Behaviour + Send + Sync>;

/// A policy that always answers 200 from `backend`.
pub fn always_ok(backend: &str) -> Policy {
    let backend = backend.to_string();
    Arc::new(move |_| Behaviour::Ok(backend.clone()))
}

/// What the server did with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// The request's sequence number.
    pub seq: u64,
    /// What the server did.
    pub behaviour: Behaviour,
    /// Whether the request asked for `Connection: close`.
    pub connection_close: bool,
}

#[derive(Default)]
struct Stats {
    served: Mutex<Vec<Served>>,
    accepted: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
}

/// A running test server.
pub struct TestServer {
    addr: SocketAddr,
    policy: Policy,
    stats: Arc<Stats>,
    /// Bumped to make every open connection close at once.
    kill: watch::Sender<u64>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl TestServer {
    /// Starts a server on an ephemeral port of 127.0.0.1.
    pub async fn start(policy: Policy) -> TestServer {
        let listener = bind("127.0.0.1:0".parse().expect("valid address")).await;
        let addr = listener.local_addr().expect("bound listener has an address");
        let (kill, _) = watch::channel(0);
        let server = TestServer {
            addr,
            policy,
            stats: Arc::default(),
            kill,
            listener: Mutex::new(None),
        };
        server.accept_on(listener);
        server
    }

    /// The URL to point the generator at.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Stops accepting connections (new ones are refused) and closes every open one: a rebooting host.
    pub async fn stop_listening(&self) {
        let task = self.listener.lock().expect("lock").take();
        if let Some(task) = task {
            task.abort();
            // The listener is closed once the aborted task is gone; only then are new connections refused.
            let _ = task.await;
        }
        self.kill.send_modify(|generation| *generation += 1);
    }

    /// Listens again on the same port.
    pub async fn resume_listening(&self) {
        let listener = bind(self.addr).await;
        self.accept_on(listener);
    }

    /// Every request the server saw, in the order it saw them.
    pub fn served(&self) -> Vec<Served> {
        self.stats.served.lock().expect("lock").clone()
    }

    /// 200s per backend, as the server counted them.
    pub fn ok_by_backend(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for served in self.served() {
            if let Behaviour::Ok(backend) = served.behaviour {
                *counts.entry(backend).or_default() += 1;
            }
        }
        counts
    }

    /// TCP connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::SeqCst)
    }

    /// Most requests the server was handling at once.
    pub fn max_in_flight(&self) -> u64 {
        self.stats.max_in_flight.load(Ordering::SeqCst)
    }

    fn accept_on(&self, listener: TcpListener) {
        let policy = Arc::clone(&self.policy);
        let stats = Arc::clone(&self.stats);
        let kill = self.kill.subscribe();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                stats.accepted.fetch_add(1, Ordering::SeqCst);
                let policy = Arc::clone(&policy);
                let stats = Arc::clone(&stats);
                let mut kill = kill.clone();
                kill.mark_unchanged();
                tokio::spawn(async move {
                    let service = service_fn(move |request| handle(request, Arc::clone(&policy), Arc::clone(&stats)));
                    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    // Dropping the connection future closes the socket, mid-request or not.
                    tokio::select! {
                        _ = connection => {}
                        _ = kill.changed() => {}
                    }
                });
            }
        });
        *self.listener.lock().expect("lock") = Some(task);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.listener.lock().map(|mut l| l.take()).ok().flatten() {
            task.abort();
        }
        self.kill.send_modify(|generation| *generation += 1);
    }
}

async fn bind(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().expect("socket");
    // Rebinding the same port right after closing it must not fail on lingering connections.
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(addr).expect("bind");
    socket.listen(1024).expect("listen")
}

/// The error a service returns to make hyper drop the connection without a response.
#[derive(Debug)]
struct CloseConnection;

impl std::fmt::Display for CloseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("closing the connection as the test asked")
    }
}

impl std::error::Error for CloseConnection {}

async fn handle(
    request: Request<Incoming>,
    policy: Policy,
    stats: Arc<Stats>,
) -> Result<Response<Full<Bytes>>, CloseConnection> {
    let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
    // A guard, because hyper drops this future when the client goes away mid-request.
    let _in_flight = InFlight(Arc::clone(&stats));
    let seq = request
        .headers()
        .get(SEQUENCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("every generator request carries its sequence number");
    let connection_close = request
        .headers()
        .get(CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let behaviour = policy(seq);
    stats.served.lock().expect("lock").push(Served {
        seq,
        behaviour: behaviour.clone(),
        connection_close,
    });
    match behaviour {
        Behaviour::Ok(backend) => Ok(Response::new(Full::from(format!("Hello, World! From {backend}\n")))),
        Behaviour::Status(code) => {
            let mut response = Response::new(Full::from(Bytes::new()));
            *response.status_mut() = StatusCode::from_u16(code).expect("valid status");
            Ok(response)
        }
        Behaviour::Close => Err(CloseConnection),
        Behaviour::Hang(how_long) => {
            tokio::time::sleep(how_long).await;
            Ok(Response::new(Full::from("late")))
        }
    }
}

struct InFlight(Arc<Stats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Polls `condition` every 10 ms until it holds; panics with `what` after `limit` (a bound, not a timing assertion:
/// it only stops a broken test from hanging).
pub async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
