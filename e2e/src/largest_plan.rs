//! The largest MaintenancePlan the API accepts, with the status pitstop writes for it: what
//! must fit in one etcd request, whatever the plan's size.
//!
//! The status comes from pitstop's own rounds (observe, decide, record, act against the
//! in-memory AWS), run over a dozen instances in ten target groups with verification, some
//! failing, and is then widened to [`MAX_INSTANCES`] by giving the largest entry (a failed
//! instance) new IDs: the entry is what pitstop writes, only the count is scaled (a thousand simulated
//! instances would take minutes in a debug build, and add nothing). Failing commands report
//! 500 characters of stderr, the most pitstop keeps, and command IDs are as long as SSM's.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use pitstop::api::{
    CommandSpec, InstanceStatus, MAX_INSTANCES, MaintenancePlan, MaintenancePlanSpec, MaintenancePlanStatus,
};
use pitstop::aws::fake::FakeAws;
use pitstop::engine::{StatusStore, step};
use pitstop::machine::PlanView;

/// etcd's default limit on one request (`--max-request-bytes`, 1.5 MiB): a status write
/// larger than this fails with `ResourceExhausted`, and the plan shows nothing.
pub const ETCD_REQUEST_LIMIT: usize = 1_572_864;

/// As many target groups as a plan may name.
const GROUPS: usize = 10;
/// Instances really run through the rounds before the entries are widened.
const SIMULATED: usize = 12;

struct Store(Option<MaintenancePlanStatus>);

#[async_trait::async_trait]
impl StatusStore for Store {
    type Error = std::convert::Infallible;

    async fn save(&mut self, status: &MaintenancePlanStatus) -> Result<(), Self::Error> {
        self.0 = Some(status.clone());
        Ok(())
    }
}

/// A target group ARN as long as ELBv2 makes them (a 32-character name).
fn group_arn(index: usize) -> String {
    format!(
        "arn:aws:elasticloadbalancing:ap-southeast-2:123456789012:targetgroup/{index:02}-a-name-of-32-characters-/{index:016x}"
    )
}

/// An instance ID as EC2 makes them today (17 hex digits).
fn instance_id(index: usize) -> String {
    format!("i-{index:017x}")
}

/// The plan of [`MAX_INSTANCES`] instances in ten target groups, finished, with the status
/// pitstop wrote for its entries (see the module's documentation).
pub async fn largest_plan() -> MaintenancePlan {
    let arns: Vec<String> = (0..GROUPS).map(group_arn).collect();
    let simulated: Vec<String> = (0..SIMULATED).map(instance_id).collect();
    let ids: Vec<&str> = simulated.iter().map(String::as_str).collect();
    let start: Timestamp = "2026-12-01T02:00:00Z".parse().unwrap_or_default();
    let fake = FakeAws::new(&arns[0], &ids, start);
    for (index, arn) in arns.iter().enumerate().skip(1) {
        fake.add_group(arn, &ids, 8000 + index as i32);
    }
    fake.behave(|b| {
        b.drain_time = Duration::from_secs(20);
        b.healthy_time = Duration::from_secs(20);
        b.command_time = Duration::from_secs(30);
        // A third fail their maintenance, with as much stderr as SSM hands pitstop: failures
        // carry the longest messages. Command IDs as long as SSM's.
        b.failing_commands = simulated.iter().step_by(3).cloned().collect();
        b.failure_output = "error: a line of output from a failing package manager run\n".repeat(9);
        b.uuid_command_ids = true;
    });
    let command = |document: &str, script: &str| CommandSpec {
        document_name: document.to_owned(),
        document_version: Some("3".to_owned()),
        parameters: [("commands".to_owned(), vec![script.to_owned()])].into(),
        timeout_seconds: Some(600),
    };
    let mut spec = MaintenancePlanSpec {
        target_group_arns: arns.clone(),
        instances: simulated.clone(),
        maintenance: Some(command("AWS-RunShellScript", "dnf -y update && systemctl reboot")),
        verify: Some(command("AWS-RunShellScript", "curl -fsS http://localhost:8080/health")),
        max_failures: MAX_INSTANCES as u32,
        ..MaintenancePlanSpec::default()
    };
    let apis = fake.apis();
    let mut store = Store(None);
    let mut now = start;
    let uid = "7d3e4f50-1111-4222-8333-944455556666";
    for _ in 0..10_000 {
        fake.set_now(now);
        let recorded = store.0.clone();
        if recorded.as_ref().is_some_and(|s| s.phase.is_finished()) {
            break;
        }
        let plan = PlanView {
            uid,
            generation: Some(1),
            spec: &spec,
            status: recorded.as_ref(),
        };
        // A failed AWS call only ends the round, as in the controller.
        let _ = step(
            &apis,
            plan,
            now,
            &pitstop::machine::TurnView::default(),
            &pitstop::gates::GateReaders::http(None),
            &mut store,
        )
        .await;
        now += SignedDuration::from_secs(5);
    }
    let mut status = store.0.unwrap_or_default();
    // Every instance as large as the largest pitstop wrote (a failed one, with the most stderr).
    let largest = std::mem::take(&mut status.instances)
        .into_iter()
        .max_by_key(|entry| serde_json::to_vec(entry).map(|json| json.len()).unwrap_or_default());
    spec.instances = (0..MAX_INSTANCES).map(instance_id).collect();
    if let Some(largest) = largest {
        status.instances = spec
            .instances
            .iter()
            .map(|id| InstanceStatus {
                instance_id: id.clone(),
                ..largest.clone()
            })
            .collect();
    }
    let mut plan = MaintenancePlan::new("largest", spec);
    plan.metadata.namespace = Some("default".to_owned());
    plan.status = Some(status);
    plan
}
