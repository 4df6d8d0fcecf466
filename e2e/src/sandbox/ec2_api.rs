//! The EC2 wire: `DescribeInstances` (EC2 Query protocol) over the sandbox's instances, with their tags, zones and
//! states. A spare not launched yet does not exist for EC2; a terminated instance reads `terminated`; one rebooting
//! is still `running`, as on EC2.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Shared;
use super::instance::{Instance, Power};
use super::protocol::{ApiError, QueryParams, escape};

/// Whether `action` is an EC2 call this wire answers.
pub(crate) fn handles(action: &str) -> bool {
    action == "DescribeInstances"
}

/// Carries out an EC2 call; returns the XML inside `<{Action}Response>`.
pub(crate) fn execute(shared: &Shared, action: &str, params: &QueryParams) -> Result<String, ApiError> {
    match action {
        "DescribeInstances" => describe_instances(shared, params),
        other => Err(ApiError::client(
            "InvalidAction",
            format!("The action {other} is not valid for this web service."),
        )),
    }
}

/// Filters by their `N`: the name and its values.
type Filters = BTreeMap<u32, (String, Vec<String>)>;

/// `Filter.N.Name` with its `Filter.N.Value.M`, and `InstanceId.N`, from the request.
fn filters(params: &QueryParams) -> (Filters, Vec<String>) {
    let mut filters = Filters::new();
    let mut ids = Vec::new();
    for (key, value) in params.pairs() {
        if let Some(rest) = key.strip_prefix("Filter.") {
            let (index, field) = rest.split_once('.').unwrap_or((rest, ""));
            let Ok(index) = index.parse::<u32>() else { continue };
            let entry = filters.entry(index).or_default();
            if field == "Name" {
                entry.0 = value.clone();
            } else if field.starts_with("Value.") {
                entry.1.push(value.clone());
            }
        } else if key.starts_with("InstanceId.") {
            ids.push(value.clone());
        }
    }
    (filters, ids)
}

/// The EC2 state name of an instance.
fn state_name(instance: &Instance) -> &'static str {
    match instance.power().power {
        Power::Terminated => "terminated",
        Power::Running | Power::Down | Power::Lost => "running",
    }
}

fn matches(instance: &Instance, name: &str, values: &[String]) -> Result<bool, ApiError> {
    let value = if let Some(key) = name.strip_prefix("tag:") {
        instance.tags.get(key).cloned()
    } else {
        match name {
            "instance-state-name" => Some(state_name(instance).to_owned()),
            "availability-zone" => Some(instance.zone.clone()),
            "instance-id" => Some(instance.id.clone()),
            other => {
                return Err(ApiError::client(
                    "InvalidParameterValue",
                    format!("The filter '{other}' is invalid"),
                ));
            }
        }
    };
    Ok(value.is_some_and(|v| values.contains(&v)))
}

/// Every launched instance matching all the filters (and the IDs, if given), one reservation each.
fn describe_instances(shared: &Shared, params: &QueryParams) -> Result<String, ApiError> {
    let (filters, ids) = filters(params);
    let mut xml = String::from("<reservationSet>");
    for instance in shared.instances.iter().filter(|i| i.launched()) {
        if !ids.is_empty() && !ids.contains(&instance.id) {
            continue;
        }
        let mut keep = true;
        for (name, values) in filters.values() {
            keep &= matches(instance, name, values)?;
        }
        if !keep {
            continue;
        }
        let state = state_name(instance);
        let code = if state == "running" { 16 } else { 48 };
        let _ = write!(
            xml,
            "<item><reservationId>r-{suffix}</reservationId><ownerId>123456789012</ownerId><instancesSet><item>\
             <instanceId>{id}</instanceId><instanceType>t3.micro</instanceType>\
             <instanceState><code>{code}</code><name>{state}</name></instanceState>\
             <placement><availabilityZone>{zone}</availabilityZone></placement><tagSet>",
            suffix = instance.id.trim_start_matches("i-"),
            id = escape(&instance.id),
            zone = escape(&instance.zone),
        );
        for (key, value) in &instance.tags {
            let _ = write!(
                xml,
                "<item><key>{}</key><value>{}</value></item>",
                escape(key),
                escape(value)
            );
        }
        xml.push_str("</tagSet></item></instancesSet></item>");
    }
    xml.push_str("</reservationSet>");
    Ok(xml)
}
