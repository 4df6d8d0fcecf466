//! The load generator against a local test server: counts by class, by second, by connection mode and by backend.
//!
//! The server decides what to do from each request's sequence number, and request `k` at 100 req/s is due in
//! second `k / 100`, so the tests know exactly how many requests of each class every second must hold; none of them
//! asserts how long anything took.

mod load_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use load_common::{Behaviour, TestServer, always_ok, wait_until};
use pitstop_e2e::load::{self, LoadConfig};
use pitstop_e2e::report::{Counts, LoadResult};

const RATE: f64 = 100.0;
/// Bounds the waits for the generator to reach a point in the test; far longer than any of them should take.
const PATIENCE: Duration = Duration::from_secs(20);

fn config(server: &TestServer, seconds: u64, new_connection_share: f64) -> LoadConfig {
    LoadConfig {
        url: server.url(),
        rate_per_s: RATE,
        duration: Some(Duration::from_secs(seconds)),
        new_connection_share,
        ..LoadConfig::default()
    }
}

/// Invariants that hold for every finished run, whatever happened during it.
fn assert_consistent(result: &LoadResult, scheduled: u64) {
    let totals = &result.totals;
    assert_eq!(
        totals.scheduled, scheduled,
        "every due request is either sent or dropped"
    );
    assert_eq!(totals.sent + totals.dropped, totals.scheduled);
    assert_eq!(
        totals.completed(),
        totals.sent,
        "every sent request has exactly one outcome: {totals:?}"
    );
    assert_eq!(totals.in_flight(), 0);
    assert!(totals.status_502 + totals.status_503 + totals.status_504 <= totals.server_errors);

    let mut by_second = Counts::default();
    for (index, bucket) in result.per_second.iter().enumerate() {
        assert_eq!(bucket.second, index as u64, "buckets have no gaps");
        add(&mut by_second, &bucket.counts);
    }
    assert_eq!(&by_second, totals, "the seconds add up to the totals");
    let mut by_mode = result.keep_alive.clone();
    add(&mut by_mode, &result.new_connection);
    assert_eq!(&by_mode, totals, "the connection modes add up to the totals");
    assert_eq!(
        result.backends.values().sum::<u64>(),
        totals.success,
        "every 2xx is attributed to a backend"
    );
}

fn add(sum: &mut Counts, counts: &Counts) {
    sum.scheduled += counts.scheduled;
    sum.sent += counts.sent;
    sum.dropped += counts.dropped;
    sum.success += counts.success;
    sum.other += counts.other;
    sum.server_errors += counts.server_errors;
    sum.status_502 += counts.status_502;
    sum.status_503 += counts.status_503;
    sum.status_504 += counts.status_504;
    sum.connection_errors += counts.connection_errors;
    sum.timeouts += counts.timeouts;
}

#[tokio::test]
async fn keep_alive_requests_reuse_connections() {
    let server = TestServer::start(always_ok("i-aaaa1111")).await;
    let result = load::run_for(config(&server, 2, 0.0)).await.expect("valid config");

    assert_consistent(&result, 200);
    assert_eq!(result.totals.success, result.totals.sent);
    assert_eq!(result.keep_alive.sent, result.totals.sent);
    assert_eq!(result.new_connection.scheduled, 0);
    assert_eq!(
        result.backends,
        BTreeMap::from([("i-aaaa1111".to_string(), result.totals.success)])
    );
    assert_eq!(server.served().len() as u64, result.totals.sent);
    assert!(server.served().iter().all(|s| !s.connection_close));
    assert!(
        server.connections_accepted() < result.totals.sent,
        "{} connections for {} keep-alive requests",
        server.connections_accepted(),
        result.totals.sent
    );
}

#[tokio::test]
async fn new_connection_requests_open_one_connection_each() {
    let server = TestServer::start(always_ok("i-aaaa1111")).await;
    let result = load::run_for(config(&server, 2, 1.0)).await.expect("valid config");

    assert_consistent(&result, 200);
    assert_eq!(result.totals.success, result.totals.sent);
    assert_eq!(result.new_connection.sent, result.totals.sent);
    assert_eq!(server.connections_accepted(), result.totals.sent);
    assert!(server.served().iter().all(|s| s.connection_close));
}

#[tokio::test]
async fn mixed_connections_split_exactly() {
    let server = TestServer::start(always_ok("i-aaaa1111")).await;
    let result = load::run_for(config(&server, 2, 0.5)).await.expect("valid config");

    assert_consistent(&result, 200);
    assert_eq!(result.totals.dropped, 0);
    assert_eq!(result.totals.success, 200);
    assert_eq!(result.new_connection.sent, 100);
    assert_eq!(result.keep_alive.sent, 100);
    for bucket in &result.per_second {
        assert_eq!(bucket.counts.sent, 100, "second {}", bucket.second);
    }
    let served = server.served();
    assert_eq!(served.iter().filter(|s| s.connection_close).count(), 100);
    // The odd sequence numbers are the fresh connections: the split is spread evenly, not in blocks.
    assert!(served.iter().all(|s| s.connection_close == (s.seq % 2 == 1)));
}

#[tokio::test]
async fn bad_gateway_is_counted_in_the_seconds_it_happened() {
    // Requests 150..250 are due from 1.5 s to 2.5 s: half of second 1 and half of second 2.
    let server = TestServer::start(Arc::new(|seq| {
        if (150..250).contains(&seq) {
            Behaviour::Status(502)
        } else {
            Behaviour::Ok("i-aaaa1111".into())
        }
    }))
    .await;
    let result = load::run_for(config(&server, 3, 0.5)).await.expect("valid config");

    assert_consistent(&result, 300);
    assert_eq!(result.totals.dropped, 0);
    let errors: Vec<u64> = result.per_second.iter().map(|s| s.counts.status_502).collect();
    assert_eq!(errors, [0, 50, 50]);
    let failed: Vec<u64> = result.per_second.iter().map(|s| s.counts.failed()).collect();
    assert_eq!(failed, [0, 50, 50], "502s are the only failures");
    assert_eq!(result.totals.server_errors, 100);
    assert_eq!(result.totals.connection_errors, 0);
    assert_eq!(result.totals.timeouts, 0);
    assert_eq!(result.totals.success, 200);
    // Both connection modes met the bad gateway, half each.
    assert_eq!(result.keep_alive.status_502, 50);
    assert_eq!(result.new_connection.status_502, 50);
}

#[tokio::test]
async fn closed_connections_are_connection_errors_not_5xx() {
    // Requests 50..100 (second 0) meet a backend that hangs up, 120..130 (second 1) get a 503.
    let server = TestServer::start(Arc::new(|seq| match seq {
        50..100 => Behaviour::Close,
        120..130 => Behaviour::Status(503),
        _ => Behaviour::Ok("i-aaaa1111".into()),
    }))
    .await;
    let result = load::run_for(config(&server, 2, 0.5)).await.expect("valid config");

    assert_consistent(&result, 200);
    assert_eq!(result.totals.dropped, 0);
    let first = &result.per_second[0].counts;
    assert_eq!(
        (first.connection_errors, first.server_errors, first.success),
        (50, 0, 50)
    );
    let second = &result.per_second[1].counts;
    assert_eq!(
        (second.connection_errors, second.status_503, second.server_errors),
        (0, 10, 10)
    );
    assert_eq!(result.totals.failed(), 60);
    assert_eq!(result.backends.get("i-aaaa1111"), Some(&140));
}

#[tokio::test]
async fn a_host_that_stops_listening_gives_connection_errors() {
    let server = TestServer::start(always_ok("i-aaaa1111")).await;
    let handle = load::start(config(&server, 4, 0.5)).expect("valid config");

    wait_until("50 successful requests", PATIENCE, || {
        handle.snapshot().totals.success >= 50
    })
    .await;
    server.stop_listening().await;
    wait_until("20 connection errors", PATIENCE, || {
        handle.snapshot().totals.connection_errors >= 20
    })
    .await;
    server.resume_listening().await;
    let errors_when_resumed = handle.snapshot().totals.connection_errors;
    let result = handle.wait().await;

    assert_consistent(&result, 400);
    assert!(result.totals.connection_errors >= 20);
    assert_eq!(result.totals.server_errors, 0);
    assert_eq!(result.totals.timeouts, 0, "a refused connection fails at once");
    assert!(
        result.keep_alive.connection_errors > 0,
        "open keep-alive connections broke too"
    );
    assert!(result.new_connection.connection_errors > 0);
    let server_ok: u64 = server.ok_by_backend().values().sum();
    assert_eq!(
        result.totals.success, server_ok,
        "every 2xx the generator counted, the server sent"
    );
    // Traffic came back: some requests succeeded after the server listened again.
    let first_error_second = result
        .per_second
        .iter()
        .position(|s| s.counts.connection_errors > 0)
        .expect("errors");
    assert!(
        result.per_second[first_error_second + 1..]
            .iter()
            .any(|s| s.counts.success > 0)
    );
    assert!(result.totals.connection_errors >= errors_when_resumed);
}

#[tokio::test]
async fn successes_are_counted_per_backend() {
    // Like a load balancer with two targets, where every third request goes to the second.
    let server = TestServer::start(Arc::new(|seq| {
        Behaviour::Ok(if seq % 3 == 0 { "i-bbbb2222" } else { "i-aaaa1111" }.into())
    }))
    .await;
    let result = load::run_for(config(&server, 2, 0.5)).await.expect("valid config");

    assert_consistent(&result, 200);
    assert_eq!(result.backends, server.ok_by_backend());
    assert_eq!(
        result.backends,
        BTreeMap::from([("i-aaaa1111".to_string(), 133), ("i-bbbb2222".to_string(), 67)])
    );
}

#[tokio::test]
async fn slow_responses_are_timeouts() {
    let server = TestServer::start(Arc::new(|seq| {
        if (10..20).contains(&seq) {
            Behaviour::Hang(Duration::from_secs(30))
        } else {
            Behaviour::Ok("i-aaaa1111".into())
        }
    }))
    .await;
    let config = LoadConfig {
        rate_per_s: 50.0,
        duration: Some(Duration::from_secs(1)),
        request_timeout: Duration::from_millis(300),
        ..config(&server, 1, 0.5)
    };
    let result = load::run_for(config).await.expect("valid config");

    assert_consistent(&result, 50);
    assert_eq!(result.totals.timeouts, 10);
    assert_eq!(result.per_second[0].counts.timeouts, 10);
    assert_eq!(result.totals.connection_errors, 0);
    assert_eq!(result.totals.success, 40);
}

#[tokio::test]
async fn requests_beyond_the_in_flight_cap_are_dropped() {
    let server = TestServer::start(Arc::new(|_| Behaviour::Hang(Duration::from_secs(30)))).await;
    let config = LoadConfig {
        rate_per_s: 50.0,
        max_in_flight: 2,
        request_timeout: Duration::from_millis(300),
        ..config(&server, 1, 0.0)
    };
    let result = load::run_for(config).await.expect("valid config");

    assert_consistent(&result, 50);
    assert!(result.totals.dropped > 0);
    assert_eq!(result.totals.timeouts, result.totals.sent);
    assert!(
        server.max_in_flight() <= 2,
        "the server saw {} requests at once",
        server.max_in_flight()
    );
}

#[tokio::test]
async fn stop_ends_the_run_early_and_settles_every_request() {
    let server = TestServer::start(always_ok("i-aaaa1111")).await;
    let handle = load::start(config(&server, 60, 0.5)).expect("valid config");
    wait_until("20 requests", PATIENCE, || handle.snapshot().totals.sent >= 20).await;
    let result = handle.stop().await;

    assert!(result.stopped_early);
    assert!(result.totals.scheduled < 6000);
    assert_consistent(&result, result.totals.scheduled);
    assert_eq!(result.totals.success, result.totals.sent);
}

#[tokio::test]
async fn refuses_a_target_that_is_not_loopback() {
    let config = LoadConfig {
        url: "http://192.0.2.1/".into(),
        ..LoadConfig::default()
    };
    assert!(matches!(load::start(config), Err(load::LoadError::NotLoopback { .. })));
}
