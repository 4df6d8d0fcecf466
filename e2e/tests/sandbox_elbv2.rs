//! The sandbox's ELBv2 side, through the unmodified AWS SDK, against real HAProxy and real backends.

mod sandbox_support;

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::error::ProvideErrorMetadata;
use pitstop_e2e::sandbox::{AdminState, CallOutcome, OperationalState, http_get};
use sandbox_support::{
    clients, deregister, fast_config, register, start, target, target_state, target_states, wait_for_target_state,
};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_sandbox_is_all_healthy_and_serves_every_instance() {
    let sandbox = start(fast_config()).await;
    let (elb, _) = clients(&sandbox, true).await;
    let arn = sandbox.target_group_arn().to_owned();
    assert!(
        arn.starts_with("arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/sandbox/"),
        "{arn}"
    );

    let states = target_states(&elb, &arn, &[]).await;
    let ids: BTreeSet<String> = sandbox.instance_ids().into_iter().collect();
    assert_eq!(states.keys().cloned().collect::<BTreeSet<_>>(), ids);
    assert!(
        states
            .values()
            .all(|(state, reason)| state == "healthy" && reason.is_none()),
        "{states:?}"
    );

    let rotation = sandbox.rotation_states().await.expect("HAProxy state");
    assert!(rotation.values().all(|s| s.in_rotation()), "{rotation:?}");
    assert!(sandbox.boot_counts().values().all(|count| *count == 1));

    // Round robin over three healthy servers: six requests reach each instance.
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let response = http_get(sandbox.frontend_addr(), "/")
            .await
            .expect("GET through HAProxy");
        assert_eq!(response.status, 200);
        let id = response
            .body
            .trim()
            .strip_prefix("Hello, World! From ")
            .expect("seed greeting")
            .to_owned();
        seen.insert(id);
    }
    assert_eq!(seen, ids);

    let attributes = elb
        .describe_target_group_attributes()
        .target_group_arn(&arn)
        .send()
        .await
        .expect("attributes");
    let delay = attributes
        .attributes()
        .iter()
        .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
        .and_then(|a| a.value());
    assert_eq!(delay, Some("1"));

    let groups = elb
        .describe_target_groups()
        .target_group_arns(&arn)
        .send()
        .await
        .expect("target groups");
    let group = &groups.target_groups()[0];
    assert_eq!(group.healthy_threshold_count(), Some(2));
    assert_eq!(group.health_check_path(), Some("/health"));
    sandbox.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregister_drains_to_unused_and_register_comes_back_through_initial() {
    // A 1 s interval: a newly registered target needs two passed checks, so it stays `initial` for at least a second,
    // plenty for the describe right after registering however busy the machine is.
    let sandbox = start(fast_config().with_health_interval(Duration::from_secs(1))).await;
    let (elb, _) = clients(&sandbox, true).await;
    let arn = sandbox.target_group_arn().to_owned();
    let ids = sandbox.instance_ids();
    let id = ids[0].as_str();

    deregister(&elb, &arn, id).await;
    let (state, reason) = target_states(&elb, &arn, &[id])
        .await
        .remove(id)
        .expect("target listed");
    assert_eq!(
        (state.as_str(), reason.as_deref()),
        ("draining", Some("Target.DeregistrationInProgress"))
    );
    assert_eq!(
        sandbox.rotation_states().await.expect("HAProxy state")[id].admin,
        AdminState::Drain
    );

    wait_for_target_state(&elb, &arn, id, "unused", "the drain to end", LIMIT).await;
    let (_, reason) = target_states(&elb, &arn, &[id])
        .await
        .remove(id)
        .expect("target listed");
    assert_eq!(reason.as_deref(), Some("Target.NotRegistered"));
    assert_eq!(
        sandbox.rotation_states().await.expect("HAProxy state")[id].admin,
        AdminState::Maint
    );
    let listed = target_states(&elb, &arn, &[]).await;
    assert!(
        !listed.contains_key(id),
        "an unused target is not listed without Targets: {listed:?}"
    );

    // Out of rotation means no traffic at all.
    for _ in 0..6 {
        let response = http_get(sandbox.frontend_addr(), "/")
            .await
            .expect("GET through HAProxy");
        assert_eq!(response.status, 200);
        assert!(!response.body.contains(id), "{id} got traffic while unused");
    }

    register(&elb, &arn, id).await;
    let (state, reason) = target_states(&elb, &arn, &[id])
        .await
        .remove(id)
        .expect("target listed");
    assert_eq!(
        (state.as_str(), reason.as_deref()),
        ("initial", Some("Elb.InitialHealthChecking"))
    );
    let server = &sandbox.rotation_states().await.expect("HAProxy state")[id];
    assert_eq!(server.admin, AdminState::Ready);
    assert!(!server.in_rotation(), "no traffic before the checks passed: {server:?}");

    wait_for_target_state(&elb, &arn, id, "healthy", "the target to become healthy", LIMIT).await;
    assert!(sandbox.rotation_states().await.expect("HAProxy state")[id].in_rotation());

    // HAProxy's view went ready → drain → maint → ready but down → up, one instance out at most.
    let seen: Vec<(AdminState, OperationalState)> = sandbox
        .rotation_history()
        .iter()
        .map(|snapshot| (snapshot.states[id].admin, snapshot.states[id].operational))
        .collect();
    let admin_order: Vec<AdminState> = seen.iter().map(|(admin, _)| *admin).fold(Vec::new(), |mut acc, a| {
        if acc.last() != Some(&a) {
            acc.push(a);
        }
        acc
    });
    // Registration passes through drain for an instant (to force the server down before it is ready), which the
    // poll may or may not catch; the deregistration's order must be exact.
    assert!(
        admin_order.starts_with(&[AdminState::Ready, AdminState::Drain, AdminState::Maint]),
        "{admin_order:?}"
    );
    assert_eq!(admin_order.last(), Some(&AdminState::Ready));
    assert!(seen.contains(&(AdminState::Ready, OperationalState::Down)), "{seen:?}");
    assert_eq!(sandbox.max_out_of_rotation(), 1);

    let log = sandbox.call_log();
    assert_eq!(log.count("DeregisterTargets"), 1);
    assert_eq!(log.count("RegisterTargets"), 1);
    assert!(
        log.writes()
            .iter()
            .all(|w| w.instance_ids == vec![id.to_owned()] && w.outcome == CallOutcome::Ok)
    );
    sandbox.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rotation_record_holds_every_state_describe_target_health_reported() {
    // The background poll is all but off, so only the sandbox's own changes and the describes below read HAProxy:
    // a test that reads the record right after a client saw `healthy` must find the instance back in rotation.
    let sandbox = start(fast_config().with_haproxy_poll(Duration::from_secs(3600))).await;
    let (elb, _) = clients(&sandbox, true).await;
    let arn = sandbox.target_group_arn().to_owned();
    let ids = sandbox.instance_ids();
    let id = ids[0].as_str();

    deregister(&elb, &arn, id).await;
    wait_for_target_state(&elb, &arn, id, "unused", "the drain to end", LIMIT).await;
    register(&elb, &arn, id).await;
    wait_for_target_state(&elb, &arn, id, "healthy", "the target to become healthy", LIMIT).await;

    let history = sandbox.rotation_history();
    let last = history.last().expect("a record");
    assert!(
        last.out_of_rotation().is_empty(),
        "the last recorded state has every instance in rotation, as DescribeTargetHealth said: {history:?}"
    );
    let went_out = history.iter().filter(|s| !s.states[id].in_rotation()).count();
    assert!(went_out > 0, "the time out of rotation is recorded too: {history:?}");
    sandbox.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_target_group_and_unknown_instances_get_aws_errors() {
    let sandbox = start(fast_config().with_instances(1)).await;
    let (elb, _) = clients(&sandbox, false).await;
    let arn = sandbox.target_group_arn().to_owned();

    let other = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/other/0123456789abcdef";
    let err = elb
        .describe_target_health()
        .target_group_arn(other)
        .send()
        .await
        .expect_err("unknown group");
    assert_eq!(err.code(), Some("TargetGroupNotFound"));
    assert!(err.into_service_error().is_target_group_not_found_exception());

    let err = elb
        .register_targets()
        .target_group_arn(&arn)
        .targets(target("i-00000000000000bad"))
        .send()
        .await
        .expect_err("unknown instance");
    assert_eq!(err.code(), Some("InvalidTarget"));

    let err = elb
        .describe_target_health()
        .target_group_arn(&arn)
        .targets(target("i-nope"))
        .send()
        .await;
    assert_eq!(err.expect_err("unknown instance").code(), Some("InvalidTarget"));

    // Registering a registered target changes nothing, as on AWS.
    let id = &sandbox.instance_ids()[0];
    register(&elb, &arn, id).await;
    assert_eq!(target_state(&elb, &arn, id).await, "healthy");

    let errors: Vec<String> = sandbox
        .call_log()
        .records()
        .into_iter()
        .filter_map(|r| match r.outcome {
            CallOutcome::Error { code } => Some(code),
            _ => None,
        })
        .collect();
    assert_eq!(errors, vec!["TargetGroupNotFound", "InvalidTarget", "InvalidTarget"]);
    sandbox.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_group_tags_are_read_added_and_removed_as_elbv2_does() {
    let sandbox = start(fast_config()).await;
    let (elb, _) = clients(&sandbox, true).await;
    let arn = sandbox.target_group_arn().to_owned();
    let tags = |elb: aws_sdk_elasticloadbalancingv2::Client, arn: String| async move {
        let output = elb
            .describe_tags()
            .resource_arns(&arn)
            .send()
            .await
            .expect("DescribeTags");
        let [description] = output.tag_descriptions() else {
            panic!("one description per ARN: {output:?}")
        };
        assert_eq!(description.resource_arn(), Some(arn.as_str()));
        description
            .tags()
            .iter()
            .map(|t| {
                (
                    t.key().unwrap_or_default().to_owned(),
                    t.value().unwrap_or_default().to_owned(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        tags(elb.clone(), arn.clone()).await,
        [
            ("Name".to_owned(), "sandbox".to_owned()),
            ("pitstop.dev/fleet".to_owned(), "sandbox".to_owned())
        ]
    );
    elb.add_tags()
        .resource_arns(&arn)
        .tags(
            aws_sdk_elasticloadbalancingv2::types::Tag::builder()
                .key("pitstop.dev/managed")
                .value("true")
                .build(),
        )
        .send()
        .await
        .expect("AddTags");
    elb.remove_tags()
        .resource_arns(&arn)
        .tag_keys("Name")
        .send()
        .await
        .expect("RemoveTags");
    assert_eq!(
        tags(elb.clone(), arn.clone()).await,
        [
            ("pitstop.dev/fleet".to_owned(), "sandbox".to_owned()),
            ("pitstop.dev/managed".to_owned(), "true".to_owned())
        ]
    );
    let unknown = arn.replace("/sandbox/", "/nowhere/");
    let error = elb
        .describe_tags()
        .resource_arns(&unknown)
        .send()
        .await
        .expect_err("an unknown group");
    assert_eq!(error.code(), Some("TargetGroupNotFound"), "{error:?}");
    sandbox.shutdown().await.expect("shutdown");
}
