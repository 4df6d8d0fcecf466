//! The seed's story on the sandbox: rebooting an instance behind the load balancer without draining costs clients
//! requests; the graceful runbook (deregister, wait for `unused`, reboot, register, wait for `healthy`) costs none.
//! This is what makes the sandbox able to judge pitstop.

mod sandbox_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_ssm::types::CommandInvocationStatus;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pitstop_e2e::sandbox::{Sandbox, http_get};
use sandbox_support::{
    FLAG_FILE_REBOOT, clients, deregister, eventually, fast_config, finished_invocation, register, send_script, start,
    target_state, target_states, wait_for_target_state,
};

const LIMIT: Duration = Duration::from_secs(20);

/// Requests sent through HAProxy and those that did not get a 200.
#[derive(Default)]
struct Tally {
    sent: AtomicUsize,
    failed: AtomicUsize,
}

/// Sends requests through the frontend until `stop` is set, from two clients: one opening a fresh connection per
/// request, one keeping its connection alive (so HAProxy also reuses its connections to the servers).
fn traffic(sandbox: &Sandbox, stop: Arc<AtomicBool>) -> (Arc<Tally>, tokio::task::JoinHandle<()>) {
    let tally = Arc::new(Tally::default());
    let addr = sandbox.frontend_addr();
    let uri: hyper::Uri = format!("{}/", sandbox.frontend_url()).parse().expect("frontend URI");
    let (fresh_tally, fresh_stop) = (Arc::clone(&tally), Arc::clone(&stop));
    let fresh = tokio::spawn(async move {
        while !fresh_stop.load(Ordering::Relaxed) {
            let ok = matches!(http_get(addr, "/").await, Ok(response) if response.status == 200);
            fresh_tally.count(ok);
        }
    });
    let kept_tally = Arc::clone(&tally);
    let kept = tokio::spawn(async move {
        let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        while !stop.load(Ordering::Relaxed) {
            let ok = match client.get(uri.clone()).await {
                Ok(response) => {
                    let status = response.status();
                    response.into_body().collect().await.is_ok() && status == 200
                }
                Err(_) => false,
            };
            kept_tally.count(ok);
        }
    });
    let handle = tokio::spawn(async move {
        let _ = fresh.await;
        let _ = kept.await;
    });
    (tally, handle)
}

impl Tally {
    fn count(&self, ok: bool) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_without_draining_fails_requests_and_the_graceful_runbook_does_not() {
    let sandbox = start(fast_config().with_instances(2)).await;
    let (elb, ssm) = clients(&sandbox, true).await;
    let arn = sandbox.target_group_arn().to_owned();
    let ids = sandbox.instance_ids();

    // The graceful runbook on the first instance.
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, load) = traffic(&sandbox, Arc::clone(&stop));
    let id = ids[0].as_str();
    deregister(&elb, &arn, id).await;
    wait_for_target_state(&elb, &arn, id, "unused", "the drain to end", LIMIT).await;
    let command_id = send_script(&ssm, id, FLAG_FILE_REBOOT, "graceful reboot").await;
    let invocation = finished_invocation(&ssm, &command_id, id).await;
    assert_eq!(invocation.status(), Some(&CommandInvocationStatus::Success));
    register(&elb, &arn, id).await;
    eventually("every target to be healthy", LIMIT, || async {
        target_states(&elb, &arn, &[])
            .await
            .values()
            .all(|(state, _)| state == "healthy")
            .then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("traffic task");
    assert_eq!(sandbox.boot_count(id), Some(2));
    let (sent, failed) = (tally.sent.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed));
    eprintln!("graceful reboot: {failed} of {sent} requests failed");
    assert!(sent > 0);
    assert_eq!(failed, 0, "the graceful runbook cost requests");
    assert_eq!(sandbox.max_out_of_rotation(), 1);

    // The seed's failure on the second instance: reboot it while it still takes traffic.
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, load) = traffic(&sandbox, Arc::clone(&stop));
    let id = ids[1].as_str();
    let command_id = send_script(&ssm, id, FLAG_FILE_REBOOT, "careless reboot").await;
    finished_invocation(&ssm, &command_id, id).await;
    eventually("the rebooted target to be healthy again", LIMIT, || async {
        (target_state(&elb, &arn, id).await == "healthy").then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("traffic task");
    let (sent, failed) = (tally.sent.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed));
    eprintln!("careless reboot: {failed} of {sent} requests failed");
    assert!(failed > 0, "a reboot in rotation must cost requests, as on an ALB");
    sandbox.shutdown().await.expect("shutdown");
}
