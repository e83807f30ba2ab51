//! Garbage collection by owner references, as the real collector does it: a dependent whose
//! owners (NluService, Tenant, Deployment or Service, by uid) are all gone is deleted. Pods are the
//! kubelet's (it stops them with their Deployment). Owners of other kinds keep their
//! dependents. Foreground deletion of a custom resource (the `foregroundDeletion` finalizer,
//! which the standalone API server sets but nothing there removes): its dependents go first,
//! then the finalizer. `blockOwnerDeletion` is not modelled; other finalizers of our custom
//! resources are the real API server's (and the operator's).

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// Owner kinds whose liveness the collector knows.
const KNOWN_OWNERS: [&str; 4] = ["NluService", "Tenant", "Deployment", "Service"];

/// Whether a dependent with these owner references (kind, uid) is garbage.
pub fn orphaned(owners: &[(String, String)], live: &BTreeSet<String>) -> bool {
    !owners.is_empty()
        && owners
            .iter()
            .all(|(kind, uid)| KNOWN_OWNERS.contains(&kind.as_str()) && !live.contains(uid))
}

pub async fn run(client: Client) {
    let period = Duration::from_millis(500);
    super::every("garbage collector", period, async || pass(&client).await).await
}

const FOREGROUND: &str = "foregroundDeletion";

async fn pass(client: &Client) -> Result<(), kube::Error> {
    let mut live = BTreeSet::new();
    let mut going = Vec::new();
    for kind in ["NluService", "Tenant"] {
        // Our custom resources, by name (the test kit does not depend on the API crate).
        let gvk = GroupVersionKind::gvk("nlu.dev", "v1alpha1", kind);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
        for object in api.list(&ListParams::default()).await?.items {
            let uid = object.uid().unwrap_or_default();
            if object.metadata.deletion_timestamp.is_some()
                && object.finalizers().iter().any(|f| f == FOREGROUND)
            {
                going.push((gvk.clone(), object, uid));
            } else {
                live.insert(uid);
            }
        }
    }
    live.extend(uids::<Deployment>(client).await?);
    live.extend(uids::<Service>(client).await?);
    let mut referenced = BTreeSet::new();
    referenced.extend(collect::<Deployment>(client, &live).await?);
    referenced.extend(collect::<Service>(client, &live).await?);
    referenced.extend(collect::<NetworkPolicy>(client, &live).await?);
    referenced.extend(collect::<Ingress>(client, &live).await?);
    referenced.extend(collect::<HorizontalPodAutoscaler>(client, &live).await?);
    referenced.extend(collect::<PodDisruptionBudget>(client, &live).await?);
    referenced.extend(collect::<Secret>(client, &live).await?);
    referenced.extend(collect::<ConfigMap>(client, &live).await?);
    referenced.extend(collect::<EndpointSlice>(client, &live).await?);
    for (gvk, object, uid) in going {
        if referenced.contains(&uid) {
            continue;
        }
        // Every dependent is gone: the owner may go too.
        let remaining: Vec<String> = object
            .finalizers()
            .iter()
            .filter(|f| *f != FOREGROUND)
            .cloned()
            .collect();
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &object.namespace().unwrap_or_default(),
            &ApiResource::from_gvk(&gvk),
        );
        let patch = serde_json::json!({"metadata": {"finalizers": remaining}});
        match api
            .patch(
                &object.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn uids<K>(client: &Client) -> Result<Vec<String>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    Ok(Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|o| o.uid())
        .collect())
}

/// Deletes the orphans of kind `K`; returns the owner uids the remaining objects reference.
async fn collect<K>(
    client: &Client,
    live: &BTreeSet<String>,
) -> Result<BTreeSet<String>, kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let mut referenced = BTreeSet::new();
    for object in Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        let owners: Vec<(String, String)> = object
            .owner_references()
            .iter()
            .map(|o| (o.kind.clone(), o.uid.clone()))
            .collect();
        if !orphaned(&owners, live) {
            referenced.extend(owners.into_iter().map(|(_, uid)| uid));
            continue;
        }
        let api: Api<K> = Api::namespaced(client.clone(), &object.namespace().unwrap_or_default());
        match api
            .delete(&object.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(referenced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphans_are_dependents_whose_known_owners_are_all_gone() {
        let live = BTreeSet::from(["u1".to_owned()]);
        let o = |kind: &str, uid: &str| (kind.to_owned(), uid.to_owned());
        assert!(!orphaned(&[], &live), "no owner: not a dependent");
        assert!(!orphaned(&[o("NluService", "u1")], &live));
        assert!(orphaned(&[o("NluService", "u2")], &live));
        assert!(
            orphaned(&[o("Service", "u3")], &live),
            "a Service's EndpointSlice"
        );
        assert!(!orphaned(
            &[o("NluService", "u2"), o("Tenant", "u1")],
            &live
        ));
        assert!(
            !orphaned(&[o("ReplicaSet", "u9")], &live),
            "unknown owner kinds are kept"
        );
    }
}
