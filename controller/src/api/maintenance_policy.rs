//! The `MaintenancePolicy` custom resource: what the plans of some namespaces may ask the
//! controller to do with its AWS credentials. Cluster-scoped and owned by the platform team,
//! so that a tenant who may create MaintenancePlans in a namespace cannot widen it.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A MaintenancePolicy binds namespaces to the target groups, instances (by tag), regions,
/// accounts and SSM documents their MaintenancePlans may use. A plan runs only if one policy that selects its
/// namespace allows all of it; a namespace no policy selects gets the controller's default
/// (the built-in graceful reboot and `AWS-RunPatchBaseline`, no free-form commands, unless
/// the controller runs with `--default-policy unrestricted`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "pitstop.dev",
    version = "v1alpha1",
    kind = "MaintenancePolicy",
    plural = "maintenancepolicies",
    shortname = "mpol",
    doc = "A MaintenancePolicy: which target groups, regions, accounts and SSM documents the MaintenancePlans of some namespaces may use. Cluster-scoped; tenants cannot edit it.",
    printcolumn = r#"{"name":"Namespaces","type":"string","jsonPath":".spec.namespaces.names","description":"Namespaces selected by name"}"#,
    printcolumn = r#"{"name":"Freeform","type":"boolean","jsonPath":".spec.allowFreeformCommands","description":"Whether free-form commands are allowed"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MaintenancePolicySpec {
    /// The namespaces this policy applies to: those named, and those whose labels match the
    /// selector. A policy that selects no namespace applies to none.
    pub namespaces: NamespaceSelection,

    /// Target group ARNs the plans may name, as glob patterns (`*` any run of characters,
    /// `?` one character) over the whole ARN, so that they also pin the partition, region
    /// and account, e.g. `arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/team-a-*/*`.
    #[schemars(length(min = 1))]
    pub target_groups: Vec<String>,

    /// ELBv2 tags every one of a plan's target groups must carry, each key with exactly
    /// this value, besides matching `targetGroups` (read with DescribeTags before the plan
    /// takes an instance out; a group that lacks one refuses the plan with `NotAllowed`).
    /// Lets the owner of the AWS account, not of the cluster, decide which groups pitstop
    /// may touch, e.g. `pitstop.dev/managed: "true"`. Empty: no tag is needed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub target_group_tags: BTreeMap<String, String>,

    /// EC2 tags every instance a plan maintains must carry, each key with exactly this value
    /// (read with DescribeInstances before the plan takes an instance out; an instance that
    /// lacks one refuses the plan with `NotAllowed` before any of its instances is touched).
    /// Also bounds what a `selector` may pick up. Empty: any instance of the allowed target
    /// groups.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instance_tags: BTreeMap<String, String>,

    /// AWS regions the plans may work in (the plan's region, or its target group's). Empty:
    /// any region the target group patterns allow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,

    /// AWS account IDs (12 digits) the target groups may belong to. Empty: any account the
    /// target group patterns allow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^[0-9]{12}$")))]
    pub accounts: Vec<String>,

    /// Whether plans may omit `maintenance` and get pitstop's built-in graceful reboot.
    /// Defaults to true.
    #[serde(default = "default_true")]
    pub allow_graceful_reboot: bool,

    /// SSM documents the plans may run as `maintenance` or `verify`. Empty: none (only the
    /// built-in graceful reboot, if allowed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub documents: Vec<AllowedDocument>,

    /// Whether plans may pass free-form script parameters (`commands`, as
    /// `AWS-RunShellScript` and `AWS-RunPowerShellScript` take) to an allowed document:
    /// such a plan runs any code, as root, on its instances. Defaults to false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_freeform_commands: bool,
}

/// Which namespaces a policy applies to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelection {
    /// Namespaces selected by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,

    /// Namespaces selected by their labels (a standard label selector: `matchLabels` and
    /// `matchExpressions`). Only the platform team should be able to label namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "label_selector_schema")]
    pub selector: Option<LabelSelector>,
}

/// An SSM document the plans may run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowedDocument {
    /// The document's name (or ARN), exactly as plans name it in `documentName`.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,

    /// Pins the document version: plans must name exactly this `documentVersion` (a number;
    /// `$LATEST` and `$DEFAULT` follow whoever edits the document next). Unset: any version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,

    /// Names of the parameters plans may pass to this document (free-form `commands` also
    /// needs `allowFreeformCommands`). Unset: any parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Vec<String>>,
}

fn default_true() -> bool {
    true
}

/// The OpenAPI schema of a `metav1.LabelSelector`, written out because k8s-openapi is built
/// without its schemars feature.
fn label_selector_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Namespaces selected by their labels (a standard label selector: `matchLabels` and `matchExpressions`). Only the platform team should be able to label namespaces.",
        "type": "object",
        "properties": {
            "matchLabels": {
                "description": "Labels a namespace must carry, each with exactly this value.",
                "type": "object",
                "additionalProperties": { "type": "string" }
            },
            "matchExpressions": {
                "description": "Requirements on a namespace's labels, all of which must hold.",
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": { "description": "The label key.", "type": "string" },
                        "operator": {
                            "description": "In, NotIn, Exists or DoesNotExist.",
                            "type": "string",
                            "enum": ["In", "NotIn", "Exists", "DoesNotExist"]
                        },
                        "values": {
                            "description": "Values for In and NotIn; empty for Exists and DoesNotExist.",
                            "type": "array",
                            "items": { "type": "string" }
                        }
                    }
                }
            }
        }
    })
}
