//! Reading what the state machine asked for.

use std::collections::BTreeMap;

use crate::api::{InstanceStatus, MaintenancePlanSpec, MaintenancePlanStatus};
use crate::aws::{AwsApis, AwsError, AwsErrorKind, CommandKind, CommandTag, TargetHealth};
use crate::gates::{AlertFilter, GateReaders, GateReading};
use crate::machine::{
    self, AutoScalingReads, CommandView, InstanceGroupView, InstanceObserved, InstanceWants, Observed, Wants,
};

/// An observation failed; nothing was decided or changed.
#[derive(Debug, thiserror::Error)]
#[error("could not read AWS state: {0}")]
pub struct ObserveError(#[from] pub AwsError);

/// Makes the read calls `wants` lists (the target group calls for each of the plan's groups).
pub async fn observe(
    apis: &AwsApis,
    spec: &MaintenancePlanSpec,
    plan_uid: &str,
    status: Option<&MaintenancePlanStatus>,
    wants: &Wants,
    gates: &GateReaders,
) -> Result<Observed, ObserveError> {
    let mut observed = Observed::default();
    if wants.gates {
        observed.gates = Some(read_gates(spec, gates).await);
    }
    if wants.alarms {
        observed.alarms = Some(read_alarms(apis, spec).await);
    }
    // Also without an instance: a run that starts resolves its selector from the groups.
    if wants.group_health {
        for arn in spec.target_groups() {
            let group: Vec<TargetHealth> = apis.target_groups.target_health(arn).await?;
            observed.groups.insert(arn.to_owned(), group);
        }
    }
    if wants.tagged_instances
        && let Some(selector) = &spec.selector
    {
        observed.tagged = Some(apis.instances.running_with_tags(&selector.tags).await?);
    }
    if wants.auto_scaling_group
        && let Some(name) = spec
            .selector
            .as_ref()
            .and_then(|s| s.auto_scaling_group_name.as_deref())
    {
        observed.auto_scaling_group = Some(apis.auto_scaling.group(name).await?);
    }
    if wants.zones {
        // The instances the run will have: the listed ones, or the members just read.
        let ids = match &spec.selector {
            None => spec.instances.clone(),
            Some(_) => machine::selection_members(spec, &observed).unwrap_or_default(),
        };
        observed.zones = Some(apis.instances.zones(&ids).await?);
    }
    let Some(instance_id) = wants.instance_id.as_deref() else {
        return Ok(observed);
    };
    if wants.deregistration_delay {
        for arn in spec.target_groups() {
            let delay = apis.target_groups.deregistration_delay(arn).await?;
            observed.deregistration_delay = observed.deregistration_delay.max(Some(delay));
        }
    }
    let first = InstanceWants {
        instance_id: instance_id.to_owned(),
        agent: wants.agent,
        command: wants.command,
        instance_presence: wants.instance_presence,
    };
    let everyone: Vec<&InstanceWants> = std::iter::once(&first).chain(&wants.more).collect();
    let mut presence = observe_presence(apis, &everyone).await;
    let mut own = observe_instance(apis, plan_uid, status, &first).await?;
    own.presence = presence.remove(instance_id);
    observed.instance_id = Some(instance_id.to_owned());
    observed.agent = own.agent;
    observed.command = own.command;
    observed.presence = own.presence;
    if let Some(reads) = machine::auto_scaling_reads(spec, status, wants) {
        observed.instance_group = Some(observe_instance_group(apis, &reads).await?);
    }
    for more in &wants.more {
        let mut own = observe_instance(apis, plan_uid, status, more).await?;
        own.presence = presence.remove(&more.instance_id);
        observed.more.insert(more.instance_id.clone(), own);
    }
    Ok(observed)
}

/// Whether EC2 still has the instances whose look is due: one DescribeInstances for all of
/// them. A safety net, not a step of the turn: if EC2 cannot be asked, the instances' turns
/// go on (an older IAM policy without ec2:DescribeInstances must not hold them out).
async fn observe_presence(apis: &AwsApis, wants: &[&InstanceWants]) -> BTreeMap<String, machine::Presence> {
    let ids: Vec<String> = wants
        .iter()
        .filter(|w| w.instance_presence)
        .map(|w| w.instance_id.clone())
        .collect();
    if ids.is_empty() {
        return BTreeMap::new();
    }
    match apis.instances.gone(&ids).await {
        Ok(gone) => ids
            .into_iter()
            .map(|id| {
                let presence = match gone.get(&id) {
                    Some(said) => machine::Presence::Gone(said.clone()),
                    None => machine::Presence::Present,
                };
                (id, presence)
            })
            .collect(),
        Err(error) => {
            tracing::warn!(instances = ?ids, %error, "could not ask EC2 whether the instances still exist");
            ids.into_iter().map(|id| (id, machine::Presence::Unknown)).collect()
        }
    }
}

/// The reads of one instance: its agent, its command (whether EC2 still has it is read for
/// all instances at once, see [`observe_presence`]).
async fn observe_instance(
    apis: &AwsApis,
    plan_uid: &str,
    status: Option<&MaintenancePlanStatus>,
    wants: &InstanceWants,
) -> Result<InstanceObserved, AwsError> {
    let instance_id = wants.instance_id.as_str();
    let mut observed = InstanceObserved::default();
    if wants.agent {
        observed.agent = Some(apis.commands.agent_ping(instance_id).await?);
    }
    if let Some(kind) = wants.command {
        let instance = status.and_then(|s| s.instances.iter().find(|i| i.instance_id == instance_id));
        observed.command = Some(observe_command(apis, plan_uid, instance_id, instance, kind).await?);
    }
    Ok(observed)
}

async fn observe_command(
    apis: &AwsApis,
    plan_uid: &str,
    instance_id: &str,
    instance: Option<&InstanceStatus>,
    kind: CommandKind,
) -> Result<CommandView, AwsError> {
    let recorded = instance.and_then(|i| match kind {
        CommandKind::Maintenance => i.maintenance_command_id.clone(),
        CommandKind::Verify => i.verify_command_id.clone(),
    });
    let command_id = match recorded {
        Some(id) => Some(id),
        None => {
            // No ID recorded: either never sent, or sent just before a crash. Look it up by
            // its tag before the state machine may decide to send it.
            let tag = CommandTag {
                plan_uid: plan_uid.to_owned(),
                kind,
                attempt: instance.map_or(1, |i| i.attempt.max(1)),
            };
            apis.commands
                .find_by_comment(instance_id, &tag.comment())
                .await?
                .map(|found| found.command_id)
        }
    };
    let invocation = match &command_id {
        Some(id) => apis.commands.invocation(id, instance_id).await?,
        None => None,
    };
    Ok(CommandView { command_id, invocation })
}

/// What the plan's gates say. A gate that cannot be read says so; whether that holds the plan
/// is the state machine's call (`ignoreReadFailures`).
async fn read_gates(spec: &MaintenancePlanSpec, gates: &GateReaders) -> GateReading {
    let Some(gate) = spec.gates.as_ref().and_then(|g| g.prometheus.as_ref()) else {
        return GateReading::Quiet;
    };
    let filter = match AlertFilter::new(gate) {
        Ok(filter) => filter,
        Err(invalid) => return GateReading::Unreadable(invalid),
    };
    let Some(url) = gate.url.as_deref().or(gates.default_prometheus_url.as_deref()) else {
        return GateReading::Unreadable(
            "no Prometheus URL: set spec.gates.prometheus.url or the controller's --prometheus-url".to_owned(),
        );
    };
    match gates.prometheus.alerts(url).await {
        Ok(alerts) => filter.read(&alerts),
        Err(why) => {
            tracing::warn!(url, %why, "could not read Prometheus' alerts");
            GateReading::Unreadable(why)
        }
    }
}

/// What the plan's CloudWatch alarms say. A failed read (throttled, denied, unreachable)
/// says so rather than failing the round: whether that holds the plan is the state
/// machine's call (`ignoreReadFailures`), and it must not keep an instance in flight from
/// going on.
async fn read_alarms(apis: &AwsApis, spec: &MaintenancePlanSpec) -> GateReading {
    let Some(gate) = spec.gates.as_ref().and_then(|g| g.cloud_watch_alarms.as_ref()) else {
        return GateReading::Quiet;
    };
    match apis.alarms.states(&gate.names).await {
        Ok(states) => crate::gates::alarms::read(gate, &states),
        Err(error) => {
            tracing::warn!(%error, "could not read the CloudWatch alarms");
            GateReading::Unreadable(error.to_string())
        }
    }
}

/// The instance's Auto Scaling membership and group (DescribeAutoScalingInstances, then
/// DescribeAutoScalingGroups of the recorded group or, at the start, of the membership's).
async fn observe_instance_group(apis: &AwsApis, reads: &AutoScalingReads) -> Result<InstanceGroupView, AwsError> {
    let membership = apis
        .auto_scaling
        .memberships(std::slice::from_ref(&reads.instance_id))
        .await?
        .remove(&reads.instance_id);
    let name = reads
        .group_name
        .clone()
        .or_else(|| membership.as_ref().map(|m| m.group_name.clone()));
    let group = match name {
        Some(name) => match apis.auto_scaling.group(&name).await {
            Ok(group) => Some(group),
            // A group deleted while the instance was out has nothing left to restore.
            Err(error) if error.kind == AwsErrorKind::NotFound => None,
            Err(error) => return Err(error),
        },
        None => None,
    };
    Ok(InstanceGroupView { membership, group })
}
