//! CloudWatch alarms, as far as pitstop's alarm gate reaches: DescribeAlarms and SetAlarmState over Smithy RPC v2
//! CBOR, the only protocol the Rust SDK speaks to CloudWatch (`POST /service/GraniteServiceVersion20100801/
//! operation/<Operation>`, `smithy-protocol: rpc-v2-cbor`, CBOR bodies).
//!
//! The alarms have no metrics behind them: a test sets their state (`/_sandbox/alarm`, or SetAlarmState as an
//! operator would), which is what an alarm's evaluation would do on AWS.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ciborium::Value;

use super::protocol::ApiError;

/// The path prefix of every CloudWatch operation on RPC v2 CBOR.
const PATH_PREFIX: &str = "/service/GraniteServiceVersion20100801/operation/";

/// The states an alarm can be in.
const STATES: [&str; 3] = ["OK", "ALARM", "INSUFFICIENT_DATA"];

/// The operation a request's path names, when it is a CloudWatch call.
pub(crate) fn operation(path: &str) -> Option<&str> {
    path.strip_prefix(PATH_PREFIX).filter(|op| !op.is_empty())
}

#[derive(Debug, Clone)]
struct Alarm {
    state: String,
    reason: String,
    updated: SystemTime,
}

/// The sandbox's alarms, by name.
#[derive(Debug, Default)]
pub(crate) struct AlarmStore {
    alarms: Mutex<BTreeMap<String, Alarm>>,
}

impl AlarmStore {
    /// Creates the alarm `name` or sets its state.
    pub(crate) fn set(&self, name: &str, state: &str, reason: &str) -> Result<(), ApiError> {
        check_state(state)?;
        if name.is_empty() || name.chars().count() > 255 {
            return Err(ApiError::client(
                "InvalidParameterValue",
                "an alarm name has 1 to 255 characters",
            ));
        }
        self.lock().insert(
            name.to_owned(),
            Alarm {
                state: state.to_owned(),
                reason: reason.to_owned(),
                updated: SystemTime::now(),
            },
        );
        Ok(())
    }

    /// The state of alarm `name`, if it exists.
    pub(crate) fn state(&self, name: &str) -> Option<String> {
        self.lock().get(name).map(|a| a.state.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Alarm>> {
        self.alarms.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn check_state(state: &str) -> Result<(), ApiError> {
    if STATES.contains(&state) {
        Ok(())
    } else {
        Err(ApiError::client(
            "InvalidParameterValue",
            format!("StateValue {state:?} is not one of OK, ALARM, INSUFFICIENT_DATA"),
        ))
    }
}

/// The alarm names a request body names (`AlarmNames`, or SetAlarmState's `AlarmName`), for the call log.
pub(crate) fn call_names(body: &Value) -> Vec<String> {
    let mut names: Vec<String> = field(body, "AlarmNames")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(text).collect())
        .unwrap_or_default();
    names.extend(field(body, "AlarmName").and_then(text));
    names
}

/// Decodes a request body (an empty one is an empty map, as the SDK sends for no input).
pub(crate) fn decode(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(Value::Map(Vec::new()));
    }
    ciborium::from_reader(body)
        .map_err(|err| ApiError::client("SerializationException", format!("not a CBOR body: {err}")))
}

/// Carries out one CloudWatch operation.
pub(crate) fn execute(store: &AlarmStore, operation: &str, body: &Value) -> Result<Value, ApiError> {
    match operation {
        "DescribeAlarms" => Ok(describe_alarms(store, body)),
        "SetAlarmState" => set_alarm_state(store, body),
        other => Err(ApiError::client(
            "UnknownOperationException",
            format!("the pitstop sandbox's CloudWatch has no operation {other}"),
        )),
    }
}

/// DescribeAlarms by name (or all), with AlarmTypes as AWS reads it: metric alarms only unless the request asks
/// for composite ones. The sandbox's alarms are metric alarms.
fn describe_alarms(store: &AlarmStore, body: &Value) -> Value {
    let names: Option<Vec<String>> = field(body, "AlarmNames")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(text).collect());
    let types: Vec<String> = field(body, "AlarmTypes")
        .and_then(Value::as_array)
        .map(|types| types.iter().filter_map(text).collect())
        .unwrap_or_default();
    let metric_wanted = types.is_empty() || types.iter().any(|t| t == "MetricAlarm");
    let alarms = store.lock();
    let metric_alarms: Vec<Value> = alarms
        .iter()
        .filter(|_| metric_wanted)
        .filter(|(name, _)| names.as_ref().is_none_or(|names| names.contains(name)))
        .map(|(name, alarm)| alarm_value(name, alarm))
        .collect();
    map(vec![
        ("MetricAlarms", Value::Array(metric_alarms)),
        ("CompositeAlarms", Value::Array(Vec::new())),
    ])
}

fn set_alarm_state(store: &AlarmStore, body: &Value) -> Result<Value, ApiError> {
    let name = field(body, "AlarmName")
        .and_then(text)
        .ok_or_else(|| ApiError::client("ValidationError", "AlarmName is required"))?;
    let state = field(body, "StateValue")
        .and_then(text)
        .ok_or_else(|| ApiError::client("ValidationError", "StateValue is required"))?;
    let reason = field(body, "StateReason").and_then(text).unwrap_or_default();
    check_state(&state)?;
    if store.state(&name).is_none() {
        return Err(ApiError::client(
            "ResourceNotFound",
            format!("alarm {name} does not exist"),
        ));
    }
    store.set(&name, &state, &reason)?;
    Ok(Value::Map(Vec::new()))
}

fn alarm_value(name: &str, alarm: &Alarm) -> Value {
    let updated = alarm
        .updated
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    map(vec![
        ("AlarmName", Value::Text(name.to_owned())),
        (
            "AlarmArn",
            Value::Text(format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:{name}")),
        ),
        ("StateValue", Value::Text(alarm.state.clone())),
        ("StateReason", Value::Text(alarm.reason.clone())),
        // Smithy RPC v2 CBOR timestamps: tag 1, seconds since the epoch.
        ("StateUpdatedTimestamp", Value::Tag(1, Box::new(Value::Float(updated)))),
        ("ActionsEnabled", Value::Bool(true)),
    ])
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::Text(k.to_owned()), v))
            .collect(),
    )
}

fn field<'a>(body: &'a Value, key: &str) -> Option<&'a Value> {
    body.as_map()?
        .iter()
        .find(|(k, _)| k.as_text() == Some(key))
        .map(|(_, v)| v)
}

fn text(value: &Value) -> Option<String> {
    value.as_text().map(str::to_owned)
}

fn cbor(status: StatusCode, value: &Value, request_id: &str) -> Response {
    let mut body = Vec::new();
    if let Err(err) = ciborium::into_writer(value, &mut body) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("CBOR encoding failed: {err}"),
        )
            .into_response();
    }
    let mut response = (status, [(header::CONTENT_TYPE, "application/cbor")], body).into_response();
    let headers = response.headers_mut();
    headers.insert("smithy-protocol", HeaderValue::from_static("rpc-v2-cbor"));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-RequestId", value);
    }
    response
}

/// A successful answer.
pub(crate) fn response(value: &Value, request_id: &str) -> Response {
    cbor(StatusCode::OK, value, request_id)
}

/// An error answer: `{"__type": code, "message": …}` in CBOR.
pub(crate) fn error(err: &ApiError, request_id: &str) -> Response {
    let body = map(vec![
        ("__type", Value::Text(err.code.clone())),
        ("message", Value::Text(err.message.clone())),
    ]);
    cbor(err.status, &body, request_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(entries: Vec<(&str, Value)>) -> Value {
        map(entries)
    }

    fn names(values: &[&str]) -> Value {
        Value::Array(values.iter().map(|v| Value::Text((*v).to_owned())).collect())
    }

    #[test]
    fn describe_by_name_lists_only_those_and_only_metric_alarms_when_asked() {
        let store = AlarmStore::default();
        store.set("a", "OK", "").expect("set");
        store.set("b", "ALARM", "too many 5xx").expect("set");
        let answer = describe_alarms(&store, &request(vec![("AlarmNames", names(&["b", "missing"]))]));
        let listed = field(&answer, "MetricAlarms").and_then(Value::as_array).expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(field(&listed[0], "StateValue").and_then(text).as_deref(), Some("ALARM"));
        let composite_only = describe_alarms(&store, &request(vec![("AlarmTypes", names(&["CompositeAlarm"]))]));
        assert_eq!(
            field(&composite_only, "MetricAlarms")
                .and_then(Value::as_array)
                .map(Vec::len),
            Some(0)
        );
    }

    #[test]
    fn set_alarm_state_needs_an_existing_alarm_and_a_known_state() {
        let store = AlarmStore::default();
        let set = |name: &str, state: &str| {
            set_alarm_state(
                &store,
                &request(vec![
                    ("AlarmName", Value::Text(name.to_owned())),
                    ("StateValue", Value::Text(state.to_owned())),
                ]),
            )
        };
        assert_eq!(
            set("x", "ALARM").map_err(|e| e.code),
            Err("ResourceNotFound".to_owned())
        );
        store.set("x", "OK", "").expect("set");
        assert_eq!(
            set("x", "RED").map_err(|e| e.code),
            Err("InvalidParameterValue".to_owned())
        );
        set("x", "ALARM").expect("set");
        assert_eq!(store.state("x").as_deref(), Some("ALARM"));
    }

    #[test]
    fn the_path_names_the_operation() {
        assert_eq!(
            operation("/service/GraniteServiceVersion20100801/operation/DescribeAlarms"),
            Some("DescribeAlarms")
        );
        assert_eq!(operation("/"), None);
    }
}
