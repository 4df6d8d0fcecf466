//! The sandbox's Auto Scaling group, seen through the unmodified AWS SDK (`aws-sdk-autoscaling`) and through
//! pitstop's own client (`SdkProvider`): DescribeAutoScalingGroups and DescribeAutoScalingInstances in AWS's
//! shapes, a group that follows terminations (`Terminating`, then gone, one fewer desired) and replacements (the new
//! instance `InService`, the sizes kept), and the errors AWS gives; Standby (out of and back into every target
//! group, refused below MinSize), UpdateAutoScalingGroup, Suspend/ResumeProcesses, a lost EnterStandby answer, and
//! the ELB health check that replaces an unhealthy member unless ReplaceUnhealthy is suspended.
//!
//! Every wait is bounded by a generous limit that only stops a hang; nothing asserts how long anything took.

mod sandbox_support;

use aws_sdk_autoscaling::error::ProvideErrorMetadata;
use aws_sdk_ssm::config::{Credentials, SharedCredentialsProvider};
use pitstop::aws::sdk::{ApiOperation, SdkProvider, SdkSettings};
use pitstop::aws::{AwsErrorKind, AwsProvider};
use std::time::Duration;

use pitstop_e2e::sandbox::{CallOutcome, LostAnswer, LostAnswerMode, Power, Sandbox, Service};
use sandbox_support::{
    FLAG_FILE_REBOOT, clients, eventually, fast_config, sdk_config, send_script, start, target_state,
    wait_for_target_state,
};

/// Upper bound of every wait: only there so a hang fails instead of blocking.
const LIMIT: Duration = Duration::from_secs(30);

/// The lifecycle state of one member, from DescribeAutoScalingInstances.
async fn lifecycle(client: &aws_sdk_autoscaling::Client, id: &str) -> String {
    let output = client
        .describe_auto_scaling_instances()
        .instance_ids(id)
        .send()
        .await
        .expect("DescribeAutoScalingInstances");
    output
        .auto_scaling_instances()
        .first()
        .and_then(|i| i.lifecycle_state())
        .unwrap_or("(not a member)")
        .to_owned()
}

/// Polls the member's lifecycle state until it is `end`; returns every state seen, repeats collapsed. Panics after
/// [`LIMIT`].
async fn lifecycle_until(client: &aws_sdk_autoscaling::Client, id: &str, end: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let state = lifecycle(client, id).await;
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        if state == end {
            return seen;
        }
        assert!(tokio::time::Instant::now() < deadline, "{id} not {end}: saw {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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
    assert_eq!(group.health_check_type(), Some("EC2"), "the ELB health check is opt-in");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_a_member_out_of_every_target_group_and_back_and_is_refused_below_min_size() {
    let sandbox = start(fast_config().with_spare_instances(1).with_target_groups(2)).await;
    let asg = client(&sandbox).await;
    let (elb, _) = clients(&sandbox, false).await;
    let name = sandbox.auto_scaling_group_name().to_owned();
    let ids = sandbox.instance_ids();
    let id = ids[0].clone();
    let groups = sandbox.target_group_arns();

    // MinSize = DesiredCapacity = 3: decrementing would go below MinSize.
    let refused = asg
        .enter_standby()
        .auto_scaling_group_name(&name)
        .instance_ids(&id)
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .expect_err("below MinSize");
    assert_eq!(refused.code(), Some("ValidationError"), "{refused:?}");
    assert_eq!(
        refused.message(),
        Some(
            "AutoScalingGroup sandbox-asg has min-size=3, max-size=4, and desired-capacity=3. To place into standby \
             1 instances, please update the AutoScalingGroup sizes appropriately."
        )
    );
    assert_eq!(
        lifecycle(&asg, &id).await,
        "InService",
        "a refused call changes nothing"
    );

    // Lower MinSize by one, as AWS's CodeDeploy samples do; then EnterStandby is accepted.
    asg.update_auto_scaling_group()
        .auto_scaling_group_name(&name)
        .min_size(2)
        .send()
        .await
        .expect("UpdateAutoScalingGroup");
    assert_eq!(sizes(&asg, &name).await, (2, 4, 3));
    let entered = asg
        .enter_standby()
        .auto_scaling_group_name(&name)
        .instance_ids(&id)
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .expect("EnterStandby");
    let activity = entered.activities().first().expect("an activity");
    assert_eq!(activity.status_code().map(|s| s.as_str()), Some("InProgress"));
    assert!(activity.description().is_some_and(|d| d.contains(&id)), "{activity:?}");
    assert_eq!(sizes(&asg, &name).await, (2, 4, 2), "DesiredCapacity decremented");
    // The group deregisters it from every target group: draining, then unused.
    for arn in &groups {
        let state = target_state(&elb, arn, &id).await;
        assert!(state == "draining" || state == "unused", "{arn}: {state}");
    }
    let seen = lifecycle_until(&asg, &id, "Standby").await;
    assert_eq!(seen.first().map(String::as_str), Some("EnteringStandby"), "{seen:?}");
    for arn in &groups {
        assert_eq!(target_state(&elb, arn, &id).await, "unused", "{arn}");
    }
    // A second EnterStandby is refused: it cannot enter twice, nor decrement twice.
    let twice = asg
        .enter_standby()
        .auto_scaling_group_name(&name)
        .instance_ids(&id)
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .expect_err("already in Standby");
    assert_eq!(
        twice.message(),
        Some(format!("The instance {id} is not in InService.").as_str())
    );
    assert_eq!(sizes(&asg, &name).await, (2, 4, 2));
    // The group's InService members no longer include it.
    assert!(
        members(&asg, &name)
            .await
            .iter()
            .any(|(m, state, _)| m == &id && state == "Standby")
    );

    // ExitStandby: registered again in every group, healthy there, InService, DesiredCapacity back.
    let not_standby = asg
        .exit_standby()
        .auto_scaling_group_name(&name)
        .instance_ids(&ids[1])
        .send()
        .await
        .expect_err("not in Standby");
    assert_eq!(
        not_standby.message(),
        Some(format!("The instance {} is not in Standby.", ids[1]).as_str())
    );
    asg.exit_standby()
        .auto_scaling_group_name(&name)
        .instance_ids(&id)
        .send()
        .await
        .expect("ExitStandby");
    let seen = lifecycle_until(&asg, &id, "InService").await;
    assert!(seen.iter().all(|s| s == "Pending" || s == "InService"), "{seen:?}");
    for arn in &groups {
        wait_for_target_state(&elb, arn, &id, "healthy", "healthy again", LIMIT).await;
    }
    assert_eq!(sizes(&asg, &name).await, (2, 4, 3));
    asg.update_auto_scaling_group()
        .auto_scaling_group_name(&name)
        .min_size(3)
        .send()
        .await
        .expect("MinSize restored");
    assert_eq!(sizes(&asg, &name).await, (3, 4, 3));

    // Sizes AWS refuses, and an unknown group.
    let bad = asg
        .update_auto_scaling_group()
        .auto_scaling_group_name(&name)
        .desired_capacity(5)
        .send()
        .await
        .expect_err("above MaxSize");
    assert_eq!(
        bad.message(),
        Some("Desired capacity:5 must be between the specified min size:3 and max size:4")
    );
    let unknown = asg
        .enter_standby()
        .auto_scaling_group_name("other-asg")
        .instance_ids(&id)
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .expect_err("unknown group");
    assert_eq!(unknown.code(), Some("ValidationError"), "{unknown:?}");
    assert_eq!(sizes(&asg, &name).await, (3, 4, 3));
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_enter_standby_answer_still_puts_the_member_in_standby_once() {
    let sandbox = start(fast_config()).await;
    let asg = client(&sandbox).await;
    let name = sandbox.auto_scaling_group_name().to_owned();
    let id = sandbox.instance_ids()[2].clone();
    asg.update_auto_scaling_group()
        .auto_scaling_group_name(&name)
        .min_size(2)
        .send()
        .await
        .expect("UpdateAutoScalingGroup");
    sandbox
        .faults()
        .set_lost_answer("EnterStandby", Some(LostAnswer::next(LostAnswerMode::Error500, 1)))
        .expect("rule");
    // Retries off: the client sees the 500 of the answer that was lost.
    let lost = asg
        .enter_standby()
        .auto_scaling_group_name(&name)
        .instance_ids(&id)
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .expect_err("the answer is lost");
    assert!(
        format!("{lost:?}").contains("500") || lost.code() == Some("InternalFailure"),
        "{lost:?}"
    );
    assert!(
        sandbox
            .call_log()
            .records()
            .iter()
            .any(|r| r.operation == "EnterStandby" && matches!(r.outcome, CallOutcome::AnswerLost { .. }))
    );
    // It was carried out: a client that reads before it retries sees it, and a blind retry is refused.
    lifecycle_until(&asg, &id, "Standby").await;
    assert_eq!(sizes(&asg, &name).await, (2, 3, 2), "decremented once");
    let retry = asg
        .enter_standby()
        .auto_scaling_group_name(&name)
        .instance_ids(&id)
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .expect_err("a blind retry");
    assert_eq!(retry.code(), Some("ValidationError"), "{retry:?}");
    assert_eq!(sizes(&asg, &name).await, (2, 3, 2), "still decremented once");
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_are_suspended_and_resumed_and_listed_with_their_reasons() {
    let sandbox = start(fast_config()).await;
    let asg = client(&sandbox).await;
    let name = sandbox.auto_scaling_group_name().to_owned();
    let suspended = |asg: aws_sdk_autoscaling::Client, name: String| async move {
        let output = asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&name)
            .send()
            .await
            .expect("DescribeAutoScalingGroups");
        output
            .auto_scaling_groups()
            .first()
            .expect("the group")
            .suspended_processes()
            .iter()
            .map(|p| {
                assert!(
                    p.suspension_reason()
                        .is_some_and(|r| r.starts_with("User suspended at ")),
                    "{p:?}"
                );
                p.process_name().unwrap_or_default().to_owned()
            })
            .collect::<Vec<_>>()
    };
    asg.suspend_processes()
        .auto_scaling_group_name(&name)
        .scaling_processes("HealthCheck")
        .scaling_processes("ReplaceUnhealthy")
        .scaling_processes("AZRebalance")
        .send()
        .await
        .expect("SuspendProcesses");
    assert_eq!(
        suspended(asg.clone(), name.clone()).await,
        ["AZRebalance", "HealthCheck", "ReplaceUnhealthy"]
    );
    // AWS has no ScaleIn process (scale-in protection is SetInstanceProtection): refused, nothing changed.
    let refused = asg
        .suspend_processes()
        .auto_scaling_group_name(&name)
        .scaling_processes("ScaleIn")
        .send()
        .await
        .expect_err("not a process");
    assert_eq!(refused.code(), Some("ValidationError"), "{refused:?}");
    assert_eq!(suspended(asg.clone(), name.clone()).await.len(), 3);
    asg.resume_processes()
        .auto_scaling_group_name(&name)
        .scaling_processes("HealthCheck")
        .scaling_processes("ReplaceUnhealthy")
        .send()
        .await
        .expect("ResumeProcesses");
    assert_eq!(
        suspended(asg.clone(), name.clone()).await,
        ["AZRebalance"],
        "only what was resumed"
    );
    asg.resume_processes()
        .auto_scaling_group_name(&name)
        .send()
        .await
        .expect("ResumeProcesses of everything");
    assert!(suspended(asg.clone(), name.clone()).await.is_empty());
    sandbox.shutdown().await.expect("sandbox stops");
}

/// Reboots `id` in place through SSM (no draining) and waits for the command to finish.
async fn reboot_in_place(sandbox: &Sandbox, id: &str) {
    let (_, ssm) = clients(sandbox, true).await;
    let boots = sandbox.boot_count(id).unwrap_or(0);
    send_script(&ssm, id, FLAG_FILE_REBOOT, "reboot in place").await;
    eventually("the reboot", LIMIT, || async {
        (sandbox.boot_count(id).unwrap_or(0) > boots && sandbox.power(id) == Some(Power::Running)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_elb_health_check_replaces_an_unhealthy_member_unless_replace_unhealthy_is_suspended() {
    let sandbox = start(
        fast_config()
            .with_spare_instances(1)
            .with_elb_health_check(Duration::from_millis(500)),
    )
    .await;
    let asg = client(&sandbox).await;
    let (elb, _) = clients(&sandbox, false).await;
    let name = sandbox.auto_scaling_group_name().to_owned();
    let arn = sandbox.target_group_arn().to_owned();
    let ids = sandbox.instance_ids();
    let output = asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&name)
        .send()
        .await
        .expect("DescribeAutoScalingGroups");
    assert_eq!(output.auto_scaling_groups()[0].health_check_type(), Some("ELB"));

    // ReplaceUnhealthy suspended: the member comes back from a reboot unhealthy, is marked so, and stays.
    asg.suspend_processes()
        .auto_scaling_group_name(&name)
        .scaling_processes("ReplaceUnhealthy")
        .send()
        .await
        .expect("SuspendProcesses");
    sandbox.faults().set_unhealthy_after_boot(&ids[0], true).expect("fault");
    reboot_in_place(&sandbox, &ids[0]).await;
    wait_for_target_state(&elb, &arn, &ids[0], "unhealthy", "unhealthy after its boot", LIMIT).await;
    eventually("marked Unhealthy", LIMIT, || async {
        let output = asg
            .describe_auto_scaling_instances()
            .instance_ids(&ids[0])
            .send()
            .await
            .expect("DescribeAutoScalingInstances");
        (output.auto_scaling_instances().first().and_then(|i| i.health_status()) == Some("Unhealthy")).then_some(())
    })
    .await;
    assert!(sandbox.auto_scaling_replacements().is_empty());
    assert_eq!(sandbox.power(&ids[0]), Some(Power::Running), "kept");
    assert!(
        members(&asg, &name)
            .await
            .iter()
            .any(|(m, state, _)| m == &ids[0] && state == "InService"),
        "still a member"
    );

    // ReplaceUnhealthy resumed: the member marked meanwhile is terminated, and a spare launched and registered.
    asg.resume_processes()
        .auto_scaling_group_name(&name)
        .scaling_processes("ReplaceUnhealthy")
        .send()
        .await
        .expect("ResumeProcesses");
    eventually("replaced", LIMIT, || async {
        (sandbox.power(&ids[0]) == Some(Power::Terminated)).then_some(())
    })
    .await;
    assert_eq!(sandbox.auto_scaling_replacements(), [ids[0].clone()]);
    let new = eventually("a new member", LIMIT, || async {
        sandbox.instance_ids().into_iter().find(|i| !ids.contains(i))
    })
    .await;
    wait_for_target_state(&elb, &arn, &new, "healthy", "the replacement healthy", LIMIT).await;
    let after: Vec<String> = members(&asg, &name).await.into_iter().map(|(id, _, _)| id).collect();
    assert!(!after.contains(&ids[0]), "{after:?}");
    assert!(after.contains(&new), "{after:?}");
    assert_eq!(sizes(&asg, &name).await, (3, 4, 3), "a replacement keeps the sizes");
    sandbox.shutdown().await.expect("sandbox stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pitstops_auto_scaling_client_reads_memberships_and_makes_the_standby_and_process_calls() {
    let sandbox = start(fast_config().with_spare_instances(1)).await;
    let name = sandbox.auto_scaling_group_name().to_owned();
    let ids = sandbox.instance_ids();
    let id = ids[1].clone();
    sandbox.call_log().clear();
    let provider = SdkProvider::new(SdkSettings {
        endpoint_url: Some(sandbox.aws_endpoint_url()),
        credentials: Some(SharedCredentialsProvider::new(Credentials::new(
            "test",
            "test",
            None,
            None,
            "sandbox-autoscaling",
        ))),
        // One attempt: every refusal reaches the caller as it is.
        max_attempts: 1,
        ..SdkSettings::default()
    });
    let asg = provider.for_region(sandbox.region()).await.auto_scaling;
    let spare = pitstop_e2e::sandbox::instance_id(3);

    let found = asg
        .memberships(&[id.clone(), spare.clone()])
        .await
        .expect("DescribeAutoScalingInstances");
    assert_eq!(found.keys().collect::<Vec<_>>(), [&id], "the spare is in no group");
    assert_eq!(found[&id].group_name, name);
    assert_eq!(found[&id].lifecycle_state, "InService");
    assert_eq!(found[&id].health_status, "Healthy");

    // Below MinSize: refused as AWS refuses it, a Rejected ValidationError with AWS's message.
    let refused = asg.enter_standby(&name, &id).await.expect_err("below MinSize");
    assert_eq!(refused.kind, AwsErrorKind::Rejected, "{refused}");
    assert_eq!(refused.code.as_deref(), Some("ValidationError"));
    assert!(
        refused.message.contains("please update the AutoScalingGroup sizes"),
        "{refused}"
    );
    assert_eq!(refused.iam_action(), "autoscaling:EnterStandby");

    asg.set_min_size(&name, 2).await.expect("UpdateAutoScalingGroup");
    asg.enter_standby(&name, &id).await.expect("EnterStandby");
    let states = {
        let mut seen: Vec<String> = Vec::new();
        let deadline = tokio::time::Instant::now() + LIMIT;
        loop {
            let state = asg.memberships(std::slice::from_ref(&id)).await.expect("memberships")[&id]
                .lifecycle_state
                .clone();
            if seen.last() != Some(&state) {
                seen.push(state.clone());
            }
            if state == "Standby" {
                break seen;
            }
            assert!(tokio::time::Instant::now() < deadline, "{seen:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert_eq!(
        states.first().map(String::as_str),
        Some("EnteringStandby"),
        "{states:?}"
    );
    let group = asg.group(&name).await.expect("group");
    assert_eq!((group.min_size, group.desired_capacity), (2, 2));
    assert!(
        !group.instances.iter().any(|i| i.instance_id == id && i.in_service()),
        "{group:?}"
    );
    asg.exit_standby(&name, &id).await.expect("ExitStandby");
    asg.set_min_size(&name, 3).await.expect("MinSize restored");

    let processes = ["HealthCheck".to_owned(), "ReplaceUnhealthy".to_owned()];
    asg.suspend_processes(&name, &processes)
        .await
        .expect("SuspendProcesses");
    assert_eq!(asg.group(&name).await.expect("group").suspended_processes, processes);
    asg.resume_processes(&name, &processes[..1])
        .await
        .expect("ResumeProcesses");
    assert_eq!(
        asg.group(&name).await.expect("group").suspended_processes,
        ["ReplaceUnhealthy"]
    );
    // An empty list would be every process on AWS: refused before any call.
    let calls_before = sandbox.call_log().records().len();
    let empty = asg.resume_processes(&name, &[]).await.expect_err("no process named");
    assert_eq!(empty.kind, AwsErrorKind::Rejected, "{empty}");
    assert_eq!(sandbox.call_log().records().len(), calls_before, "no call made");

    // Every call counted under its own operation, as the sandbox logged it.
    let stats = provider.stats().snapshot();
    let log = sandbox.call_log().records();
    for op in [
        ApiOperation::DescribeAutoScalingInstances,
        ApiOperation::DescribeAutoScalingGroups,
        ApiOperation::EnterStandby,
        ApiOperation::ExitStandby,
        ApiOperation::UpdateAutoScalingGroup,
        ApiOperation::SuspendProcesses,
        ApiOperation::ResumeProcesses,
    ] {
        let logged = log.iter().filter(|r| r.operation == op.as_str()).count() as u64;
        assert!(logged > 0, "{op} was called");
        assert_eq!(stats.get(op).calls, logged, "{op}");
    }
    assert_eq!(stats.get(ApiOperation::EnterStandby).errors, 1, "the refusal");
    sandbox.shutdown().await.expect("sandbox stops");
}
