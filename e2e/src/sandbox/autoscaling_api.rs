//! The Auto Scaling wire (AWS Query protocol, XML answers in the shapes of the 2011-01-01 API) over the world's
//! group ([`super::autoscaling`]): `DescribeAutoScalingGroups`, `DescribeAutoScalingInstances`, `EnterStandby`,
//! `ExitStandby`, `UpdateAutoScalingGroup` (sizes only), `SuspendProcesses` and `ResumeProcesses`. Members are the
//! launched instances that are not terminated yet; a spare is not a member until it is launched. What the group
//! refuses is a `ValidationError` with AWS's message.

use std::sync::Arc;

use super::Shared;
use super::autoscaling::{self as world, Refused};
use super::instance::Instance;
use super::protocol::{ApiError, QueryParams, Xml};

/// The Auto Scaling operations this wire answers.
const ACTIONS: &[&str] = &[
    "DescribeAutoScalingGroups",
    "DescribeAutoScalingInstances",
    "EnterStandby",
    "ExitStandby",
    "UpdateAutoScalingGroup",
    "SuspendProcesses",
    "ResumeProcesses",
];

/// Whether `action` is an Auto Scaling call this wire answers.
pub(crate) fn handles(action: &str) -> bool {
    ACTIONS.contains(&action)
}

/// The instance IDs a call names (`InstanceIds.member.N`), for the call log.
pub(crate) fn call_instance_ids(params: &QueryParams) -> Vec<String> {
    list(params, "InstanceIds")
}

/// Carries out an Auto Scaling call; returns the XML inside `<{Action}Result>`.
pub(crate) fn execute(shared: &Arc<Shared>, action: &str, params: &QueryParams) -> Result<String, ApiError> {
    match action {
        "DescribeAutoScalingGroups" => describe_groups(shared, params),
        "DescribeAutoScalingInstances" => describe_instances(shared, params),
        "EnterStandby" => {
            group_named(shared, params)?;
            let ids = instance_ids(params)?;
            let decrement = match params.require("ShouldDecrementDesiredCapacity")? {
                "true" => true,
                "false" => false,
                other => {
                    return Err(ApiError::validation(format!(
                        "ShouldDecrementDesiredCapacity must be true or false, not {other:?}"
                    )));
                }
            };
            let cause = if decrement {
                "in response to a user request, shrinking the capacity"
            } else {
                "in response to a user request"
            };
            world::enter_standby(shared, &ids, decrement).map_err(refused)?;
            Ok(activities(shared, &ids, "Moving EC2 instance to Standby", cause))
        }
        "ExitStandby" => {
            group_named(shared, params)?;
            let ids = instance_ids(params)?;
            world::exit_standby(shared, &ids).map_err(refused)?;
            Ok(activities(
                shared,
                &ids,
                "Moving EC2 instance out of Standby",
                "in response to a user request, increasing the capacity",
            ))
        }
        "UpdateAutoScalingGroup" => {
            group_named(shared, params)?;
            let size = |key: &str| -> Result<Option<usize>, ApiError> {
                params
                    .get(key)
                    .map(|v| {
                        v.parse::<usize>()
                            .map_err(|_| ApiError::validation(format!("{key} must be a whole number, not {v:?}")))
                    })
                    .transpose()
            };
            shared
                .auto_scaling
                .update_sizes(size("MinSize")?, size("MaxSize")?, size("DesiredCapacity")?)
                .map_err(refused)?;
            Ok(String::new())
        }
        "SuspendProcesses" | "ResumeProcesses" => {
            group_named(shared, params)?;
            let processes = list(params, "ScalingProcesses");
            let group = &shared.auto_scaling;
            let done = if action == "SuspendProcesses" {
                group.suspend(&processes)
            } else {
                group.resume(&processes)
            };
            done.map_err(refused)?;
            Ok(String::new())
        }
        other => Err(ApiError::client(
            "InvalidAction",
            format!("The action {other} is not valid for this web service."),
        )),
    }
}

fn refused(refused: Refused) -> ApiError {
    ApiError::validation(refused.0)
}

/// Checks `AutoScalingGroupName` names the group.
fn group_named(shared: &Shared, params: &QueryParams) -> Result<(), ApiError> {
    let name = params.require("AutoScalingGroupName")?;
    if name == shared.auto_scaling.name {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "AutoScalingGroup name not found - AutoScalingGroup {name} not found"
        )))
    }
}

/// `InstanceIds.member.N`: at least one, at most 20 (EnterStandby's and ExitStandby's limit).
fn instance_ids(params: &QueryParams) -> Result<Vec<String>, ApiError> {
    let ids = list(params, "InstanceIds");
    if ids.is_empty() || ids.len() > 20 {
        return Err(ApiError::validation(format!(
            "between 1 and 20 InstanceIds are required, not {}",
            ids.len()
        )));
    }
    Ok(ids)
}

/// The `Activities` of a Standby call, one per instance, `InProgress` as AWS answers them.
fn activities(shared: &Shared, ids: &[String], description: &str, cause: &str) -> String {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let mut xml = Xml::default();
    xml.open("Activities");
    for id in ids {
        xml.open("member")
            .leaf("ActivityId", uuid::Uuid::new_v4())
            .leaf("AutoScalingGroupName", &shared.auto_scaling.name)
            .leaf("Description", format!("{description}: {id}"))
            .leaf("Cause", format!("At {now} instance {id} was moved {cause}."))
            .leaf("StartTime", &now)
            .leaf("StatusCode", "InProgress")
            .leaf("Progress", 30)
            .close("member");
    }
    xml.close("Activities");
    xml.finish()
}

/// The values of a plain Query list (`{name}.member.N`), in `N` order.
fn list(params: &QueryParams, name: &str) -> Vec<String> {
    params
        .members(name)
        .into_iter()
        .filter_map(|fields| fields.into_iter().find(|(field, _)| field.is_empty()).map(|(_, v)| v))
        .collect()
}

/// The group's members now, in ID order.
fn members(shared: &Shared) -> Vec<&Instance> {
    world::members(shared)
        .iter()
        .filter_map(|id| shared.instance(id).map(AsRef::as_ref))
        .collect()
}

/// The fields every member listing shares (a group's `Instances` and `AutoScalingInstances`).
fn member_fields(shared: &Shared, xml: &mut Xml, instance: &Instance) {
    xml.leaf("InstanceId", &instance.id)
        .leaf("InstanceType", "t3.micro")
        .leaf("AvailabilityZone", &instance.zone)
        .leaf("LifecycleState", shared.auto_scaling.lifecycle(&instance.id).as_str())
        .leaf("HealthStatus", shared.auto_scaling.health_status(&instance.id))
        .open("LaunchTemplate")
        .leaf("LaunchTemplateId", "lt-0123456789abcdef0")
        .leaf("LaunchTemplateName", "sandbox")
        .leaf("Version", "1")
        .close("LaunchTemplate")
        .leaf("ProtectedFromScaleIn", false);
}

/// The group when `AutoScalingGroupNames` is empty or names it (an unknown name is simply not listed, as on AWS).
fn describe_groups(shared: &Shared, params: &QueryParams) -> Result<String, ApiError> {
    if params.pairs().iter().any(|(k, _)| k.starts_with("Filters.")) {
        return Err(ApiError::validation(
            "the sandbox does not support Filters in DescribeAutoScalingGroups: name the group instead",
        ));
    }
    let names = list(params, "AutoScalingGroupNames");
    let group = &shared.auto_scaling;
    let mut xml = Xml::default();
    xml.open("AutoScalingGroups");
    if names.is_empty() || names.contains(&group.name) {
        let sizes = group.sizes();
        xml.open("member")
            .leaf("AutoScalingGroupName", &group.name)
            .leaf("AutoScalingGroupARN", &group.arn)
            .open("LaunchTemplate")
            .leaf("LaunchTemplateId", "lt-0123456789abcdef0")
            .leaf("LaunchTemplateName", "sandbox")
            .leaf("Version", "1")
            .close("LaunchTemplate")
            .leaf("MinSize", sizes.min_size)
            .leaf("MaxSize", sizes.max_size)
            .leaf("DesiredCapacity", sizes.desired_capacity)
            .leaf("DefaultCooldown", 300)
            .open("AvailabilityZones");
        let mut zones: Vec<&str> = shared.instances.iter().map(|i| i.zone.as_str()).collect();
        zones.sort_unstable();
        zones.dedup();
        for zone in zones {
            xml.leaf("member", zone);
        }
        xml.close("AvailabilityZones").open("TargetGroupARNs");
        for target_group in &shared.target_groups {
            xml.leaf("member", &target_group.arn);
        }
        xml.close("TargetGroupARNs")
            .leaf("HealthCheckType", group.health_check_type())
            .leaf(
                "HealthCheckGracePeriod",
                group.elb_health_check_grace.map_or(300, |g| g.as_secs()),
            )
            .open("Instances");
        for instance in members(shared) {
            xml.open("member");
            member_fields(shared, &mut xml, instance);
            xml.close("member");
        }
        xml.close("Instances")
            .leaf("CreatedTime", "2026-01-01T00:00:00.000Z")
            .open("SuspendedProcesses");
        for (process, reason) in group.suspended() {
            xml.open("member")
                .leaf("ProcessName", process)
                .leaf("SuspensionReason", reason)
                .close("member");
        }
        xml.close("SuspendedProcesses")
            .open("TerminationPolicies")
            .leaf("member", "Default")
            .close("TerminationPolicies")
            .leaf("NewInstancesProtectedFromScaleIn", false)
            .close("member");
    }
    xml.close("AutoScalingGroups");
    Ok(xml.finish())
}

/// The members named by `InstanceIds` (every member when none is named), each with its group; an instance that is
/// in no group is not listed, as on AWS.
fn describe_instances(shared: &Shared, params: &QueryParams) -> Result<String, ApiError> {
    let ids = list(params, "InstanceIds");
    if ids.len() > 50 {
        return Err(ApiError::validation(format!(
            "The number of instance ids that may be passed in is 50, but {} were given.",
            ids.len()
        )));
    }
    let mut xml = Xml::default();
    xml.open("AutoScalingInstances");
    for instance in members(shared) {
        if !ids.is_empty() && !ids.contains(&instance.id) {
            continue;
        }
        xml.open("member")
            .leaf("AutoScalingGroupName", &shared.auto_scaling.name);
        member_fields(shared, &mut xml, instance);
        xml.close("member");
    }
    xml.close("AutoScalingInstances");
    Ok(xml.finish())
}
