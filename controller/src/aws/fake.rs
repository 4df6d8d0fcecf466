//! An in-memory AWS for the state-machine and reconcile tests: one or more target groups
//! and an SSM that runs scripted outcomes, all on a clock the test moves. It also keeps the
//! history the safety properties are checked against. Not a model of AWS's timing; the
//! sandbox (real HAProxy, real processes) is where behaviour under load is shown.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use super::{
    AgentPing, AlarmState, Alarms, AsgInstance, AsgMembership, AutoScaling, AutoScalingGroup, AwsApis, AwsError,
    AwsErrorKind, AwsProvider, CommandRequest, CommandStatus, Commands, Ec2Instance, FoundCommand, Instances,
    Invocation, Target, TargetGroups, TargetHealth, TargetState,
};

/// How the fake behaves; change it between steps to script a scenario.
#[derive(Clone, Debug)]
pub struct FakeBehaviour {
    /// Time from DeregisterTargets to `unused`.
    pub drain_time: Duration,
    /// Time from RegisterTargets to `healthy`.
    pub healthy_time: Duration,
    /// Time SSM answers `InvocationDoesNotExist` after SendCommand.
    pub invocation_delay: Duration,
    /// Time a command runs.
    pub command_time: Duration,
    /// The group's deregistration delay attribute.
    pub deregistration_delay: Duration,
    /// Instances whose commands fail (exit code 1).
    pub failing_commands: Vec<String>,
    /// Instances that never become healthy after registration.
    pub never_healthy: Vec<String>,
    /// Instances whose commands never finish.
    pub hanging_commands: Vec<String>,
    /// Documents that do not exist (SendCommand answers InvalidDocument).
    pub missing_documents: Vec<String>,
    /// Fail the next N calls with this error kind (throttling, transient...).
    pub fail_next: Option<(u32, AwsErrorKind)>,
    /// Carry out the next N write calls, then fail them as if the answer was lost on the way
    /// (transient, outcome unknown).
    pub lose_next_answers: u32,
    /// How long ListCommands takes to show a new command (AWS's lists are eventually consistent).
    pub list_lag: Duration,
    /// How long DescribeAutoScalingInstances goes on showing a member's lifecycle state from
    /// before EnterStandby or ExitStandby changed it.
    pub auto_scaling_lag: Duration,
    /// Operations IAM does not allow (e.g. `DeregisterTargets`): they answer AccessDenied,
    /// with the message AWS gives.
    pub denied_operations: Vec<&'static str>,
    /// The tail of stderr a failing command reports (SSM gives pitstop up to 500 characters).
    pub failure_output: String,
    /// Command IDs shaped as SSM's (36-character UUIDs) rather than short `cmd-0001` ones.
    pub uuid_command_ids: bool,
}

impl Default for FakeBehaviour {
    fn default() -> Self {
        Self {
            drain_time: Duration::from_secs(10),
            healthy_time: Duration::from_secs(10),
            invocation_delay: Duration::from_secs(1),
            command_time: Duration::from_secs(30),
            deregistration_delay: Duration::from_secs(10),
            failing_commands: Vec::new(),
            never_healthy: Vec::new(),
            hanging_commands: Vec::new(),
            missing_documents: Vec::new(),
            fail_next: None,
            lose_next_answers: 0,
            list_lag: Duration::ZERO,
            auto_scaling_lag: Duration::ZERO,
            denied_operations: Vec::new(),
            failure_output: "maintenance script failed".to_owned(),
            uuid_command_ids: false,
        }
    }
}

/// One AWS write call, with what the group looked like when it was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteCall {
    /// When.
    pub at: Timestamp,
    /// `DeregisterTargets`, `RegisterTargets`, `SendCommand` or `CancelCommand`.
    pub operation: &'static str,
    /// The instance.
    pub instance_id: String,
    /// The instance's target state just before the call: in the call's target group, or,
    /// for the SSM calls, in the first group that has it registered (`unused` if none).
    pub state_before: TargetState,
    /// For the target group calls: the group.
    pub target_group_arn: Option<String>,
    /// For the target group calls: the port asked for.
    pub port: Option<i32>,
    /// For SendCommand: the comment (tag).
    pub comment: Option<String>,
}

#[derive(Clone, Debug)]
enum Registration {
    Registered { since: Timestamp },
    Draining { since: Timestamp },
    Unregistered,
}

#[derive(Clone, Debug)]
struct FakeCommand {
    id: String,
    instance_id: String,
    comment: String,
    sent_at: Timestamp,
    /// The alarms of its `AlarmConfiguration`.
    alarms: Vec<String>,
    fails: bool,
    hangs: bool,
    cancelled: bool,
}

#[derive(Debug)]
struct World {
    now: Timestamp,
    behaviour: FakeBehaviour,
    groups: HashMap<String, BTreeMap<String, Registration>>,
    /// The port each group's targets are registered on.
    ports: HashMap<String, i32>,
    commands: Vec<FakeCommand>,
    writes: Vec<WriteCall>,
    calls: u64,
    /// Calls per operation, refused ones included.
    calls_by_operation: BTreeMap<&'static str, u64>,
    max_out_at_once: usize,
    /// EC2's view: running instances with their zone and tags (only those given by
    /// [`FakeAws::set_instance`]).
    ec2: BTreeMap<String, FakeInstance>,
    /// Instances terminated by [`FakeAws::terminate`]: DescribeInstances shows them
    /// `terminated`.
    terminated: BTreeSet<String>,
    /// The tags of target groups (DescribeTags), by ARN; a group not here has none.
    group_tags: HashMap<String, BTreeMap<String, String>>,
    /// Auto Scaling's view: the groups given by [`FakeAws::set_auto_scaling_group`], by name.
    asgs: BTreeMap<String, AutoScalingGroup>,
    /// Auto Scaling writes carried out, in order: (operation, group, detail).
    asg_writes: Vec<(&'static str, String, String)>,
    /// The lifecycle state each member had before its last Standby change, and when it
    /// changed (for [`FakeBehaviour::auto_scaling_lag`]).
    asg_before: BTreeMap<String, (String, Timestamp)>,
    /// CloudWatch's alarms (DescribeAlarms), by name: their state value.
    alarms: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
struct FakeInstance {
    zone: String,
    tags: BTreeMap<String, String>,
}

/// The fake AWS. Cheap to clone; clones share the world.
#[derive(Clone, Debug)]
pub struct FakeAws {
    world: Arc<Mutex<World>>,
}

impl FakeAws {
    /// A world with one target group holding `instances`, all registered and healthy.
    pub fn new(target_group_arn: &str, instances: &[&str], now: Timestamp) -> Self {
        let long_ago = now - jiff::SignedDuration::from_hours(1);
        let group = instances
            .iter()
            .map(|id| ((*id).to_owned(), Registration::Registered { since: long_ago }))
            .collect();
        let world = World {
            now,
            behaviour: FakeBehaviour::default(),
            groups: HashMap::from([(target_group_arn.to_owned(), group)]),
            ports: HashMap::from([(target_group_arn.to_owned(), 8080)]),
            commands: Vec::new(),
            writes: Vec::new(),
            calls: 0,
            calls_by_operation: BTreeMap::new(),
            max_out_at_once: 0,
            ec2: BTreeMap::new(),
            terminated: BTreeSet::new(),
            group_tags: HashMap::new(),
            asgs: BTreeMap::new(),
            asg_writes: Vec::new(),
            asg_before: BTreeMap::new(),
            alarms: BTreeMap::new(),
        };
        Self {
            world: Arc::new(Mutex::new(world)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, World> {
        // A test that panicked while holding the lock has failed already; keep the data.
        self.world.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Moves the clock.
    pub fn set_now(&self, now: Timestamp) {
        self.lock().now = now;
    }

    /// The clock.
    pub fn now(&self) -> Timestamp {
        self.lock().now
    }

    /// Changes the behaviour.
    pub fn behave(&self, change: impl FnOnce(&mut FakeBehaviour)) {
        change(&mut self.lock().behaviour);
    }

    /// Adds another target group holding `instances` on `port`, all registered and healthy.
    pub fn add_group(&self, target_group_arn: &str, instances: &[&str], port: i32) {
        let mut world = self.lock();
        let long_ago = world.now - jiff::SignedDuration::from_hours(1);
        let group = instances
            .iter()
            .map(|id| ((*id).to_owned(), Registration::Registered { since: long_ago }))
            .collect();
        world.groups.insert(target_group_arn.to_owned(), group);
        world.ports.insert(target_group_arn.to_owned(), port);
    }

    /// The port the targets of a group are registered on.
    pub fn port(&self, target_group_arn: &str) -> Option<i32> {
        self.lock().ports.get(target_group_arn).copied()
    }

    /// Registers or removes an instance behind pitstop's back.
    pub fn set_registered(&self, target_group_arn: &str, instance_id: &str, registered: bool) {
        let mut world = self.lock();
        let now = world.now;
        let long_ago = now - jiff::SignedDuration::from_hours(1);
        if let Some(group) = world.groups.get_mut(target_group_arn) {
            let registration = if registered {
                Registration::Registered { since: long_ago }
            } else {
                Registration::Unregistered
            };
            group.insert(instance_id.to_owned(), registration);
        }
    }

    /// Terminates an instance behind pitstop's back: AWS takes it out of every group (it is
    /// no longer listed anywhere, so it does not count as out of rotation either).
    pub fn terminate(&self, instance_id: &str) {
        let mut world = self.lock();
        for group in world.groups.values_mut() {
            group.remove(instance_id);
        }
        world.ec2.remove(instance_id);
        world.terminated.insert(instance_id.to_owned());
        for group in world.asgs.values_mut() {
            group.instances.retain(|i| i.instance_id != instance_id);
        }
    }

    /// Makes an Auto Scaling group `name` with these members, each `(instance ID, zone,
    /// lifecycle state)` and `Healthy`; MinSize, MaxSize and DesiredCapacity are the number of
    /// members (DescribeAutoScalingGroups).
    pub fn set_auto_scaling_group(&self, name: &str, members: &[(&str, &str, &str)]) {
        let size = i32::try_from(members.len()).unwrap_or(i32::MAX);
        let mut instances: Vec<AsgInstance> = members
            .iter()
            .map(|(id, zone, state)| AsgInstance {
                instance_id: (*id).to_owned(),
                availability_zone: Some((*zone).to_owned()),
                lifecycle_state: (*state).to_owned(),
                health_status: "Healthy".to_owned(),
            })
            .collect();
        instances.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        self.lock().asgs.insert(
            name.to_owned(),
            AutoScalingGroup {
                name: name.to_owned(),
                min_size: size,
                max_size: size,
                desired_capacity: size,
                instances,
                suspended_processes: Vec::new(),
            },
        );
    }

    /// Makes `instance_id` a running EC2 instance in `zone` with `tags` (DescribeInstances).
    pub fn set_instance(&self, instance_id: &str, zone: &str, tags: &[(&str, &str)]) {
        self.lock().ec2.insert(
            instance_id.to_owned(),
            FakeInstance {
                zone: zone.to_owned(),
                tags: tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            },
        );
    }

    /// Creates the CloudWatch alarm `name` or sets its state (`OK`, `ALARM`,
    /// `INSUFFICIENT_DATA`).
    pub fn set_alarm(&self, name: &str, value: &str) {
        self.lock().alarms.insert(name.to_owned(), value.to_owned());
    }

    /// The alarms of each command sent to `instance_id` so far (their `AlarmConfiguration`),
    /// in order.
    pub fn command_alarms(&self, instance_id: &str) -> Vec<Vec<String>> {
        self.lock()
            .commands
            .iter()
            .filter(|c| c.instance_id == instance_id)
            .map(|c| c.alarms.clone())
            .collect()
    }

    /// Tags a target group (DescribeTags), replacing its tags.
    pub fn set_group_tags(&self, target_group_arn: &str, tags: &[(&str, &str)]) {
        self.lock().group_tags.insert(
            target_group_arn.to_owned(),
            tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        );
    }

    /// The group `name` as the fake holds it now.
    pub fn auto_scaling_group(&self, name: &str) -> Option<AutoScalingGroup> {
        self.lock().asgs.get(name).cloned()
    }

    /// The Auto Scaling writes carried out so far, in order: (operation, group, instance or
    /// detail).
    pub fn auto_scaling_writes(&self) -> Vec<(&'static str, String, String)> {
        self.lock().asg_writes.clone()
    }

    /// Every write call so far.
    pub fn writes(&self) -> Vec<WriteCall> {
        self.lock().writes.clone()
    }

    /// Calls of `operation` so far, refused ones included.
    pub fn calls_of(&self, operation: &str) -> u64 {
        self.lock()
            .calls_by_operation
            .get(operation)
            .copied()
            .unwrap_or_default()
    }

    /// Every call made so far, refused ones included.
    pub fn call_count(&self) -> u64 {
        self.lock().calls
    }

    /// The most instances of one group that were out of rotation at the same time.
    pub fn max_out_at_once(&self) -> usize {
        self.lock().max_out_at_once
    }

    /// The state of one instance now.
    pub fn state(&self, target_group_arn: &str, instance_id: &str) -> TargetState {
        let world = self.lock();
        world.state(target_group_arn, instance_id)
    }

    /// How many commands were sent to `instance_id` with this comment.
    pub fn sends_with_comment(&self, instance_id: &str, comment: &str) -> usize {
        self.lock()
            .commands
            .iter()
            .filter(|c| c.instance_id == instance_id && c.comment == comment)
            .count()
    }

    /// The AWS APIs backed by this fake.
    pub fn apis(&self) -> AwsApis {
        AwsApis {
            target_groups: Arc::new(self.clone()),
            commands: Arc::new(self.clone()),
            instances: Arc::new(self.clone()),
            auto_scaling: Arc::new(self.clone()),
            alarms: Arc::new(self.clone()),
        }
    }
}

impl World {
    /// SSM's refusal of a command call for a terminated instance.
    fn refuse_if_terminated(&self, operation: &'static str, instance_id: &str) -> Result<(), AwsError> {
        if !self.terminated.contains(instance_id) {
            return Ok(());
        }
        Err(AwsError::new(
            operation,
            AwsErrorKind::Rejected,
            Some("InvalidInstanceId".into()),
            format!("Instances [[{instance_id}]] not in a valid state for account"),
        ))
    }

    fn state(&self, arn: &str, instance_id: &str) -> TargetState {
        let Some(registration) = self.groups.get(arn).and_then(|g| g.get(instance_id)) else {
            return TargetState::Unused;
        };
        match registration {
            Registration::Registered { since } => {
                if self.behaviour.never_healthy.iter().any(|i| i == instance_id) {
                    TargetState::Unhealthy
                } else if self.now.duration_since(*since) >= signed(self.behaviour.healthy_time) {
                    TargetState::Healthy
                } else {
                    TargetState::Initial
                }
            }
            Registration::Draining { since } => {
                if self.now.duration_since(*since) >= signed(self.behaviour.drain_time) {
                    TargetState::Unused
                } else {
                    TargetState::Draining
                }
            }
            Registration::Unregistered => TargetState::Unused,
        }
    }

    /// Fails the call if the behaviour says so; counts it either way.
    fn call(&mut self, operation: &'static str) -> Result<(), AwsError> {
        self.calls += 1;
        *self.calls_by_operation.entry(operation).or_default() += 1;
        if self.behaviour.denied_operations.contains(&operation) {
            let action = super::iam_action(operation);
            return Err(AwsError::new(
                operation,
                AwsErrorKind::AccessDenied,
                Some("AccessDenied".to_owned()),
                format!(
                    "AccessDenied (HTTP 403): User: arn:aws:sts::123456789012:assumed-role/pitstop/fake is not \
                     authorized to perform: {action} because no identity-based policy allows the {action} action"
                ),
            ));
        }
        if let Some((remaining, kind)) = self.behaviour.fail_next.as_mut() {
            let kind = *kind;
            *remaining -= 1;
            if *remaining == 0 {
                self.behaviour.fail_next = None;
            }
            return Err(AwsError::new(operation, kind, None, "injected by the fake"));
        }
        Ok(())
    }

    /// After a write was carried out: its answer is lost if the behaviour says so.
    fn answer(&mut self, operation: &'static str) -> Result<(), AwsError> {
        if self.behaviour.lose_next_answers == 0 {
            return Ok(());
        }
        self.behaviour.lose_next_answers -= 1;
        Err(AwsError::new(
            operation,
            AwsErrorKind::Transient,
            None,
            "answer lost (injected by the fake)",
        )
        .with_outcome_unknown())
    }

    fn record_write(
        &mut self,
        operation: &'static str,
        group: Option<(&str, &Target)>,
        instance_id: &str,
        comment: Option<String>,
    ) {
        let state_before = match group {
            Some((arn, _)) => self.state(arn, instance_id),
            None => self.state_anywhere(instance_id),
        };
        self.writes.push(WriteCall {
            at: self.now,
            operation,
            instance_id: instance_id.to_owned(),
            state_before,
            target_group_arn: group.map(|(arn, _)| arn.to_owned()),
            port: group.and_then(|(_, target)| target.port),
            comment,
        });
    }

    /// The instance's state in the first group (by ARN) that does not show it `unused`.
    fn state_anywhere(&self, instance_id: &str) -> TargetState {
        let mut arns: Vec<&String> = self.groups.keys().collect();
        arns.sort();
        arns.into_iter()
            .map(|arn| self.state(arn, instance_id))
            .find(|state| *state != TargetState::Unused)
            .unwrap_or(TargetState::Unused)
    }

    fn update_out_count(&mut self) {
        for (arn, group) in &self.groups {
            let out = group.keys().filter(|id| !self.state(arn, id).is_registered()).count();
            self.max_out_at_once = self.max_out_at_once.max(out);
        }
    }
}

fn signed(d: Duration) -> jiff::SignedDuration {
    jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX)
}

fn not_found(operation: &'static str, what: &str) -> AwsError {
    AwsError::new(
        operation,
        AwsErrorKind::NotFound,
        Some("TargetGroupNotFound".into()),
        format!("{what} not found"),
    )
}

#[async_trait]
impl TargetGroups for FakeAws {
    async fn target_health(&self, arn: &str) -> Result<Vec<TargetHealth>, AwsError> {
        let mut world = self.lock();
        world.call("DescribeTargetHealth")?;
        let group = world
            .groups
            .get(arn)
            .ok_or_else(|| not_found("DescribeTargetHealth", arn))?;
        let port = world.ports.get(arn).copied();
        Ok(group
            .keys()
            .map(|id| (id, world.state(arn, id)))
            .filter(|(_, state)| *state != TargetState::Unused)
            .map(|(id, state)| TargetHealth {
                target: Target {
                    instance_id: id.clone(),
                    port,
                },
                state,
                reason: None,
                description: None,
            })
            .collect())
    }

    async fn instance_health(&self, arn: &str, target: &Target) -> Result<TargetHealth, AwsError> {
        let mut world = self.lock();
        world.call("DescribeTargetHealth")?;
        if !world.groups.contains_key(arn) {
            return Err(not_found("DescribeTargetHealth", arn));
        }
        let state = world.state(arn, &target.instance_id);
        Ok(TargetHealth {
            target: target.clone(),
            state,
            reason: (state == TargetState::Unused).then(|| "Target.NotRegistered".to_owned()),
            description: None,
        })
    }

    async fn deregistration_delay(&self, arn: &str) -> Result<Duration, AwsError> {
        let mut world = self.lock();
        world.call("DescribeTargetGroupAttributes")?;
        if !world.groups.contains_key(arn) {
            return Err(not_found("DescribeTargetGroupAttributes", arn));
        }
        Ok(world.behaviour.deregistration_delay)
    }

    async fn deregister(&self, arn: &str, target: &Target) -> Result<(), AwsError> {
        let mut world = self.lock();
        world.call("DeregisterTargets")?;
        world.record_write("DeregisterTargets", Some((arn, target)), &target.instance_id, None);
        let now = world.now;
        let state = world.state(arn, &target.instance_id);
        let group = world
            .groups
            .get_mut(arn)
            .ok_or_else(|| not_found("DeregisterTargets", arn))?;
        if state.is_registered() {
            group.insert(target.instance_id.clone(), Registration::Draining { since: now });
        }
        world.update_out_count();
        world.answer("DeregisterTargets")
    }

    async fn register(&self, arn: &str, target: &Target) -> Result<(), AwsError> {
        let mut world = self.lock();
        world.call("RegisterTargets")?;
        if world.terminated.contains(&target.instance_id) {
            // As ELBv2 refuses it.
            return Err(AwsError::new(
                "RegisterTargets",
                AwsErrorKind::Rejected,
                Some("InvalidTarget".to_owned()),
                format!(
                    "The following targets are not in a running state and cannot be registered: '{}'",
                    target.instance_id
                ),
            ));
        }
        world.record_write("RegisterTargets", Some((arn, target)), &target.instance_id, None);
        let now = world.now;
        let state = world.state(arn, &target.instance_id);
        let group = world
            .groups
            .get_mut(arn)
            .ok_or_else(|| not_found("RegisterTargets", arn))?;
        if !state.is_registered() {
            group.insert(target.instance_id.clone(), Registration::Registered { since: now });
        }
        world.update_out_count();
        world.answer("RegisterTargets")
    }

    async fn tags(&self, arns: &[String]) -> Result<BTreeMap<String, BTreeMap<String, String>>, AwsError> {
        let mut world = self.lock();
        world.call("DescribeTags")?;
        arns.iter()
            .map(|arn| {
                if !world.groups.contains_key(arn) {
                    return Err(not_found("DescribeTags", arn));
                }
                Ok((arn.clone(), world.group_tags.get(arn).cloned().unwrap_or_default()))
            })
            .collect()
    }
}

#[async_trait]
impl Commands for FakeAws {
    async fn send(&self, request: &CommandRequest) -> Result<String, AwsError> {
        let mut world = self.lock();
        world.call("SendCommand")?;
        world.refuse_if_terminated("SendCommand", &request.instance_id)?;
        if world.behaviour.missing_documents.contains(&request.document_name) {
            return Err(AwsError::new(
                "SendCommand",
                AwsErrorKind::NotFound,
                Some("InvalidDocument".into()),
                format!("document {} does not exist", request.document_name),
            ));
        }
        world.record_write("SendCommand", None, &request.instance_id, Some(request.comment.clone()));
        let number = world.commands.len() + 1;
        let id = if world.behaviour.uuid_command_ids {
            format!("{number:08x}-0000-4000-8000-{number:012x}")
        } else {
            format!("cmd-{number:04}")
        };
        let instance_id = request.instance_id.clone();
        let command = FakeCommand {
            id: id.clone(),
            fails: world.behaviour.failing_commands.contains(&instance_id),
            hangs: world.behaviour.hanging_commands.contains(&instance_id),
            instance_id,
            comment: request.comment.clone(),
            sent_at: world.now,
            alarms: request.alarms.clone(),
            cancelled: false,
        };
        world.commands.push(command);
        world.answer("SendCommand")?;
        Ok(id)
    }

    async fn invocation(&self, command_id: &str, instance_id: &str) -> Result<Option<Invocation>, AwsError> {
        let mut world = self.lock();
        world.call("GetCommandInvocation")?;
        let Some(command) = world
            .commands
            .iter()
            .find(|c| c.id == command_id && c.instance_id == instance_id)
        else {
            return Ok(None);
        };
        let age = world.now.duration_since(command.sent_at);
        if age < signed(world.behaviour.invocation_delay) {
            return Ok(None);
        }
        let (status, code) = if command.cancelled {
            (CommandStatus::Cancelled, -1)
        } else if command.hangs || age < signed(world.behaviour.command_time) {
            (CommandStatus::InProgress, -1)
        } else if command.fails {
            (CommandStatus::Failed, 1)
        } else {
            (CommandStatus::Success, 0)
        };
        Ok(Some(Invocation {
            status,
            status_details: Some(format!("{status:?}")),
            response_code: Some(code),
            stderr_tail: command.fails.then(|| world.behaviour.failure_output.clone()),
        }))
    }

    async fn find_by_comment(&self, instance_id: &str, comment: &str) -> Result<Option<FoundCommand>, AwsError> {
        let mut world = self.lock();
        world.call("ListCommands")?;
        let listed_before = world.now - signed(world.behaviour.list_lag);
        Ok(world
            .commands
            .iter()
            .rev()
            .find(|c| c.instance_id == instance_id && c.comment == comment && c.sent_at <= listed_before)
            .map(|c| FoundCommand {
                command_id: c.id.clone(),
            }))
    }

    async fn cancel(&self, command_id: &str, instance_id: &str) -> Result<(), AwsError> {
        let mut world = self.lock();
        world.call("CancelCommand")?;
        world.refuse_if_terminated("CancelCommand", instance_id)?;
        world.record_write("CancelCommand", None, instance_id, None);
        if let Some(command) = world
            .commands
            .iter_mut()
            .find(|c| c.id == command_id && c.instance_id == instance_id)
        {
            command.cancelled = true;
        }
        world.answer("CancelCommand")
    }

    async fn agent_ping(&self, _instance_id: &str) -> Result<AgentPing, AwsError> {
        let mut world = self.lock();
        world.call("DescribeInstanceInformation")?;
        Ok(AgentPing::Online)
    }
}

#[async_trait]
impl Alarms for FakeAws {
    async fn states(&self, names: &[String]) -> Result<BTreeMap<String, AlarmState>, AwsError> {
        let mut world = self.lock();
        world.call("DescribeAlarms")?;
        Ok(names
            .iter()
            .filter_map(|name| {
                world.alarms.get(name).map(|value| {
                    (
                        name.clone(),
                        AlarmState {
                            value: value.clone(),
                            reason: None,
                        },
                    )
                })
            })
            .collect())
    }
}

#[async_trait]
impl Instances for FakeAws {
    async fn running_with_tags(&self, tags: &BTreeMap<String, String>) -> Result<Vec<Ec2Instance>, AwsError> {
        let mut world = self.lock();
        world.call("DescribeInstances")?;
        Ok(world
            .ec2
            .iter()
            .filter(|(_, instance)| tags.iter().all(|(k, v)| instance.tags.get(k) == Some(v)))
            .map(|(id, instance)| Ec2Instance {
                instance_id: id.clone(),
                availability_zone: Some(instance.zone.clone()),
            })
            .collect())
    }

    async fn zones(&self, instance_ids: &[String]) -> Result<BTreeMap<String, String>, AwsError> {
        let mut world = self.lock();
        world.call("DescribeInstances")?;
        Ok(instance_ids
            .iter()
            .filter_map(|id| world.ec2.get(id).map(|i| (id.clone(), i.zone.clone())))
            .collect())
    }

    async fn tags(&self, instance_ids: &[String]) -> Result<BTreeMap<String, BTreeMap<String, String>>, AwsError> {
        let mut world = self.lock();
        world.call("DescribeInstances")?;
        Ok(instance_ids
            .iter()
            .filter_map(|id| world.ec2.get(id).map(|i| (id.clone(), i.tags.clone())))
            .collect())
    }

    async fn gone(&self, instance_ids: &[String]) -> Result<BTreeMap<String, String>, AwsError> {
        let mut world = self.lock();
        world.call("DescribeInstances")?;
        Ok(instance_ids
            .iter()
            .filter(|id| world.terminated.contains(*id))
            .map(|id| (id.clone(), "terminated".to_owned()))
            .collect())
    }
}

/// AWS's ValidationError, as the SDK implementation reports it.
fn validation(operation: &'static str, message: String) -> AwsError {
    AwsError::new(
        operation,
        AwsErrorKind::Rejected,
        Some("ValidationError".to_owned()),
        message,
    )
}

impl World {
    /// The group named `name`, counting the call; AWS's ValidationError when there is none.
    fn asg_for_write(&mut self, operation: &'static str, name: &str) -> Result<&mut AutoScalingGroup, AwsError> {
        self.call(operation)?;
        self.asgs.get_mut(name).ok_or_else(|| {
            validation(
                operation,
                format!("AutoScalingGroup name not found - AutoScalingGroup {name} not found"),
            )
        })
    }
}

/// The member `id` of `group`, or AWS's ValidationError.
fn member<'a>(
    operation: &'static str,
    group: &'a mut AutoScalingGroup,
    id: &str,
) -> Result<&'a mut AsgInstance, AwsError> {
    let name = group.name.clone();
    group.instances.iter_mut().find(|i| i.instance_id == id).ok_or_else(|| {
        validation(
            operation,
            format!("The instance {id} is not part of Auto Scaling group {name}."),
        )
    })
}

#[async_trait]
impl AutoScaling for FakeAws {
    async fn group(&self, name: &str) -> Result<AutoScalingGroup, AwsError> {
        let mut world = self.lock();
        world.call("DescribeAutoScalingGroups")?;
        world.asgs.get(name).cloned().ok_or_else(|| {
            AwsError::new(
                "DescribeAutoScalingGroups",
                AwsErrorKind::NotFound,
                None,
                format!("there is no Auto Scaling group named {name:?} in this account and region"),
            )
        })
    }

    async fn memberships(&self, instance_ids: &[String]) -> Result<BTreeMap<String, AsgMembership>, AwsError> {
        let mut world = self.lock();
        world.call("DescribeAutoScalingInstances")?;
        let mut found = BTreeMap::new();
        for group in world.asgs.values() {
            for instance in &group.instances {
                if instance_ids.contains(&instance.instance_id) {
                    let lifecycle_state = match world.asg_before.get(&instance.instance_id) {
                        Some((before, at))
                            if world.now.duration_since(*at) < signed(world.behaviour.auto_scaling_lag) =>
                        {
                            before.clone()
                        }
                        _ => instance.lifecycle_state.clone(),
                    };
                    found.insert(
                        instance.instance_id.clone(),
                        AsgMembership {
                            group_name: group.name.clone(),
                            lifecycle_state,
                            health_status: instance.health_status.clone(),
                        },
                    );
                }
            }
        }
        Ok(found)
    }

    /// Standby at once (AWS passes through EnteringStandby while the targets drain; the
    /// fake's target groups are separate and untouched).
    async fn enter_standby(&self, group_name: &str, instance_id: &str) -> Result<(), AwsError> {
        const OP: &str = "EnterStandby";
        let mut world = self.lock();
        let group = world.asg_for_write(OP, group_name)?;
        if !member(OP, group, instance_id)?.in_service() {
            return Err(validation(
                OP,
                format!("The instance {instance_id} is not in InService."),
            ));
        }
        if group.desired_capacity <= group.min_size {
            return Err(validation(
                OP,
                format!(
                    "AutoScalingGroup {group_name} has min-size={}, max-size={}, and desired-capacity={}. To place \
                     into standby 1 instances, please update the AutoScalingGroup sizes appropriately.",
                    group.min_size, group.max_size, group.desired_capacity
                ),
            ));
        }
        let instance = member(OP, group, instance_id)?;
        instance.lifecycle_state = "Standby".to_owned();
        group.desired_capacity -= 1;
        let now = world.now;
        world
            .asg_before
            .insert(instance_id.to_owned(), ("InService".to_owned(), now));
        world
            .asg_writes
            .push((OP, group_name.to_owned(), instance_id.to_owned()));
        // Carried out; its answer may still be lost on the way back.
        world.answer(OP)
    }

    async fn exit_standby(&self, group_name: &str, instance_id: &str) -> Result<(), AwsError> {
        const OP: &str = "ExitStandby";
        let mut world = self.lock();
        let group = world.asg_for_write(OP, group_name)?;
        if group.desired_capacity >= group.max_size {
            return Err(validation(
                OP,
                format!("AutoScalingGroup {group_name} is at its max-size={}", group.max_size),
            ));
        }
        let instance = member(OP, group, instance_id)?;
        if instance.lifecycle_state != "Standby" {
            return Err(validation(OP, format!("The instance {instance_id} is not in Standby.")));
        }
        instance.lifecycle_state = "InService".to_owned();
        group.desired_capacity += 1;
        let now = world.now;
        world
            .asg_before
            .insert(instance_id.to_owned(), ("Standby".to_owned(), now));
        world
            .asg_writes
            .push((OP, group_name.to_owned(), instance_id.to_owned()));
        // Carried out; its answer may still be lost on the way back.
        world.answer(OP)
    }

    async fn set_min_size(&self, group_name: &str, min_size: i32) -> Result<(), AwsError> {
        const OP: &str = "UpdateAutoScalingGroup";
        let mut world = self.lock();
        let group = world.asg_for_write(OP, group_name)?;
        if min_size < 0 || min_size > group.max_size {
            return Err(validation(
                OP,
                format!(
                    "Max bound, {}, must be greater than or equal to min bound, {min_size}",
                    group.max_size
                ),
            ));
        }
        group.min_size = min_size;
        group.desired_capacity = group.desired_capacity.max(min_size);
        world
            .asg_writes
            .push((OP, group_name.to_owned(), format!("MinSize={min_size}")));
        // Carried out; its answer may still be lost on the way back.
        world.answer(OP)
    }

    async fn suspend_processes(&self, group_name: &str, processes: &[String]) -> Result<(), AwsError> {
        const OP: &str = "SuspendProcesses";
        let mut world = self.lock();
        let group = world.asg_for_write(OP, group_name)?;
        for process in processes {
            if !group.suspended_processes.contains(process) {
                group.suspended_processes.push(process.clone());
            }
        }
        group.suspended_processes.sort();
        world.asg_writes.push((OP, group_name.to_owned(), processes.join(",")));
        // Carried out; its answer may still be lost on the way back.
        world.answer(OP)
    }

    async fn resume_processes(&self, group_name: &str, processes: &[String]) -> Result<(), AwsError> {
        const OP: &str = "ResumeProcesses";
        let mut world = self.lock();
        let group = world.asg_for_write(OP, group_name)?;
        group.suspended_processes.retain(|p| !processes.contains(p));
        world.asg_writes.push((OP, group_name.to_owned(), processes.join(",")));
        // Carried out; its answer may still be lost on the way back.
        world.answer(OP)
    }
}

#[async_trait]
impl AwsProvider for FakeAws {
    async fn for_region(&self, _region: &str) -> AwsApis {
        self.apis()
    }
}
