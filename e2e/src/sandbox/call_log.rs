//! Every AWS call the sandbox answered, so tests can prove what a client did (and did not do).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Which emulated AWS service a call went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// Elastic Load Balancing v2 (AWS Query protocol).
    Elbv2,
    /// Systems Manager (JSON 1.1 protocol).
    Ssm,
    /// EC2 (EC2 Query protocol).
    Ec2,
    /// EC2 Auto Scaling (AWS Query protocol).
    Autoscaling,
    /// CloudWatch (Smithy RPC v2 CBOR).
    CloudWatch,
    /// A request that named no known service.
    Unknown,
}

/// How the sandbox answered a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallOutcome {
    /// Carried out.
    Ok,
    /// Refused with an AWS error code (not carried out).
    Error {
        /// The AWS error code, e.g. `TargetGroupNotFound`.
        code: String,
    },
    /// Answered with a throttling error by the fault switch (not carried out).
    Throttled,
    /// Carried out, but its answer was lost on the way by the `lose_answers` fault switch (`mode`: `reset`,
    /// `error500` or `hold`).
    AnswerLost {
        /// How the answer was lost.
        mode: String,
    },
}

/// One AWS call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Position in the log, from 0.
    pub seq: u64,
    /// Milliseconds since the sandbox started.
    pub elapsed_ms: u64,
    /// The service called.
    pub service: Service,
    /// The operation, e.g. `DeregisterTargets`.
    pub operation: String,
    /// Whether the operation changes state (see [`is_write_operation`]), whatever its outcome.
    pub write: bool,
    /// Instance IDs named in the request (targets, `InstanceIds`, `InstanceId`, filters).
    pub instance_ids: Vec<String>,
    /// Short, human-readable summary of the parameters.
    pub summary: String,
    /// How the call was answered.
    pub outcome: CallOutcome,
}

impl CallRecord {
    /// Whether the call was a write that the sandbox carried out.
    pub fn is_effective_write(&self) -> bool {
        self.write && matches!(self.outcome, CallOutcome::Ok | CallOutcome::AnswerLost { .. })
    }
}

/// Whether `operation` changes state: anything that does not only read (`Describe*`, `Get*`, `List*`).
///
/// Defined by name rather than by a list of the implemented writes, so an unexpected write (even one the sandbox
/// refuses) still counts as an attempt to write, which is what a dry-run test must catch.
pub fn is_write_operation(operation: &str) -> bool {
    !["Describe", "Get", "List"]
        .iter()
        .any(|prefix| operation.starts_with(prefix))
}

/// Entries kept; the oldest are dropped beyond this, `seq` keeps counting.
const LOG_LIMIT: usize = 100_000;

/// Handle on a sandbox's call log; clones share the same log.
#[derive(Debug, Clone)]
pub struct CallLog {
    inner: Arc<Mutex<LogInner>>,
    started: Instant,
}

#[derive(Debug, Default)]
struct LogInner {
    next_seq: u64,
    records: VecDeque<CallRecord>,
}

impl Default for CallLog {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            started: Instant::now(),
        }
    }
}

impl CallLog {
    /// Appends a call.
    pub(crate) fn record(
        &self,
        service: Service,
        operation: &str,
        instance_ids: Vec<String>,
        summary: String,
        outcome: CallOutcome,
    ) {
        let elapsed_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let seq = inner.next_seq;
        inner.next_seq += 1;
        if inner.records.len() == LOG_LIMIT {
            inner.records.pop_front();
        }
        inner.records.push_back(CallRecord {
            seq,
            elapsed_ms,
            service,
            write: is_write_operation(operation),
            operation: operation.to_owned(),
            instance_ids,
            summary,
            outcome,
        });
    }

    /// Milliseconds since the sandbox started, on the clock of [`CallRecord::elapsed_ms`]: to time a client's own
    /// actions against the calls it causes.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Every call, oldest first.
    pub fn records(&self) -> Vec<CallRecord> {
        self.inner
            .lock()
            .map(|inner| inner.records.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Calls to write operations, whatever their outcome, oldest first.
    pub fn writes(&self) -> Vec<CallRecord> {
        self.records().into_iter().filter(|r| r.write).collect()
    }

    /// Number of calls to `operation`.
    pub fn count(&self, operation: &str) -> usize {
        self.records().iter().filter(|r| r.operation == operation).count()
    }

    /// Calls that named instance `id`, oldest first.
    pub fn calls_for_instance(&self, id: &str) -> Vec<CallRecord> {
        self.records()
            .into_iter()
            .filter(|r| r.instance_ids.iter().any(|i| i == id))
            .collect()
    }

    /// Number of calls logged (after dropping beyond the limit).
    pub fn len(&self) -> usize {
        self.inner.lock().map(|inner| inner.records.len()).unwrap_or_default()
    }

    /// Whether no call is logged.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every call (sequence numbers keep counting).
    pub fn clear(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.records.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_told_apart_by_name() {
        for read in ["DescribeTargetHealth", "GetCommandInvocation", "ListCommands"] {
            assert!(!is_write_operation(read), "{read}");
        }
        for write in [
            "RegisterTargets",
            "DeregisterTargets",
            "SendCommand",
            "CancelCommand",
            "ModifyTargetGroup",
        ] {
            assert!(is_write_operation(write), "{write}");
        }
    }

    #[test]
    fn counts_by_operation_and_instance() {
        let log = CallLog::default();
        log.record(
            Service::Elbv2,
            "DescribeTargetHealth",
            vec![],
            String::new(),
            CallOutcome::Ok,
        );
        log.record(
            Service::Ssm,
            "SendCommand",
            vec!["i-a".into()],
            String::new(),
            CallOutcome::Throttled,
        );
        log.record(
            Service::Elbv2,
            "DeregisterTargets",
            vec!["i-a".into()],
            String::new(),
            CallOutcome::Ok,
        );
        assert_eq!(log.count("DescribeTargetHealth"), 1);
        assert_eq!(log.writes().len(), 2);
        assert_eq!(log.writes().iter().filter(|r| r.is_effective_write()).count(), 1);
        assert_eq!(log.calls_for_instance("i-a").len(), 2);
        assert_eq!(log.records().last().map(|r| r.seq), Some(2));
        log.clear();
        assert!(log.is_empty());
    }
}
