//! The one fake of the Kubernetes API: an in-memory object store with one set of semantics,
//! served two ways.
//!
//! - [`FakeApi::start`]: a `kube::Client` whose requests go through `tower_test::mock::pair` to
//!   the store, for the mocked tiers (the operator's `nlu_service` and `tenant` tests, the
//!   reconcile bench). It serves every resource path (custom resources too), records each
//!   request exactly as sent ([`Call`]: method, path, query, content type, JSON body), can fail
//!   the next write to a path with a 500, and lets a test read and write objects by path.
//! - The routing proxy ([`crate::ClusterProxy`]): the core kinds the crd-apiserver cannot serve
//!   (Secrets, ConfigMaps, Services, Deployments, Events, Leases, ...), for the real API server
//!   tier and the process cluster.
//!
//! NOT a real API server. It does: get, list and watch (equality label selectors,
//! `metadata.name` / `metadata.namespace` field selectors, resource versions, synthetic ADDED
//! events for watches from `""`/`"0"`); create (`generateName`, 409 `AlreadyExists`, server-owned
//! `uid`, `creationTimestamp`, `generation`); replace with a `resourceVersion` precondition (409
//! on a stale one); patches: merge and strategic-merge as JSON merge patches, JSON patches (all or
//! nothing, a `test` for null passing on an absent path as on the API server), and server-side
//! apply as a JSON merge patch that also removes the fields the same field manager applied last
//! time and applies no more (unless another manager's last applied configuration still sets
//! them), creating the object when absent; the `status` subresource (a status write changes only
//! `status`, an object write keeps it; 404 for an absent object); `generation` bumped by changes
//! outside metadata and status; no new resource version for a write that changes nothing;
//! Secret `stringData` folded into `data`; delete. Failures are `metav1.Status` bodies with the
//! API server's reasons (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, ...).
//! A test's own writes ([`FakeApi::put`], [`FakeApi::edit`]) store the object as given with a
//! new resource version (no server-owned fields, no generation, no status split), as an editor
//! that bypasses the API would; watchers see them.
//!
//! It does not: validate or default objects; keep `managedFields`, report apply conflicts, give
//! ownership of fields to non-apply writers, or merge lists by key (lists are replaced whole);
//! collect garbage through owner references; honour finalizers or `deletionTimestamp` (a delete
//! removes at once, and removing the last finalizer deletes nothing); serve discovery,
//! protobuf or cluster-scoped objects by name; or run anything (no Pods: a test writes a
//! Deployment's status itself to play the kubelet and controllers).

mod client;
mod route;
mod store;

pub use client::{Call, FakeApi};
#[cfg(feature = "apiserver")]
pub(crate) use route::{route, Query};
#[cfg(feature = "apiserver")]
pub(crate) use store::{content_type, parse, Store};
