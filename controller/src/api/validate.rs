//! Checks of a spec that the CRD schema makes too, made again in process: `pitstop run`
//! reads plans from files no apiserver has seen, and a cluster may still serve an older CRD.
//! Everything here is about the spec alone; checks that need AWS are preflight gates.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;

use super::spec::{
    INSTANCE_ID_PATTERN, MAX_INSTANCES, MAX_TARGET_GROUP_ARN_LENGTH, MAX_TARGET_GROUPS, MaintenancePlanSpec,
    TARGET_GROUP_ARN_PATTERN,
};

static TARGET_GROUP_ARN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(TARGET_GROUP_ARN_PATTERN).expect("TARGET_GROUP_ARN_PATTERN is a valid regex"));
static INSTANCE_ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(INSTANCE_ID_PATTERN).expect("INSTANCE_ID_PATTERN is a valid regex"));

/// Everything wrong with a spec, so a user can fix it in one go.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid MaintenancePlan spec: {}", .problems.join("; "))]
pub struct InvalidSpec {
    /// One sentence per problem.
    pub problems: Vec<String>,
}

/// Validates a spec.
pub fn validate(spec: &MaintenancePlanSpec) -> Result<(), InvalidSpec> {
    let mut problems = Vec::new();
    match (spec.target_group_arn.is_empty(), spec.target_group_arns.is_empty()) {
        (true, true) => problems.push("name the target group: set targetGroupArn or targetGroupArns".to_owned()),
        (false, false) => problems.push("set exactly one of targetGroupArn and targetGroupArns, not both".to_owned()),
        _ => {}
    }
    if spec.target_group_arns.len() > MAX_TARGET_GROUPS {
        problems.push(format!(
            "targetGroupArns names {} target groups; at most {MAX_TARGET_GROUPS} are allowed",
            spec.target_group_arns.len()
        ));
    }
    let field = if spec.target_group_arns.is_empty() {
        "targetGroupArn"
    } else {
        "targetGroupArns"
    };
    let mut seen_groups = HashSet::new();
    for arn in spec.target_groups() {
        if !TARGET_GROUP_ARN.is_match(arn) || arn.len() > MAX_TARGET_GROUP_ARN_LENGTH {
            problems.push(format!(
                "{field} {arn:?} is not an ELBv2 target group ARN (arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID)"
            ));
        }
        if !seen_groups.insert(arn) {
            problems.push(format!("target group {arn} is listed more than once"));
        }
    }
    let arn_regions: Vec<&str> = spec.target_groups().into_iter().filter_map(region_of_arn).collect();
    if let Some(first) = arn_regions.first()
        && let Some(other) = arn_regions.iter().find(|r| *r != first)
    {
        problems.push(format!(
            "the target groups are in different regions ({first:?} and {other:?}); a plan works in one region"
        ));
    }
    if let (Some(region), Some(arn_region)) = (&spec.region, arn_regions.first())
        && region != arn_region
    {
        problems.push(format!(
            "region {region:?} differs from the target group's region {arn_region:?}"
        ));
    }
    match (&spec.selector, spec.instances.is_empty()) {
        (None, true) => {
            problems.push("instances is empty: name at least one EC2 instance ID, or set a selector".to_owned())
        }
        (Some(_), false) => problems.push("set exactly one of instances and selector, not both".to_owned()),
        (Some(selector), true) if selector.ways() != 1 => {
            problems.push(
                "the selector must select one way: set exactly one of targetGroupMembers: true, tags and \
                 autoScalingGroupName"
                    .to_owned(),
            );
        }
        _ => {}
    }
    if spec.instances.len() > MAX_INSTANCES {
        problems.push(format!(
            "instances names {} instances, more than the {MAX_INSTANCES} one plan takes: split the fleet across plans",
            spec.instances.len()
        ));
    }
    if let Some(name) = spec.selector.as_ref().and_then(|s| s.auto_scaling_group_name.as_ref())
        && (name.is_empty() || name.chars().count() > 255)
    {
        problems.push(format!(
            "autoScalingGroupName {name:?} is not an Auto Scaling group name (1 to 255 characters)"
        ));
    }
    if let Some(gate) = spec.gates.as_ref().and_then(|g| g.prometheus.as_ref()) {
        if let Err(problem) = crate::gates::AlertFilter::new(gate) {
            problems.push(problem);
        }
        if let Some(url) = &gate.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            problems.push(format!(
                "spec.gates.prometheus.url {url:?} is not an http:// or https:// URL"
            ));
        }
    }
    if let Some(gate) = spec.gates.as_ref().and_then(|g| g.cloud_watch_alarms.as_ref()) {
        problems.extend(crate::gates::alarms::problems(gate));
    }
    if let Some(max) = spec.max_unavailable {
        problems.extend(max.problem());
        // Standby lowers MinSize by one and SuspendProcesses suspends group-wide processes,
        // each undone when its instance is back: two instances of one group out at once
        // would undo each other's protection early.
        if max.allows_several() && spec.auto_scaling.mode != crate::api::AutoScalingMode::Ignore {
            problems.push(format!(
                "maxUnavailable {max} takes several instances out at once, which autoScaling.mode {:?} cannot \
                 protect (each instance's return would undo the others' Standby or suspended processes): set \
                 autoScaling.mode: Ignore (for instances outside Auto Scaling groups, or groups you protect \
                 otherwise), or keep maxUnavailable at 1",
                spec.auto_scaling.mode
            ));
        }
    }
    if spec.max_unavailable_per_zone == Some(0) {
        problems.push("maxUnavailablePerZone must be at least 1".to_owned());
    }
    if spec.preflight.min_healthy_percent.is_some_and(|p| p > 100) {
        problems.push("preflight.minHealthyPercent must be at most 100".to_owned());
    }
    let mut seen = HashSet::new();
    for id in &spec.instances {
        if !INSTANCE_ID.is_match(id) {
            problems.push(format!(
                "instance {id:?} is not an EC2 instance ID (i- and 8 or 17 hex digits)"
            ));
        }
        if !seen.insert(id.as_str()) {
            problems.push(format!("instance {id} is listed more than once"));
        }
    }
    for (field, command) in [("maintenance", &spec.maintenance), ("verify", &spec.verify)] {
        if let Some(command) = command
            && command.document_name.trim().is_empty()
        {
            problems.push(format!("{field}.documentName is empty"));
        }
    }
    if let Some(schedule) = &spec.schedule
        && let Err(error) = super::schedule::check(schedule)
    {
        problems.push(error.to_string());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(InvalidSpec { problems })
    }
}

/// The region part of an ARN (`arn:PARTITION:SERVICE:REGION:...`).
pub fn region_of_arn(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}

/// The region a plan works in: `spec.region`, else its (first) target group ARN's.
pub fn plan_region(spec: &MaintenancePlanSpec) -> Option<&str> {
    spec.region
        .as_deref()
        .or_else(|| spec.target_groups().first().and_then(|arn| region_of_arn(arn)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(arn: &str, instances: &[&str]) -> MaintenancePlanSpec {
        MaintenancePlanSpec {
            target_group_arn: arn.to_owned(),
            region: None,
            instances: instances.iter().map(|s| (*s).to_owned()).collect(),
            maintenance: None,
            verify: None,
            preflight: Default::default(),
            timeouts: Default::default(),
            on_failure: Default::default(),
            max_failures: 0,
            ..Default::default()
        }
    }

    const ARN: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";

    #[test]
    fn accepts_a_good_spec() {
        assert_eq!(validate(&spec(ARN, &["i-0123456789abcdef0", "i-01234567"])), Ok(()));
        assert_eq!(plan_region(&spec(ARN, &["i-01234567"])), Some("eu-west-1"));
    }

    #[test]
    fn reports_every_problem() {
        let err = validate(&spec(
            "arn:aws:ec2:eu-west-1:1:thing",
            &["i-xyz", "i-01234567", "i-01234567"],
        ))
        .expect_err("spec is invalid");
        assert_eq!(err.problems.len(), 3, "{err}");
        assert!(err.problems[0].contains("targetGroupArn"));
        assert!(err.problems[1].contains("i-xyz"));
        assert!(err.problems[2].contains("more than once"));
    }

    const ARN2: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-tls/fedcba9876543210";

    #[test]
    fn accepts_several_target_groups_and_exactly_one_of_the_two_fields() {
        let mut s = spec("", &["i-01234567"]);
        s.target_group_arns = vec![ARN.to_owned(), ARN2.to_owned()];
        assert_eq!(validate(&s), Ok(()));
        assert_eq!(s.target_groups(), vec![ARN, ARN2]);
        assert_eq!(plan_region(&s), Some("eu-west-1"));

        let neither = spec("", &["i-01234567"]);
        assert!(
            validate(&neither)
                .expect_err("no group")
                .to_string()
                .contains("set targetGroupArn or targetGroupArns")
        );
        let mut both = spec(ARN, &["i-01234567"]);
        both.target_group_arns = vec![ARN2.to_owned()];
        assert!(validate(&both).expect_err("both").to_string().contains("exactly one"));
    }

    #[test]
    fn takes_exactly_one_of_instances_and_a_selector_that_selects_something() {
        let selector = |members: bool| crate::api::FleetSelector {
            target_group_members: members,
            ..Default::default()
        };
        let mut selected = spec(ARN, &[]);
        selected.selector = Some(selector(true));
        assert_eq!(validate(&selected), Ok(()));
        let mut both = spec(ARN, &["i-01234567"]);
        both.selector = Some(selector(true));
        assert!(
            validate(&both)
                .expect_err("both")
                .to_string()
                .contains("exactly one of instances and selector")
        );
        let mut nothing = spec(ARN, &[]);
        nothing.selector = Some(selector(false));
        assert!(
            validate(&nothing)
                .expect_err("selects nothing")
                .to_string()
                .contains("select one way")
        );
        let mut tagged = spec(ARN, &[]);
        tagged.selector = Some(crate::api::FleetSelector {
            tags: [("app".to_owned(), "web".to_owned())].into(),
            ..Default::default()
        });
        assert_eq!(validate(&tagged), Ok(()));
        if let Some(selector) = tagged.selector.as_mut() {
            selector.target_group_members = true;
        }
        assert!(
            validate(&tagged)
                .expect_err("two ways")
                .to_string()
                .contains("select one way")
        );
        let mut grouped = spec(ARN, &[]);
        grouped.selector = Some(crate::api::FleetSelector {
            auto_scaling_group_name: Some("web-asg".to_owned()),
            ..Default::default()
        });
        assert_eq!(validate(&grouped), Ok(()));
        if let Some(selector) = grouped.selector.as_mut() {
            selector.tags = [("app".to_owned(), "web".to_owned())].into();
        }
        assert!(
            validate(&grouped)
                .expect_err("group and tags")
                .to_string()
                .contains("select one way")
        );
        let mut unnamed = spec(ARN, &[]);
        unnamed.selector = Some(crate::api::FleetSelector {
            auto_scaling_group_name: Some(String::new()),
            ..Default::default()
        });
        assert!(
            validate(&unnamed)
                .expect_err("empty name")
                .to_string()
                .contains("not an Auto Scaling group name")
        );
        assert!(
            validate(&spec(ARN, &[]))
                .expect_err("neither")
                .to_string()
                .contains("or set a selector")
        );
    }

    #[test]
    fn rejects_duplicate_foreign_region_and_too_many_target_groups() {
        let mut s = spec("", &["i-01234567"]);
        s.target_group_arns = vec![ARN.to_owned(), ARN.to_owned(), ARN2.replace("eu-west-1", "us-east-1")];
        let err = validate(&s).expect_err("invalid");
        assert!(err.to_string().contains("more than once"), "{err}");
        assert!(err.to_string().contains("different regions"), "{err}");
        s.target_group_arns = (0..11).map(|i| format!("{}{i:x}", &ARN[..ARN.len() - 1])).collect();
        assert!(validate(&s).expect_err("11 groups").to_string().contains("at most 10"));
    }

    #[test]
    fn rejects_empty_instances_and_region_mismatch() {
        let mut s = spec(ARN, &[]);
        s.region = Some("us-east-1".into());
        let err = validate(&s).expect_err("spec is invalid");
        assert!(err.to_string().contains("instances is empty"), "{err}");
        assert!(err.to_string().contains("differs"), "{err}");
    }

    #[test]
    fn rejects_more_instances_than_a_plan_takes() {
        let ids: Vec<String> = (0..=MAX_INSTANCES).map(|n| format!("i-{n:017x}")).collect();
        let mut s = spec(ARN, &[]);
        s.instances = ids.clone();
        let err = validate(&s).expect_err("one too many");
        assert!(
            err.to_string()
                .contains("1001 instances, more than the 1000 one plan takes"),
            "{err}"
        );
        s.instances.pop();
        assert!(validate(&s).is_ok());
    }

    #[test]
    fn a_prometheus_gate_needs_valid_regexes_matchers_and_an_http_url() {
        let mut gated = spec(ARN, &["i-0123456789abcdef0"]);
        gated.gates = Some(crate::api::Gates {
            prometheus: Some(crate::api::PrometheusGate {
                url: Some("http://prometheus:9090".to_owned()),
                alert_names: vec!["High.*".to_owned()],
                matchers: vec!["severity=critical".to_owned()],
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(validate(&gated), Ok(()));
        if let Some(gate) = gated.gates.as_mut().and_then(|g| g.prometheus.as_mut()) {
            gate.url = Some("prometheus:9090".to_owned());
            gate.matchers.push("severity".to_owned());
        }
        let problems = validate(&gated).unwrap_err().problems;
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with("spec.gates.prometheus.matchers: label matcher \"severity\" has no operator"),
            "{problems:?}"
        );
        assert_eq!(
            problems[1],
            "spec.gates.prometheus.url \"prometheus:9090\" is not an http:// or https:// URL"
        );
    }
}
