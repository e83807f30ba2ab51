//! The API crate: the `NluService` and `Tenant` custom resources (feature `crd`) and the
//! tenant-access contract (token claims, key sets, Redis keys) that operator and server share.

pub mod access;
pub mod routes;
pub mod serve;

#[cfg(feature = "crd")]
pub mod conditions;
#[cfg(feature = "crd")]
pub mod nlu_service;
#[cfg(feature = "crd")]
pub mod tenant;
#[cfg(feature = "crd")]
pub mod crdgen;

#[cfg(feature = "crd")]
pub use nlu_service::{NluService, NluServiceSpec, NluServiceStatus};
#[cfg(feature = "crd")]
pub use tenant::{Tenant, TenantSpec, TenantStatus};

/// API group of both resources.
pub const GROUP: &str = "nlu.dev";
/// API version of both resources.
pub const VERSION: &str = "v1alpha1";
