//! The sandbox's Auto Scaling group, seen through the unmodified AWS SDK (`aws-sdk-autoscaling`) and through
//! pitstop's own client (`SdkProvider`): DescribeAutoScalingGroups and DescribeAutoScalingInstances in AWS's
//! shapes, a group that follows terminations (`Terminating`, then gone, one fewer desired) and replacements (the new
//! instance `InService`, the sizes kept), and the errors AWS gives.

mod sandbox_support;

use aws_sdk_autoscaling::error::ProvideErrorMetadata;
use aws_sdk_ssm::config::{Credentials, SharedCredentialsProvider};
use pitstop::aws::sdk::{ApiOperation, SdkProvider, SdkSettings};
use pitstop::aws::{AwsErrorKind, AwsProvider};
use pitstop_e2e::sandbox::{CallOutcome, Sandbox, Service};
use sandbox_support::{fast_config, sdk_config, start};

/// (instance ID, lifecycle state, zone) of every member, in ID order, from DescribeAutoScalingGroups.
async fn members(client: &aws_sdk_autoscaling::Client, name: &str) -> Vec<(String, String, String)> {
    let output = client
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .expect("DescribeAutoScalingGroups");
    let group = output.auto_scaling_groups().first().expect("the group is listed");
    group
        .instances()
        .iter()
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_owned(),
                i.lifecycle_state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                i.availability_zone().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// (MinSize, MaxSize, DesiredCapacity) of the group.
async fn sizes(client: &aws_sdk_autoscaling::Client, name: &str) -> (i32, i32, i32) {
    let output = client
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .expect("DescribeAutoScalingGroups");
    let group = output.auto_scaling_groups().first().expect("the group is listed");
    (
        group.min_size().unwrap_or(-1),
        group.max_size().unwrap_or(-1),
        group.desired_capacity().unwrap_or(-1),
    )
}

async fn client(sandbox: &Sandbox) -> aws_sdk_autoscaling::Client {
    aws_sdk_autoscaling::Client::new(&sdk_config(sandbox, false).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_lists_its_members_in_the_shapes_of_aws() {
    let sandbox = start(
        fast_config()
            .with_spare_instances(1)
            .with_target_groups(2)
            .with_auto_scaling_group_name("web-asg"),
    )
    .await;
    let asg = client(&sandbox).await;
    let ids = sandbox.instance_ids();
    let region = sandbox.region().to_owned();

    let output = asg
        .describe_auto_scaling_groups()
        .send()
        .await
        .expect("DescribeAutoScalingGroups without names lists every group");
    let groups = output.auto_scaling_groups();
    assert_eq!(groups.len(), 1, "{groups:?}");
    let group = &groups[0];
    assert_eq!(group.auto_scaling_group_name(), Some("web-asg"));
    assert!(
        group
            .auto_scaling_group_arn()
            .is_some_and(|arn| arn.starts_with(&format!("arn:aws:autoscaling:{region}:"))
                && arn.ends_with(":autoScalingGroupName/web-asg")),
        "{group:?}"
    );
    assert_eq!(group.health_check_type(), Some("ELB"));
    assert_eq!(group.target_group_arns(), sandbox.target_group_arns().as_slice());
    assert!(group.suspended_processes().is_empty());
    assert_eq!(
        group.availability_zones(),
        [format!("{region}a"), format!("{region}b"), format!("{region}c")]
    );
    assert_eq!(
        sizes(&asg, "web-asg").await,
        (3, 4, 3),
        "MaxSize leaves room for the spare"
    );
    let expected: Vec<(String, String, String)> = ids
        .iter()
        .zip(["a", "b", "c"])
        .map(|(id, zone)| (id.clone(), "InService".to_owned(), format!("{region}{zone}")))
        .collect();
    assert_eq!(members(&asg, "web-asg").await, expected, "the spare is not a member");
    assert!(
        group
            .instances()
            .iter()
            .all(|i| i.health_status() == Some("Healthy") && i.protected_from_scale_in() == Some(false))
    );

    // An unknown name is not an error on AWS: the list is empty.
    let none = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("other-asg")
        .send()
        .await
        .expect("an unknown name is answered");
    assert!(none.auto_scaling_groups().is_empty());

    // DescribeAutoScalingInstances: the named members, each with its group; an instance of no group is left out.
    let output = asg
        .describe_auto_scaling_instances()
        .instance_ids(&ids[1])
        .instance_ids("i-0fffffffffffffff0")
        .send()
        .await
        .expect("DescribeAutoScalingInstances");
    let found = output.auto_scaling_instances();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].instance_id(), Some(ids[1].as_str()));
    assert_eq!(found[0].auto_scaling_group_name(), Some("web-asg"));
    assert_eq!(found[0].lifecycle_state(), Some("InService"));
    assert_eq!(found[0].health_status(), Some("Healthy"));
    assert_eq!(found[0].availability_zone(), Some(format!("{region}b").as_str()));
    let all = asg
        .describe_auto_scaling_instances()
        .send()
        .await
        .expect("DescribeAutoScalingInstances without IDs");
    assert_eq!(all.auto_scaling_instances().len(), 3);

    // Filters are not emulated: a clear refusal, not a silent wrong answer.
    let refused = asg
        .describe_auto_scaling_groups()
        .filters(
            aws_sdk_autoscaling::types::Filter::builder()
                .name("tag:app")
                .values("web")
                .build(),
        )
        .send()
        .await
        .expect_err("filters are refused");
    assert_eq!(refused.code(), Some("ValidationError"), "{refused:?}");

    let log = sandbox.call_log().records();
    assert!(
        log.iter().all(|r| r.service == Service::Autoscaling && !r.write),
        "{log:?}"
    );
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_group_follows_terminations_and_replacements_and_pitstop_reads_it() {
    let sandbox = start(fast_config().with_spare_instances(1)).await;
    let asg = client(&sandbox).await;
    let name = sandbox.auto_scaling_group_name().to_owned();
    assert_eq!(name, "sandbox-asg");
    let ids = sandbox.instance_ids();

    // A replacement: the old member goes through Terminating (while its targets drain) and leaves; the new one is
    // InService; the sizes stay.
    let replacing = {
        let ids = ids.clone();
        let asg = asg.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let seen = members(&asg, &name).await;
                if seen
                    .iter()
                    .any(|(id, state, _)| id == &ids[0] && state == "Terminating")
                {
                    return true;
                }
                if tokio::time::Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
    };
    let new = sandbox.replace_instance(&ids[0]).await.expect("replace");
    assert!(
        replacing.await.expect("watcher"),
        "the member read Terminating while it drained"
    );
    let after: Vec<String> = members(&asg, &name).await.into_iter().map(|(id, _, _)| id).collect();
    assert_eq!(after, [ids[1].clone(), ids[2].clone(), new.clone()]);
    assert!(
        members(&asg, &name)
            .await
            .iter()
            .all(|(_, state, _)| state == "InService")
    );
    assert_eq!(sizes(&asg, &name).await, (3, 4, 3));

    // A plain termination: the group shrinks by one.
    sandbox.terminate_instance(&ids[1]).await.expect("terminate");
    let after: Vec<String> = members(&asg, &name).await.into_iter().map(|(id, _, _)| id).collect();
    assert_eq!(after, [ids[2].clone(), new.clone()]);
    assert_eq!(sizes(&asg, &name).await, (2, 4, 2));

    // pitstop's client reads the same group, counts the call, and turns an unknown name into NotFound.
    let provider = SdkProvider::new(SdkSettings {
        endpoint_url: Some(sandbox.aws_endpoint_url()),
        credentials: Some(SharedCredentialsProvider::new(Credentials::new(
            "test",
            "test",
            None,
            None,
            "sandbox-autoscaling",
        ))),
        ..SdkSettings::default()
    });
    let apis = provider.for_region(sandbox.region()).await;
    let group = apis.auto_scaling.group(&name).await.expect("the group");
    assert_eq!(
        group
            .instances
            .iter()
            .filter(|i| i.in_service())
            .map(|i| i.instance_id.clone())
            .collect::<Vec<_>>(),
        [ids[2].clone(), new.clone()]
    );
    assert_eq!((group.min_size, group.max_size, group.desired_capacity), (2, 4, 2));
    let missing = apis.auto_scaling.group("no-such-asg").await.expect_err("no such group");
    assert_eq!(missing.kind, AwsErrorKind::NotFound, "{missing}");
    assert!(missing.message.contains("no-such-asg"), "{missing}");
    assert_eq!(
        provider
            .stats()
            .snapshot()
            .get(ApiOperation::DescribeAutoScalingGroups)
            .calls,
        2
    );

    // Denied by IAM: AWS's AccessDenied naming the action, which pitstop reads as such.
    sandbox
        .faults()
        .replace(pitstop_e2e::sandbox::FaultSettings {
            deny_operations: ["DescribeAutoScalingGroups".to_owned()].into(),
            ..Default::default()
        })
        .expect("faults");
    let denied = apis.auto_scaling.group(&name).await.expect_err("denied");
    assert_eq!(denied.kind, AwsErrorKind::AccessDenied, "{denied}");
    assert_eq!(denied.iam_action(), "autoscaling:DescribeAutoScalingGroups");
    assert!(
        sandbox
            .call_log()
            .records()
            .iter()
            .any(|r| r.operation == "DescribeAutoScalingGroups"
                && r.outcome
                    == CallOutcome::Error {
                        code: "AccessDenied".to_owned()
                    })
    );
    sandbox.shutdown().await.expect("sandbox stops");
}
