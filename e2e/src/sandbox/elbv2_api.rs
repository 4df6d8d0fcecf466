//! The ELBv2 operations (AWS Query protocol, XML answers).

use std::sync::Arc;

use super::Shared;
use super::protocol::{ApiError, QueryParams, Xml};
use super::targets::{self, TargetHealth};

/// Instance IDs named by `Targets.member.N.Id`, for the call log.
pub(crate) fn call_instance_ids(params: &QueryParams) -> Vec<String> {
    params
        .members("Targets")
        .into_iter()
        .filter_map(|fields| fields.into_iter().find(|(k, _)| k == "Id").map(|(_, v)| v))
        .collect()
}

/// Carries out one ELBv2 action, returning the inside of its `<{Action}Result>` element.
pub(crate) async fn execute(shared: &Arc<Shared>, action: &str, params: &QueryParams) -> Result<String, ApiError> {
    match action {
        "DescribeTargetHealth" => describe_target_health(shared, params).await,
        "DescribeTargetGroupAttributes" => describe_target_group_attributes(shared, params),
        "DescribeTargetGroups" => describe_target_groups(shared, params),
        "RegisterTargets" => register_targets(shared, params).await,
        "DeregisterTargets" => deregister_targets(shared, params).await,
        "DescribeTags" => describe_tags(shared, params),
        "AddTags" => add_tags(shared, params),
        "RemoveTags" => remove_tags(shared, params),
        other => Err(ApiError::client(
            "InvalidAction",
            format!("the pitstop sandbox does not implement the ELBv2 action {other}"),
        )),
    }
}

/// The index of the sandbox's target group `TargetGroupArn` names.
fn check_target_group(shared: &Shared, params: &QueryParams) -> Result<usize, ApiError> {
    let arn = params.require("TargetGroupArn")?;
    shared.target_group_index(arn).ok_or_else(|| {
        ApiError::client(
            "TargetGroupNotFound",
            format!("One or more target groups not found: {arn}"),
        )
    })
}

/// The sandbox's target groups `ResourceArns.member.N` names (1 to 20 of them, as ELBv2
/// allows; the sandbox has no load balancers or listeners to tag).
fn tagged_groups(shared: &Shared, params: &QueryParams) -> Result<Vec<usize>, ApiError> {
    let arns: Vec<String> = params
        .members("ResourceArns")
        .into_iter()
        .flatten()
        .map(|(_, v)| v)
        .collect();
    if arns.is_empty() || arns.len() > 20 {
        return Err(ApiError::validation("ResourceArns must name 1 to 20 resources"));
    }
    arns.iter()
        .map(|arn| {
            shared.target_group_index(arn).ok_or_else(|| {
                ApiError::client(
                    "TargetGroupNotFound",
                    format!("One or more target groups not found: {arn}"),
                )
            })
        })
        .collect()
}

fn describe_tags(shared: &Shared, params: &QueryParams) -> Result<String, ApiError> {
    let mut xml = Xml::default();
    xml.open("TagDescriptions");
    for index in tagged_groups(shared, params)? {
        let group = &shared.target_groups[index];
        xml.open("member").leaf("ResourceArn", &group.arn).open("Tags");
        for (key, value) in group.tags() {
            xml.open("member")
                .leaf("Key", &key)
                .leaf("Value", &value)
                .close("member");
        }
        xml.close("Tags").close("member");
    }
    xml.close("TagDescriptions");
    Ok(xml.finish())
}

fn add_tags(shared: &Shared, params: &QueryParams) -> Result<String, ApiError> {
    let tags = params
        .members("Tags")
        .into_iter()
        .map(|fields| {
            let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            let key = field("Key").ok_or_else(|| ApiError::validation("every tag needs a Key"))?;
            Ok((key, field("Value").unwrap_or_default()))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    for index in tagged_groups(shared, params)? {
        shared.target_groups[index].retag(&tags, &[]);
    }
    Ok(String::new())
}

fn remove_tags(shared: &Shared, params: &QueryParams) -> Result<String, ApiError> {
    let keys: Vec<String> = params
        .members("TagKeys")
        .into_iter()
        .flatten()
        .map(|(_, v)| v)
        .collect();
    for index in tagged_groups(shared, params)? {
        shared.target_groups[index].retag(&[], &keys);
    }
    Ok(String::new())
}

/// `Targets.member.N` as `(Id, Port)`; a missing port is the target group's.
fn targets(shared: &Shared, index: usize, params: &QueryParams) -> Result<Vec<(String, u16)>, ApiError> {
    let default_port = shared.target_groups[index].port;
    params
        .members("Targets")
        .into_iter()
        .map(|fields| {
            let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
            let id = field("Id").ok_or_else(|| ApiError::validation("every target needs an Id"))?;
            let port = match field("Port") {
                Some(port) => port
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| ApiError::validation(format!("{port:?} is not a valid port")))?,
                None => default_port,
            };
            Ok((id.to_owned(), port))
        })
        .collect()
}

/// Refuses targets that are not instances of the fleet, as ELBv2 does with `InvalidTarget`.
fn check_known(shared: &Shared, targets: &[(String, u16)]) -> Result<(), ApiError> {
    let unknown: Vec<&str> = targets
        .iter()
        .map(|(id, _)| id.as_str())
        .filter(|id| shared.instance(id).is_none())
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::client(
            "InvalidTarget",
            format!("The following targets are not valid instances: {}", unknown.join(", ")),
        ));
    }
    Ok(())
}

fn write_health(xml: &mut Xml, id: &str, port: u16, health: &TargetHealth) {
    xml.open("member");
    xml.open("Target").leaf("Id", id).leaf("Port", port).close("Target");
    xml.leaf("HealthCheckPort", port);
    xml.open("TargetHealth").leaf("State", health.state.as_str());
    if let Some(reason) = &health.reason {
        xml.leaf("Reason", reason);
    }
    if let Some(description) = &health.description {
        xml.leaf("Description", description);
    }
    xml.close("TargetHealth");
    xml.close("member");
}

/// Without `Targets`: every registered or draining target. With them: exactly those, unregistered ones `unused`.
async fn describe_target_health(shared: &Shared, params: &QueryParams) -> Result<String, ApiError> {
    let index = check_target_group(shared, params)?;
    let wanted = targets(shared, index, params)?;
    check_known(shared, &wanted)?;
    let health = targets::describe(shared, index).await?;
    let mut xml = Xml::default();
    xml.open("TargetHealthDescriptions");
    if wanted.is_empty() {
        for (id, h) in health.iter().filter(|(_, h)| h.state != targets::TargetState::Unused) {
            write_health(&mut xml, id, h.port, h);
        }
    } else {
        for (id, port) in &wanted {
            if let Some(h) = health.get(id) {
                write_health(&mut xml, id, *port, h);
            }
        }
    }
    xml.close("TargetHealthDescriptions");
    Ok(xml.finish())
}

fn describe_target_group_attributes(shared: &Shared, params: &QueryParams) -> Result<String, ApiError> {
    check_target_group(shared, params)?;
    let delay = shared.cfg.deregistration_delay_seconds().to_string();
    let attributes = [
        ("deregistration_delay.timeout_seconds", delay.as_str()),
        ("deregistration_delay.connection_termination.enabled", "false"),
        ("stickiness.enabled", "false"),
        ("stickiness.type", "lb_cookie"),
        ("load_balancing.algorithm.type", "round_robin"),
        ("slow_start.duration_seconds", "0"),
    ];
    let mut xml = Xml::default();
    xml.open("Attributes");
    for (key, value) in attributes {
        xml.open("member").leaf("Key", key).leaf("Value", value).close("member");
    }
    xml.close("Attributes");
    Ok(xml.finish())
}

/// The target groups, with the health-check settings HAProxy runs: those asked for by ARN or name, or all.
fn describe_target_groups(shared: &Shared, params: &QueryParams) -> Result<String, ApiError> {
    let arns: Vec<String> = params
        .members("TargetGroupArns")
        .into_iter()
        .flatten()
        .map(|(_, v)| v)
        .collect();
    let names: Vec<String> = params.members("Names").into_iter().flatten().map(|(_, v)| v).collect();
    let known_arn = |a: &String| shared.target_groups.iter().any(|g| g.arn == *a);
    let known_name = |n: &String| shared.target_groups.iter().any(|g| g.name == *n);
    if !arns.iter().all(known_arn) || !names.iter().all(known_name) {
        return Err(ApiError::client(
            "TargetGroupNotFound",
            "One or more target groups not found",
        ));
    }
    let cfg = &shared.cfg;
    let interval = cfg.health_interval.as_secs().max(1);
    let mut xml = Xml::default();
    xml.open("TargetGroups");
    let asked = shared
        .target_groups
        .iter()
        .filter(|g| (arns.is_empty() && names.is_empty()) || arns.contains(&g.arn) || names.contains(&g.name));
    for group in asked {
        xml.open("member");
        xml.leaf("TargetGroupArn", &group.arn)
            .leaf("TargetGroupName", &group.name)
            .leaf("Protocol", "HTTP")
            .leaf("Port", group.port)
            .leaf("VpcId", "vpc-0sandbox")
            .leaf("HealthCheckProtocol", "HTTP")
            .leaf("HealthCheckPort", "traffic-port")
            .leaf("HealthCheckEnabled", "true")
            .leaf("HealthCheckIntervalSeconds", interval)
            .leaf("HealthCheckTimeoutSeconds", interval)
            .leaf("HealthyThresholdCount", cfg.healthy_threshold)
            .leaf("UnhealthyThresholdCount", cfg.unhealthy_threshold)
            .leaf("HealthCheckPath", "/health");
        xml.open("Matcher").leaf("HttpCode", "200").close("Matcher");
        xml.open("LoadBalancerArns").close("LoadBalancerArns");
        xml.leaf("TargetType", "instance")
            .leaf("ProtocolVersion", "HTTP1")
            .leaf("IpAddressType", "ipv4");
        xml.close("member");
    }
    xml.close("TargetGroups");
    Ok(xml.finish())
}

async fn register_targets(shared: &Shared, params: &QueryParams) -> Result<String, ApiError> {
    let index = check_target_group(shared, params)?;
    let wanted = targets(shared, index, params)?;
    if wanted.is_empty() {
        return Err(ApiError::validation("Targets must name at least one target"));
    }
    check_known(shared, &wanted)?;
    let not_running: Vec<&str> = wanted
        .iter()
        .map(|(id, _)| id.as_str())
        .filter(|id| shared.instance(id).is_some_and(|i| !i.in_service()))
        .collect();
    if !not_running.is_empty() {
        return Err(ApiError::client(
            "InvalidTarget",
            format!(
                "The following targets are not in a running state and cannot be registered: '{}'",
                not_running.join("', '")
            ),
        ));
    }
    targets::register(shared, index, &wanted).await?;
    Ok(String::new())
}

async fn deregister_targets(shared: &Arc<Shared>, params: &QueryParams) -> Result<String, ApiError> {
    let index = check_target_group(shared, params)?;
    let wanted = targets(shared, index, params)?;
    if wanted.is_empty() {
        return Err(ApiError::validation("Targets must name at least one target"));
    }
    check_known(shared, &wanted)?;
    let ids: Vec<String> = wanted.into_iter().map(|(id, _)| id).collect();
    targets::deregister(shared, index, &ids).await?;
    Ok(String::new())
}
