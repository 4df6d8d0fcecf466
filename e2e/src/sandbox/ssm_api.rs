//! The SSM operations (JSON 1.1 protocol, `X-Amz-Target: AmazonSSM.<Operation>`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Shared;
use super::agent::{Limits, start_invocation};
use super::commands::{ListFilter, NewCommand, PLUGIN_NAME, RUN_SHELL_SCRIPT, epoch_seconds};
use super::instance::Power;
use super::protocol::ApiError;

/// SSM's default for both `TimeoutSeconds` (delivery) and `executionTimeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Most instance IDs one `SendCommand` may name.
const MAX_INSTANCES_PER_COMMAND: usize = 50;

/// Instance IDs a request names and a short summary, for the call log.
pub(crate) fn call_info(body: &Value) -> (Vec<String>, String) {
    let mut ids: Vec<String> = Vec::new();
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    ids.extend(strings(&body["InstanceIds"]));
    if let Some(id) = body["InstanceId"].as_str() {
        ids.push(id.to_owned());
    }
    for filter in body["InstanceInformationFilterList"].as_array().into_iter().flatten() {
        if filter["key"] == "InstanceIds" {
            ids.extend(strings(&filter["valueSet"]));
        }
    }
    for filter in body["Filters"].as_array().into_iter().flatten() {
        if filter["Key"] == "InstanceIds" {
            ids.extend(strings(&filter["Values"]));
        }
    }
    let mut summary = body.to_string();
    if summary.len() > 500 {
        let cut = (0..=500).rev().find(|i| summary.is_char_boundary(*i)).unwrap_or(0);
        summary.truncate(cut);
        summary.push('…');
    }
    (ids, summary)
}

/// Carries out one SSM operation.
pub(crate) async fn execute(shared: &Arc<Shared>, operation: &str, body: Value) -> Result<Value, ApiError> {
    match operation {
        "SendCommand" => send_command(shared, parse(body)?),
        "GetCommandInvocation" => get_command_invocation(shared, parse(body)?),
        "ListCommands" => list_commands(shared, parse(body)?),
        "CancelCommand" => cancel_command(shared, parse(body)?),
        "DescribeInstanceInformation" => describe_instance_information(shared, parse(body)?),
        other => Err(ApiError::client(
            "UnknownOperationException",
            format!("the pitstop sandbox does not implement AmazonSSM.{other}"),
        )),
    }
}

fn parse<T: DeserializeOwned>(body: Value) -> Result<T, ApiError> {
    serde_json::from_value(body).map_err(|err| ApiError::client("SerializationException", err.to_string()))
}

fn unknown_instances<'a>(shared: &Shared, ids: impl IntoIterator<Item = &'a String>) -> Vec<&'a str> {
    ids.into_iter()
        .filter(|id| shared.instance(id).is_none())
        .map(String::as_str)
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendCommandInput {
    #[serde(default)]
    instance_ids: Vec<String>,
    #[serde(default)]
    targets: Vec<Value>,
    document_name: Option<String>,
    #[serde(default)]
    parameters: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    comment: String,
    timeout_seconds: Option<i64>,
    alarm_configuration: Option<Value>,
}

/// SendCommand's `AlarmConfiguration`, checked as SSM does (1 to 10 alarms, each named). The
/// sandbox records it and shows it in ListCommands; it does not stop commands when an alarm
/// fires (pitstop's own `abortInFlight` cancels them, which is what the tests check).
fn checked_alarm_configuration(config: Value) -> Result<Value, ApiError> {
    let alarms = config["Alarms"].as_array().map(Vec::len).unwrap_or_default();
    let named = config["Alarms"].as_array().is_some_and(|a| {
        a.iter()
            .all(|alarm| alarm["Name"].as_str().is_some_and(|n| !n.is_empty()))
    });
    if !(1..=10).contains(&alarms) || !named {
        return Err(ApiError::client(
            "ValidationException",
            "AlarmConfiguration.Alarms must name 1 to 10 alarms",
        ));
    }
    Ok(config)
}

fn send_command(shared: &Arc<Shared>, input: SendCommandInput) -> Result<Value, ApiError> {
    let document = input
        .document_name
        .ok_or_else(|| ApiError::client("ValidationException", "DocumentName is required"))?;
    if document != RUN_SHELL_SCRIPT {
        return Err(ApiError::client(
            "InvalidDocument",
            format!("document {document} does not exist (the pitstop sandbox runs only {RUN_SHELL_SCRIPT})"),
        ));
    }
    if !input.targets.is_empty() {
        return Err(ApiError::client(
            "InvalidParameters",
            "the pitstop sandbox supports InstanceIds, not Targets",
        ));
    }
    if input.instance_ids.is_empty() {
        return Err(ApiError::client(
            "ValidationException",
            "InstanceIds must name at least one instance",
        ));
    }
    if input.instance_ids.len() > MAX_INSTANCES_PER_COMMAND {
        return Err(ApiError::client(
            "ValidationException",
            "InstanceIds names more than 50 instances",
        ));
    }
    let unknown = unknown_instances(shared, &input.instance_ids);
    if !unknown.is_empty() {
        return Err(ApiError::client(
            "InvalidInstanceId",
            format!("instances not managed by SSM: {unknown:?}"),
        ));
    }
    let terminated: Vec<&str> = input
        .instance_ids
        .iter()
        .filter(|id| {
            shared
                .instance(id)
                .is_some_and(|i| i.power().power == Power::Terminated)
        })
        .map(String::as_str)
        .collect();
    if !terminated.is_empty() {
        // As SSM answers for an instance that no longer runs an agent.
        return Err(ApiError::client(
            "InvalidInstanceId",
            format!("Instances {terminated:?} not in a valid state for account"),
        ));
    }
    if let Some(name) = input
        .parameters
        .keys()
        .find(|k| !matches!(k.as_str(), "commands" | "executionTimeout" | "workingDirectory"))
    {
        return Err(ApiError::client(
            "InvalidParameters",
            format!("{RUN_SHELL_SCRIPT} has no parameter {name}"),
        ));
    }
    let script = input
        .parameters
        .get("commands")
        .map(|lines| lines.join("\n"))
        .unwrap_or_default();
    if script.trim().is_empty() {
        return Err(ApiError::client(
            "InvalidParameters",
            "the commands parameter is required",
        ));
    }
    if let Some(timeout) = input.timeout_seconds
        && timeout <= 0
    {
        return Err(ApiError::client(
            "ValidationException",
            "TimeoutSeconds must be positive",
        ));
    }
    let alarm_configuration = input.alarm_configuration.map(checked_alarm_configuration).transpose()?;
    let execution_timeout = match input.parameters.get("executionTimeout").and_then(|v| v.first()) {
        Some(text) => Some(text.trim().parse::<u64>().ok().filter(|s| *s > 0).ok_or_else(|| {
            ApiError::client(
                "InvalidParameters",
                format!("executionTimeout must be a positive number, not {text:?}"),
            )
        })?),
        None => None,
    };
    // As on SSM: TimeoutSeconds bounds the wait for delivery (the instance must be running), executionTimeout the
    // run from its start, reboots included; so an instance that never comes back times out after executionTimeout.
    let delivery_timeout = input
        .timeout_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let execution_timeout = execution_timeout.map_or(DEFAULT_TIMEOUT, Duration::from_secs);

    let delivery_deadline = tokio::time::Instant::now() + delivery_timeout;
    let instance_ids = input.instance_ids.clone();
    let (json, receivers) = shared.commands.create(NewCommand {
        document_name: document,
        comment: input.comment,
        parameters: input.parameters,
        instance_ids,
        timeout_seconds: input.timeout_seconds,
        alarm_configuration,
        delivery_timeout,
    });
    let command_id = json["CommandId"].as_str().unwrap_or_default().to_owned();
    for (id, cancel) in receivers {
        if let Some(instance) = shared.instance(&id) {
            let limits = Limits {
                delivery_deadline,
                execution_timeout,
            };
            start_invocation(
                shared,
                command_id.clone(),
                Arc::clone(instance),
                script.clone(),
                limits,
                cancel,
            );
        }
    }
    Ok(json!({ "Command": json }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetCommandInvocationInput {
    command_id: String,
    instance_id: String,
    plugin_name: Option<String>,
}

fn get_command_invocation(shared: &Shared, input: GetCommandInvocationInput) -> Result<Value, ApiError> {
    if let Some(plugin) = &input.plugin_name
        && plugin != PLUGIN_NAME
    {
        return Err(ApiError::client(
            "InvalidPluginName",
            format!("no plugin {plugin} in this command"),
        ));
    }
    let missing = || ApiError::client("InvocationDoesNotExist", "");
    let (requested, json) = shared
        .commands
        .invocation(&input.command_id, &input.instance_id)
        .ok_or_else(missing)?;
    // Real SSM takes a moment before a new command's invocations can be read; clients must retry.
    if requested.elapsed() < shared.cfg.invocation_visibility_delay {
        return Err(missing());
    }
    Ok(json)
}

#[derive(Debug, Deserialize)]
struct CommandFilter {
    key: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListCommandsInput {
    command_id: Option<String>,
    instance_id: Option<String>,
    max_results: Option<usize>,
    next_token: Option<String>,
    #[serde(default)]
    filters: Vec<CommandFilter>,
}

fn parse_time(value: &str) -> Result<SystemTime, ApiError> {
    value
        .parse::<jiff::Timestamp>()
        .map(SystemTime::from)
        .map_err(|err| ApiError::client("InvalidFilterValue", format!("{value:?} is not a date: {err}")))
}

fn list_commands(shared: &Shared, input: ListCommandsInput) -> Result<Value, ApiError> {
    if let Some(id) = &input.command_id
        && !shared.commands.exists(id)
    {
        return Err(ApiError::client("InvalidCommandId", ""));
    }
    if let Some(id) = &input.instance_id
        && shared.instance(id).is_none()
    {
        return Err(ApiError::client(
            "InvalidInstanceId",
            format!("instance {id} is not managed by SSM"),
        ));
    }
    let mut filter = ListFilter {
        instance_id: input.instance_id,
        ..Default::default()
    };
    for f in input.filters {
        match f.key.as_str() {
            "Status" => filter.status = Some(f.value),
            "DocumentName" => filter.document_name = Some(f.value),
            "InvokedAfter" => filter.invoked_after = Some(parse_time(&f.value)?),
            "InvokedBefore" => filter.invoked_before = Some(parse_time(&f.value)?),
            other => {
                return Err(ApiError::client(
                    "InvalidFilterKey",
                    format!("unsupported filter key {other}"),
                ));
            }
        }
    }
    let commands = shared.commands.list(input.command_id.as_deref(), &filter);
    let (page, next) = paginate(commands, input.max_results, input.next_token.as_deref(), 50)?;
    let mut out = json!({ "Commands": page });
    if let (Some(next), Some(obj)) = (next, out.as_object_mut()) {
        obj.insert("NextToken".to_owned(), json!(next));
    }
    Ok(out)
}

/// One page of `items`: the token is the offset of the next page.
fn paginate(
    items: Vec<Value>,
    max_results: Option<usize>,
    token: Option<&str>,
    limit: usize,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let start = match token {
        Some(token) => token
            .parse::<usize>()
            .map_err(|_| ApiError::client("InvalidNextToken", ""))?,
        None => 0,
    };
    let size = max_results.unwrap_or(limit).clamp(1, limit);
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(start).take(size).collect();
    let next = (start + size < total).then(|| (start + size).to_string());
    Ok((page, next))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CancelCommandInput {
    command_id: String,
    instance_ids: Option<Vec<String>>,
}

fn cancel_command(shared: &Shared, input: CancelCommandInput) -> Result<Value, ApiError> {
    if let Some(ids) = &input.instance_ids {
        let unknown = unknown_instances(shared, ids);
        if !unknown.is_empty() {
            return Err(ApiError::client(
                "InvalidInstanceId",
                format!("instances not managed by SSM: {unknown:?}"),
            ));
        }
    }
    shared
        .commands
        .cancel(&input.command_id, input.instance_ids.as_deref())
        .ok_or_else(|| ApiError::client("InvalidCommandId", ""))?;
    Ok(json!({}))
}

#[derive(Debug, Deserialize)]
struct InformationFilter {
    key: String,
    #[serde(rename = "valueSet")]
    value_set: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StringFilter {
    key: String,
    values: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeInstanceInformationInput {
    #[serde(default)]
    instance_information_filter_list: Vec<InformationFilter>,
    #[serde(default)]
    filters: Vec<StringFilter>,
    max_results: Option<usize>,
    next_token: Option<String>,
}

fn describe_instance_information(shared: &Shared, input: DescribeInstanceInformationInput) -> Result<Value, ApiError> {
    // Every filter narrows the list: (key, allowed values).
    let mut filters: Vec<(String, Vec<String>)> = Vec::new();
    filters.extend(
        input
            .instance_information_filter_list
            .into_iter()
            .map(|f| (f.key, f.value_set)),
    );
    filters.extend(input.filters.into_iter().map(|f| (f.key, f.values)));
    for (key, _) in &filters {
        if key != "InstanceIds" && key != "PingStatus" {
            return Err(ApiError::client(
                "InvalidFilterKey",
                format!("unsupported filter key {key}"),
            ));
        }
    }
    let now = SystemTime::now();
    let list: Vec<Value> = shared
        .instances
        .iter()
        .filter_map(|instance| {
            let power = instance.power();
            let ping = if power.power == Power::Running {
                "Online"
            } else {
                "ConnectionLost"
            };
            let keep = filters.iter().all(|(key, values)| match key.as_str() {
                "InstanceIds" => values.contains(&instance.id),
                _ => values.iter().any(|v| v == ping),
            });
            keep.then(|| {
                let last_ping = if power.power == Power::Running {
                    now
                } else {
                    power.since
                };
                json!({
                    "InstanceId": instance.id,
                    "PingStatus": ping,
                    "LastPingDateTime": epoch_seconds(last_ping),
                    "AgentVersion": "3.3.0.0",
                    "IsLatestVersion": true,
                    "PlatformType": "Linux",
                    "PlatformName": "Pitstop Sandbox Linux",
                    "PlatformVersion": "1",
                    "ResourceType": "EC2Instance",
                    "IPAddress": "127.0.0.1",
                    "ComputerName": format!("{}.sandbox.internal", instance.id),
                })
            })
        })
        .collect();
    let (page, next) = paginate(list, input.max_results, input.next_token.as_deref(), 50)?;
    let mut out = json!({ "InstanceInformationList": page });
    if let (Some(next), Some(obj)) = (next, out.as_object_mut()) {
        obj.insert("NextToken".to_owned(), json!(next));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_info_collects_instance_ids_from_every_shape() {
        let body = json!({
            "InstanceIds": ["i-a"],
            "InstanceId": "i-b",
            "InstanceInformationFilterList": [{"key": "InstanceIds", "valueSet": ["i-c"]}],
            "Filters": [{"Key": "InstanceIds", "Values": ["i-d"]}],
        });
        let (ids, summary) = call_info(&body);
        assert_eq!(ids, vec!["i-a", "i-b", "i-c", "i-d"]);
        assert!(summary.contains("i-a"));
    }

    #[test]
    fn pagination_hands_out_offsets() {
        let items: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let (page, next) = paginate(items.clone(), Some(2), None, 50).unwrap();
        assert_eq!((page.len(), next.as_deref()), (2, Some("2")));
        let (page, next) = paginate(items.clone(), Some(2), Some("4"), 50).unwrap();
        assert_eq!((page, next), (vec![json!(4)], None));
        assert!(paginate(items, None, Some("x"), 50).is_err());
    }
}
