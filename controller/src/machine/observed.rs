//! What the state machine needs to know from AWS, and what it was told.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::api::{
    InstancePhase, InstanceStatus, MaintenancePlanSpec, MaintenancePlanStatus, OnFailure, TargetGroupRegistration,
};
use crate::aws::{
    AgentPing, AutoScalingGroup, CommandKind, Ec2Instance, Invocation, Target, TargetHealth, TargetState,
};

/// What to read from AWS for the plan's current state, so observe makes only the calls
/// that matter (API rate limits are per account and shared with everything else).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wants {
    /// The instance being worked on (or about to be), if any.
    pub instance_id: Option<String>,
    /// DescribeTargetHealth of each of the plan's target groups.
    pub group_health: bool,
    /// The groups' deregistration delays (only to start an instance without `timeouts.drainSeconds`).
    pub deregistration_delay: bool,
    /// The instance's SSM agent ping status.
    pub agent: bool,
    /// A command of the instance: its invocation, or the tag look-up when no ID is recorded.
    pub command: Option<CommandKind>,
    /// The running EC2 instances carrying `spec.selector.tags` (a run that starts resolves
    /// its selector).
    pub tagged_instances: bool,
    /// The Auto Scaling group `spec.selector.autoScalingGroupName` (a run that starts resolves
    /// its selector).
    pub auto_scaling_group: bool,
    /// The Availability Zones of the run's instances (`order: ByZone`, when the run starts).
    pub zones: bool,
    /// Whether EC2 still has the instance in flight (see [`super::gone`]).
    pub instance_presence: bool,
    /// The plan's `spec.gates.prometheus` (before an instance starts).
    pub gates: bool,
    /// The plan's `spec.gates.cloudWatchAlarms`: before an instance starts, and while one is
    /// out under `abortInFlight`.
    pub alarms: bool,
    /// With `maxUnavailable` above one, the other instances of the plan in flight (and the
    /// next one to start, while there is room): each one's own reads. The fields above
    /// (`instance_id`, `agent`, `command`, `instance_presence`) are the first instance's.
    pub more: Vec<InstanceWants>,
}

/// What to read for one more instance of the plan (see [`Wants::more`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceWants {
    /// The instance.
    pub instance_id: String,
    /// Its SSM agent ping status (before it starts).
    pub agent: bool,
    /// One of its commands.
    pub command: Option<CommandKind>,
    /// Whether EC2 still has it.
    pub instance_presence: bool,
}

/// What was read for one more instance of the plan (see [`Observed::more`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceObserved {
    /// Its agent ping status, when asked for.
    pub agent: Option<AgentPing>,
    /// Its command, when asked for.
    pub command: Option<CommandView>,
    /// Whether EC2 still has it, when asked for.
    pub presence: Option<Presence>,
}

/// What observe read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Every target of each of the plan's target groups, by ARN, when asked for (all of
    /// them or none). An instance that is not in a group's list is not registered there
    /// (`unused`).
    pub groups: BTreeMap<String, Vec<TargetHealth>>,
    /// The longest deregistration delay of the plan's target groups, when asked for.
    pub deregistration_delay: Option<Duration>,
    /// The instance's agent ping status, when asked for.
    pub agent: Option<AgentPing>,
    /// The command asked for.
    pub command: Option<CommandView>,
    /// Another plan (`namespace/name`) holding this target group's turn: no instance may be
    /// taken out until it gives the turn back. None: the turn is this plan's, or not needed.
    pub turn_held_by: Option<String>,
    /// The running EC2 instances carrying the selector's tags, in ID order, when asked for.
    pub tagged: Option<Vec<Ec2Instance>>,
    /// The selector's Auto Scaling group, when asked for.
    pub auto_scaling_group: Option<AutoScalingGroup>,
    /// The Availability Zone of each of the run's instances EC2 knows, when asked for.
    pub zones: Option<BTreeMap<String, String>>,
    /// Whether EC2 still has the instance in flight, when asked for.
    pub presence: Option<Presence>,
    /// What `spec.gates.prometheus` said, when asked for.
    pub gates: Option<crate::gates::GateReading>,
    /// What `spec.gates.cloudWatchAlarms` said, when asked for.
    pub alarms: Option<crate::gates::GateReading>,
    /// The Auto Scaling group of the instance in flight (or about to start), when asked for
    /// (see [`super::auto_scaling::reads`]).
    pub instance_group: Option<super::auto_scaling::InstanceGroupView>,
    /// The instance `agent`, `command`, `presence` and `instance_group` were read for. None in
    /// an observation built by hand for a single instance (tests): its fields are that
    /// instance's.
    pub instance_id: Option<String>,
    /// What was read for the plan's other instances (see [`Wants::more`]), by instance ID.
    pub more: BTreeMap<String, InstanceObserved>,
    /// Another plan waits for this plan's target group: the holder does not refill its wave
    /// as instances come back, so the wave comes back and the turn passes on.
    pub turn_wanted: bool,
}

/// What EC2 says of the instance in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presence {
    /// Pending, running, stopping, stopped: it may still come back.
    Present,
    /// Terminated or on its way there (or unknown to EC2): it never comes back. EC2's words.
    Gone(String),
    /// EC2 could not be asked (the policy lacks `ec2:DescribeInstances`, throttling...): the
    /// turn goes on as without the look, which is tried again a minute later.
    Unknown,
}

/// A command of the current instance, as seen this round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandView {
    /// Its ID: the one in the status, or one found by tag after a crash. None: never sent.
    pub command_id: Option<String>,
    /// Its invocation on the instance. None while SSM still says `InvocationDoesNotExist`.
    pub invocation: Option<Invocation>,
}

impl Observed {
    /// Whether this round read `instance_id`'s own reads (its agent, its command): it is the
    /// first instance, one of [`Self::more`], or the observation names no instance (built by
    /// hand for a single instance).
    pub fn has_reads_for(&self, instance_id: &str) -> bool {
        self.instance_id.as_deref().is_none_or(|id| id == instance_id) || self.more.contains_key(instance_id)
    }

    /// The observation as one instance's round sees it: the plan-wide reads, with that
    /// instance's own (agent, command, presence) in place of the first instance's.
    pub fn for_instance(&self, instance_id: &str) -> std::borrow::Cow<'_, Self> {
        if self.instance_id.as_deref().is_none_or(|id| id == instance_id) {
            return std::borrow::Cow::Borrowed(self);
        }
        let own = self.more.get(instance_id).cloned().unwrap_or_default();
        std::borrow::Cow::Owned(Self {
            agent: own.agent,
            command: own.command,
            presence: own.presence,
            instance_group: None,
            instance_id: Some(instance_id.to_owned()),
            more: BTreeMap::new(),
            ..self.clone()
        })
    }

    /// Every target of one group, or None when it was not read.
    pub fn group(&self, target_group_arn: &str) -> Option<&[TargetHealth]> {
        self.groups.get(target_group_arn).map(Vec::as_slice)
    }

    /// True when every one of `target_group_arns` was read.
    pub fn has_groups(&self, target_group_arns: &[&str]) -> bool {
        !target_group_arns.is_empty() && target_group_arns.iter().all(|arn| self.groups.contains_key(*arn))
    }

    /// State of an instance in one group (`unused` when the group does not list it), or
    /// None when the group was not read.
    pub fn state_in(&self, target_group_arn: &str, instance_id: &str) -> Option<TargetState> {
        let group = self.groups.get(target_group_arn)?;
        Some(
            group
                .iter()
                .find(|t| t.target.instance_id == instance_id)
                .map_or(TargetState::Unused, |t| t.state),
        )
    }
}

/// One target group an instance is out of (or on its way back into), as a target to pass
/// to RegisterTargets or DeregisterTargets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupTarget {
    /// The target group.
    pub target_group_arn: String,
    /// The instance, on its port in that group.
    pub target: Target,
}

/// The target groups the instance was taken out of this try, with its port in each: the
/// ones recorded in its status, or, for an instance started by an older pitstop that
/// recorded none, the plan's one target group on the recorded port.
pub fn groups_out(spec: &MaintenancePlanSpec, instance: &InstanceStatus) -> Vec<GroupTarget> {
    let target = |port| Target {
        instance_id: instance.instance_id.clone(),
        port,
    };
    if instance.target_groups.is_empty() {
        return spec
            .target_groups()
            .first()
            .map(|arn| GroupTarget {
                target_group_arn: (*arn).to_owned(),
                target: target(instance.port),
            })
            .into_iter()
            .collect();
    }
    instance
        .target_groups
        .iter()
        .map(|TargetGroupRegistration { target_group_arn, port }| GroupTarget {
            target_group_arn: target_group_arn.clone(),
            target: target(*port),
        })
        .collect()
}

/// True when the instance still has to be put back into the target group after a failure.
pub(crate) fn needs_return(spec: &MaintenancePlanSpec, instance: &InstanceStatus) -> bool {
    instance.phase == InstancePhase::Failed
        && instance.out_of_rotation
        && goes_back_after(spec, instance, instance.failure_reason.as_deref())
        && instance.failure_reason.as_deref() != Some(super::reason::REGISTER_REJECTED)
}

/// Whether an instance that failed for `reason` is put back: per `onFailure`, except that an
/// instance stopped by an alarm before its maintenance began always is. `LeaveOut` keeps out an
/// instance whose maintenance may have left it broken; this one was never touched (and may not
/// even have been deregistered yet).
pub(crate) fn goes_back_after(spec: &MaintenancePlanSpec, instance: &InstanceStatus, reason: Option<&str>) -> bool {
    spec.on_failure == OnFailure::Register
        || (reason == Some(super::reason::ABORTED_BY_ALARM) && instance.maintenance_started_at.is_none())
}

/// True while the instance is between leaving the group and being done with.
pub(crate) fn is_active(spec: &MaintenancePlanSpec, instance: &InstanceStatus) -> bool {
    matches!(
        instance.phase,
        InstancePhase::Draining | InstancePhase::Rebooting | InstancePhase::Verifying
    ) || needs_return(spec, instance)
        || super::auto_scaling::cleanup_pending(spec, instance)
}

/// What to read for a plan in this state.
pub fn wants(spec: &MaintenancePlanSpec, status: Option<&MaintenancePlanStatus>) -> Wants {
    let instances = status.map(|s| s.instances.as_slice()).unwrap_or_default();
    if status.is_some_and(|s| s.phase.is_finished()) && !instances.iter().any(|i| is_active(spec, i)) {
        return Wants::default();
    }
    let active: Vec<&InstanceStatus> = instances.iter().filter(|i| is_active(spec, i)).collect();
    if let Some((first, others)) = active.split_first() {
        let mut wants = Wants {
            instance_id: Some(first.instance_id.clone()),
            group_health: true,
            command: command_wanted(spec, first),
            alarms: alarms_abort_any(spec, instances),
            ..Wants::default()
        };
        wants.more = others
            .iter()
            .map(|i| InstanceWants {
                instance_id: i.instance_id.clone(),
                command: command_wanted(spec, i),
                ..InstanceWants::default()
            })
            .collect();
        // Room for another under `maxUnavailable`: what its start needs, too.
        if let Some(status) = status
            && super::concurrency::has_room(spec, status)
            && let Some(next) = start_wants(spec, Some(status))
        {
            wants.deregistration_delay = next.deregistration_delay;
            wants.gates = next.gates;
            wants.alarms |= next.alarms;
            wants.more.push(InstanceWants {
                instance_id: next.instance_id.unwrap_or_default(),
                agent: next.agent,
                ..InstanceWants::default()
            });
        }
        return wants;
    }
    if super::selection::needs_resolving(spec, status) && may_go_on(spec, status) {
        let tagged = spec.selector.as_ref().is_some_and(|s| !s.tags.is_empty());
        let grouped = spec
            .selector
            .as_ref()
            .is_some_and(|s| s.auto_scaling_group_name.is_some());
        // The run starts: its instances are the members of the groups now.
        return Wants {
            group_health: true,
            tagged_instances: tagged,
            auto_scaling_group: grouped,
            // A tag selector's DescribeInstances and the Auto Scaling group bring the zones along.
            zones: super::selection::needs_zones(spec) && !tagged && !grouped,
            ..Wants::default()
        };
    }
    start_wants(spec, status).unwrap_or_default()
}

/// Whether the alarms are read for an instance in flight (`abortInFlight`).
fn alarms_abort_any(spec: &MaintenancePlanSpec, instances: &[InstanceStatus]) -> bool {
    instances
        .iter()
        .any(|i| is_active(spec, i) && super::gates::aborts_in(spec, i))
}

/// The command of an instance in flight to look at this round, if any.
fn command_wanted(spec: &MaintenancePlanSpec, instance: &InstanceStatus) -> Option<CommandKind> {
    match instance.phase {
        InstancePhase::Rebooting => Some(CommandKind::Maintenance),
        InstancePhase::Verifying if spec.verify.is_some() && instance.registered_at.is_none() => {
            Some(CommandKind::Verify)
        }
        _ => None,
    }
}

/// Whether the plan may go on to another instance as far as its spec and run go: valid, not
/// stopped by failures, not held.
fn may_go_on(spec: &MaintenancePlanSpec, status: Option<&MaintenancePlanStatus>) -> bool {
    let instances = status.map(|s| s.instances.as_slice()).unwrap_or_default();
    let failures = instances.iter().filter(|i| i.phase == InstancePhase::Failed).count();
    let left_out = instances
        .iter()
        .any(|i| i.phase == InstancePhase::Failed && i.out_of_rotation);
    crate::api::validate::validate(spec).is_ok()
        && failures <= spec.max_failures as usize
        && !left_out
        && !super::hold::is_held(spec, status)
}

/// What the start of the next instance (or, in a dry run, its check) reads, if one may start.
fn start_wants(spec: &MaintenancePlanSpec, status: Option<&MaintenancePlanStatus>) -> Option<Wants> {
    // A run waiting for its approval reads nothing: the approval comes as a change of the plan.
    if !may_go_on(spec, status)
        || super::selection::needs_resolving(spec, status)
        || !super::approval::may_start(spec, status)
    {
        return None;
    }
    let busy = status.is_some_and(|s| in_flight(spec, s).is_some());
    if busy && spec.dry_run {
        return None;
    }
    let next = super::concurrency::next_to_start(spec, status)?;
    Some(Wants {
        instance_id: Some(next.to_owned()),
        group_health: true,
        deregistration_delay: spec.timeouts.drain_seconds.is_none() && !spec.dry_run,
        agent: spec.preflight.require_agent_online,
        gates: spec.gates.as_ref().is_some_and(|g| g.prometheus.is_some()),
        alarms: spec.gates.as_ref().is_some_and(|g| g.cloud_watch_alarms.is_some()),
        ..Wants::default()
    })
}

/// [`wants`] at a given time: nothing to read while nothing is out and no instance may
/// start yet (outside the schedule's window, settling), so that a plan waiting for next
/// Sunday's window makes no AWS calls meanwhile.
pub fn wants_at(spec: &MaintenancePlanSpec, status: Option<&MaintenancePlanStatus>, now: jiff::Timestamp) -> Wants {
    let idle = status.and_then(|s| in_flight(spec, s)).is_none();
    // A dry run checks every instance whatever the window says.
    let may_start = spec.dry_run || super::turn::may_start_now(spec, status, now);
    if idle && !may_start {
        return Wants::default();
    }
    let mut wants = wants(spec, status);
    let instances = status.map(|s| s.instances.as_slice()).unwrap_or_default();
    // When one instance out is due a look at EC2, all of them are looked at in the same
    // call: one DescribeInstances a minute for the whole wave.
    let out: Vec<&InstanceStatus> = instances
        .iter()
        .filter(|i| is_active(spec, i) && i.out_of_rotation)
        .collect();
    let any_due = out.iter().any(|i| super::gone::check_due(i, now));
    let presence_due = |id: &str| any_due && out.iter().any(|i| i.instance_id == id);
    wants.instance_presence = wants.instance_id.as_deref().is_some_and(presence_due);
    if !may_start {
        // Outside the window (or settling), the instances in flight are finished and none starts.
        wants.more.retain(|m| {
            instances
                .iter()
                .any(|i| i.instance_id == m.instance_id && is_active(spec, i))
        });
        wants.deregistration_delay = false;
        wants.gates = false;
        wants.alarms = alarms_abort_any(spec, instances);
    }
    for more in &mut wants.more {
        more.instance_presence = presence_due(&more.instance_id);
    }
    wants
}

/// The instance that is in flight (out of rotation or between steps), if any: the one a
/// stopping controller must finish before it may stop.
pub fn in_flight<'a>(spec: &MaintenancePlanSpec, status: &'a MaintenancePlanStatus) -> Option<&'a InstanceStatus> {
    status.instances.iter().find(|i| is_active(spec, i))
}
