//! Gates checked before an instance leaves the group: the seed runbook's
//! `AssertTargetGroupHealthBefore` and `AssertInstanceIsInTargetGroup`, plus the two that a
//! fleet needs (enough healthy targets left, an SSM agent that can take the command).

use crate::api::MaintenancePlanSpec;
use crate::aws::{AgentPing, TargetState};

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

/// Checks the gates for `instance_id`; on success returns the port it is registered on.
/// `observed.group` must have been read.
pub(super) fn check(
    spec: &MaintenancePlanSpec,
    instance_id: &str,
    observed: &Observed,
) -> Result<Option<i32>, GateClosed> {
    let group = observed.group.as_deref().unwrap_or_default();
    let rows: Vec<_> = group.iter().filter(|t| t.target.instance_id == instance_id).collect();
    let me = match rows.as_slice() {
        [] => {
            return Err(GateClosed::new(
                reason::NOT_IN_TARGET_GROUP,
                format!("{instance_id} is not a registered target of {}", spec.target_group_arn),
            ));
        }
        [one] => *one,
        _ => {
            return Err(GateClosed::new(
                reason::NOT_IN_TARGET_GROUP,
                format!(
                    "{instance_id} is registered on {} ports of the target group; pitstop handles one registration per instance",
                    rows.len()
                ),
            ));
        }
    };
    if me.state != TargetState::Healthy {
        return Err(GateClosed::new(
            reason::INSTANCE_UNHEALTHY,
            format!(
                "{instance_id} is {} in the target group{}, not healthy",
                me.state,
                me.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            ),
        ));
    }
    let others: Vec<_> = group.iter().filter(|t| t.target.instance_id != instance_id).collect();
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
                    "the target group is not all healthy ({}); requireHealthyTargetGroup is on",
                    unhealthy.join(", ")
                ),
            ));
        }
    }
    let minimum = spec.preflight.min_healthy_targets.unwrap_or(1) as usize;
    let healthy_left = others.iter().filter(|t| t.state == TargetState::Healthy).count();
    if healthy_left < minimum {
        return Err(GateClosed::new(
            reason::TOO_FEW_HEALTHY_TARGETS,
            format!(
                "taking {instance_id} out would leave {healthy_left} healthy target(s); at least {minimum} must remain (preflight.minHealthyTargets)"
            ),
        ));
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
    Ok(me.target.port)
}
