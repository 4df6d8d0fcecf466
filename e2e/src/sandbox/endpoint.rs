//! The sandbox's HTTP endpoint: the AWS API the SDK reaches through `AWS_ENDPOINT_URL`, and `/_sandbox/*` admin
//! paths for tests and humans.

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::Shared;
use super::call_log::{CallOutcome, Service};
use super::faults::{FaultSettings, LostAnswerMode};
use super::protocol::{self, ApiError, QueryParams};
use super::server::ConnectionHandle;
use super::{autoscaling_api, cloudwatch_api, ec2_api, elbv2_api, ssm_api, targets};

/// Routes of the endpoint: admin paths first, everything else is an AWS call.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/_sandbox/calls", get(get_calls).delete(clear_calls))
        .route("/_sandbox/faults", get(get_faults).post(set_faults))
        .route("/_sandbox/state", get(get_state))
        .route("/_sandbox/outage", post(start_outage))
        .route("/_sandbox/terminate", post(terminate_instance))
        .route("/_sandbox/replace", post(replace_instance))
        .route("/_sandbox/launch", post(launch_instance))
        .route("/_sandbox/alarm", post(set_alarm))
        .fallback(aws)
        .with_state(shared)
}

/// One AWS call: CloudWatch when the path names an RPC v2 CBOR operation, SSM when `X-Amz-Target` is set (JSON
/// 1.1), ELBv2, EC2 or Auto Scaling when the form body has an `Action` (Query). Signatures are not checked.
async fn aws(
    State(shared): State<Arc<Shared>>,
    connection: Option<Extension<ConnectionHandle>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let connection = connection.map(|Extension(handle)| handle);
    if let Some(operation) = cloudwatch_api::operation(uri.path()) {
        let operation = operation.to_owned();
        return cloudwatch(&shared, &operation, &body, &request_id, connection.as_ref()).await;
    }
    if let Some(target) = headers.get("x-amz-target") {
        let target = target.to_str().unwrap_or_default().to_owned();
        return ssm(&shared, &target, &body, &request_id, connection.as_ref()).await;
    }
    let params = QueryParams::parse(&body);
    match params.get("Action") {
        Some(action) if ec2_api::handles(action) => {
            let action = action.to_owned();
            ec2(&shared, &action, &params, &request_id).await
        }
        Some(action) if autoscaling_api::handles(action) => {
            let action = action.to_owned();
            autoscaling(&shared, &action, &params, &request_id, connection.as_ref()).await
        }
        Some(action) => {
            let action = action.to_owned();
            elbv2(&shared, &action, &params, &request_id, connection.as_ref()).await
        }
        None => {
            let err = ApiError::client(
                "MissingAction",
                "neither an X-Amz-Target header (SSM) nor an Action parameter (ELBv2): not an AWS call",
            );
            shared.calls.record(
                Service::Unknown,
                "",
                Vec::new(),
                String::new(),
                CallOutcome::Error { code: err.code.clone() },
            );
            protocol::query_error(&err, &request_id)
        }
    }
}

fn outcome_of<T>(result: &Result<T, ApiError>) -> CallOutcome {
    match result {
        Ok(_) => CallOutcome::Ok,
        Err(err) => CallOutcome::Error { code: err.code.clone() },
    }
}

/// The answer to a call that was carried out, unless the `lose_answers` fault loses it: then the call is logged as
/// `AnswerLost` and the client gets a reset connection, a 500, or its answer only after the hold.
async fn answer(
    shared: &Shared,
    record: impl FnOnce(CallOutcome),
    operation: &str,
    connection: Option<&ConnectionHandle>,
    respond: impl FnOnce(Result<(), ApiError>) -> Response,
) -> Response {
    let Some(loss) = shared.faults.draw_lost_answer(operation) else {
        record(CallOutcome::Ok);
        return respond(Ok(()));
    };
    let mode = match loss.mode {
        LostAnswerMode::Reset => "reset",
        LostAnswerMode::Error500 => "error500",
        LostAnswerMode::Hold => "hold",
    };
    record(CallOutcome::AnswerLost { mode: mode.to_owned() });
    match loss.mode {
        LostAnswerMode::Reset => match connection {
            Some(connection) => {
                connection.reset();
                // The connection task drops this handler with the connection.
                std::future::pending().await
            }
            None => {
                tracing::warn!(
                    operation,
                    "no connection to reset (not served by the sandbox's server); answering 500"
                );
                respond(Err(ApiError::internal("lost answer (reset)")))
            }
        },
        LostAnswerMode::Error500 => respond(Err(ApiError::internal(
            "We encountered an internal error. Please try again.",
        ))),
        LostAnswerMode::Hold => {
            tokio::time::sleep(loss.hold).await;
            respond(Ok(()))
        }
    }
}

async fn ssm(
    shared: &Arc<Shared>,
    target: &str,
    body: &[u8],
    request_id: &str,
    connection: Option<&ConnectionHandle>,
) -> Response {
    let Some(operation) = target.strip_prefix("AmazonSSM.") else {
        let err = ApiError::client("UnknownOperationException", format!("unknown target {target}"));
        shared.calls.record(
            Service::Unknown,
            target,
            Vec::new(),
            String::new(),
            outcome_of::<()>(&Err(err.clone())),
        );
        return protocol::json_error(&err, request_id);
    };
    let parsed: Result<Value, ApiError> = if body.is_empty() {
        Ok(json!({}))
    } else {
        serde_json::from_slice(body).map_err(|err| ApiError::client("SerializationException", err.to_string()))
    };
    let body = match parsed {
        Ok(body) => body,
        Err(err) => {
            shared.calls.record(
                Service::Ssm,
                operation,
                Vec::new(),
                String::new(),
                outcome_of::<()>(&Err(err.clone())),
            );
            return protocol::json_error(&err, request_id);
        }
    };
    let (ids, summary) = ssm_api::call_info(&body);
    if shared.faults.should_throttle() {
        shared
            .calls
            .record(Service::Ssm, operation, ids, summary, CallOutcome::Throttled);
        return protocol::json_error(&ApiError::client("ThrottlingException", "Rate exceeded"), request_id);
    }
    if shared.faults.denies(operation) {
        let code = "AccessDeniedException".to_owned();
        shared
            .calls
            .record(Service::Ssm, operation, ids, summary, CallOutcome::Error { code });
        return protocol::json_access_denied(&format!("ssm:{operation}"), None, request_id);
    }
    let result = ssm_api::execute(shared, operation, body).await;
    match result {
        Ok(value) => {
            let record = |outcome| shared.calls.record(Service::Ssm, operation, ids, summary, outcome);
            answer(shared, record, operation, connection, |lost| match lost {
                Ok(()) => protocol::json_response(&value, request_id),
                Err(err) => protocol::json_error(&err, request_id),
            })
            .await
        }
        Err(err) => {
            shared.calls.record(
                Service::Ssm,
                operation,
                ids,
                summary,
                outcome_of::<()>(&Err(err.clone())),
            );
            protocol::json_error(&err, request_id)
        }
    }
}

async fn elbv2(
    shared: &Arc<Shared>,
    action: &str,
    params: &QueryParams,
    request_id: &str,
    connection: Option<&ConnectionHandle>,
) -> Response {
    let service = QueryService {
        service: Service::Elbv2,
        iam_prefix: "elasticloadbalancing",
        namespace: protocol::ELBV2_NAMESPACE,
    };
    let ids = elbv2_api::call_instance_ids(params);
    let resource = params.get("TargetGroupArn");
    if let Some(refused) = service.refused(shared, action, params, &ids, resource, request_id) {
        return refused;
    }
    let result = elbv2_api::execute(shared, action, params).await;
    service
        .answer(shared, action, params, ids, result, request_id, connection)
        .await
}

/// One EC2 call (reads only: no answer to lose).
async fn ec2(shared: &Arc<Shared>, action: &str, params: &QueryParams, request_id: &str) -> Response {
    let summary = params.summary();
    if shared.faults.should_throttle() {
        shared
            .calls
            .record(Service::Ec2, action, Vec::new(), summary, CallOutcome::Throttled);
        return protocol::ec2_error(
            &ApiError::client("RequestLimitExceeded", "Request limit exceeded."),
            request_id,
        );
    }
    if shared.faults.denies(action) {
        let code = "UnauthorizedOperation".to_owned();
        shared.calls.record(
            Service::Ec2,
            action,
            Vec::new(),
            summary,
            CallOutcome::Error { code: code.clone() },
        );
        let mut err = ApiError::client(&code, protocol::access_denied_message(&format!("ec2:{action}"), None));
        err.status = StatusCode::FORBIDDEN;
        return protocol::ec2_error(&err, request_id);
    }
    let result = ec2_api::execute(shared, action, params);
    shared
        .calls
        .record(Service::Ec2, action, Vec::new(), summary, outcome_of(&result));
    match result {
        Ok(inner) => protocol::ec2_response(action, &inner, request_id),
        Err(err) => protocol::ec2_error(&err, request_id),
    }
}

/// One Auto Scaling call (Query protocol, answered like ELBv2's with the Auto Scaling namespace).
async fn cloudwatch(
    shared: &Arc<Shared>,
    operation: &str,
    body: &[u8],
    request_id: &str,
    connection: Option<&ConnectionHandle>,
) -> Response {
    let record = |summary: String, outcome| {
        shared
            .calls
            .record(Service::CloudWatch, operation, Vec::new(), summary, outcome);
    };
    let request = match cloudwatch_api::decode(body) {
        Ok(request) => request,
        Err(err) => {
            record(String::new(), outcome_of::<()>(&Err(err.clone())));
            return cloudwatch_api::error(&err, request_id);
        }
    };
    let summary = cloudwatch_api::call_names(&request).join(",");
    if shared.faults.should_throttle() {
        record(summary, CallOutcome::Throttled);
        return cloudwatch_api::error(&ApiError::client("Throttling", "Rate exceeded"), request_id);
    }
    if shared.faults.denies(operation) {
        record(
            summary,
            CallOutcome::Error {
                code: "AccessDenied".to_owned(),
            },
        );
        let message = protocol::access_denied_message(&format!("cloudwatch:{operation}"), None);
        return cloudwatch_api::error(&ApiError::client("AccessDenied", message), request_id);
    }
    match cloudwatch_api::execute(&shared.alarms, operation, &request) {
        Ok(value) => {
            let record = |outcome| record(summary.clone(), outcome);
            answer(shared, record, operation, connection, |lost| match lost {
                Ok(()) => cloudwatch_api::response(&value, request_id),
                Err(err) => cloudwatch_api::error(&err, request_id),
            })
            .await
        }
        Err(err) => {
            record(summary.clone(), outcome_of::<()>(&Err(err.clone())));
            cloudwatch_api::error(&err, request_id)
        }
    }
}

async fn autoscaling(
    shared: &Arc<Shared>,
    action: &str,
    params: &QueryParams,
    request_id: &str,
    connection: Option<&ConnectionHandle>,
) -> Response {
    let service = QueryService {
        service: Service::Autoscaling,
        iam_prefix: "autoscaling",
        namespace: protocol::AUTOSCALING_NAMESPACE,
    };
    let ids = autoscaling_api::call_instance_ids(params);
    if let Some(refused) = service.refused(shared, action, params, &ids, None, request_id) {
        return refused;
    }
    let result = autoscaling_api::execute(shared, action, params);
    service
        .answer(shared, action, params, ids, result, request_id, connection)
        .await
}

/// A service on the AWS Query protocol (ELBv2, Auto Scaling): the faults that refuse a call
/// before it is carried out, and the recorded answer after.
struct QueryService {
    service: Service,
    iam_prefix: &'static str,
    namespace: &'static str,
}

impl QueryService {
    /// The answer of a call refused by a fault (throttled, or denied as by IAM), recorded; None
    /// when it goes through.
    fn refused(
        &self,
        shared: &Arc<Shared>,
        action: &str,
        params: &QueryParams,
        ids: &[String],
        resource: Option<&str>,
        request_id: &str,
    ) -> Option<Response> {
        let record = |outcome| {
            shared
                .calls
                .record(self.service, action, ids.to_vec(), params.summary(), outcome)
        };
        if shared.faults.should_throttle() {
            record(CallOutcome::Throttled);
            return Some(protocol::query_error(
                &ApiError::client("Throttling", "Rate exceeded"),
                request_id,
            ));
        }
        if shared.faults.denies(action) {
            record(CallOutcome::Error {
                code: "AccessDenied".to_owned(),
            });
            let permission = format!("{}:{action}", self.iam_prefix);
            return Some(protocol::query_access_denied(&permission, resource, request_id));
        }
        None
    }

    /// The answer of a call carried out (or refused by the action itself), recorded; a write
    /// that was carried out may lose its answer (see `answer`); reads never do.
    #[allow(clippy::too_many_arguments)]
    async fn answer(
        &self,
        shared: &Arc<Shared>,
        action: &str,
        params: &QueryParams,
        ids: Vec<String>,
        result: Result<String, ApiError>,
        request_id: &str,
        connection: Option<&ConnectionHandle>,
    ) -> Response {
        let summary = params.summary();
        match result {
            Ok(inner) => {
                let record = |outcome| shared.calls.record(self.service, action, ids, summary, outcome);
                answer(shared, record, action, connection, |lost| match lost {
                    Ok(()) => protocol::query_response_in(self.namespace, action, &inner, request_id),
                    Err(err) => protocol::query_error(&err, request_id),
                })
                .await
            }
            Err(err) => {
                let outcome = outcome_of::<()>(&Err(err.clone()));
                shared.calls.record(self.service, action, ids, summary, outcome);
                protocol::query_error(&err, request_id)
            }
        }
    }
}

async fn get_calls(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.calls.records()).into_response()
}

async fn clear_calls(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.calls.clear();
    StatusCode::NO_CONTENT
}

async fn get_faults(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.faults.settings()).into_response()
}

/// Replaces every fault switch with the JSON body (a [`FaultSettings`]; missing fields are off).
async fn set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let settings: FaultSettings = match serde_json::from_slice(&body) {
        Ok(settings) => settings,
        Err(err) => return (StatusCode::BAD_REQUEST, Json(json!({ "error": err.to_string() }))).into_response(),
    };
    match shared.faults.replace(settings) {
        Ok(()) => Json(shared.faults.settings()).into_response(),
        Err(err) => (StatusCode::BAD_REQUEST, Json(json!({ "error": err.to_string() }))).into_response(),
    }
}

/// `POST /_sandbox/outage?seconds=N`: closes every connection and refuses new ones for N seconds (at most an
/// hour); the answer is sent before the outage starts.
async fn start_outage(State(shared): State<Arc<Shared>>, Query(query): Query<OutageQuery>) -> Response {
    if !(query.seconds > 0.0 && query.seconds <= 3600.0) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": format!("seconds must be within (0, 3600], not {}", query.seconds) })),
        )
            .into_response();
    }
    let length = std::time::Duration::from_secs_f64(query.seconds);
    let switch = shared.outage.clone();
    // A moment's delay lets this answer leave before the connection it travels on is closed.
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        switch.refuse_connections(length);
    });
    Json(json!({ "refusing_connections_seconds": query.seconds })).into_response()
}

/// The query of `POST /_sandbox/terminate` and `POST /_sandbox/replace`.
#[derive(Debug, serde::Deserialize)]
struct InstanceQuery {
    instance: String,
}

/// `POST /_sandbox/terminate?instance=ID`: the instance leaves every target group (after the deregistration delay)
/// and is powered off for good; answers once it is gone.
async fn terminate_instance(State(shared): State<Arc<Shared>>, Query(query): Query<InstanceQuery>) -> Response {
    match super::fleet::terminate(&shared, &query.instance).await {
        Ok(()) => Json(json!({ "terminated": query.instance })).into_response(),
        Err(err) => (StatusCode::BAD_REQUEST, Json(json!({ "error": format!("{err:#}") }))).into_response(),
    }
}

/// `POST /_sandbox/replace?instance=ID`: terminates the instance and launches a spare into every target group.
async fn replace_instance(State(shared): State<Arc<Shared>>, Query(query): Query<InstanceQuery>) -> Response {
    match super::fleet::replace(&shared, &query.instance).await {
        Ok(launched) => Json(json!({ "terminated": query.instance, "launched": launched })).into_response(),
        Err(err) => (StatusCode::BAD_REQUEST, Json(json!({ "error": format!("{err:#}") }))).into_response(),
    }
}

/// `POST /_sandbox/launch`: launches a spare instance into every target group.
async fn launch_instance(State(shared): State<Arc<Shared>>) -> Response {
    match super::fleet::launch(&shared).await {
        Ok(launched) => Json(json!({ "launched": launched })).into_response(),
        Err(err) => (StatusCode::BAD_REQUEST, Json(json!({ "error": format!("{err:#}") }))).into_response(),
    }
}

/// The query of `POST /_sandbox/alarm`.
#[derive(Debug, serde::Deserialize)]
struct AlarmQuery {
    name: String,
    state: String,
    #[serde(default)]
    reason: String,
}

/// `POST /_sandbox/alarm?name=N&state=ALARM[&reason=…]`: creates the CloudWatch alarm or sets its state.
async fn set_alarm(State(shared): State<Arc<Shared>>, Query(query): Query<AlarmQuery>) -> Response {
    match shared.alarms.set(&query.name, &query.state, &query.reason) {
        Ok(()) => Json(json!({ "alarm": query.name, "state": query.state })).into_response(),
        Err(err) => (StatusCode::BAD_REQUEST, Json(json!({ "error": err.message }))).into_response(),
    }
}

/// The query of `POST /_sandbox/outage`.
#[derive(Debug, serde::Deserialize)]
struct OutageQuery {
    seconds: f64,
}

/// Per instance: power, boot count, target health and HAProxy's view; plus the worst rotation moment so far.
async fn get_state(State(shared): State<Arc<Shared>>) -> Response {
    let health = targets::describe(&shared, 0).await;
    let rotation = shared.balancer.server_states(super::haproxy::BACKEND).await;
    let (health, rotation) = match (health, rotation) {
        (Ok(health), Ok(rotation)) => (health, rotation),
        (Err(err), _) | (_, Err(err)) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "error": format!("{err:#}") })),
            )
                .into_response();
        }
    };
    let instances: Vec<Value> = shared
        .instances
        .iter()
        .map(|instance| {
            let power = instance.power();
            json!({
                "instance_id": instance.id,
                "port": instance.port,
                "power": power.power,
                "boot_count": power.boot_count,
                "home": instance.home,
                "target": health.get(&instance.id),
                "haproxy": rotation.get(&instance.id),
            })
        })
        .collect();
    Json(json!({
        "target_group_arn": shared.target_groups[0].arn,
        "instances": instances,
        "max_out_of_rotation": shared.rotation.max_out_of_rotation(),
    }))
    .into_response()
}
