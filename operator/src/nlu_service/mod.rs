//! The NluService controller: builds the server's Deployment, Service, Ingress, HPA, PDB and
//! NetworkPolicy from the spec, applies them, removes the ones switched off, reports status.

pub mod build;
pub mod controller;
pub mod policy;
pub mod status;
pub mod validate;
