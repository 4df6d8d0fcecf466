//! The checked-in CRD is what the code generates, documents every field, and rejects the
//! bad input a schema can describe.

use pitstop::api::{MaintenancePlan, MaintenancePolicy};
use pitstop::crdgen::{crd_yaml, policy_crd_yaml};
use serde_json::{Value, json};

fn workspace_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn checked_in_crd_matches_the_code() {
    assert_checked_in(&crd_yaml().expect("CRD renders"), "crds/maintenanceplan.yaml");
}

#[test]
fn checked_in_policy_crd_matches_the_code() {
    assert_checked_in(&policy_crd_yaml().expect("CRD renders"), "crds/maintenancepolicy.yaml");
}

/// Every description in the YAML as `kubectl explain` prints it: no line broken mid-paragraph
/// (reflowing it again changes nothing), and at least one that was broken in the source.
#[test]
fn descriptions_read_as_paragraphs_in_kubectl_explain() {
    fn descriptions<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    match child {
                        Value::String(text) if key == "description" => found.push(text),
                        other => descriptions(other, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| descriptions(item, found)),
            _ => {}
        }
    }
    for yaml in [crd_yaml(), policy_crd_yaml()] {
        let crd: Value = serde_saphyr::from_str(&yaml.expect("CRD renders")).expect("CRD YAML");
        let mut found = Vec::new();
        descriptions(&crd, &mut found);
        assert!(found.len() > 20, "{} descriptions", found.len());
        for text in found {
            assert_eq!(pitstop::schema_text::reflow(text), text, "a line broken mid-paragraph");
        }
    }
    // The source does break them: the doc comment of `instances` spans several lines.
    let raw =
        serde_json::to_string(&schema()["properties"]["spec"]["properties"]["instances"]["description"]).expect("JSON");
    assert!(raw.contains("\\n"), "{raw}");
}

fn assert_checked_in(generated: &str, file: &str) {
    let path = workspace_file(file);
    let checked_in = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let first_difference = generated
        .lines()
        .zip(checked_in.lines())
        .position(|(a, b)| a != b)
        .map(|line| format!("first difference at line {}", line + 1))
        .unwrap_or_else(|| format!("{} vs {} lines", generated.lines().count(), checked_in.lines().count()));
    assert!(
        generated == checked_in,
        "{file} is stale ({first_difference}): run `make crds` and commit the result"
    );
}

fn schema() -> Value {
    let crd = serde_json::to_value(<MaintenancePlan as kube::CustomResourceExt>::crd()).expect("CRD as JSON");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn policy_schema() -> Value {
    let crd = serde_json::to_value(<MaintenancePolicy as kube::CustomResourceExt>::crd()).expect("CRD as JSON");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn undocumented(path: &str, schema: &Value, missing: &mut Vec<String>) {
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            let here = format!("{path}.{name}");
            let described = property
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| !d.trim().is_empty());
            // metadata is the apiserver's own.
            if !described && here != ".metadata" {
                missing.push(here.clone());
            }
            undocumented(&here, property, missing);
        }
    }
    if let Some(items) = schema.get("items") {
        undocumented(&format!("{path}[]"), items, missing);
    }
}

#[test]
fn every_field_is_documented_for_kubectl_explain() {
    let mut missing = Vec::new();
    undocumented("", &schema(), &mut missing);
    assert!(missing.is_empty(), "fields without a description: {missing:?}");
}

#[test]
fn every_policy_field_is_documented_for_kubectl_explain() {
    let mut missing = Vec::new();
    undocumented("", &policy_schema(), &mut missing);
    assert!(missing.is_empty(), "fields without a description: {missing:?}");
}

#[test]
fn the_policy_is_cluster_scoped_and_its_schema_rejects_what_it_can_describe() {
    let crd = serde_json::to_value(<MaintenancePolicy as kube::CustomResourceExt>::crd()).expect("CRD as JSON");
    assert_eq!(
        crd["spec"]["scope"], "Cluster",
        "tenants with namespace rights must not own policies"
    );
    assert_eq!(crd["metadata"]["name"], "maintenancepolicies.pitstop.dev");
    let validator = jsonschema::validator_for(&policy_schema()).expect("the CRD schema compiles as JSON Schema");
    let policy = |spec: Value| json!({"apiVersion": "pitstop.dev/v1alpha1", "kind": "MaintenancePolicy", "metadata": {"name": "p"}, "spec": spec});
    let good = policy(json!({
        "namespaces": {"names": ["team-a"], "selector": {"matchLabels": {"team": "a"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["prod"]}]}},
        "targetGroups": ["arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/team-a-*/*"],
        "accounts": ["123456789012"],
        "documents": [{"name": "AWS-RunPatchBaseline", "version": "3", "parameters": ["Operation"]}]
    }));
    assert!(
        validator.is_valid(&good),
        "{:?}",
        validator.iter_errors(&good).map(|e| e.to_string()).collect::<Vec<_>>()
    );
    let bad = [
        (
            "no target group",
            json!({"namespaces": {"names": ["a"]}, "targetGroups": []}),
        ),
        ("no namespaces", json!({"targetGroups": ["*"]})),
        (
            "bad account",
            json!({"namespaces": {"names": ["a"]}, "targetGroups": ["*"], "accounts": ["12"]}),
        ),
        (
            "bad operator",
            json!({"namespaces": {"selector": {"matchExpressions": [{"key": "a", "operator": "Like"}]}}, "targetGroups": ["*"]}),
        ),
    ];
    for (what, spec) in bad {
        assert!(
            !validator.is_valid(&policy(spec)),
            "{what} should be rejected by the schema"
        );
    }
}

#[test]
fn printer_columns_and_list_semantics() {
    let crd = serde_json::to_value(<MaintenancePlan as kube::CustomResourceExt>::crd()).expect("CRD as JSON");
    let version = &crd["spec"]["versions"][0];
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(columns, ["Phase", "Progress", "Current", "Age"]);
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["mp"]));
    assert!(version["subresources"]["status"].is_object());
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(
        spec["properties"]["instances"]["x-kubernetes-list-type"], "set",
        "the apiserver rejects duplicates"
    );
    // Exactly one of targetGroupArn and targetGroupArns, which JSON Schema's `required`
    // cannot say: a CEL rule does (checked on a real apiserver by the kube e2e).
    let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"];
    // Exactly one of instances and selector likewise: neither is required by the schema.
    assert_eq!(spec["required"], Value::Null);
    let rules: Vec<&str> = spec["x-kubernetes-validations"]
        .as_array()
        .expect("spec-level CEL rules")
        .iter()
        .filter_map(|r| r["rule"].as_str())
        .collect();
    assert!(
        rules.contains(&"has(self.targetGroupArn) != has(self.targetGroupArns)"),
        "{rules:?}"
    );
    assert!(
        rules.contains(&"has(self.instances) != has(self.selector)"),
        "{rules:?}"
    );
    let selector_rules = &spec["properties"]["selector"]["x-kubernetes-validations"];
    assert_eq!(
        selector_rules[0]["rule"],
        "((has(self.targetGroupMembers) && self.targetGroupMembers) ? 1 : 0) + ((has(self.tags) && size(self.tags) > 0) ? 1 : 0) + (has(self.autoScalingGroupName) ? 1 : 0) == 1",
        "a selector selects exactly one way"
    );
    assert_eq!(
        rules.iter().filter(|r| r.contains("oldSelf")).count(),
        2,
        "both target group fields are immutable, and neither can be swapped for the other: {rules:?}"
    );
    assert_eq!(spec["properties"]["targetGroupArns"]["x-kubernetes-list-type"], "set");
    assert_eq!(
        status["properties"]["instances"]["items"]["properties"]["targetGroups"]["x-kubernetes-list-map-keys"],
        json!(["targetGroupArn"])
    );
    assert_eq!(
        status["properties"]["conditions"]["x-kubernetes-list-map-keys"],
        json!(["type"])
    );
}

fn plan(spec: Value) -> Value {
    json!({"apiVersion": "pitstop.dev/v1alpha1", "kind": "MaintenancePlan", "metadata": {"name": "p"}, "spec": spec})
}

#[test]
fn schema_rejects_bad_input_it_can_describe() {
    let validator = jsonschema::validator_for(&schema()).expect("the CRD schema compiles as JSON Schema");
    let arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";
    let tls = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-tls/fedcba9876543210";
    for good in [
        plan(json!({"targetGroupArn": arn, "instances": ["i-0123456789abcdef0"]})),
        plan(json!({"targetGroupArns": [arn, tls], "instances": ["i-0123456789abcdef0"]})),
    ] {
        assert!(
            validator.is_valid(&good),
            "{:?}",
            validator.iter_errors(&good).map(|e| e.to_string()).collect::<Vec<_>>()
        );
    }
    let eleven: Vec<String> = (0..11).map(|i| format!("{}{i:x}", &arn[..arn.len() - 1])).collect();
    let bad = [
        (
            "bad ARN",
            json!({"targetGroupArn": "arn:aws:ec2:eu-west-1:1:x", "instances": ["i-0123456789abcdef0"]}),
        ),
        ("empty list", json!({"targetGroupArn": arn, "instances": []})),
        ("bad instance", json!({"targetGroupArn": arn, "instances": ["i-12"]})),
        (
            "a selector that is not an object",
            json!({"targetGroupArn": arn, "selector": true}),
        ),
        (
            "empty targetGroupArns",
            json!({"targetGroupArns": [], "instances": ["i-01234567"]}),
        ),
        (
            "11 target groups",
            json!({"targetGroupArns": eleven, "instances": ["i-01234567"]}),
        ),
        (
            "a bad ARN among the target groups",
            json!({"targetGroupArns": [arn, "arn:aws:ec2:eu-west-1:1:x"], "instances": ["i-01234567"]}),
        ),
        (
            "bad onFailure",
            json!({"targetGroupArn": arn, "instances": ["i-01234567"], "onFailure": "Ignore"}),
        ),
        (
            "timeout too small",
            json!({"targetGroupArn": arn, "instances": ["i-01234567"], "maintenance": {"timeoutSeconds": 1}}),
        ),
    ];
    for (what, spec) in bad {
        assert!(
            !validator.is_valid(&plan(spec)),
            "{what} should be rejected by the schema"
        );
    }
}
