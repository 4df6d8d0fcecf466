//! Gates checked before an instance leaves the group: the seed runbook's
//! `AssertTargetGroupHealthBefore` and `AssertInstanceIsInTargetGroup`, plus the two that a
//! fleet needs (enough healthy targets left, an SSM agent that can take the command).

use crate::api::{MaintenancePlanSpec, TargetGroupRegistration};
use crate::aws::{AgentPing, TargetHealth, TargetState};

use super::observed::Observed;
use super::reason;

/// Why an instance may not be taken out now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct GateClosed {
    pub reason: &'static str,
    pub message: String,
}

impl GateClosed {
    fn new(reason: &'static str, message: String) -> Self {
        Self { reason, message }
    }
}

/// The short name of a target group for messages: `web` of `…:targetgroup/web/0123…`.
pub(super) fn group_name(target_group_arn: &str) -> &str {
    target_group_arn
        .split_once(":targetgroup/")
        .and_then(|(_, tail)| tail.split('/').next())
        .unwrap_or(target_group_arn)
}

/// Checks the gates for `instance_id` in every target group of the plan it is registered
/// in; on success returns those groups, in the plan's order, with its port in each.
/// Groups that do not list the instance are left alone; one that lists it on several
/// ports, or no group listing it at all, closes the gate for good (`NotInTargetGroup`).
/// `observed.groups` must have been read. `own_out` are the plan's instances already out
/// (`maxUnavailable`): they are out by design, so they close no gate, and count as neither
/// healthy nor gone.
pub(super) fn check(
    spec: &MaintenancePlanSpec,
    instance_id: &str,
    observed: &Observed,
    own_out: &[String],
) -> Result<Vec<TargetGroupRegistration>, GateClosed> {
    let groups = spec.target_groups();
    let several = groups.len() > 1;
    let mut registered_in = Vec::new();
    for arn in &groups {
        let group = observed.group(arn).unwrap_or_default();
        // "the target group" alone, as before, when the plan names only one.
        let in_group = if several {
            format!("target group {}", group_name(arn))
        } else {
            "the target group".to_owned()
        };
        let rows: Vec<_> = group.iter().filter(|t| t.target.instance_id == instance_id).collect();
        let me = match rows.as_slice() {
            [] => continue,
            [one] => *one,
            _ => {
                return Err(GateClosed::new(
                    reason::NOT_IN_TARGET_GROUP,
                    format!(
                        "{instance_id} is registered on {} ports of {in_group}; pitstop handles one registration per instance and group",
                        rows.len()
                    ),
                ));
            }
        };
        check_group(spec, instance_id, &in_group, me, group, own_out)?;
        registered_in.push(TargetGroupRegistration {
            target_group_arn: (*arn).to_owned(),
            port: me.target.port,
        });
    }
    if registered_in.is_empty() {
        let message = match groups.as_slice() {
            [one] => format!("{instance_id} is not a registered target of {one}"),
            all => format!("{instance_id} is not a registered target of any of {}", all.join(", ")),
        };
        return Err(GateClosed::new(reason::NOT_IN_TARGET_GROUP, message));
    }
    if spec.preflight.require_agent_online && observed.agent != Some(AgentPing::Online) {
        let seen = match observed.agent {
            Some(AgentPing::ConnectionLost) => "ConnectionLost",
            Some(AgentPing::Inactive) => "Inactive",
            Some(AgentPing::NotManaged) => "not managed by SSM",
            Some(AgentPing::Online) | None => "unknown",
        };
        return Err(GateClosed::new(
            reason::AGENT_NOT_ONLINE,
            format!("the SSM agent of {instance_id} is {seen}, not Online; it could not run the maintenance"),
        ));
    }
    Ok(registered_in)
}

/// The gates of one group the instance is registered in: it is healthy there, the rest of
/// the group too (with `requireHealthyTargetGroup`), and enough healthy targets stay.
fn check_group(
    spec: &MaintenancePlanSpec,
    instance_id: &str,
    in_group: &str,
    me: &TargetHealth,
    group: &[TargetHealth],
    own_out: &[String],
) -> Result<(), GateClosed> {
    if me.state != TargetState::Healthy {
        return Err(GateClosed::new(
            reason::INSTANCE_UNHEALTHY,
            format!(
                "{instance_id} is {} in {in_group}{}, not healthy",
                me.state,
                me.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            ),
        ));
    }
    let others: Vec<_> = group
        .iter()
        .filter(|t| t.target.instance_id != instance_id && !own_out.contains(&t.target.instance_id))
        .collect();
    if spec.preflight.require_healthy_target_group {
        let unhealthy: Vec<String> = others
            .iter()
            .filter(|t| t.state != TargetState::Healthy)
            .map(|t| format!("{} is {}", t.target.instance_id, t.state))
            .collect();
        if !unhealthy.is_empty() {
            return Err(GateClosed::new(
                reason::TARGET_GROUP_UNHEALTHY,
                format!(
                    "{in_group} is not all healthy ({}); requireHealthyTargetGroup is on",
                    unhealthy.join(", ")
                ),
            ));
        }
    }
    let healthy_left = others.iter().filter(|t| t.state == TargetState::Healthy).count();
    let of_group = if in_group == "the target group" {
        String::new()
    } else {
        format!(" in {in_group}")
    };
    if let Some(percent) = spec.preflight.min_healthy_percent {
        let registered = super::concurrency::registered(group, own_out.iter().map(String::as_str));
        let needed = (registered * percent as usize).div_ceil(100);
        if healthy_left < needed {
            return Err(GateClosed::new(
                reason::TOO_FEW_HEALTHY_TARGETS,
                format!(
                    "taking {instance_id} out would leave {healthy_left} of {registered} target(s) healthy{of_group}; at least {percent}% ({needed}) must remain (preflight.minHealthyPercent)"
                ),
            ));
        }
    }
    let minimum = spec.preflight.min_healthy_targets.unwrap_or(1) as usize;
    if healthy_left < minimum {
        return Err(GateClosed::new(
            reason::TOO_FEW_HEALTHY_TARGETS,
            format!(
                "taking {instance_id} out would leave {healthy_left} healthy target(s){of_group}; at least {minimum} must remain (preflight.minHealthyTargets)"
            ),
        ));
    }
    Ok(())
}
