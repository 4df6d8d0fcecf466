//! The Auto Scaling wire: `DescribeAutoScalingGroups` and `DescribeAutoScalingInstances` (AWS Query protocol, XML
//! answers in the shapes of the 2011-01-01 API) over the world's group ([`super::autoscaling`]). Members are the
//! launched instances that are not terminated yet; a spare is not a member until it is launched.

use super::Shared;
use super::instance::Instance;
use super::protocol::{ApiError, QueryParams, Xml};

/// The Auto Scaling operations this wire answers.
const ACTIONS: &[&str] = &["DescribeAutoScalingGroups", "DescribeAutoScalingInstances"];

/// Whether `action` is an Auto Scaling call this wire answers.
pub(crate) fn handles(action: &str) -> bool {
    ACTIONS.contains(&action)
}

/// The instance IDs a call names (`InstanceIds.member.N`), for the call log.
pub(crate) fn call_instance_ids(params: &QueryParams) -> Vec<String> {
    list(params, "InstanceIds")
}

/// Carries out an Auto Scaling call; returns the XML inside `<{Action}Result>`.
pub(crate) fn execute(shared: &Shared, action: &str, params: &QueryParams) -> Result<String, ApiError> {
    match action {
        "DescribeAutoScalingGroups" => describe_groups(shared, params),
        "DescribeAutoScalingInstances" => describe_instances(shared, params),
        other => Err(ApiError::client(
            "InvalidAction",
            format!("The action {other} is not valid for this web service."),
        )),
    }
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
    let mut members: Vec<&Instance> = shared
        .instances
        .iter()
        .map(AsRef::as_ref)
        .filter(|i| i.in_service())
        .collect();
    members.sort_by(|a, b| a.id.cmp(&b.id));
    members
}

/// The fields every member listing shares (a group's `Instances` and `AutoScalingInstances`).
fn member_fields(shared: &Shared, xml: &mut Xml, instance: &Instance) {
    xml.leaf("InstanceId", &instance.id)
        .leaf("InstanceType", "t3.micro")
        .leaf("AvailabilityZone", &instance.zone)
        .leaf("LifecycleState", shared.auto_scaling.lifecycle(&instance.id).as_str())
        .leaf("HealthStatus", "Healthy")
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
            .leaf("HealthCheckType", "ELB")
            .leaf("HealthCheckGracePeriod", 300)
            .open("Instances");
        for instance in members(shared) {
            xml.open("member");
            member_fields(shared, &mut xml, instance);
            xml.close("member");
        }
        xml.close("Instances")
            .leaf("CreatedTime", "2026-01-01T00:00:00.000Z")
            .open("SuspendedProcesses")
            .close("SuspendedProcesses")
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
