//! A policy's tag conditions (`targetGroupTags`, `instanceTags`): the part of a policy only
//! AWS can answer. [`super::evaluate`] decides everything else from the plan alone; when the
//! policies that allow a plan ask for tags, [`check`] decides from the tags AWS showed. Pure.

use std::collections::BTreeMap;

use super::evaluate::{Allowed, Refusal};

/// How many offending instances a refusal names before it only counts the rest.
const NAMED_INSTANCES: usize = 3;

/// The tags one policy asks of a plan it otherwise allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagConditions {
    /// The policy, as `MaintenancePolicy NAME`.
    pub policy: String,
    /// Tags every target group of the plan must carry.
    pub target_group_tags: BTreeMap<String, String>,
    /// Tags every instance of the plan must carry.
    pub instance_tags: BTreeMap<String, String>,
}

/// The tags AWS showed for a plan's target groups and instances.
#[derive(Clone, Copy, Debug)]
pub struct SeenTags<'a> {
    /// The tags of each target group, by ARN (ELBv2 DescribeTags). A group missing here has
    /// no tags.
    pub target_groups: &'a BTreeMap<String, BTreeMap<String, String>>,
    /// The tags of each instance EC2 knows, by ID (DescribeInstances). An instance missing
    /// here is gone; it is not checked, the run skips it when its turn comes.
    pub instances: &'a BTreeMap<String, BTreeMap<String, String>>,
}

/// Whether one of `conditions` (tried in order) holds for every one of `target_groups` and
/// `instances`: allowed by the first that does, refused naming what each policy missed.
pub fn check(
    conditions: &[TagConditions],
    target_groups: &[&str],
    instances: &[String],
    seen: SeenTags<'_>,
) -> Result<Allowed, Refusal> {
    let mut refusals = Vec::with_capacity(conditions.len());
    for condition in conditions {
        let problems = problems(condition, target_groups, instances, seen);
        if problems.is_empty() {
            return Ok(Allowed {
                by: condition.policy.clone(),
            });
        }
        refusals.push(format!("{} ({})", condition.policy, problems.join("; ")));
    }
    Err(Refusal {
        message: format!("not allowed by {}", refusals.join(", nor by ")),
    })
}

fn problems(
    condition: &TagConditions,
    target_groups: &[&str],
    instances: &[String],
    seen: SeenTags<'_>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let none = BTreeMap::new();
    for arn in target_groups {
        let missing = missing(
            &condition.target_group_tags,
            seen.target_groups.get(*arn).unwrap_or(&none),
        );
        if !missing.is_empty() {
            problems.push(format!("target group {arn} lacks its targetGroupTags {missing}"));
        }
    }
    let untagged: Vec<(&String, String)> = instances
        .iter()
        .filter_map(|id| Some((id, missing(&condition.instance_tags, seen.instances.get(id)?))))
        .filter(|(_, missing)| !missing.is_empty())
        .collect();
    if !untagged.is_empty() {
        let named: Vec<String> = untagged
            .iter()
            .take(NAMED_INSTANCES)
            .map(|(id, missing)| format!("{id} lacks {missing}"))
            .collect();
        let more = match untagged.len().saturating_sub(NAMED_INSTANCES) {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        problems.push(format!(
            "instances must carry its instanceTags: {}{more}",
            named.join(", ")
        ));
    }
    problems
}

/// The required tags `tags` does not carry with the required value, as `k=v, k2=v2`.
fn missing(required: &BTreeMap<String, String>, tags: &BTreeMap<String, String>) -> String {
    required
        .iter()
        .filter(|(key, value)| tags.get(*key) != Some(*value))
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn managed(policy: &str) -> TagConditions {
        TagConditions {
            policy: format!("MaintenancePolicy {policy}"),
            target_group_tags: tags(&[("pitstop.dev/managed", "true")]),
            instance_tags: tags(&[("pitstop.dev/managed", "true"), ("team", "a")]),
        }
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    #[test]
    fn tagged_groups_and_instances_are_allowed_by_the_policy_asking() {
        let groups = BTreeMap::from([(GROUP.to_owned(), tags(&[("pitstop.dev/managed", "true")]))]);
        let instances = BTreeMap::from([
            (
                "i-1".to_owned(),
                tags(&[("pitstop.dev/managed", "true"), ("team", "a"), ("Name", "web-1")]),
            ),
            (
                "i-2".to_owned(),
                tags(&[("pitstop.dev/managed", "true"), ("team", "a")]),
            ),
        ]);
        let seen = SeenTags {
            target_groups: &groups,
            instances: &instances,
        };
        assert_eq!(
            check(&[managed("team-a")], &[GROUP], &ids(&["i-1", "i-2"]), seen),
            Ok(Allowed {
                by: "MaintenancePolicy team-a".to_owned()
            })
        );
    }

    #[test]
    fn an_untagged_group_or_instance_is_refused_saying_which_tag_is_missing() {
        let groups = BTreeMap::from([(GROUP.to_owned(), tags(&[("pitstop.dev/managed", "false")]))]);
        let instances = BTreeMap::from([
            (
                "i-1".to_owned(),
                tags(&[("pitstop.dev/managed", "true"), ("team", "a")]),
            ),
            ("i-2".to_owned(), tags(&[("team", "b")])),
        ]);
        let seen = SeenTags {
            target_groups: &groups,
            instances: &instances,
        };
        let refusal = check(&[managed("team-a")], &[GROUP], &ids(&["i-1", "i-2"]), seen).expect_err("untagged");
        assert_eq!(
            refusal.message,
            format!(
                "not allowed by MaintenancePolicy team-a (target group {GROUP} lacks its targetGroupTags \
                 pitstop.dev/managed=true; instances must carry its instanceTags: i-2 lacks pitstop.dev/managed=true, team=a)"
            )
        );
    }

    #[test]
    fn a_group_without_tags_is_refused_and_a_gone_instance_is_left_to_the_run() {
        let groups = BTreeMap::new();
        let instances = BTreeMap::new();
        let seen = SeenTags {
            target_groups: &groups,
            instances: &instances,
        };
        let refusal = check(&[managed("team-a")], &[GROUP], &ids(&["i-gone"]), seen).expect_err("no tags");
        assert!(refusal.message.contains("lacks its targetGroupTags"), "{refusal}");
        assert!(!refusal.message.contains("i-gone"), "{refusal}");
    }

    #[test]
    fn the_first_policy_whose_tags_hold_allows_and_a_refusal_names_every_policy() {
        let groups = BTreeMap::from([(GROUP.to_owned(), tags(&[("pitstop.dev/managed", "true")]))]);
        let instances: BTreeMap<String, BTreeMap<String, String>> = (1..=5)
            .map(|n| (format!("i-{n}"), tags(&[("pitstop.dev/managed", "true")])))
            .collect();
        let seen = SeenTags {
            target_groups: &groups,
            instances: &instances,
        };
        let loose = TagConditions {
            policy: "MaintenancePolicy loose".to_owned(),
            target_group_tags: BTreeMap::new(),
            instance_tags: tags(&[("pitstop.dev/managed", "true")]),
        };
        let all = ids(&["i-1", "i-2", "i-3", "i-4", "i-5"]);
        assert_eq!(
            check(&[managed("strict"), loose.clone()], &[GROUP], &all, seen).map(|a| a.by),
            Ok("MaintenancePolicy loose".to_owned())
        );
        let refusal = check(&[managed("strict"), managed("stricter")], &[GROUP], &all, seen).expect_err("no team tag");
        assert!(
            refusal.message.starts_with("not allowed by MaintenancePolicy strict (")
                && refusal.message.contains("), nor by MaintenancePolicy stricter ("),
            "{refusal}"
        );
        assert!(refusal.message.contains("i-3 lacks team=a and 2 more"), "{refusal}");
    }
}
