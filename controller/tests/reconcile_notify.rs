//! `spec.notify` against the mock apiserver (tower-test) and the in-memory AWS: the webhook URL
//! is read from the Secret the plan names in the plan's own namespace, and the webhook gets the
//! run's events; a Secret that is missing (or only in another namespace) gives one Warning
//! Event and the plan runs to the end anyway.

mod reconcile_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use pitstop::api::PlanPhase;
use pitstop::k8s::Context;
use pitstop::notify::{Notifier, PostError, Poster, RetryPolicy};
use reconcile_support::*;
use serde_json::{Value, json};

/// Records what it is sent, and takes it.
#[derive(Default)]
struct Webhook {
    posts: Mutex<Vec<(String, Value)>>,
}

#[async_trait]
impl Poster for Webhook {
    async fn post(&self, url: &str, _: &str, body: Bytes, _: Duration) -> Result<(), PostError> {
        let body = serde_json::from_slice(&body).expect("a JSON body");
        self.posts.lock().expect("posts").push((url.to_owned(), body));
        Ok(())
    }
}

fn notified_context(client: kube::Client, fake: &pitstop::aws::fake::FakeAws, webhook: &Arc<Webhook>) -> Arc<Context> {
    let clock_source = fake.clone();
    let poster: Arc<dyn Poster> = webhook.clone();
    Arc::new(
        Context::with_reporter(client, Arc::new(fake.clone()), POLL, "pitstop-test".into())
            .with_clock(Arc::new(move || clock_source.now()))
            .with_notifier(Notifier::new(poster, RetryPolicy::default(), 64)),
    )
}

fn secret_reads(run: &Run) -> Vec<(String, String)> {
    run.calls()
        .filter_map(|c| match c {
            Call::GetSecret { namespace, name } => Some((namespace.clone(), name.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn the_webhook_in_the_plan_s_namespace_secret_gets_the_run_s_events() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let fake = fake_aws();
        let (mut server, client) = ApiServer::start();
        let webhook = Arc::new(Webhook::default());
        let ctx = notified_context(client, &fake, &webhook);
        server.insert_secret(NAMESPACE, "hook", &[("url", "https://hooks.example.com/T0/secret\n")]);
        server.insert(with_finalizer(plan_json(
            "web",
            &IDS,
            json!({ "notify": { "secretRef": { "name": "hook" } } }),
        )));
        let run = drive(&mut server, &ctx, &fake, "web", |_| false).await;
        assert_eq!(server.status("web").expect("a status").phase, PlanPhase::Succeeded);
        let reads = secret_reads(&run);
        assert!(!reads.is_empty());
        assert!(
            reads
                .iter()
                .all(|(namespace, name)| namespace == NAMESPACE && name == "hook"),
            "only the plan's namespace: {reads:?}"
        );
        ctx.notify.notifier.close(Duration::from_secs(10)).await;
        let posts = webhook.posts.lock().expect("posts").clone();
        assert!(
            posts
                .iter()
                .all(|(url, _)| url == "https://hooks.example.com/T0/secret"),
            "{posts:?}"
        );
        let types: Vec<_> = posts
            .iter()
            .map(|(_, event)| event["type"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            types,
            [
                "dev.pitstop.run.started",
                "dev.pitstop.instance.maintained",
                "dev.pitstop.instance.maintained",
                "dev.pitstop.instance.maintained",
                "dev.pitstop.run.finished"
            ]
        );
        assert!(posts.iter().all(|(_, e)| e["source"] == "pitstop/default/web"));
        assert!(
            !run.events().iter().any(|(type_, _, _)| type_ == "Warning"),
            "{:?}",
            run.events()
        );
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_secret_that_is_not_in_the_plan_s_namespace_gives_one_warning_and_the_plan_runs() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let fake = fake_aws();
        let (mut server, client) = ApiServer::start();
        let webhook = Arc::new(Webhook::default());
        let ctx = notified_context(client, &fake, &webhook);
        // The same name in another namespace is not the plan's.
        server.insert_secret("other", "hook", &[("url", "https://hooks.example.com/other")]);
        server.insert(with_finalizer(plan_json(
            "web",
            &IDS,
            json!({ "notify": { "secretRef": { "name": "hook" } } }),
        )));
        let run = drive(&mut server, &ctx, &fake, "web", |_| false).await;
        assert_eq!(server.status("web").expect("a status").phase, PlanPhase::Succeeded);
        assert_eq!(aws_writes(&fake).len(), 9, "three instances, three writes each");
        assert!(secret_reads(&run).iter().all(|(namespace, _)| namespace == NAMESPACE));
        let warnings: Vec<_> = run
            .calls()
            .filter_map(|c| match c {
                Call::Event(e) if e.type_ == "Warning" => Some(e.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].reason, "NotificationsUnavailable");
        assert!(
            warnings[0].note.contains("the Secret default/hook does not exist"),
            "{}",
            warnings[0].note
        );
        ctx.notify.notifier.close(Duration::from_secs(10)).await;
        assert!(webhook.posts.lock().expect("posts").is_empty());

        let metrics = ctx.metrics.encode();
        assert!(
            metrics.contains("pitstop_notifications_total{outcome=\"dropped\"} 5"),
            "the events of the run are counted as dropped:\n{metrics}"
        );
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}
