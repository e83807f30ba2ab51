//! The API crate: the `NluService` and `Tenant` custom resources (feature `crd`) and the
//! tenant-access contract (token claims, key sets, Redis keys) that operator and server share.

pub mod access;
