//! The world's Auto Scaling group: every launched instance of the sandbox belongs to one group, whose sizes,
//! members' lifecycle and health states and suspended processes behave as EC2 Auto Scaling's do for the parts
//! pitstop meets:
//!
//! - a launch adds an `InService` member, a termination takes the member through `Terminating` and out;
//! - EnterStandby (`EnteringStandby` while the group deregisters it from its target groups and the targets drain,
//!   then `Standby`), refused when decrementing the desired capacity would go below MinSize; without the decrement
//!   the group launches a replacement;
//! - ExitStandby (`Pending` while it is registered again, then `InService`), raising the desired capacity;
//! - UpdateAutoScalingGroup of the sizes, with AWS's checks;
//! - SuspendProcesses / ResumeProcesses, with AWS's process names;
//! - with the ELB health check on ([`SandboxConfig::elb_health_check_grace`](super::SandboxConfig)), a member that a
//!   target group reads `unhealthy` after its grace period is marked `Unhealthy` and replaced (terminated, a spare
//!   launched and registered), unless `HealthCheck` (no marking) or `ReplaceUnhealthy` (marked, kept) is suspended
//!   or it is in `Standby`.
//!
//! Not emulated: scale-in or scale-out from the sizes (raising or lowering DesiredCapacity launches or terminates
//! nothing), lifecycle hooks, AZRebalance. The wire (`autoscaling_api`) reads and calls in here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::Shared;
use super::targets::{self, Registration, TargetState};

/// The processes a group can suspend, as the API names them.
pub(crate) const PROCESSES: &[&str] = &[
    "Launch",
    "Terminate",
    "AddToLoadBalancer",
    "AlarmNotification",
    "AZRebalance",
    "HealthCheck",
    "InstanceRefresh",
    "ReplaceUnhealthy",
    "ScheduledActions",
];

/// Lifecycle state of a group member, as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    /// Serving.
    InService,
    /// Being terminated: deregistered from the group's target groups, draining.
    Terminating,
    /// Leaving service for Standby: being deregistered, its targets draining.
    EnteringStandby,
    /// In Standby: in no target group, not health-checked, not replaced.
    Standby,
    /// Coming back from Standby: being registered again.
    Pending,
}

impl Lifecycle {
    /// The API's spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::InService => "InService",
            Self::Terminating => "Terminating",
            Self::EnteringStandby => "EnteringStandby",
            Self::Standby => "Standby",
            Self::Pending => "Pending",
        }
    }
}

/// MinSize, MaxSize and DesiredCapacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupSizes {
    /// MinSize.
    pub(crate) min_size: usize,
    /// MaxSize.
    pub(crate) max_size: usize,
    /// DesiredCapacity.
    pub(crate) desired_capacity: usize,
}

/// A request the group refuses, with AWS's `ValidationError` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused(pub(crate) String);

#[derive(Debug)]
struct GroupState {
    sizes: GroupSizes,
    /// Members not `InService` (absent: `InService`).
    lifecycle: BTreeMap<String, Lifecycle>,
    /// Members the group considers `Unhealthy`.
    unhealthy: BTreeSet<String>,
    /// When each member last came into service (launch or ExitStandby), for the health check grace period.
    in_service_since: BTreeMap<String, Instant>,
    /// Suspended processes, with the reason the API shows.
    suspended: BTreeMap<String, String>,
    /// Members the group replaced because they were unhealthy, in order.
    replaced: Vec<String>,
}

/// The sandbox's Auto Scaling group.
#[derive(Debug)]
pub(crate) struct AutoScalingGroup {
    /// Its name.
    pub(crate) name: String,
    /// Its ARN, as AWS writes them.
    pub(crate) arn: String,
    /// The ELB health check's grace period; None: the EC2 health check only (which a running instance always
    /// passes, rebooting or not).
    pub(crate) elb_health_check_grace: Option<Duration>,
    state: Mutex<GroupState>,
}

impl AutoScalingGroup {
    /// A group named `name` in `region` whose members are `members`, which may grow by `spares`.
    pub(crate) fn new(
        name: &str,
        region: &str,
        account: &str,
        members: &[String],
        spares: usize,
        elb_health_check_grace: Option<Duration>,
    ) -> Self {
        let now = Instant::now();
        Self {
            name: name.to_owned(),
            arn: format!(
                "arn:aws:autoscaling:{region}:{account}:autoScalingGroup:{}:autoScalingGroupName/{name}",
                uuid::Uuid::new_v4()
            ),
            elb_health_check_grace,
            state: Mutex::new(GroupState {
                sizes: GroupSizes {
                    min_size: members.len(),
                    max_size: members.len() + spares,
                    desired_capacity: members.len(),
                },
                lifecycle: BTreeMap::new(),
                unhealthy: BTreeSet::new(),
                in_service_since: members.iter().map(|id| (id.clone(), now)).collect(),
                suspended: BTreeMap::new(),
                replaced: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, GroupState> {
        // Every change completes under the lock before it is released: a panic elsewhere leaves no half-change.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The health check type the API shows.
    pub(crate) fn health_check_type(&self) -> &'static str {
        if self.elb_health_check_grace.is_some() {
            "ELB"
        } else {
            "EC2"
        }
    }

    /// MinSize, MaxSize and DesiredCapacity now.
    pub(crate) fn sizes(&self) -> GroupSizes {
        self.lock().sizes.clone()
    }

    /// The lifecycle state of member `id` (the caller knows it is a member).
    pub(crate) fn lifecycle(&self, id: &str) -> Lifecycle {
        self.lock().lifecycle.get(id).copied().unwrap_or(Lifecycle::InService)
    }

    /// `Healthy` or `Unhealthy`, as the API spells it.
    pub(crate) fn health_status(&self, id: &str) -> &'static str {
        if self.lock().unhealthy.contains(id) {
            "Unhealthy"
        } else {
            "Healthy"
        }
    }

    /// The suspended processes with their reasons, in name order.
    pub(crate) fn suspended(&self) -> BTreeMap<String, String> {
        self.lock().suspended.clone()
    }

    /// Members replaced because they were unhealthy, in order.
    pub(crate) fn replaced(&self) -> Vec<String> {
        self.lock().replaced.clone()
    }

    /// Member `id` starts terminating. `decrement`: the group wants one instance less (as
    /// TerminateInstanceInAutoScalingGroup with ShouldDecrementDesiredCapacity); otherwise a replacement follows.
    pub(crate) fn start_terminating(&self, id: &str, decrement: bool) {
        let mut state = self.lock();
        state.lifecycle.insert(id.to_owned(), Lifecycle::Terminating);
        if decrement {
            state.sizes.desired_capacity = state.sizes.desired_capacity.saturating_sub(1);
            state.sizes.min_size = state.sizes.min_size.min(state.sizes.desired_capacity);
        }
    }

    /// Member `id` is gone.
    pub(crate) fn finish_terminating(&self, id: &str) {
        let mut state = self.lock();
        state.lifecycle.remove(id);
        state.unhealthy.remove(id);
        state.in_service_since.remove(id);
    }

    /// Member `id` was launched. `increment`: to grow the group (not to replace one), so the desired capacity rises.
    pub(crate) fn launched(&self, id: &str, increment: bool) {
        let mut state = self.lock();
        state.in_service_since.insert(id.to_owned(), Instant::now());
        if increment {
            state.sizes.desired_capacity += 1;
            state.sizes.max_size = state.sizes.max_size.max(state.sizes.desired_capacity);
        }
    }

    /// UpdateAutoScalingGroup of the sizes, with AWS's rules: a MinSize above the desired capacity (none given)
    /// raises it, a MaxSize below lowers it; the result must keep MinSize <= DesiredCapacity <= MaxSize.
    pub(crate) fn update_sizes(
        &self,
        min: Option<usize>,
        max: Option<usize>,
        desired: Option<usize>,
    ) -> Result<GroupSizes, Refused> {
        let mut state = self.lock();
        let min_size = min.unwrap_or(state.sizes.min_size);
        let max_size = max.unwrap_or(state.sizes.max_size);
        if min_size > max_size {
            return Err(Refused(format!(
                "Max bound, {max_size}, must be greater than or equal to min bound, {min_size}"
            )));
        }
        let desired_capacity = desired.unwrap_or_else(|| state.sizes.desired_capacity.clamp(min_size, max_size));
        if !(min_size..=max_size).contains(&desired_capacity) {
            return Err(Refused(format!(
                "Desired capacity:{desired_capacity} must be between the specified min size:{min_size} and max \
                 size:{max_size}"
            )));
        }
        state.sizes = GroupSizes {
            min_size,
            max_size,
            desired_capacity,
        };
        Ok(state.sizes.clone())
    }

    /// SuspendProcesses: `processes` (every one when empty). Suspending one twice keeps its first reason.
    pub(crate) fn suspend(&self, processes: &[String]) -> Result<(), Refused> {
        let names = checked_processes(processes)?;
        let reason = format!(
            "User suspended at {}",
            jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ")
        );
        let mut state = self.lock();
        for name in names {
            state.suspended.entry(name).or_insert_with(|| reason.clone());
        }
        Ok(())
    }

    /// ResumeProcesses: `processes` (every one when empty). Resuming one that is not suspended is no error.
    pub(crate) fn resume(&self, processes: &[String]) -> Result<(), Refused> {
        let names = checked_processes(processes)?;
        let mut state = self.lock();
        for name in names {
            state.suspended.remove(&name);
        }
        Ok(())
    }
}

/// The named processes (every process when none is named), each checked against AWS's names.
fn checked_processes(processes: &[String]) -> Result<Vec<String>, Refused> {
    if processes.is_empty() {
        return Ok(PROCESSES.iter().map(|p| (*p).to_owned()).collect());
    }
    for name in processes {
        if !PROCESSES.contains(&name.as_str()) {
            return Err(Refused(format!("Process {name} is not a valid scaling process.")));
        }
    }
    Ok(processes.to_vec())
}

/// The group's members now: launched instances not terminated yet, in ID order.
pub(crate) fn members(shared: &Shared) -> Vec<String> {
    let mut ids: Vec<String> = shared
        .instances
        .iter()
        .filter(|i| i.in_service())
        .map(|i| i.id.clone())
        .collect();
    ids.sort();
    ids
}

fn check_member(shared: &Shared, id: &str) -> Result<(), Refused> {
    if members(shared).iter().any(|m| m == id) {
        Ok(())
    } else {
        Err(Refused(format!(
            "The instance {id} is not part of Auto Scaling group {}.",
            shared.auto_scaling.name
        )))
    }
}

/// EnterStandby of `ids`: checked and marked `EnteringStandby` before it returns (so a repeated call sees it), then,
/// in the background, deregistered from every target group it is in, drained, and `Standby`. Without
/// `decrement`, the group launches a spare to keep its capacity.
pub(crate) fn enter_standby(shared: &Arc<Shared>, ids: &[String], decrement: bool) -> Result<(), Refused> {
    for id in ids {
        check_member(shared, id)?;
    }
    let group = &shared.auto_scaling;
    {
        let mut state = group.lock();
        for id in ids {
            let lifecycle = state.lifecycle.get(id).copied().unwrap_or(Lifecycle::InService);
            if lifecycle != Lifecycle::InService {
                return Err(Refused(format!("The instance {id} is not in InService.")));
            }
        }
        if decrement {
            let sizes = &state.sizes;
            if sizes.desired_capacity < sizes.min_size + ids.len() {
                return Err(Refused(format!(
                    "AutoScalingGroup {} has min-size={}, max-size={}, and desired-capacity={}. To place into standby \
                     {} instances, please update the AutoScalingGroup sizes appropriately.",
                    group.name,
                    sizes.min_size,
                    sizes.max_size,
                    sizes.desired_capacity,
                    ids.len()
                )));
            }
            state.sizes.desired_capacity -= ids.len();
        }
        for id in ids {
            state.lifecycle.insert(id.clone(), Lifecycle::EnteringStandby);
            state.unhealthy.remove(id);
        }
    }
    for id in ids {
        let shared = Arc::clone(shared);
        let id = id.clone();
        shared.clone().tasks.spawn(async move {
            if let Err(err) = leave_target_groups(&shared, &id).await {
                tracing::warn!(instance = %id, "EnterStandby: {err:#}");
            }
            shared
                .auto_scaling
                .lock()
                .lifecycle
                .insert(id.clone(), Lifecycle::Standby);
            tracing::info!(instance = %id, "in Standby");
            if !decrement && let Err(err) = super::fleet::launch_replacement(&shared).await {
                tracing::warn!("EnterStandby without decrement: no replacement launched: {err:#}");
            }
        });
    }
    Ok(())
}

/// Deregisters `id` from every target group it is registered in and waits out the deregistration delay.
async fn leave_target_groups(shared: &Arc<Shared>, id: &str) -> anyhow::Result<()> {
    let mut drained = false;
    for (index, group) in shared.target_groups.iter().enumerate() {
        if matches!(group.registration(id), Registration::Registered { .. }) {
            targets::deregister(shared, index, &[id.to_owned()]).await?;
            drained = true;
        }
    }
    if drained {
        tokio::time::sleep(shared.cfg.deregistration_delay).await;
    }
    Ok(())
}

/// ExitStandby of `ids`: checked and marked `Pending` before it returns, the desired capacity raised (refused
/// above MaxSize), then, in the background, registered in every target group on its port and `InService`.
pub(crate) fn exit_standby(shared: &Arc<Shared>, ids: &[String]) -> Result<(), Refused> {
    for id in ids {
        check_member(shared, id)?;
    }
    let group = &shared.auto_scaling;
    {
        let mut state = group.lock();
        for id in ids {
            if state.lifecycle.get(id) != Some(&Lifecycle::Standby) {
                return Err(Refused(format!("The instance {id} is not in Standby.")));
            }
        }
        let sizes = &state.sizes;
        if sizes.desired_capacity + ids.len() > sizes.max_size {
            return Err(Refused(format!(
                "AutoScalingGroup {} has min-size={}, max-size={}, and desired-capacity={}. To exit standby {} \
                 instances, please update the AutoScalingGroup sizes appropriately.",
                group.name,
                sizes.min_size,
                sizes.max_size,
                sizes.desired_capacity,
                ids.len()
            )));
        }
        state.sizes.desired_capacity += ids.len();
        for id in ids {
            state.lifecycle.insert(id.clone(), Lifecycle::Pending);
        }
    }
    for id in ids {
        let shared = Arc::clone(shared);
        let id = id.clone();
        shared.clone().tasks.spawn(async move {
            for (index, group) in shared.target_groups.iter().enumerate() {
                if let Err(err) = targets::register(&shared, index, &[(id.clone(), group.port)]).await {
                    tracing::warn!(instance = %id, "ExitStandby: {err:#}");
                }
            }
            let mut state = shared.auto_scaling.lock();
            state.lifecycle.remove(&id);
            state.in_service_since.insert(id.clone(), Instant::now());
            tracing::info!(instance = %id, "back InService");
        });
    }
    Ok(())
}

/// The group's ELB health check, run every health-check interval while the sandbox runs (only with
/// [`AutoScalingGroup::elb_health_check_grace`]): an `InService` member past its grace period that any target
/// group reads `unhealthy` is marked `Unhealthy` (unless `HealthCheck` is suspended), and a member marked so is
/// replaced unless `ReplaceUnhealthy` is suspended.
pub(crate) async fn watch_health(shared: Arc<Shared>) {
    let Some(grace) = shared.auto_scaling.elb_health_check_grace else {
        return;
    };
    let mut tick = tokio::time::interval(shared.cfg.health_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if shared.is_closed() {
            return;
        }
        if let Err(err) = check_health(&shared, grace).await {
            tracing::warn!("the Auto Scaling group's health check failed: {err:#}");
        }
    }
}

async fn check_health(shared: &Arc<Shared>, grace: Duration) -> anyhow::Result<()> {
    let group = &shared.auto_scaling;
    let mut health = Vec::new();
    for index in 0..shared.target_groups.len() {
        health.push(targets::describe(shared, index).await?);
    }
    let now = Instant::now();
    let to_replace: Vec<String> = {
        let mut state = group.lock();
        let checking = !state.suspended.contains_key("HealthCheck");
        let replacing = !state.suspended.contains_key("ReplaceUnhealthy");
        let mut found = Vec::new();
        for id in members(shared) {
            // Only InService members: Standby, Pending and Terminating ones are neither checked nor replaced.
            if state.lifecycle.contains_key(&id) {
                continue;
            }
            let past_grace = state
                .in_service_since
                .get(&id)
                .is_none_or(|since| now.duration_since(*since) >= grace);
            let failing = health
                .iter()
                .any(|h| h.get(&id).is_some_and(|t| t.state == TargetState::Unhealthy));
            if checking && past_grace && failing && state.unhealthy.insert(id.clone()) {
                tracing::info!(instance = %id, "the Auto Scaling group marks it Unhealthy (ELB health check)");
            }
            // A member marked Unhealthy stays so until it is replaced, as on AWS: resuming ReplaceUnhealthy
            // replaces the ones marked meanwhile.
            if replacing && state.unhealthy.contains(&id) && !state.replaced.contains(&id) {
                state.replaced.push(id.clone());
                found.push(id);
            }
        }
        found
    };
    for id in to_replace {
        let shared = Arc::clone(shared);
        shared.clone().tasks.spawn(async move {
            match super::fleet::replace(&shared, &id).await {
                Ok(new) => {
                    tracing::info!(old = %id, new = %new, "the Auto Scaling group replaced an unhealthy instance")
                }
                Err(err) => tracing::warn!(instance = %id, "the Auto Scaling group could not replace it: {err:#}"),
            }
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> AutoScalingGroup {
        let members = ["i-a".to_owned(), "i-b".to_owned(), "i-c".to_owned()];
        AutoScalingGroup::new("web", "us-east-1", "123456789012", &members, 1, None)
    }

    fn sizes(min: usize, max: usize, desired: usize) -> GroupSizes {
        GroupSizes {
            min_size: min,
            max_size: max,
            desired_capacity: desired,
        }
    }

    #[test]
    fn sizes_follow_terminations_and_launches() {
        let group = group();
        assert!(group.arn.ends_with(":autoScalingGroupName/web"), "{}", group.arn);
        assert_eq!(group.health_check_type(), "EC2");
        assert_eq!(group.sizes(), sizes(3, 4, 3));
        group.start_terminating("i-a", false);
        assert_eq!(group.lifecycle("i-a"), Lifecycle::Terminating);
        assert_eq!(group.lifecycle("i-b"), Lifecycle::InService);
        group.finish_terminating("i-a");
        group.launched("i-d", false);
        assert_eq!(group.sizes(), sizes(3, 4, 3), "a replacement keeps the sizes");
        group.start_terminating("i-b", true);
        group.finish_terminating("i-b");
        assert_eq!(group.sizes(), sizes(2, 4, 2), "a plain termination shrinks the group");
        group.launched("i-e", true);
        assert_eq!(group.sizes(), sizes(2, 4, 3));
    }

    #[test]
    fn sizes_are_updated_with_the_rules_of_aws() {
        let group = group();
        assert_eq!(group.update_sizes(Some(2), None, None), Ok(sizes(2, 4, 3)));
        assert_eq!(
            group.update_sizes(Some(4), None, None),
            Ok(sizes(4, 4, 4)),
            "MinSize raises Desired"
        );
        assert!(
            group
                .update_sizes(Some(5), None, None)
                .is_err_and(|r| r.0.contains("must be greater than or equal to min bound, 5"))
        );
        assert!(
            group
                .update_sizes(Some(1), None, Some(0))
                .is_err_and(|r| r.0 == "Desired capacity:0 must be between the specified min size:1 and max size:4")
        );
        assert_eq!(group.sizes(), sizes(4, 4, 4), "a refused update changes nothing");
    }

    #[test]
    fn processes_are_suspended_and_resumed_by_their_aws_names() {
        let group = group();
        group
            .suspend(&["HealthCheck".to_owned(), "AZRebalance".to_owned()])
            .expect("suspend");
        let first = group.suspended();
        assert_eq!(first.keys().collect::<Vec<_>>(), ["AZRebalance", "HealthCheck"]);
        assert!(first["HealthCheck"].starts_with("User suspended at "));
        assert!(
            group
                .suspend(&["ScaleIn".to_owned()])
                .is_err_and(|r| r.0 == "Process ScaleIn is not a valid scaling process.")
        );
        group
            .resume(&["HealthCheck".to_owned(), "Launch".to_owned()])
            .expect("resume");
        assert_eq!(group.suspended().keys().collect::<Vec<_>>(), ["AZRebalance"]);
        group.suspend(&[]).expect("suspend all");
        assert_eq!(group.suspended().len(), PROCESSES.len());
        group.resume(&[]).expect("resume all");
        assert!(group.suspended().is_empty());
    }
}
