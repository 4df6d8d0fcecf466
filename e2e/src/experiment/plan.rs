//! The plan `pitstop run` is given in the experiments.

/// A MaintenancePlan manifest for the sandbox's fleet: the default graceful reboot of every
/// instance, in order. `extra_spec` adds spec fields (two-space indented YAML lines).
///
/// The plan says `autoScaling.mode: Ignore` unless `extra_spec` sets `autoScaling`: every
/// sandbox instance belongs to its Auto Scaling group, and the experiments measure pitstop's
/// own target-group work (its DeregisterTargets, the faults injected into it). The modes that
/// tell the group are compared in `tests/auto_scaling_modes.rs`.
pub fn plan_yaml(
    name: &str,
    target_group_arn: &str,
    instances: &[String],
    healthy_seconds: u32,
    extra_spec: &str,
) -> String {
    fleet_plan_yaml(
        name,
        &[target_group_arn.to_owned()],
        instances,
        healthy_seconds,
        extra_spec,
    )
}

/// The spec lines of `autoScaling.mode: Ignore` (see [`plan_yaml`]).
pub const IGNORE_AUTO_SCALING: &str = "  autoScaling:\n    mode: Ignore\n";

/// [`plan_yaml`] for a fleet that serves through every one of `target_group_arns`: one group is
/// written as `targetGroupArn`, several as `targetGroupArns` (each instance leaves all of them).
pub fn fleet_plan_yaml(
    name: &str,
    target_group_arns: &[String],
    instances: &[String],
    healthy_seconds: u32,
    extra_spec: &str,
) -> String {
    let groups = match target_group_arns {
        [one] => format!("  targetGroupArn: {one}\n"),
        several => {
            let mut lines = String::from("  targetGroupArns:\n");
            for arn in several {
                lines.push_str(&format!("    - {arn}\n"));
            }
            lines
        }
    };
    let mut yaml = format!(
        "apiVersion: pitstop.dev/v1alpha1\nkind: MaintenancePlan\nmetadata:\n  name: {name}\nspec:\n{groups}  instances:\n"
    );
    for id in instances {
        yaml.push_str(&format!("    - {id}\n"));
    }
    yaml.push_str(&format!("  timeouts:\n    healthySeconds: {healthy_seconds}\n"));
    if !extra_spec.contains("autoScaling:") {
        yaml.push_str(IGNORE_AUTO_SCALING);
    }
    yaml.push_str(extra_spec);
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_group_is_named_alone_and_several_as_a_list() {
        let ids = ["i-0123456789abcdef0".to_owned()];
        let one = plan_yaml("p", "arn:tg/a", &ids, 60, "");
        assert!(one.contains("  targetGroupArn: arn:tg/a\n  instances:\n"), "{one}");
        let two = fleet_plan_yaml("p", &["arn:tg/a".to_owned(), "arn:tg/b".to_owned()], &ids, 60, "");
        assert!(
            two.contains("  targetGroupArns:\n    - arn:tg/a\n    - arn:tg/b\n  instances:\n"),
            "{two}"
        );
        let spec: serde_json::Value = serde_saphyr::from_str(&two).expect("YAML");
        assert_eq!(spec["spec"]["targetGroupArns"][1], "arn:tg/b");
    }
}
