//! Who holds an object of the name the operator is about to write: the no-adoption rule. Pure,
//! so every case is a table row; the reads and writes around it are in `apply.rs`.
//!
//! Server-side apply with `force` would take over any object of the same name (and the owner
//! reference it adds would let garbage collection delete it with the CR), so the operator first
//! looks at the existing object and writes only when there is none or it is its own.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::apply::FIELD_MANAGER;
use crate::context::OPERATOR_NAME;

/// The label the operator puts on everything it writes.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// What makes an existing object the operator's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark<'a> {
    /// A child of one resource: an owner reference with `controller: true` and this uid.
    ControlledBy(&'a str),
    /// An object the operator keeps for several resources (the `nlu-jwks` ConfigMap): the label
    /// `app.kubernetes.io/managed-by=nlu-operator`, or the operator's field manager among
    /// `metadata.managedFields` (so an editor who strips the label does not turn the operator's
    /// object into someone else's). An object with neither was made by someone else.
    Managed,
}

impl<'a> Mark<'a> {
    /// The mark of the object the operator wants: its controller's uid if it has one, else
    /// [`Mark::Managed`].
    pub fn of(desired: &'a ObjectMeta) -> Mark<'a> {
        desired
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
            .map_or(Mark::Managed, |r| Mark::ControlledBy(&r.uid))
    }
}

/// Who holds the existing object of that name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// No object of that name: the operator creates it.
    Absent,
    /// The operator's own: it is kept as desired (drift repaired).
    Ours,
    /// Someone else's: left alone and reported.
    Foreign,
}

/// Who holds `existing` (its metadata as the server returned it) by `mark`.
pub fn holder(existing: Option<&ObjectMeta>, mark: Mark<'_>) -> Holder {
    let Some(meta) = existing else {
        return Holder::Absent;
    };
    let ours = match mark {
        Mark::ControlledBy(uid) => meta
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.controller == Some(true) && r.uid == uid),
        Mark::Managed => {
            let labelled = meta
                .labels
                .as_ref()
                .and_then(|l| l.get(MANAGED_BY_LABEL))
                .is_some_and(|v| v == OPERATOR_NAME);
            let written_by_us = meta
                .managed_fields
                .iter()
                .flatten()
                .any(|f| f.manager.as_deref() == Some(FIELD_MANAGER));
            labelled || written_by_us
        }
    };
    if ours {
        Holder::Ours
    } else {
        Holder::Foreign
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde_json::json;

    use super::*;

    fn meta(v: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(v).unwrap()
    }

    fn owner(uid: &str, controller: Option<bool>) -> serde_json::Value {
        json!({"apiVersion": "nlu.dev/v1alpha1", "kind": "NluService", "name": "gte", "uid": uid, "controller": controller})
    }

    fn label() -> serde_json::Value {
        json!({"app.kubernetes.io/managed-by": "nlu-operator"})
    }

    fn manager(name: &str) -> serde_json::Value {
        json!({"manager": name, "operation": "Apply", "apiVersion": "v1"})
    }

    #[test]
    fn holder_table() {
        let cases: Vec<(&str, Option<serde_json::Value>, Mark, Holder)> = vec![
            (
                "nothing there",
                None,
                Mark::ControlledBy("u1"),
                Holder::Absent,
            ),
            ("nothing there, shared", None, Mark::Managed, Holder::Absent),
            (
                "controlled by us",
                Some(json!({"ownerReferences": [owner("u1", Some(true))]})),
                Mark::ControlledBy("u1"),
                Holder::Ours,
            ),
            (
                "controlled by us among other owners",
                Some(json!({"ownerReferences": [owner("x", None), owner("u1", Some(true))]})),
                Mark::ControlledBy("u1"),
                Holder::Ours,
            ),
            (
                "no owner at all (made by hand)",
                Some(json!({"labels": label()})),
                Mark::ControlledBy("u1"),
                Holder::Foreign,
            ),
            (
                "controlled by another resource",
                Some(json!({"ownerReferences": [owner("u2", Some(true))]})),
                Mark::ControlledBy("u1"),
                Holder::Foreign,
            ),
            (
                "controlled by an earlier resource of the same name",
                Some(json!({"ownerReferences": [owner("old-uid", Some(true))]})),
                Mark::ControlledBy("u1"),
                Holder::Foreign,
            ),
            (
                "our uid but not as controller",
                Some(json!({"ownerReferences": [owner("u1", Some(false))]})),
                Mark::ControlledBy("u1"),
                Holder::Foreign,
            ),
            (
                "shared: label and our field manager",
                Some(
                    json!({"labels": label(), "managedFields": [manager("kubectl-edit"), manager("nlu-operator")]}),
                ),
                Mark::Managed,
                Holder::Ours,
            ),
            (
                "shared: label, no managed fields kept (the test stand-in)",
                Some(json!({"labels": label()})),
                Mark::Managed,
                Holder::Ours,
            ),
            (
                "shared: label removed by an editor, our field manager still there",
                Some(json!({"managedFields": [manager("nlu-operator"), manager("kubectl-edit")]})),
                Mark::Managed,
                Holder::Ours,
            ),
            (
                "shared: made by hand with kubectl",
                Some(json!({"managedFields": [manager("kubectl-create")]})),
                Mark::Managed,
                Holder::Foreign,
            ),
            (
                "shared: no marks at all",
                Some(json!({"name": "nlu-jwks"})),
                Mark::Managed,
                Holder::Foreign,
            ),
            (
                "shared: another manager's label",
                Some(json!({"labels": {"app.kubernetes.io/managed-by": "helm"}})),
                Mark::Managed,
                Holder::Foreign,
            ),
        ];
        for (name, existing, mark, want) in cases {
            let existing = existing.map(meta);
            assert_eq!(holder(existing.as_ref(), mark), want, "{name}");
        }
    }

    #[test]
    fn mark_of_the_desired_object() {
        let child = meta(json!({"ownerReferences": [owner("u1", Some(true))]}));
        assert_eq!(Mark::of(&child), Mark::ControlledBy("u1"));
        let shared = meta(json!({"ownerReferences": [owner("u1", None), owner("u2", None)]}));
        assert_eq!(Mark::of(&shared), Mark::Managed);
        assert_eq!(Mark::of(&ObjectMeta::default()), Mark::Managed);
    }
}
