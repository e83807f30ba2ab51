//! Names, labels and the owner reference every child shares.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use nlu_crds::NluService;

use crate::context::OPERATOR_NAME;

/// `app.kubernetes.io/name` of every server pod.
pub const APP_NAME: &str = "nlu-server";
/// `app.kubernetes.io/component` of the inference children.
pub const COMPONENT: &str = "inference";

/// The labels that select the service's pods (stable for the Deployment's life: a selector is
/// immutable).
pub fn selector(svc: &NluService) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), APP_NAME.to_owned()),
        ("app.kubernetes.io/instance".to_owned(), svc.name_any()),
    ])
}

/// Selector labels plus component and manager, on every child and pod.
pub fn labels(svc: &NluService) -> BTreeMap<String, String> {
    let mut labels = selector(svc);
    labels.insert("app.kubernetes.io/component".into(), COMPONENT.into());
    labels.insert("app.kubernetes.io/managed-by".into(), OPERATOR_NAME.into());
    labels
}

/// Metadata of a child: same name and namespace as the NluService, common labels, and the
/// NluService as controlling owner (garbage collection, and the controller's `owns` watches).
pub fn child_meta(svc: &NluService) -> ObjectMeta {
    ObjectMeta {
        name: Some(svc.name_any()),
        namespace: svc.namespace(),
        labels: Some(labels(svc)),
        owner_references: svc.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}
