//! Where the engine's status writes go in a cluster: a server-side apply of the whole
//! status to the plan's `/status` subresource, conditional on the version of the plan the
//! round decided from (see [`super::status_cache`]).

use kube::api::{Api, Patch, PatchParams};
use kube::core::Resource;
use serde::Serialize;

use crate::api::{MaintenancePlan, MaintenancePlanStatus};
use crate::engine::StatusStore;

use super::context::MANAGER;
use super::status_cache::StatusCache;

/// The body of the apply: the envelope the apiserver needs plus the typed status. Typed so
/// that what is written is exactly what the CRD's Rust types say, nothing hand-built.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusApply<'a> {
    api_version: &'a str,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Precondition<'a>>,
    status: &'a MaintenancePlanStatus,
}

/// `metadata.resourceVersion` in an apply: the apiserver refuses the write with 409
/// Conflict unless the plan is still at that version.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Precondition<'a> {
    resource_version: &'a str,
}

/// Writes one plan's status by server-side apply, with the fixed field manager `pitstop`
/// and `force`: the controller owns the whole status, and a field it leaves out (say a
/// cleared `currentInstance`) is removed rather than kept from an older write. Each write is
/// conditional on the plan's version: the one the round's status belongs to, then the one
/// the previous write of the round produced.
pub struct KubeStatusStore<'a> {
    api: Api<MaintenancePlan>,
    name: String,
    uid: String,
    read_version: Option<String>,
    version: Option<String>,
    cache: &'a StatusCache,
}

impl<'a> KubeStatusStore<'a> {
    /// A store for the plan `name` in `api`'s namespace, read at `read_version`, whose round
    /// decides from the status the plan has at `version` (see [`StatusCache::freshest`]);
    /// each successful write is remembered in `cache`.
    pub fn new(
        api: Api<MaintenancePlan>,
        name: &str,
        uid: &str,
        read_version: Option<&str>,
        version: Option<&str>,
        cache: &'a StatusCache,
    ) -> Self {
        Self {
            api,
            name: name.to_owned(),
            uid: uid.to_owned(),
            read_version: read_version.map(str::to_owned),
            version: version.map(str::to_owned),
            cache,
        }
    }
}

/// The patch parameters of every status write.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

#[async_trait::async_trait]
impl StatusStore for KubeStatusStore<'_> {
    type Error = kube::Error;

    async fn save(&mut self, status: &MaintenancePlanStatus) -> Result<(), kube::Error> {
        let api_version = MaintenancePlan::api_version(&());
        let kind = MaintenancePlan::kind(&());
        let body = StatusApply {
            api_version: &api_version,
            kind: &kind,
            metadata: self
                .version
                .as_deref()
                .map(|resource_version| Precondition { resource_version }),
            status,
        };
        let written = self
            .api
            .patch_status(&self.name, &apply_params(), &Patch::Apply(&body))
            .await?;
        let written_version = written.metadata.resource_version;
        self.cache.wrote(
            &self.uid,
            self.read_version.as_deref(),
            status,
            written_version.as_deref(),
        );
        // A test double may answer without a version: the next write is then unconditional.
        self.version = written_version;
        tracing::debug!(phase = ?status.phase, progress = ?status.progress, "status written");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PlanPhase;

    #[test]
    fn the_envelope_is_the_typed_status_and_nothing_else() {
        let status = MaintenancePlanStatus {
            phase: PlanPhase::Running,
            observed_generation: Some(3),
            ..MaintenancePlanStatus::default()
        };
        let body = StatusApply {
            api_version: "pitstop.dev/v1alpha1",
            kind: "MaintenancePlan",
            metadata: None,
            status: &status,
        };
        let json = serde_json::to_value(&body).expect("serializable");
        let keys: Vec<&str> = json
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(keys, ["apiVersion", "kind", "status"]);
        assert_eq!(json["status"]["phase"], "Running");
        assert_eq!(json["status"]["observedGeneration"], 3);
        let conditional = StatusApply {
            metadata: Some(Precondition { resource_version: "42" }),
            ..body
        };
        let json = serde_json::to_value(&conditional).expect("serializable");
        assert_eq!(json["metadata"], serde_json::json!({ "resourceVersion": "42" }));
        let params = apply_params();
        assert_eq!(params.field_manager.as_deref(), Some("pitstop"));
        assert!(params.force);
    }
}
