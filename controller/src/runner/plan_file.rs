//! Reading MaintenancePlan manifests from a YAML file (one or more documents), the same
//! files one would `kubectl apply`.

use std::path::Path;

use crate::api::MaintenancePlan;
use crate::api::validate::{InvalidSpec, validate};

/// A plan file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML is not a MaintenancePlan.
    #[error("{path} is not a MaintenancePlan manifest: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Why (boxed: the parser's error is large and this is the cold path).
        source: Box<serde_saphyr::Error>,
    },
    /// A document is some other kind of object.
    #[error("{path}: document {index} is a {kind}, not a pitstop.dev/v1alpha1 MaintenancePlan")]
    WrongKind {
        /// The file.
        path: String,
        /// Document number, from 1.
        index: usize,
        /// What it is.
        kind: String,
    },
    /// The file holds no plan.
    #[error("{path} holds no MaintenancePlan")]
    Empty {
        /// The file.
        path: String,
    },
    /// A plan has no `metadata.name`.
    #[error("{path}: document {index} has no metadata.name")]
    Unnamed {
        /// The file.
        path: String,
        /// Document number, from 1.
        index: usize,
    },
    /// Two plans share a name.
    #[error("{path}: two plans are named {name}")]
    DuplicateName {
        /// The file.
        path: String,
        /// The name.
        name: String,
    },
    /// A spec is invalid.
    #[error("{path}: plan {name}: {source}")]
    Invalid {
        /// The file.
        path: String,
        /// The plan.
        name: String,
        /// What is wrong.
        source: InvalidSpec,
    },
}

/// Reads and validates every plan in `path`. Nothing runs unless every plan is valid.
pub fn load_plans(path: &Path) -> Result<Vec<MaintenancePlan>, PlanFileError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| PlanFileError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_plans(&text, &shown)
}

/// Parses and validates plans from YAML text (`origin` names it in errors).
pub fn parse_plans(text: &str, origin: &str) -> Result<Vec<MaintenancePlan>, PlanFileError> {
    let path = origin.to_owned();
    // Check the kind first, so a Deployment manifest gets "wrong kind", not "missing spec field".
    let headers: Vec<serde_json::Value> = serde_saphyr::from_multiple(text).map_err(|source| PlanFileError::Parse {
        path: path.clone(),
        source: Box::new(source),
    })?;
    for (index, header) in headers.iter().enumerate() {
        let api_version = header.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
        let kind = header.get("kind").and_then(|v| v.as_str()).unwrap_or("");
        if kind != "MaintenancePlan" || api_version != "pitstop.dev/v1alpha1" {
            return Err(PlanFileError::WrongKind {
                path,
                index: index + 1,
                kind: format!("{api_version} {kind}").trim().to_owned(),
            });
        }
    }
    let plans: Vec<MaintenancePlan> = serde_saphyr::from_multiple(text).map_err(|source| PlanFileError::Parse {
        path: path.clone(),
        source: Box::new(source),
    })?;
    if plans.is_empty() {
        return Err(PlanFileError::Empty { path });
    }
    let mut names = std::collections::HashSet::new();
    for (index, plan) in plans.iter().enumerate() {
        let Some(name) = plan.metadata.name.clone() else {
            return Err(PlanFileError::Unnamed { path, index: index + 1 });
        };
        if !names.insert(name.clone()) {
            return Err(PlanFileError::DuplicateName { path, name });
        }
        validate(&plan.spec).map_err(|source| PlanFileError::Invalid {
            path: path.clone(),
            name,
            source,
        })?;
    }
    Ok(plans)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: pitstop.dev/v1alpha1
kind: MaintenancePlan
metadata:
  name: web-reboot
spec:
  targetGroupArn: arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef
  instances: [i-0123456789abcdef0, i-0123456789abcdef1]
"#;

    #[test]
    fn reads_a_plan_with_defaults() {
        let plans = parse_plans(GOOD, "plan.yaml").expect("valid");
        assert_eq!(plans.len(), 1);
        assert!(plans[0].spec.preflight.require_healthy_target_group);
        assert_eq!(plans[0].spec.instances.len(), 2);
    }

    #[test]
    fn reads_several_documents() {
        let two = format!("{GOOD}---{}", GOOD.replace("web-reboot", "api-reboot"));
        assert_eq!(parse_plans(&two, "plans.yaml").expect("valid").len(), 2);
        let same = format!("{GOOD}---{GOOD}");
        assert!(matches!(
            parse_plans(&same, "p").unwrap_err(),
            PlanFileError::DuplicateName { .. }
        ));
    }

    #[test]
    fn clear_errors_for_bad_files() {
        let wrong = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n";
        let err = parse_plans(wrong, "d.yaml").unwrap_err();
        assert!(err.to_string().contains("apps/v1 Deployment"), "{err}");
        let bad = GOOD.replace("i-0123456789abcdef1", "i-nope");
        let err = parse_plans(&bad, "p.yaml").unwrap_err();
        assert!(err.to_string().contains("i-nope"), "{err}");
        let broken = GOOD.replace("instances:", "instances: {");
        assert!(matches!(
            parse_plans(&broken, "p").unwrap_err(),
            PlanFileError::Parse { .. }
        ));
        let missing = GOOD.replace("  instances: [i-0123456789abcdef0, i-0123456789abcdef1]\n", "");
        let err = parse_plans(&missing, "p.yaml").unwrap_err();
        assert!(err.to_string().contains("instances"), "{err}");
    }
}
