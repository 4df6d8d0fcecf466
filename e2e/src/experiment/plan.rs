//! The plan `pitstop run` is given in the experiments.

/// A MaintenancePlan manifest for the sandbox's fleet: the default graceful reboot of every
/// instance, in order. `extra_spec` adds spec fields (two-space indented YAML lines).
pub fn plan_yaml(
    name: &str,
    target_group_arn: &str,
    instances: &[String],
    healthy_seconds: u32,
    extra_spec: &str,
) -> String {
    let mut yaml = format!(
        "apiVersion: pitstop.dev/v1alpha1\nkind: MaintenancePlan\nmetadata:\n  name: {name}\nspec:\n  targetGroupArn: {target_group_arn}\n  instances:\n"
    );
    for id in instances {
        yaml.push_str(&format!("    - {id}\n"));
    }
    yaml.push_str(&format!("  timeouts:\n    healthySeconds: {healthy_seconds}\n"));
    yaml.push_str(extra_spec);
    yaml
}
