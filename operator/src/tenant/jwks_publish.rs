//! Publishes the public JWK Set as ConfigMap `nlu-jwks` (key `jwks.json`) in every namespace
//! with an NluService that has auth on, and beside it the keys and mappings of the tenants'
//! identity providers (key `identities.json`, from [`super::identity_keys`]); the server pods
//! mount it and re-read it when it changes.
//! The ConfigMap is owned by those NluServices, so it goes away with the last of them. It is the
//! namespace's trust anchor, so it is watched: an edit is undone and a deletion re-created.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use nlu_crds::nlu_service::AuthMode;
use nlu_crds::NluService;
use tokio::sync::watch;

use super::identity_keys::{Published, IDENTITIES_KEY};
use super::signing_key::KeyRing;
use crate::apply::{apply_unless_taken, FIELD_MANAGER};
use crate::ownership::MANAGED_BY_LABEL;

/// Name of the ConfigMap in each namespace.
pub const JWKS_CONFIGMAP: &str = "nlu-jwks";
/// Key of the JWK Set document in it.
pub const JWKS_KEY: &str = "jwks.json";

/// How often the NluService cache is checked for namespaces that gained or lost auth.
const POLL: Duration = Duration::from_secs(5);
/// How long a namespace whose `nlu-jwks` someone else made is left before looking again.
const FOREIGN_RECHECK: Duration = Duration::from_secs(60);

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

/// `identities.json` of a namespace whose Tenants name no identity provider.
const NO_IDENTITIES: &str = r#"{"issuers":[]}"#;

/// One ConfigMap per namespace with auth-on services, owned by all of them: the JWK Set, and
/// the namespace's document of `identities` (by namespace).
pub fn desired(
    services: &[Arc<NluService>],
    jwks_json: &str,
    identities: &BTreeMap<String, String>,
) -> BTreeMap<String, ConfigMap> {
    owners_by_namespace(services, auth_on)
        .into_iter()
        .map(|(ns, owners)| {
            let identities = identities.get(&ns).map_or(NO_IDENTITIES, String::as_str);
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(JWKS_CONFIGMAP.into()),
                    namespace: Some(ns.clone()),
                    owner_references: Some(owners),
                    labels: Some(BTreeMap::from([(
                        MANAGED_BY_LABEL.to_owned(),
                        crate::context::OPERATOR_NAME.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([
                    (JWKS_KEY.to_owned(), jwks_json.to_owned()),
                    (IDENTITIES_KEY.to_owned(), identities.to_owned()),
                ])),
                ..ConfigMap::default()
            };
            (ns, cm)
        })
        .collect()
}

/// Whether `live` holds exactly the JWK Set `desired` carries and still has the operator's
/// label. Anything else (a key added to the set, another data entry, the label removed) is drift.
pub fn holds(live: &ConfigMap, desired: &ConfigMap) -> bool {
    live.data == desired.data
        && live.binary_data.as_ref().is_none_or(BTreeMap::is_empty)
        && desired
            .labels()
            .iter()
            .all(|(k, v)| live.labels().get(k) == Some(v))
}

/// The merge patch that removes what server-side apply leaves behind because another field
/// manager added it (data entries besides the JWK Set, binary data); `None` when nothing is
/// extra.
pub fn strip_extra(live: &ConfigMap, desired: &ConfigMap) -> Option<serde_json::Value> {
    let wanted = desired.data.as_ref();
    let null = |keys: Vec<&String>| -> serde_json::Map<String, serde_json::Value> {
        keys.into_iter()
            .map(|k| (k.clone(), serde_json::Value::Null))
            .collect()
    };
    let data = null(
        live.data
            .iter()
            .flatten()
            .map(|(k, _)| k)
            .filter(|k| !wanted.is_some_and(|w| w.contains_key(*k)))
            .collect(),
    );
    let binary = null(live.binary_data.iter().flatten().map(|(k, _)| k).collect());
    let mut patch = serde_json::Map::new();
    if !data.is_empty() {
        patch.insert("data".into(), data.into());
    }
    if !binary.is_empty() {
        patch.insert("binaryData".into(), binary.into());
    }
    (!patch.is_empty()).then(|| patch.into())
}

/// Keeps the ConfigMaps as desired: writes a namespace's ConfigMap when its content or owners
/// differ from what was last written there, and repairs it when the watched copy drifted (an
/// edit, the label removed) or is gone (re-created), within one watch event. A ConfigMap of that
/// name that the operator did not make is left alone (and reported on the NluServices).
pub async fn run(
    client: Client,
    services: Store<NluService>,
    mut ring: watch::Receiver<Arc<KeyRing>>,
    mut identities: watch::Receiver<Published>,
    namespace: Option<String>,
) {
    let api: Api<ConfigMap> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let ours = watcher::Config::default()
        .labels(&format!(
            "{MANAGED_BY_LABEL}={}",
            crate::context::OPERATOR_NAME
        ))
        .fields(&format!("metadata.name={JWKS_CONFIGMAP}"));
    let (live, writer) = reflector::store();
    let mut changes = reflector::reflector(writer, watcher(api, ours))
        .default_backoff()
        .touched_objects()
        .boxed();
    let mut written: HashMap<String, ConfigMap> = HashMap::new();
    let mut foreign: HashMap<String, Instant> = HashMap::new();
    loop {
        let jwks = ring.borrow_and_update().jwks_json();
        let published = identities.borrow_and_update().clone();
        for (ns, cm) in desired(&services.state(), &jwks, &published) {
            let seen = live.get(&ObjectRef::new(JWKS_CONFIGMAP).within(&ns));
            let intact = seen.as_deref().is_some_and(|seen| holds(seen, &cm));
            let skip_foreign = foreign
                .get(&ns)
                .is_some_and(|until| Instant::now() < *until);
            if (intact && written.get(&ns) == Some(&cm)) || skip_foreign {
                continue;
            }
            match publish(&client, &cm).await {
                Ok(true) => {
                    tracing::info!(namespace = %ns, repaired = seen.is_some() && !intact, "published the JWK Set");
                    foreign.remove(&ns);
                    written.insert(ns, cm);
                }
                Ok(false) => {
                    foreign.insert(ns, Instant::now() + FOREIGN_RECHECK);
                }
                Err(e) => {
                    tracing::warn!(namespace = %ns, error = %e, "could not publish the JWK Set; retrying")
                }
            }
        }
        tokio::select! {
            changed = ring.changed() => if changed.is_err() { return },
            changed = identities.changed() => if changed.is_err() { return },
            // One of the operator's ConfigMaps was edited, lost its label or was deleted.
            Some(_) = changes.next() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Writes `cm` unless someone else holds its name (then `false`), and removes what apply
/// leaves of another writer's additions.
async fn publish(client: &Client, cm: &ConfigMap) -> Result<bool, kube::Error> {
    let live = match apply_unless_taken(client, cm).await? {
        Ok(live) => live,
        Err(_) => return Ok(false),
    };
    if let Some(patch) = strip_extra(&live, cm) {
        let api: Api<ConfigMap> =
            Api::namespaced(client.clone(), &cm.namespace().unwrap_or_default());
        api.patch(
            JWKS_CONFIGMAP,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await?;
    }
    Ok(true)
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
        let identities = BTreeMap::from([("c".to_owned(), "{\"issuers\":[1]}".to_owned())]);
        let out = desired(&services, "{\"keys\":[]}", &identities);
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
        assert_eq!(a.data.as_ref().unwrap()[IDENTITIES_KEY], NO_IDENTITIES);
        assert_eq!(
            out["c"].data.as_ref().unwrap()[IDENTITIES_KEY],
            "{\"issuers\":[1]}"
        );
    }

    #[test]
    fn drift_is_any_other_content_or_a_lost_label_and_extras_are_stripped() {
        let want = desired(&[svc("a", "gte", None)], "{\"keys\":[]}", &BTreeMap::new())
            .remove("a")
            .unwrap();
        assert!(holds(&want, &want));
        assert_eq!(strip_extra(&want, &want), None);

        let mut added_key = want.clone();
        added_key
            .data
            .as_mut()
            .unwrap()
            .insert(JWKS_KEY.into(), "{\"keys\":[{\"kid\":\"theirs\"}]}".into());
        assert!(!holds(&added_key, &want), "a key added to the set");
        assert_eq!(
            strip_extra(&added_key, &want),
            None,
            "apply resets jwks.json"
        );

        let mut extra = want.clone();
        extra
            .data
            .as_mut()
            .unwrap()
            .insert("other.json".into(), "{}".into());
        extra.binary_data = Some(BTreeMap::from([(
            "blob".to_owned(),
            k8s_openapi::ByteString(vec![1]),
        )]));
        assert!(!holds(&extra, &want));
        assert_eq!(
            strip_extra(&extra, &want),
            Some(serde_json::json!({"data": {"other.json": null}, "binaryData": {"blob": null}}))
        );

        let mut unlabelled = want.clone();
        unlabelled.metadata.labels = None;
        assert!(!holds(&unlabelled, &want), "the label removed");
    }
}
