//! The sandbox's fleet changing as an Auto Scaling group changes it, seen through the
//! unmodified AWS SDK: a terminated instance leaves every target group and cannot be
//! registered again; a spare launched in its place is registered in every group and
//! becomes healthy there, through HAProxy's real checks.

mod sandbox_support;

use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::error::ProvideErrorMetadata;
use pitstop_e2e::sandbox::{Power, http_get};
use sandbox_support::{clients, fast_config, start, target, target_states, wait_for_target_state};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_instance_leaves_every_group_for_good_and_its_replacement_serves_in_all() {
    let sandbox = start(fast_config().with_target_groups(2).with_spare_instances(1)).await;
    let (elb, _) = clients(&sandbox, true).await;
    let ids = sandbox.instance_ids();
    assert_eq!(ids.len(), 3, "the spare is not in service: {ids:?}");
    let groups = sandbox.target_group_arns();
    for arn in &groups {
        let states = target_states(&elb, arn, &[]).await;
        assert_eq!(states.len(), 3, "the spare is in no group: {states:?}");
    }

    let gone = ids[1].clone();
    let new = sandbox.replace_instance(&gone).await.expect("replace");
    assert!(!ids.contains(&new), "{new}");
    assert_eq!(sandbox.power(&gone), Some(Power::Terminated));
    assert!(!sandbox.instance_ids().contains(&gone));
    assert!(sandbox.instance_ids().contains(&new));
    for arn in &groups {
        let states = target_states(&elb, arn, &[]).await;
        assert!(!states.contains_key(&gone), "{arn}: {states:?}");
        wait_for_target_state(&elb, arn, &new, "healthy", "the replacement healthy", LIMIT).await;
    }
    // AWS refuses to register a terminated instance.
    let refused = elb
        .register_targets()
        .target_group_arn(&groups[0])
        .targets(target(&gone))
        .send()
        .await
        .expect_err("a terminated instance cannot be registered");
    assert_eq!(refused.code(), Some("InvalidTarget"), "{refused:?}");
    // Traffic through each frontend reaches the replacement and never the gone instance.
    for url in sandbox.frontend_urls() {
        let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().expect("address");
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..6 {
            let response = http_get(addr, "/").await.expect("GET through HAProxy");
            assert_eq!(response.status, 200);
            seen.insert(
                response
                    .body
                    .trim()
                    .trim_start_matches("Hello, World! From ")
                    .to_owned(),
            );
        }
        assert!(seen.contains(&new), "{url}: {seen:?}");
        assert!(!seen.contains(&gone), "{url}: {seen:?}");
    }
    assert!(sandbox.launch_instance().await.is_err(), "no spare left");
    sandbox.shutdown().await.expect("sandbox stops");
}

/// The sandbox's EC2 side through pitstop's own SDK client (`SdkProvider`): running instances
/// by tag, in ID order, with their zones; a terminated one is no longer running, a launched
/// spare is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_instances_by_tag_follows_terminations_and_launches() {
    use aws_sdk_ssm::config::{Credentials, SharedCredentialsProvider};
    use pitstop::aws::AwsProvider;
    use pitstop::aws::sdk::{SdkProvider, SdkSettings};

    let sandbox = start(fast_config().with_spare_instances(1)).await;
    let provider = SdkProvider::new(SdkSettings {
        endpoint_url: Some(sandbox.aws_endpoint_url()),
        credentials: Some(SharedCredentialsProvider::new(Credentials::new(
            "test",
            "test",
            None,
            None,
            "sandbox-fleet",
        ))),
        ..SdkSettings::default()
    });
    let apis = provider.for_region(sandbox.region()).await;
    let fleet_tag = [("pitstop.dev/fleet".to_owned(), "sandbox".to_owned())].into();
    let found = apis
        .instances
        .running_with_tags(&fleet_tag)
        .await
        .expect("DescribeInstances");
    let ids = sandbox.instance_ids();
    assert_eq!(
        found.iter().map(|i| i.instance_id.clone()).collect::<Vec<_>>(),
        ids,
        "the instances in service, not the spare"
    );
    let region = sandbox.region();
    assert_eq!(
        found
            .iter()
            .map(|i| i.availability_zone.clone().unwrap_or_default())
            .collect::<Vec<_>>(),
        [format!("{region}a"), format!("{region}b"), format!("{region}c")]
    );
    let by_name = apis
        .instances
        .running_with_tags(&[("Name".to_owned(), "sandbox-1".to_owned())].into())
        .await
        .expect("DescribeInstances");
    assert_eq!(by_name.len(), 1);
    assert_eq!(by_name[0].instance_id, ids[1]);

    let new = sandbox.replace_instance(&ids[1]).await.expect("replace");
    let found: Vec<String> = apis
        .instances
        .running_with_tags(&fleet_tag)
        .await
        .expect("DescribeInstances")
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    assert_eq!(found, [ids[0].clone(), ids[2].clone(), new], "terminated: not running");
    sandbox.shutdown().await.expect("sandbox stops");
}
