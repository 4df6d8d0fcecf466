//! The sandbox's light mode (`make bench-scale`): no HAProxy, no backend processes, many small target groups, and
//! the same AWS semantics through the unmodified SDK: draining for the deregistration delay, `initial` until the
//! checks pass `rise` times, a reboot by `exit 194` taking the target down and back.

mod sandbox_support;

use std::time::Duration;

use pitstop_e2e::sandbox::{Power, Sandbox, SandboxConfig};
use sandbox_support::{
    FLAG_FILE_REBOOT, clients, deregister, finished_invocation, register, send_script, target_states,
    wait_for_target_state,
};

const LIMIT: Duration = Duration::from_secs(30);

/// 30 instances in 10 groups of 3, light: instance `i` is in group `i % 10` only.
async fn light_fleet() -> Sandbox {
    let cfg = SandboxConfig::default()
        .light()
        .with_instances(30)
        .with_target_groups(10)
        .with_partitioned_groups()
        .with_health_interval(Duration::from_millis(200))
        .with_thresholds(2, 2)
        .with_deregistration_delay(Duration::from_millis(600))
        .with_boot_time(Duration::from_millis(1500))
        .with_invocation_visibility_delay(Duration::from_millis(200))
        // Nothing of the full sandbox's may be needed: neither binary exists.
        .with_haproxy_binary("/nonexistent/haproxy")
        .with_backend_binary("/nonexistent/pitstop-backend");
    Sandbox::start(cfg)
        .await
        .unwrap_or_else(|err| panic!("the light sandbox did not start: {err:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_group_holds_its_own_members_all_healthy() {
    let sandbox = light_fleet().await;
    let (elb, _) = clients(&sandbox, false).await;
    let arns = sandbox.target_group_arns();
    let ids = sandbox.instance_ids();
    assert_eq!(arns.len(), 10);
    for (group, arn) in arns.iter().enumerate() {
        let states = target_states(&elb, arn, &[]).await;
        let expected: Vec<String> = ids.iter().skip(group).step_by(10).cloned().collect();
        assert_eq!(states.keys().cloned().collect::<Vec<_>>(), expected, "group {group}");
        assert!(states.values().all(|(state, _)| state == "healthy"), "{states:?}");
    }
    assert!(ids.iter().all(|id| sandbox.power(id) == Some(Power::Running)));
    assert_eq!(
        sandbox.most_out_per_target_group(),
        vec![0; 10],
        "nothing out once ready"
    );
    sandbox.shutdown().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_initial_and_reboot_follow_the_thresholds_and_count_out_per_group() {
    let sandbox = light_fleet().await;
    let (elb, ssm) = clients(&sandbox, false).await;
    let arns = sandbox.target_group_arns();
    let ids = sandbox.instance_ids();
    // Group 3 holds instances 3, 13 and 23.
    let (arn, id) = (&arns[3], ids[13].as_str());

    deregister(&elb, arn, id).await;
    assert_eq!(target_states(&elb, arn, &[id]).await[id].0, "draining");
    wait_for_target_state(&elb, arn, id, "unused", "the drain to end", LIMIT).await;

    let command = send_script(&ssm, id, FLAG_FILE_REBOOT, "light reboot").await;
    let invocation = finished_invocation(&ssm, &command, id).await;
    assert_eq!(invocation.status().map(|s| s.as_str()), Some("Success"));
    assert_eq!(sandbox.boot_counts()[id], 2, "one reboot, as on a full sandbox");

    register(&elb, arn, id).await;
    assert_eq!(
        target_states(&elb, arn, &[id]).await[id],
        ("initial".to_owned(), Some("Elb.InitialHealthChecking".to_owned()))
    );
    wait_for_target_state(&elb, arn, id, "healthy", "the checks to pass again", LIMIT).await;

    let mut expected = vec![0; 10];
    expected[3] = 1;
    assert_eq!(sandbox.most_out_per_target_group(), expected);
    sandbox.shutdown().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_instance_that_goes_down_turns_unhealthy_and_comes_back() {
    let sandbox = light_fleet().await;
    let (elb, ssm) = clients(&sandbox, false).await;
    let arns = sandbox.target_group_arns();
    let id = sandbox.instance_ids()[0].clone();
    // Rebooted while still registered (what a naive runbook does): the checks fail, then pass again.
    send_script(&ssm, &id, FLAG_FILE_REBOOT, "reboot in place").await;
    wait_for_target_state(
        &elb,
        &arns[0],
        &id,
        "unhealthy",
        "the down instance to fail its checks",
        LIMIT,
    )
    .await;
    wait_for_target_state(&elb, &arns[0], &id, "healthy", "the instance to come back", LIMIT).await;
    assert_eq!(sandbox.most_out_per_target_group()[0], 1);
    sandbox.shutdown().await.expect("stop");
}
