//! Pure builders: from an NluService and the operator config to the child objects, one module
//! per kind. No I/O, so the whole desired state is testable (and snapshotted) without a cluster.

pub mod deployment;
pub mod hpa;
pub mod ingress;
pub mod labels;
pub mod network_policy;
pub mod pdb;
pub mod service;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use nlu_crds::NluService;
use serde::de::DeserializeOwned;

use crate::config::OperatorConfig;

/// Every child of one NluService; `None` where the feature is off (and the child must go).
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub deployment: Deployment,
    pub service: Service,
    pub network_policy: NetworkPolicy,
    pub ingress: Option<Ingress>,
    pub hpa: Option<HorizontalPodAutoscaler>,
    pub pdb: Option<PodDisruptionBudget>,
}

/// The desired children of `svc`.
pub fn children(svc: &NluService, cfg: &OperatorConfig) -> Children {
    Children {
        deployment: deployment::deployment(svc, cfg),
        service: service::service(svc),
        network_policy: network_policy::network_policy(svc, cfg),
        ingress: ingress::ingress(svc),
        hpa: hpa::hpa(svc),
        pdb: pdb::pdb(svc),
    }
}

/// Typed object from a JSON literal written by a builder. The literals are fixed shapes filled
/// with already-typed values, so a failure is a bug in the builder, never bad user input.
fn typed<T: DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("builder literal matches its Kubernetes type")
}
