//! Publishes the public JWK Set as ConfigMap `nlu-jwks` (key `jwks.json`) in every namespace
//! with an NluService that has auth on; the server pods mount it and re-read it when it changes.
//! The ConfigMap is owned by those NluServices, so it goes away with the last of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use nlu_crds::nlu_service::AuthMode;
use nlu_crds::NluService;
use tokio::sync::watch;

use super::signing_key::KeyRing;

/// Name of the ConfigMap in each namespace.
pub const JWKS_CONFIGMAP: &str = "nlu-jwks";
/// Key of the JWK Set document in it.
pub const JWKS_KEY: &str = "jwks.json";

/// How often the NluService cache is checked for namespaces that gained or lost auth.
const POLL: Duration = Duration::from_secs(5);

/// Whether the service checks tenant tokens (auth unset means `jwt`).
pub fn auth_on(svc: &NluService) -> bool {
    svc.spec
        .auth
        .as_ref()
        .and_then(|a| a.mode)
        .unwrap_or_default()
        == AuthMode::Jwt
}

/// The namespaces of the live services that `wanted` picks, each with those services as
/// owner references (none the controller), sorted by name.
pub fn owners_by_namespace(
    services: &[Arc<NluService>],
    wanted: impl Fn(&NluService) -> bool,
) -> BTreeMap<String, Vec<OwnerReference>> {
    let mut by_ns: BTreeMap<String, Vec<OwnerReference>> = BTreeMap::new();
    for svc in services
        .iter()
        .filter(|s| wanted(s) && s.meta().deletion_timestamp.is_none())
    {
        if let (Some(ns), Some(owner)) = (svc.namespace(), svc.owner_ref(&())) {
            by_ns.entry(ns).or_default().push(owner);
        }
    }
    by_ns
        .values_mut()
        .for_each(|owners| owners.sort_by(|a, b| a.name.cmp(&b.name)));
    by_ns
}

/// One ConfigMap per namespace with auth-on services, owned by all of them.
pub fn desired(services: &[Arc<NluService>], jwks_json: &str) -> BTreeMap<String, ConfigMap> {
    owners_by_namespace(services, auth_on)
        .into_iter()
        .map(|(ns, owners)| {
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(JWKS_CONFIGMAP.into()),
                    namespace: Some(ns.clone()),
                    owner_references: Some(owners),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_owned(),
                        crate::context::OPERATOR_NAME.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([(
                    JWKS_KEY.to_owned(),
                    jwks_json.to_owned(),
                )])),
                ..ConfigMap::default()
            };
            (ns, cm)
        })
        .collect()
}

/// Keeps the ConfigMaps current: applies a namespace's ConfigMap when its content or owners
/// differ from what was last applied there (and all of them again after a failure).
pub async fn run(
    client: Client,
    services: Store<NluService>,
    mut ring: watch::Receiver<Arc<KeyRing>>,
) {
    let mut applied: HashMap<String, ConfigMap> = HashMap::new();
    loop {
        let jwks = ring.borrow_and_update().jwks_json();
        for (ns, cm) in desired(&services.state(), &jwks) {
            if applied.get(&ns) == Some(&cm) {
                continue;
            }
            match crate::apply::apply(&client, &cm).await {
                Ok(_) => {
                    tracing::info!(namespace = %ns, "published the JWK Set");
                    applied.insert(ns, cm);
                }
                Err(e) => {
                    tracing::warn!(namespace = %ns, error = %e, "could not publish the JWK Set; retrying")
                }
            }
        }
        tokio::select! {
            changed = ring.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, auth: Option<&str>) -> Arc<NluService> {
        let mut spec =
            serde_json::json!({"model": {"task": "embedding", "source": {"url": "https://m"}}});
        if let Some(mode) = auth {
            spec["auth"] = serde_json::json!({"mode": mode});
        }
        let mut s = NluService::new(name, serde_json::from_value(spec).unwrap());
        s.metadata.namespace = Some(ns.into());
        s.metadata.uid = Some(format!("uid-{name}"));
        Arc::new(s)
    }

    #[test]
    fn one_configmap_per_namespace_with_auth_on_owned_by_its_services() {
        let services = [
            svc("a", "gte", None),
            svc("a", "uninlu", Some("jwt")),
            svc("b", "open", Some("none")),
            svc("c", "x", Some("jwt")),
        ];
        let out = desired(&services, "{\"keys\":[]}");
        assert_eq!(out.keys().collect::<Vec<_>>(), ["a", "c"]);
        let a = &out["a"];
        assert_eq!(a.metadata.name.as_deref(), Some(JWKS_CONFIGMAP));
        let owners: Vec<_> = a
            .owner_references()
            .iter()
            .map(|o| o.name.as_str())
            .collect();
        assert_eq!(owners, ["gte", "uninlu"]);
        assert!(
            a.owner_references().iter().all(|o| o.controller.is_none()),
            "several owners, none the controller"
        );
        assert_eq!(a.data.as_ref().unwrap()[JWKS_KEY], "{\"keys\":[]}");
    }
}
