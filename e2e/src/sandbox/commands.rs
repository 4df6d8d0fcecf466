//! SSM commands and their per-instance invocations: what was sent, how far each got, and their JSON shapes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::watch;

/// The only document the sandbox runs.
pub(crate) const RUN_SHELL_SCRIPT: &str = "AWS-RunShellScript";

/// The plugin `AWS-RunShellScript` runs its commands with.
pub(crate) const PLUGIN_NAME: &str = "aws:runShellScript";

/// SSM keeps at most this many characters of each output stream in `GetCommandInvocation`.
const OUTPUT_LIMIT: usize = 24_000;

/// Status of one invocation (one instance of a command), as SSM names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InvocationStatus {
    /// Waiting for the instance to run.
    Pending,
    /// Running, or rebooting between two runs.
    InProgress,
    /// Exited 0.
    Success,
    /// Stopped by `CancelCommand`.
    Cancelled,
    /// Not delivered or not finished in time.
    TimedOut,
    /// Exited non-zero (or was killed).
    Failed,
}

impl InvocationStatus {
    /// The wire name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::InProgress => "InProgress",
            Self::Success => "Success",
            Self::Cancelled => "Cancelled",
            Self::TimedOut => "TimedOut",
            Self::Failed => "Failed",
        }
    }

    /// Whether the invocation has ended.
    pub(crate) fn is_terminal(self) -> bool {
        !matches!(self, Self::Pending | Self::InProgress)
    }
}

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Exited 0.
    Success,
    /// Exited with this code (`-1`: killed, or the sandbox could not run it).
    Failed(i32),
    /// Ran out of time.
    TimedOut,
    /// Cancelled.
    Cancelled,
}

/// One instance's share of a command.
#[derive(Debug)]
pub(crate) struct Invocation {
    status: InvocationStatus,
    details: &'static str,
    response_code: i32,
    started: Option<SystemTime>,
    ended: Option<SystemTime>,
    stdout: String,
    stderr: String,
    cancel: watch::Sender<bool>,
}

/// A command as sent.
#[derive(Debug)]
pub(crate) struct Command {
    id: String,
    seq: u64,
    document_name: String,
    comment: String,
    parameters: BTreeMap<String, Vec<String>>,
    instance_ids: Vec<String>,
    requested_at: SystemTime,
    requested_instant: Instant,
    timeout_seconds: Option<i64>,
    /// `AlarmConfiguration` as sent (recorded and shown, not acted on: see `ssm_api`).
    alarm_configuration: Option<Value>,
    expires_after: SystemTime,
    invocations: BTreeMap<String, Invocation>,
}

/// What `SendCommand` asked for, validated.
#[derive(Debug, Clone)]
pub(crate) struct NewCommand {
    pub(crate) document_name: String,
    pub(crate) comment: String,
    pub(crate) parameters: BTreeMap<String, Vec<String>>,
    pub(crate) instance_ids: Vec<String>,
    pub(crate) timeout_seconds: Option<i64>,
    /// `AlarmConfiguration` as sent, validated.
    pub(crate) alarm_configuration: Option<Value>,
    /// How long the command may wait to be delivered; it expires after that.
    pub(crate) delivery_timeout: Duration,
}

/// Filters of `ListCommands`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListFilter {
    pub(crate) instance_id: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) document_name: Option<String>,
    pub(crate) invoked_after: Option<SystemTime>,
    pub(crate) invoked_before: Option<SystemTime>,
}

/// Every command sent to the sandbox.
#[derive(Debug, Default)]
pub(crate) struct CommandStore {
    inner: Mutex<StoreInner>,
}

#[derive(Debug, Default)]
struct StoreInner {
    next_seq: u64,
    commands: HashMap<String, Command>,
}

impl CommandStore {
    fn lock(&self) -> MutexGuard<'_, StoreInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores a new command with a `Pending` invocation per instance; returns its JSON and a cancel receiver per
    /// instance.
    pub(crate) fn create(&self, new: NewCommand) -> (Value, Vec<(String, watch::Receiver<bool>)>) {
        let now = SystemTime::now();
        let mut receivers = Vec::new();
        let mut invocations = BTreeMap::new();
        for id in &new.instance_ids {
            let (cancel, receiver) = watch::channel(false);
            receivers.push((id.clone(), receiver));
            invocations.insert(
                id.clone(),
                Invocation {
                    status: InvocationStatus::Pending,
                    details: "Pending",
                    response_code: -1,
                    started: None,
                    ended: None,
                    stdout: String::new(),
                    stderr: String::new(),
                    cancel,
                },
            );
        }
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let command = Command {
            id: uuid::Uuid::new_v4().to_string(),
            seq,
            document_name: new.document_name,
            comment: new.comment,
            parameters: new.parameters,
            instance_ids: new.instance_ids,
            alarm_configuration: new.alarm_configuration,
            requested_at: now,
            requested_instant: Instant::now(),
            timeout_seconds: new.timeout_seconds,
            expires_after: now + new.delivery_timeout,
            invocations,
        };
        let json = command_json(&command);
        inner.commands.insert(command.id.clone(), command);
        (json, receivers)
    }

    /// Whether a command with this ID exists.
    pub(crate) fn exists(&self, command_id: &str) -> bool {
        self.lock().commands.contains_key(command_id)
    }

    /// Commands matching `filter`, newest first, as `ListCommands` JSON.
    pub(crate) fn list(&self, command_id: Option<&str>, filter: &ListFilter) -> Vec<Value> {
        let inner = self.lock();
        let mut commands: Vec<&Command> = inner
            .commands
            .values()
            .filter(|c| command_id.is_none_or(|id| c.id == id))
            .filter(|c| {
                filter
                    .instance_id
                    .as_ref()
                    .is_none_or(|id| c.invocations.contains_key(id))
            })
            .filter(|c| filter.status.as_ref().is_none_or(|s| command_status(c).0 == s))
            .filter(|c| filter.document_name.as_ref().is_none_or(|d| &c.document_name == d))
            .filter(|c| filter.invoked_after.is_none_or(|t| c.requested_at >= t))
            .filter(|c| filter.invoked_before.is_none_or(|t| c.requested_at <= t))
            .collect();
        commands.sort_by_key(|c| std::cmp::Reverse(c.seq));
        commands.into_iter().map(command_json).collect()
    }

    /// `GetCommandInvocation` JSON, with when its command was sent (invocations are hidden for a while after).
    pub(crate) fn invocation(&self, command_id: &str, instance_id: &str) -> Option<(Instant, Value)> {
        let inner = self.lock();
        let command = inner.commands.get(command_id)?;
        let invocation = command.invocations.get(instance_id)?;
        Some((
            command.requested_instant,
            invocation_json(command, instance_id, invocation),
        ))
    }

    fn with_invocation(&self, command_id: &str, instance_id: &str, f: impl FnOnce(&mut Invocation)) {
        let mut inner = self.lock();
        if let Some(invocation) = inner
            .commands
            .get_mut(command_id)
            .and_then(|c| c.invocations.get_mut(instance_id))
        {
            f(invocation);
        }
    }

    /// The invocation's script started (again, after a reboot).
    pub(crate) fn mark_started(&self, command_id: &str, instance_id: &str) {
        self.with_invocation(command_id, instance_id, |inv| {
            if inv.status.is_terminal() {
                return;
            }
            inv.status = InvocationStatus::InProgress;
            inv.details = "InProgress";
            inv.started.get_or_insert_with(SystemTime::now);
        });
    }

    /// Appends a run's output (a rebooting script runs more than once), keeping SSM's size limit.
    pub(crate) fn append_output(&self, command_id: &str, instance_id: &str, stdout: &str, stderr: &str) {
        self.with_invocation(command_id, instance_id, |inv| {
            append_limited(&mut inv.stdout, stdout);
            append_limited(&mut inv.stderr, stderr);
        });
    }

    /// Ends an invocation, unless it already ended.
    pub(crate) fn finish(&self, command_id: &str, instance_id: &str, outcome: Outcome) {
        self.with_invocation(command_id, instance_id, |inv| {
            if inv.status.is_terminal() {
                return;
            }
            let (status, details, code) = match outcome {
                Outcome::Success => (InvocationStatus::Success, "Success", 0),
                Outcome::Failed(code) => (InvocationStatus::Failed, "Failed", code),
                Outcome::TimedOut if inv.started.is_none() => (InvocationStatus::TimedOut, "Delivery Timed Out", -1),
                Outcome::TimedOut => (InvocationStatus::TimedOut, "Execution Timed Out", -1),
                Outcome::Cancelled => (InvocationStatus::Cancelled, "Canceled", -1),
            };
            inv.status = status;
            inv.details = details;
            inv.response_code = code;
            inv.ended = Some(SystemTime::now());
        });
    }

    /// Asks the unfinished invocations of a command (all, or those on `instance_ids`) to stop. `None` when there is
    /// no such command.
    pub(crate) fn cancel(&self, command_id: &str, instance_ids: Option<&[String]>) -> Option<()> {
        let inner = self.lock();
        let command = inner.commands.get(command_id)?;
        for (id, invocation) in &command.invocations {
            if instance_ids.is_none_or(|ids| ids.contains(id)) && !invocation.status.is_terminal() {
                invocation.cancel.send_replace(true);
            }
        }
        Some(())
    }
}

fn append_limited(buf: &mut String, more: &str) {
    for c in more.chars() {
        if buf.len() + c.len_utf8() > OUTPUT_LIMIT {
            break;
        }
        buf.push(c);
    }
}

/// Seconds since the epoch with millisecond precision, the JSON protocol's timestamp.
pub(crate) fn epoch_seconds(t: SystemTime) -> f64 {
    let millis = t.duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or_default();
    // Millisecond counts stay far below 2^53, so the conversion is exact.
    millis as f64 / 1000.0
}

/// ISO 8601 with milliseconds, as `GetCommandInvocation` writes its (string-typed) dates.
fn iso8601(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|ts| ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// A command's overall status from its invocations: running while any runs, else the worst ending.
fn command_status(command: &Command) -> (&'static str, &'static str) {
    let statuses: Vec<InvocationStatus> = command.invocations.values().map(|i| i.status).collect();
    if statuses.iter().all(|s| *s == InvocationStatus::Pending) {
        return ("Pending", "Pending");
    }
    if statuses.iter().any(|s| !s.is_terminal()) {
        return ("InProgress", "InProgress");
    }
    for (status, details) in [
        (InvocationStatus::Failed, "Failed"),
        (InvocationStatus::TimedOut, "TimedOut"),
        (InvocationStatus::Cancelled, "Canceled"),
    ] {
        if statuses.contains(&status) {
            return (status.as_str(), details);
        }
    }
    ("Success", "Success")
}

fn command_json(command: &Command) -> Value {
    let (status, details) = command_status(command);
    let invocations = command.invocations.values();
    let completed = invocations.clone().filter(|i| i.status.is_terminal()).count();
    let errors = invocations
        .clone()
        .filter(|i| matches!(i.status, InvocationStatus::Failed | InvocationStatus::TimedOut))
        .count();
    let delivery_timeouts = invocations.filter(|i| i.details == "Delivery Timed Out").count();
    let mut json = json!({
        "CommandId": command.id,
        "DocumentName": command.document_name,
        "DocumentVersion": "$DEFAULT",
        "Comment": command.comment,
        "ExpiresAfter": epoch_seconds(command.expires_after),
        "Parameters": command.parameters,
        "InstanceIds": command.instance_ids,
        "Targets": [],
        "RequestedDateTime": epoch_seconds(command.requested_at),
        "Status": status,
        "StatusDetails": details,
        "OutputS3Region": "",
        "OutputS3BucketName": "",
        "OutputS3KeyPrefix": "",
        "MaxConcurrency": "50",
        "MaxErrors": "0",
        "TargetCount": command.invocations.len(),
        "CompletedCount": completed,
        "ErrorCount": errors,
        "DeliveryTimedOutCount": delivery_timeouts,
        "ServiceRole": "",
    });
    if let (Some(timeout), Some(obj)) = (command.timeout_seconds, json.as_object_mut()) {
        obj.insert("TimeoutSeconds".to_owned(), json!(timeout));
    }
    if let (Some(alarms), Some(obj)) = (&command.alarm_configuration, json.as_object_mut()) {
        obj.insert("AlarmConfiguration".to_owned(), alarms.clone());
    }
    json
}

fn invocation_json(command: &Command, instance_id: &str, inv: &Invocation) -> Value {
    let elapsed = match (inv.started, inv.ended) {
        (Some(start), end) => {
            let d = end
                .unwrap_or_else(SystemTime::now)
                .duration_since(start)
                .unwrap_or_default();
            format!("PT{}.{:03}S", d.as_secs(), d.subsec_millis())
        }
        (None, _) => String::new(),
    };
    json!({
        "CommandId": command.id,
        "InstanceId": instance_id,
        "Comment": command.comment,
        "DocumentName": command.document_name,
        "DocumentVersion": "$DEFAULT",
        "PluginName": PLUGIN_NAME,
        "ResponseCode": inv.response_code,
        "ExecutionStartDateTime": inv.started.map(iso8601).unwrap_or_default(),
        "ExecutionElapsedTime": elapsed,
        "ExecutionEndDateTime": inv.ended.map(iso8601).unwrap_or_default(),
        "Status": inv.status.as_str(),
        "StatusDetails": inv.details,
        "StandardOutputContent": inv.stdout,
        "StandardOutputUrl": "",
        "StandardErrorContent": inv.stderr,
        "StandardErrorUrl": "",
        "CloudWatchOutputConfig": { "CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_command(ids: &[&str]) -> NewCommand {
        NewCommand {
            document_name: RUN_SHELL_SCRIPT.into(),
            comment: "c".into(),
            parameters: BTreeMap::from([("commands".to_owned(), vec!["true".to_owned()])]),
            instance_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            timeout_seconds: Some(60),
            alarm_configuration: None,
            delivery_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn command_status_follows_its_invocations() {
        let store = CommandStore::default();
        let (json, _) = store.create(new_command(&["i-a", "i-b"]));
        let id = json["CommandId"].as_str().unwrap().to_owned();
        assert_eq!(json["Status"], "Pending");
        store.mark_started(&id, "i-a");
        assert_eq!(store.list(Some(&id), &ListFilter::default())[0]["Status"], "InProgress");
        store.finish(&id, "i-a", Outcome::Success);
        store.finish(&id, "i-b", Outcome::Failed(3));
        store.finish(&id, "i-b", Outcome::Success);
        let listed = &store.list(None, &ListFilter::default())[0];
        assert_eq!(
            (listed["Status"].as_str(), listed["ErrorCount"].as_u64()),
            (Some("Failed"), Some(1))
        );
        let (_, inv) = store.invocation(&id, "i-b").unwrap();
        assert_eq!(
            (inv["Status"].as_str(), inv["ResponseCode"].as_i64()),
            (Some("Failed"), Some(3))
        );
    }

    #[test]
    fn list_is_newest_first_and_filters_by_instance() {
        let store = CommandStore::default();
        let (first, _) = store.create(new_command(&["i-a"]));
        let (second, _) = store.create(new_command(&["i-b"]));
        let all = store.list(None, &ListFilter::default());
        assert_eq!(all[0]["CommandId"], second["CommandId"]);
        assert_eq!(all[1]["CommandId"], first["CommandId"]);
        let only_a = store.list(
            None,
            &ListFilter {
                instance_id: Some("i-a".into()),
                ..Default::default()
            },
        );
        assert_eq!(only_a.len(), 1);
        assert_eq!(only_a[0]["CommandId"], first["CommandId"]);
    }

    #[test]
    fn timing_out_before_delivery_is_told_apart() {
        let store = CommandStore::default();
        let (json, _) = store.create(new_command(&["i-a"]));
        let id = json["CommandId"].as_str().unwrap().to_owned();
        store.finish(&id, "i-a", Outcome::TimedOut);
        let (_, inv) = store.invocation(&id, "i-a").unwrap();
        assert_eq!(inv["StatusDetails"], "Delivery Timed Out");
        assert_eq!(inv["ExecutionStartDateTime"], "");
    }

    #[test]
    fn output_is_capped() {
        let mut buf = String::new();
        append_limited(&mut buf, &"x".repeat(OUTPUT_LIMIT + 10));
        assert_eq!(buf.len(), OUTPUT_LIMIT);
    }

    #[test]
    fn dates_are_iso8601_with_millis() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(iso8601(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(epoch_seconds(t), 1_700_000_000.123);
    }
}
