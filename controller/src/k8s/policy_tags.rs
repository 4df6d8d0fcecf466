//! The tags a MaintenancePolicy asks of a plan's target groups and instances (`targetGroupTags`,
//! `instanceTags`), read from AWS only when the answer matters: when the plan is about to take
//! an instance out, or is refused for its tags and may be allowed now. Read-only calls
//! (DescribeTags, DescribeInstances), the only ones made for a plan not yet allowed.

use std::time::Duration;

use jiff::Timestamp;

use crate::api::validate::plan_region;
use crate::api::{MaintenancePlanSpec, MaintenancePlanStatus};
use crate::aws::AwsError;
use crate::machine;
use crate::tenancy::{Allowed, Refusal, SeenTags, TagConditions, check_tags};

use super::context::Context;

/// How often a plan refused for its tags reads them again: a tag added on AWS is no
/// Kubernetes event, so nothing else would wake the plan.
pub const TAG_RECHECK: Duration = Duration::from_secs(300);

/// What the tag conditions say of a plan.
#[derive(Debug)]
pub(super) enum TagVerdict {
    /// Nothing to decide this round (no instance is about to go out): nothing was read.
    NotNeeded,
    /// Decided from the tags read.
    Decided(Result<Allowed, Refusal>),
    /// A read failed; nothing was decided.
    Unreadable(AwsError),
}

/// Decides `conditions` for the plan from the tags of its target groups and of the instances
/// of its run that have not finished, reading them only when an instance is about to start
/// or the plan is refused now (and may be allowed by the tags it has now).
pub(super) async fn tag_verdict(
    spec: &MaintenancePlanSpec,
    recorded: Option<&MaintenancePlanStatus>,
    conditions: &[TagConditions],
    ctx: &Context,
    now: Timestamp,
) -> TagVerdict {
    let refused = recorded.is_some_and(machine::is_refused);
    if !refused && machine::wants_at(spec, recorded, now).instance_id.is_none() {
        return TagVerdict::NotNeeded;
    }
    let instances = unfinished(spec, recorded);
    let groups: Vec<String> = spec.target_groups().into_iter().map(str::to_owned).collect();
    let apis = ctx.apis(plan_region(spec).unwrap_or_default()).await;
    let asks_groups = conditions.iter().any(|c| !c.target_group_tags.is_empty());
    let asks_instances = conditions.iter().any(|c| !c.instance_tags.is_empty());
    let group_tags = if asks_groups {
        match apis.target_groups.tags(&groups).await {
            Ok(tags) => tags,
            Err(error) => return TagVerdict::Unreadable(error),
        }
    } else {
        Default::default()
    };
    let instance_tags = if asks_instances && !instances.is_empty() {
        match apis.instances.tags(&instances).await {
            Ok(tags) => tags,
            Err(error) => return TagVerdict::Unreadable(error),
        }
    } else {
        Default::default()
    };
    let group_refs: Vec<&str> = groups.iter().map(String::as_str).collect();
    TagVerdict::Decided(check_tags(
        conditions,
        &group_refs,
        &instances,
        SeenTags {
            target_groups: &group_tags,
            instances: &instance_tags,
        },
    ))
}

/// The instances of the current run that have not finished (all of them before it starts).
fn unfinished(spec: &MaintenancePlanSpec, recorded: Option<&MaintenancePlanStatus>) -> Vec<String> {
    machine::run_instances(spec, recorded)
        .iter()
        .filter(|id| {
            recorded
                .and_then(|s| s.instances.iter().find(|i| &i.instance_id == *id))
                .is_none_or(|i| !i.phase.is_finished())
        })
        .cloned()
        .collect()
}
