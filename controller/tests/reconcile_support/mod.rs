//! A mock apiserver for the reconcile tests: a tower-test service pair whose server side
//! keeps MaintenancePlans as raw JSON (so malformed ones can exist), answers the requests
//! the controller makes, checks each against what the apiserver would require, and logs
//! them for the test to assert on. Any request it does not expect panics the server task,
//! and the next reconcile round re-raises that panic in the test.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use pitstop::api::{InstancePhase, MaintenancePlan, MaintenancePlanStatus, PlanPhase};
use pitstop::aws::fake::FakeAws;
use pitstop::k8s::policy::NOW_DELAY;
use pitstop::k8s::{Context, Error, FINALIZER};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The plans' API group and version, as in URLs.
pub const GROUP_VERSION: &str = "pitstop.dev/v1alpha1";
/// Namespace of the test plans.
pub const NAMESPACE: &str = "default";
/// The target group of the fake AWS.
pub const ARN: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";
/// Three instances of the group.
pub const IDS: [&str; 3] = ["i-0000000000000000a", "i-0000000000000000b", "i-0000000000000000c"];
/// Poll interval of the test context.
pub const POLL: Duration = Duration::from_secs(5);
/// Every test gives up after this long instead of hanging.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// One request the controller made, as the test sees it.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    /// A JSON patch adding the finalizer.
    AddFinalizer { plan: String, finalizers: Vec<String> },
    /// A JSON patch removing the finalizer.
    RemoveFinalizer { plan: String, finalizers: Vec<String> },
    /// A server-side apply of the status (field manager and force already checked).
    ApplyStatus {
        plan: String,
        /// Boxed: the status is by far the largest thing logged.
        status: Box<MaintenancePlanStatus>,
    },
    /// An Event created.
    Event(EventCall),
    /// A LIST of the plans.
    List,
    /// A WATCH of the plans (held open, never answered).
    Watch,
    /// A GET of one plan (the target group lock looking up a lease's holder).
    GetPlan(String),
    /// A GET of one Secret (`spec.notify`'s webhook URL).
    GetSecret { namespace: String, name: String },
}

/// A request about a target group Lease, logged apart from [`Call`]: most scenarios care
/// about the plan's own writes, and every round of a running plan touches its lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseCall {
    /// A GET (found or not).
    Get(String),
    /// A create, naming the holder.
    Create { lease: String, holder: String },
    /// A replace that was accepted, with the holder it wrote ("" when released).
    Replace { lease: String, holder: String },
    /// A write refused with 409 (stale resourceVersion, or the lease exists already).
    Conflict(String),
}

/// Path of the leases in the test namespace.
pub const LEASES_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";

/// An Event the controller published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventCall {
    /// The plan it is about.
    pub plan: String,
    /// `Normal` or `Warning`.
    pub type_: String,
    /// Reason.
    pub reason: String,
    /// Action.
    pub action: String,
    /// Note.
    pub note: String,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    calls: Vec<Call>,
    leases: BTreeMap<String, Value>,
    /// Secrets by (namespace, name).
    secrets: BTreeMap<(String, String), Value>,
    lease_calls: Vec<LeaseCall>,
    /// Events created, by name, so a recorder's patch of one is logged as it.
    events: BTreeMap<String, Call>,
    next_version: u64,
    /// Watch requests, kept unanswered so that the watcher waits quietly.
    held: Vec<tower_test::mock::SendResponse<Response<Body>>>,
}

impl State {
    fn bump(&mut self, name: &str) {
        self.next_version += 1;
        let version = self.next_version.to_string();
        if let Some(object) = self.objects.get_mut(name) {
            object["metadata"]["resourceVersion"] = json!(version);
        }
    }
}

/// The mock apiserver.
pub struct ApiServer {
    state: Arc<Mutex<State>>,
    task: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Starts the server; returns it with a client connected to it.
    pub fn start() -> (Self, kube::Client) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let state = Arc::new(Mutex::new(State::default()));
        let task = tokio::spawn(serve(handle, state.clone()));
        let server = Self {
            state,
            task: Some(task),
        };
        (server, kube::Client::new(service, NAMESPACE))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores an object (given a resourceVersion).
    pub fn insert(&self, object: Value) {
        let name = object["metadata"]["name"]
            .as_str()
            .expect("test objects have names")
            .to_owned();
        let mut state = self.lock();
        state.objects.insert(name.clone(), object);
        state.bump(&name);
    }

    /// The object as the controller's cache would hand it to reconcile.
    pub fn plan(&self, name: &str) -> Arc<DeserializeGuard<MaintenancePlan>> {
        let object = self.raw(name).unwrap_or_else(|| panic!("plan {name} does not exist"));
        Arc::new(serde_json::from_value(object).expect("DeserializeGuard accepts any object with metadata"))
    }

    /// The stored JSON, if the object exists.
    pub fn raw(&self, name: &str) -> Option<Value> {
        self.lock().objects.get(name).cloned()
    }

    /// The typed status of a (well-formed) plan.
    pub fn status(&self, name: &str) -> Option<MaintenancePlanStatus> {
        let raw = self.raw(name)?;
        serde_json::from_value(raw.get("status")?.clone()).ok()
    }

    /// Sets `deletionTimestamp`, as `kubectl delete` does on an object with finalizers.
    pub fn mark_deleted(&self, name: &str) {
        let mut state = self.lock();
        if let Some(object) = state.objects.get_mut(name) {
            object["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        state.bump(name);
    }

    /// The calls made since the last take.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }

    /// The lease requests made since the last take.
    pub fn take_lease_calls(&self) -> Vec<LeaseCall> {
        std::mem::take(&mut self.lock().lease_calls)
    }

    /// A stored Lease, if it exists.
    pub fn lease(&self, name: &str) -> Option<Value> {
        self.lock().leases.get(name).cloned()
    }

    /// The holder a stored Lease names ("" for none), if the lease exists.
    pub fn lease_holder(&self, name: &str) -> Option<String> {
        self.lease(name)
            .map(|lease| lease["spec"]["holderIdentity"].as_str().unwrap_or_default().to_owned())
    }

    /// Stores a Lease as something else wrote it (a resourceVersion is given).
    pub fn insert_lease(&self, mut lease: Value) {
        let name = lease["metadata"]["name"]
            .as_str()
            .expect("leases have names")
            .to_owned();
        let mut state = self.lock();
        state.next_version += 1;
        lease["metadata"]["resourceVersion"] = json!(state.next_version.to_string());
        state.leases.insert(name, lease);
    }

    /// Stores a Secret with `data` (plain text; k8s-openapi encodes it as the apiserver sends it).
    pub fn insert_secret(&self, namespace: &str, name: &str, data: &[(&str, &str)]) {
        use k8s_openapi::ByteString;
        use k8s_openapi::api::core::v1::Secret;
        let mut secret = Secret {
            data: Some(
                data.iter()
                    .map(|(key, value)| ((*key).to_owned(), ByteString(value.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        secret.metadata.name = Some(name.to_owned());
        secret.metadata.namespace = Some(namespace.to_owned());
        secret.metadata.resource_version = Some("1".to_owned());
        let mut secret = serde_json::to_value(&secret).expect("serializable");
        secret["apiVersion"] = json!("v1");
        secret["kind"] = json!("Secret");
        self.lock()
            .secrets
            .insert((namespace.to_owned(), name.to_owned()), secret);
    }

    /// Removes a plan outright, as the apiserver does once its finalizers are gone (or a
    /// user removed them by hand).
    pub fn remove(&self, name: &str) {
        self.lock().objects.remove(name);
    }

    /// Re-raises a panic of the server task, if it had one.
    pub async fn check_alive(&mut self) {
        if self.task.as_ref().is_some_and(JoinHandle::is_finished)
            && let Some(task) = self.task.take()
            && let Err(error) = task.await
            && error.is_panic()
        {
            std::panic::resume_unwind(error.into_panic());
        }
    }

    /// One reconcile of `name`, with the object as stored now.
    pub async fn reconcile(&mut self, ctx: &Arc<Context>, name: &str) -> Result<Action, Error> {
        let object = self.plan(name);
        self.reconcile_object(ctx, object).await
    }

    /// One reconcile of a given version of an object (e.g. a stale one).
    pub async fn reconcile_object(
        &mut self,
        ctx: &Arc<Context>,
        object: Arc<DeserializeGuard<MaintenancePlan>>,
    ) -> Result<Action, Error> {
        let result = pitstop::k8s::reconcile(object, ctx.clone()).await;
        self.check_alive().await;
        result
    }

    /// Ends the server once every client is gone, failing on a panic it had.
    pub async fn stop(mut self, ctx: Arc<Context>) {
        drop(ctx);
        self.lock().held.clear();
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(5), task).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Ok(Err(error)) => panic!("mock apiserver task failed: {error}"),
                Err(_) => panic!("mock apiserver still has clients: a Context or Client was kept alive"),
            }
        }
    }
}

/// A context over the mock apiserver and the fake AWS, on the fake's clock.
pub fn context(client: kube::Client, fake: &FakeAws) -> Arc<Context> {
    let clock_source = fake.clone();
    let ctx = Context::with_reporter(client, Arc::new(fake.clone()), POLL, "pitstop-test".into())
        .with_clock(Arc::new(move || clock_source.now()));
    Arc::new(ctx)
}

/// The usual start of a scenario: the fake AWS, the mock apiserver and a context over both.
pub fn scenario() -> (FakeAws, ApiServer, Arc<Context>) {
    let fake = fake_aws();
    let (server, client) = ApiServer::start();
    let ctx = context(client, &fake);
    (fake, server, ctx)
}

/// A FakeAws with the three instances registered and healthy.
pub fn fake_aws() -> FakeAws {
    FakeAws::new(ARN, &IDS, "2026-01-01T00:00:00Z".parse().expect("valid timestamp"))
}

/// A plan over `instances`, with `spec_extra` merged into its spec.
pub fn plan_json(name: &str, instances: &[&str], spec_extra: Value) -> Value {
    let mut spec = json!({ "targetGroupArn": ARN, "instances": instances });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        for (key, value) in extra {
            spec.insert(key.clone(), value.clone());
        }
    }
    json!({
        "apiVersion": GROUP_VERSION,
        "kind": "MaintenancePlan",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": format!("uid-{name}"),
            "generation": 1,
        },
        "spec": spec,
    })
}

/// The same plan, carrying pitstop's finalizer already.
pub fn with_finalizer(mut plan: Value) -> Value {
    plan["metadata"]["finalizers"] = json!([pitstop::k8s::FINALIZER]);
    plan
}

async fn serve(mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>, state: Arc<Mutex<State>>) {
    while let Some((request, send)) = handle.next_request().await {
        let (parts, body) = request.into_parts();
        let body = body.collect_bytes().await.expect("request bodies are readable");
        let path = parts.uri.path().to_owned();
        let query: BTreeMap<String, String> = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (pair.to_owned(), String::new()),
            })
            .collect();
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let plans_prefix = format!("/apis/{GROUP_VERSION}/namespaces/{NAMESPACE}/maintenanceplans/");
        let events_path = format!("/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events");
        let mut guard = state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let state = &mut *guard;

        let response = if parts.method == Method::POST && path == events_path {
            let event: Value = serde_json::from_slice(&body).expect("events are JSON");
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            state.calls.push(Call::Event(EventCall {
                plan: text(&event["regarding"]["name"]),
                type_: text(&event["type"]),
                reason: text(&event["reason"]),
                action: text(&event["action"]),
                note: text(&event["note"]),
            }));
            assert!(
                event["reportingController"] == "pitstop-test" && event["regarding"]["kind"] == "MaintenancePlan",
                "events are reported by pitstop about the plan: {event}"
            );
            if let Some(name) = event["metadata"]["name"].as_str() {
                state
                    .events
                    .insert(name.to_owned(), state.calls.last().cloned().expect("just pushed"));
            }
            ok(body.to_vec())
        } else if parts.method == Method::PATCH
            && let Some(name) = path.strip_prefix(&format!("{events_path}/"))
        {
            // The recorder patches an event it published before (same reason and note) to
            // count it again: logged as that event once more.
            let again = state
                .events
                .get(name)
                .cloned()
                .unwrap_or_else(|| panic!("patch of an event never created: {name}"));
            state.calls.push(again);
            ok(body.to_vec())
        } else if parts.method == Method::GET && path == format!("/apis/{GROUP_VERSION}/maintenanceplans") {
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                state.calls.push(Call::Watch);
                state.held.push(send);
                continue;
            }
            state.calls.push(Call::List);
            let items: Vec<Value> = state.objects.values().cloned().collect();
            ok(serde_json::to_vec(&json!({
                "apiVersion": GROUP_VERSION,
                "kind": "MaintenancePlanList",
                "metadata": { "resourceVersion": state.next_version.to_string() },
                "items": items,
            }))
            .expect("serializable"))
        } else if parts.method == Method::GET
            && let Some(rest) = path.strip_prefix("/api/v1/namespaces/")
            && let Some((namespace, name)) = rest.split_once("/secrets/")
        {
            let key = (namespace.to_owned(), name.to_owned());
            state.calls.push(Call::GetSecret {
                namespace: key.0.clone(),
                name: key.1.clone(),
            });
            match state.secrets.get(&key) {
                Some(secret) => ok(serde_json::to_vec(secret).expect("serializable")),
                None => failure(StatusCode::NOT_FOUND, "not found"),
            }
        } else if let Some(rest) = path.strip_prefix(LEASES_PATH) {
            lease_request(state, &parts.method, rest.trim_start_matches('/'), &body)
        } else if parts.method == Method::GET
            && let Some(name) = path.strip_prefix(&plans_prefix)
            && !name.contains('/')
        {
            state.calls.push(Call::GetPlan(name.to_owned()));
            match state.objects.get(name) {
                Some(object) => ok(serde_json::to_vec(object).expect("serializable")),
                None => failure(StatusCode::NOT_FOUND, "not found"),
            }
        } else if parts.method == Method::PATCH
            && let Some(rest) = path.strip_prefix(&plans_prefix)
        {
            match rest.split_once('/') {
                Some((name, "status")) => apply_status(state, name, &query, &content_type, &body),
                None => patch_finalizers(state, rest, &content_type, &body),
                Some(_) => panic!("unexpected subresource: {} {}", parts.method, parts.uri),
            }
        } else {
            panic!("unexpected request: {} {}", parts.method, parts.uri);
        };
        drop(guard);
        send.send_response(response);
    }
}

fn ok(body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .body(Body::from(body))
        .expect("valid response")
}

/// The `reason` the apiserver gives with a failure code (clients test it, e.g. `get_opt`).
fn reason_of(code: StatusCode, message: &str) -> &'static str {
    match code {
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::CONFLICT if message == "already exists" => "AlreadyExists",
        StatusCode::CONFLICT => "Conflict",
        StatusCode::UNPROCESSABLE_ENTITY => "Invalid",
        _ => "InternalError",
    }
}

fn failure(code: StatusCode, message: &str) -> Response<Body> {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": reason_of(code, message), "code": code.as_u16(),
    });
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(&status).expect("serializable")))
        .expect("valid response")
}

/// A server-side apply to `/status`, checked as the apiserver and the issue require.
fn apply_status(
    state: &mut State,
    name: &str,
    query: &BTreeMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Response<Body> {
    assert_eq!(
        content_type, "application/apply-patch+yaml",
        "status writes are server-side apply"
    );
    assert_eq!(
        query.get("fieldManager").map(String::as_str),
        Some("pitstop"),
        "fixed field manager"
    );
    assert_eq!(
        query.get("force").map(String::as_str),
        Some("true"),
        "the controller owns the status"
    );
    let patch: Value = serde_json::from_slice(body).expect("apply bodies are JSON");
    let keys: Vec<&str> = patch
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert!(
        keys == ["apiVersion", "kind", "status"] || keys == ["apiVersion", "kind", "metadata", "status"],
        "only the SSA envelope, the precondition and the status: {keys:?}"
    );
    if let Some(metadata) = patch.get("metadata") {
        let fields: Vec<&str> = metadata
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(fields, ["resourceVersion"], "the only metadata of a status write");
        // As the apiserver does: a precondition that does not match is a conflict.
        let stored = state
            .objects
            .get(name)
            .map(|o| o["metadata"]["resourceVersion"].clone());
        if stored.is_some_and(|version| version != metadata["resourceVersion"]) {
            return failure(StatusCode::CONFLICT, "the object has been modified");
        }
    }
    assert_eq!(patch["apiVersion"], GROUP_VERSION);
    assert_eq!(patch["kind"], "MaintenancePlan");
    let status: MaintenancePlanStatus = serde_json::from_value(patch["status"].clone()).expect("a typed status");
    assert_eq!(
        serde_json::to_value(&status).expect("serializable"),
        patch["status"],
        "the status is exactly the typed struct, nothing hand-built"
    );
    let Some(object) = state.objects.get_mut(name) else {
        return failure(StatusCode::NOT_FOUND, "not found");
    };
    object["status"] = patch["status"].clone();
    state.calls.push(Call::ApplyStatus {
        plan: name.to_owned(),
        status: Box::new(status),
    });
    state.bump(name);
    ok(serde_json::to_vec(&state.objects[name]).expect("serializable"))
}

/// The finalizer helper's JSON patches: `test` / `add` / `remove` on `/metadata/finalizers`.
fn patch_finalizers(state: &mut State, name: &str, content_type: &str, body: &[u8]) -> Response<Body> {
    assert_eq!(
        content_type, "application/json-patch+json",
        "finalizers change by JSON patch"
    );
    let ops: Vec<Value> = serde_json::from_slice(body).expect("JSON patches are arrays");
    let Some(object) = state.objects.get(name) else {
        return failure(StatusCode::NOT_FOUND, "not found");
    };
    let mut finalizers: Option<Vec<String>> = serde_json::from_value(object["metadata"]["finalizers"].clone()).ok();
    let (mut added, mut removed) = (false, false);
    for op in &ops {
        let path = op["path"].as_str().unwrap_or_default();
        let index = path
            .strip_prefix("/metadata/finalizers/")
            .and_then(|i| i.parse::<usize>().ok());
        match (op["op"].as_str().unwrap_or_default(), path, index) {
            ("test", "/metadata/finalizers", _) => {
                let expected: Option<Vec<String>> = serde_json::from_value(op["value"].clone()).ok();
                if expected != finalizers {
                    return failure(StatusCode::UNPROCESSABLE_ENTITY, "test operation failed");
                }
            }
            ("add", "/metadata/finalizers", _) => {
                finalizers = Some(serde_json::from_value(op["value"].clone()).expect("a list of finalizers"));
                added = true;
            }
            ("add", "/metadata/finalizers/-", _) => {
                let value = op["value"].as_str().expect("a finalizer").to_owned();
                finalizers.get_or_insert_with(Vec::new).push(value);
                added = true;
            }
            ("test", _, Some(i)) => {
                if finalizers.as_ref().and_then(|f| f.get(i)).map(String::as_str) != op["value"].as_str() {
                    return failure(StatusCode::UNPROCESSABLE_ENTITY, "test operation failed");
                }
            }
            ("remove", _, Some(i)) => {
                let list = finalizers.get_or_insert_with(Vec::new);
                assert!(i < list.len(), "removing a finalizer that is not there: {ops:?}");
                list.remove(i);
                removed = true;
            }
            _ => panic!("unexpected JSON patch operation: {op}"),
        }
    }
    let finalizers = finalizers.unwrap_or_default();
    let call = match (added, removed) {
        (true, false) => Call::AddFinalizer {
            plan: name.to_owned(),
            finalizers: finalizers.clone(),
        },
        (false, true) => Call::RemoveFinalizer {
            plan: name.to_owned(),
            finalizers: finalizers.clone(),
        },
        _ => panic!("a finalizer patch either adds or removes: {ops:?}"),
    };
    state.calls.push(call);
    let object = state.objects.get_mut(name).expect("checked above");
    object["metadata"]["finalizers"] = json!(finalizers);
    let deleting = object["metadata"].get("deletionTimestamp").is_some();
    let response = object.clone();
    if deleting && finalizers.is_empty() {
        // The last finalizer is gone: the apiserver deletes the object.
        state.objects.remove(name);
    } else {
        state.bump(name);
    }
    ok(serde_json::to_vec(&response).expect("serializable"))
}

/// GET, create (POST) and replace (PUT) of Leases, with the apiserver's optimistic
/// concurrency: a replace must carry the stored resourceVersion, a create must be new.
fn lease_request(state: &mut State, method: &Method, name: &str, body: &[u8]) -> Response<Body> {
    let holder_of = |lease: &Value| lease["spec"]["holderIdentity"].as_str().unwrap_or_default().to_owned();
    match (method, name) {
        (&Method::GET, name) if !name.is_empty() => {
            state.lease_calls.push(LeaseCall::Get(name.to_owned()));
            match state.leases.get(name) {
                Some(lease) => ok(serde_json::to_vec(lease).expect("serializable")),
                None => failure(StatusCode::NOT_FOUND, "not found"),
            }
        }
        (&Method::POST, "") => {
            let mut lease: Value = serde_json::from_slice(body).expect("leases are JSON");
            let name = lease["metadata"]["name"].as_str().expect("a named lease").to_owned();
            assert_eq!(
                lease["metadata"]["namespace"], NAMESPACE,
                "leases live in the controller's namespace"
            );
            if state.leases.contains_key(&name) {
                state.lease_calls.push(LeaseCall::Conflict(name));
                return failure(StatusCode::CONFLICT, "already exists");
            }
            state.next_version += 1;
            lease["metadata"]["resourceVersion"] = json!(state.next_version.to_string());
            state.lease_calls.push(LeaseCall::Create {
                lease: name.clone(),
                holder: holder_of(&lease),
            });
            state.leases.insert(name, lease.clone());
            ok(serde_json::to_vec(&lease).expect("serializable"))
        }
        (&Method::PUT, name) if !name.is_empty() => {
            let mut lease: Value = serde_json::from_slice(body).expect("leases are JSON");
            let Some(stored) = state.leases.get(name) else {
                return failure(StatusCode::NOT_FOUND, "not found");
            };
            if lease["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"] {
                state.lease_calls.push(LeaseCall::Conflict(name.to_owned()));
                return failure(StatusCode::CONFLICT, "the object has been modified");
            }
            state.next_version += 1;
            lease["metadata"]["resourceVersion"] = json!(state.next_version.to_string());
            state.lease_calls.push(LeaseCall::Replace {
                lease: name.to_owned(),
                holder: holder_of(&lease),
            });
            state.leases.insert(name.to_owned(), lease.clone());
            ok(serde_json::to_vec(&lease).expect("serializable"))
        }
        _ => panic!("unexpected lease request: {method} {name}"),
    }
}

/// What a stretch of rounds did.
#[derive(Default)]
pub struct Run {
    /// Each round's requeue and the calls it made.
    pub rounds: Vec<(Action, Vec<Call>)>,
}

impl Run {
    /// Every call of the stretch.
    pub fn calls(&self) -> impl Iterator<Item = &Call> {
        self.rounds.iter().flat_map(|(_, calls)| calls)
    }

    /// The statuses written, in order.
    pub fn statuses(&self) -> Vec<&MaintenancePlanStatus> {
        self.calls()
            .filter_map(|c| match c {
                Call::ApplyStatus { status, .. } => Some(status.as_ref()),
                _ => None,
            })
            .collect()
    }

    /// The events published: (type, reason, action).
    pub fn events(&self) -> Vec<(String, String, String)> {
        self.calls()
            .filter_map(|c| match c {
                Call::Event(e) => Some((e.type_.clone(), e.reason.clone(), e.action.clone())),
                _ => None,
            })
            .collect()
    }
}

/// Reconciles `name` round after round, moving the AWS clock 1 s after a "now" requeue and
/// by the poll interval after a poll, until `stop` says so or the round asks for anything
/// else (a wait for a change, or a requeue after some other delay, which the caller checks
/// and acts on itself). Returns the rounds and the action of the last one.
pub async fn rounds(
    server: &mut ApiServer,
    ctx: &Arc<Context>,
    fake: &FakeAws,
    name: &str,
    stop: impl Fn(&ApiServer) -> bool,
) -> (Run, Action) {
    let mut run = Run::default();
    for _ in 0..300 {
        let action = server.reconcile(ctx, name).await.expect("the round succeeds");
        let calls = server.take_calls();
        // Within a round the status is written before its events are published.
        if let Some(first_event) = calls.iter().position(|c| matches!(c, Call::Event(_))) {
            assert!(
                !calls[first_event..]
                    .iter()
                    .any(|c| matches!(c, Call::ApplyStatus { .. })),
                "status before events: {calls:?}"
            );
        }
        run.rounds.push((action.clone(), calls));
        if stop(server) {
            return (run, action);
        }
        let step = if action == Action::requeue(NOW_DELAY) {
            Duration::from_secs(1)
        } else if action == Action::requeue(POLL) {
            POLL
        } else {
            return (run, action);
        };
        fake.set_now(fake.now() + step);
    }
    panic!("the plan did not settle in 300 rounds");
}

/// Like [`rounds`], for a plan that is expected to go on until it waits for a change (or
/// `stop` says so): any other requeue fails the test.
pub async fn drive(
    server: &mut ApiServer,
    ctx: &Arc<Context>,
    fake: &FakeAws,
    name: &str,
    stop: impl Fn(&ApiServer) -> bool,
) -> Run {
    let (run, action) = rounds(server, ctx, fake, name, &stop).await;
    assert!(
        action == Action::await_change() || stop(server),
        "unexpected requeue {action:?}"
    );
    run
}

/// The distinct phases an instance went through, in the order the status showed them.
pub fn phases_of(statuses: &[&MaintenancePlanStatus], instance: &str) -> Vec<InstancePhase> {
    let mut phases: Vec<InstancePhase> = Vec::new();
    for status in statuses {
        if let Some(i) = status.instances.iter().find(|i| i.instance_id == instance)
            && phases.last() != Some(&i.phase)
        {
            phases.push(i.phase);
        }
    }
    phases
}

pub fn plan_phases(statuses: &[&MaintenancePlanStatus]) -> Vec<PlanPhase> {
    let mut phases: Vec<PlanPhase> = Vec::new();
    for status in statuses {
        if phases.last() != Some(&status.phase) {
            phases.push(status.phase);
        }
    }
    phases
}

pub fn aws_writes(fake: &FakeAws) -> Vec<(&'static str, String)> {
    fake.writes()
        .into_iter()
        .map(|w| (w.operation, w.instance_id))
        .collect()
}

pub fn event(type_: &str, reason: &str, action: &str) -> (String, String, String) {
    (type_.to_owned(), reason.to_owned(), action.to_owned())
}

/// Adds the finalizer in a first round, checking that nothing else happens in it.
pub async fn add_finalizer(server: &mut ApiServer, ctx: &Arc<Context>, fake: &FakeAws, name: &str) {
    let action = server.reconcile(ctx, name).await.expect("finalizer round");
    assert_eq!(
        action,
        Action::await_change(),
        "the finalizer patch itself triggers the next round"
    );
    assert_eq!(
        server.take_calls(),
        [Call::AddFinalizer {
            plan: name.to_owned(),
            finalizers: vec![FINALIZER.to_owned()]
        }]
    );
    assert_eq!(fake.call_count(), 0, "no AWS call before the finalizer is in place");
}
