//! The global stop: one switch that holds every plan before its next instance.
//!
//! An annotation on a ConfigMap in the controller's namespace (the chart's `<release>-stop`,
//! named by `--stop-configmap`): `kubectl annotate configmap pitstop-stop -n pitstop-system
//! pitstop.dev/paused="incident 4711"`. While it is there, every plan finishes the instance it
//! has out and puts it back, then waits (phase `Suspended`, reason `GlobalStop`, the value in
//! its message); removing it lets them all go on. A ConfigMap rather than a flag, so that it
//! takes effect at once without a restart, and is granted by RBAC to whoever may stop
//! maintenance (on-call) without also granting them the plans.

use std::collections::BTreeMap;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;

use super::change_ticks::coalesced_ticks;

/// The annotation that stops every plan; its value says why.
pub const ANNOTATION_PAUSED: &str = "pitstop.dev/paused";

/// The stop ConfigMap as last seen through its watch (or none: no global stop set up).
#[derive(Clone, Default)]
pub struct GlobalStop {
    watched: Option<(Store<ConfigMap>, ObjectRef<ConfigMap>)>,
}

impl GlobalStop {
    /// Reads the ConfigMap `name` in `namespace` from `store` (fed by a reflector).
    pub fn new(store: Store<ConfigMap>, namespace: &str, name: &str) -> Self {
        Self {
            watched: Some((store, ObjectRef::new(name).within(namespace))),
        }
    }

    /// Why every plan is held now, as the plans' status says it; None when they may go on.
    pub fn reason(&self) -> Option<String> {
        let (store, key) = self.watched.as_ref()?;
        let config_map = store.get(key)?;
        let annotations = config_map.metadata.annotations.as_ref();
        held_by(annotations?, key.namespace.as_deref().unwrap_or_default(), &key.name)
    }
}

/// The status sentence for a stop ConfigMap with these annotations, if they stop the plans:
/// the annotation is there with any value but `false` (an empty value still stops, for lack
/// of a reason).
fn held_by(annotations: &BTreeMap<String, String>, namespace: &str, name: &str) -> Option<String> {
    let value = annotations.get(ANNOTATION_PAUSED)?.trim();
    if value.eq_ignore_ascii_case("false") {
        return None;
    }
    let why = if value.is_empty() {
        String::new()
    } else {
        format!(": {value}")
    };
    Some(format!(
        "held by the global stop (ConfigMap {namespace}/{name}{why}); remove its {ANNOTATION_PAUSED} annotation to go on"
    ))
}

/// Watches the stop ConfigMap `name` in `namespace`, waits for its first list, and returns
/// the [`GlobalStop`] reading it with a stream that ticks whenever it changes (so that every
/// plan is looked at again at once).
pub async fn watch_global_stop(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<(GlobalStop, impl futures::Stream<Item = ()> + Send + 'static)> {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let by_name = format!("metadata.name={name}");
    config_maps
        .list_metadata(&ListParams::default().fields(&by_name))
        .await
        .with_context(|| format!("listing the stop ConfigMap {namespace}/{name} (may this account watch it?)"))?;
    let (store, writer) = reflector::store();
    let changes = watcher(config_maps, watcher::Config::default().fields(&by_name))
        .default_backoff()
        .reflect(writer)
        .touched_objects()
        .map(|_| ())
        .boxed();
    let ticks = coalesced_ticks(changes, shutdown);
    store
        .wait_until_ready()
        .await
        .context("the stop ConfigMap watch ended before its first list")?;
    let stop = GlobalStop::new(store, namespace, name);
    tracing::info!(configmap = %format!("{namespace}/{name}"), held = stop.reason().is_some(), "watching the global stop");
    Ok((stop, ticks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotated(value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(ANNOTATION_PAUSED.to_owned(), value.to_owned())])
    }

    #[test]
    fn the_annotation_stops_with_its_value_as_the_reason_unless_false() {
        assert_eq!(
            held_by(&annotated("incident 4711"), "pitstop-system", "pitstop-stop").as_deref(),
            Some(
                "held by the global stop (ConfigMap pitstop-system/pitstop-stop: incident 4711); remove its \
                 pitstop.dev/paused annotation to go on"
            )
        );
        assert!(held_by(&annotated(""), "ns", "stop").is_some_and(|m| m.contains("(ConfigMap ns/stop)")));
        assert_eq!(held_by(&annotated("false"), "ns", "stop"), None);
        assert_eq!(held_by(&BTreeMap::new(), "ns", "stop"), None);
    }

    #[test]
    fn without_a_watched_config_map_nothing_is_held() {
        assert_eq!(GlobalStop::default().reason(), None);
        let (store, mut writer) = reflector::store::<ConfigMap>();
        let stop = GlobalStop::new(store, "ns", "stop");
        assert_eq!(stop.reason(), None, "not created yet");
        let mut config_map = ConfigMap::default();
        config_map.metadata.name = Some("stop".to_owned());
        config_map.metadata.namespace = Some("ns".to_owned());
        config_map.metadata.annotations = Some(annotated("drill"));
        writer.apply_watcher_event(&watcher::Event::Apply(config_map));
        assert!(stop.reason().is_some_and(|m| m.contains("drill")));
    }
}
