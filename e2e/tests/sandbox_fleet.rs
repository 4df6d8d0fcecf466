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
