//! What a request names: the resource (and whether it is a core kind the proxy serves), its
//! namespace, name and subresource; and the query's label and field selectors.

use http::StatusCode;
use serde_json::Value;

use super::store::{status, Reply};

/// A core kind: what the proxy serves from the store, because the crd-apiserver cannot.
struct Kind {
    api_version: &'static str,
    plural: &'static str,
    kind: &'static str,
}

const fn kind(api_version: &'static str, plural: &'static str, kind: &'static str) -> Kind {
    Kind {
        api_version,
        plural,
        kind,
    }
}

/// The core kinds our operator writes or reads. Anything else (the `nlu.dev` group, discovery,
/// CRDs) is the real server's business behind the proxy; the mocked tier serves it too.
const KINDS: &[Kind] = &[
    kind("v1", "secrets", "Secret"),
    kind("v1", "configmaps", "ConfigMap"),
    kind("v1", "services", "Service"),
    kind("v1", "serviceaccounts", "ServiceAccount"),
    kind("v1", "events", "Event"),
    kind("v1", "pods", "Pod"),
    kind("apps/v1", "deployments", "Deployment"),
    kind("networking.k8s.io/v1", "ingresses", "Ingress"),
    kind("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy"),
    kind(
        "autoscaling/v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
    ),
    kind("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    kind("discovery.k8s.io/v1", "endpointslices", "EndpointSlice"),
    kind("events.k8s.io/v1", "events", "Event"),
    kind("coordination.k8s.io/v1", "leases", "Lease"),
];

/// A request path that names a resource: `/api/v1/...` or `/apis/GROUP/VERSION/...`, with an
/// optional namespace, name and subresource.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) api_version: String,
    pub(crate) plural: String,
    /// The kind's name when it is a core kind of [`KINDS`] (else taken from the objects).
    pub(crate) kind: Option<&'static str>,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) subresource: Option<String>,
}

/// Where the store keeps an object: (`apiVersion/plural`, namespace, name).
pub(crate) type Key = (String, String, String);

impl Route {
    /// `apiVersion/plural`: the resource, the same for every object of it.
    pub(crate) fn resource(&self) -> String {
        format!("{}/{}", self.api_version, self.plural)
    }

    pub(crate) fn key(&self) -> Key {
        (
            self.resource(),
            self.namespace.clone().unwrap_or_default(),
            self.name.clone().unwrap_or_default(),
        )
    }

    /// Whether this is one of the core kinds (what the proxy serves from the store).
    #[cfg(feature = "apiserver")]
    pub(crate) fn is_core(&self) -> bool {
        self.kind.is_some()
    }

    /// Whether a stored object under `key` is in this (collection) route's scope.
    pub(crate) fn holds(&self, key: &Key) -> bool {
        key.0 == self.resource() && self.namespace.as_ref().is_none_or(|ns| *ns == key.1)
    }
}

/// The resource a path names, else `None` (discovery, malformed paths).
pub(crate) fn route(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_version, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("v1".to_owned(), rest),
        ["apis", group, version, rest @ ..] => (format!("{group}/{version}"), rest),
        _ => return None,
    };
    let (namespace, plural, name, subresource) = match rest {
        ["namespaces", ns, plural, more @ ..] if more.len() <= 2 => {
            (Some(ns.to_string()), *plural, more.first(), more.get(1))
        }
        [plural] => (None, *plural, None, None),
        _ => return None,
    };
    let kind = KINDS
        .iter()
        .find(|k| k.api_version == api_version && k.plural == plural)
        .map(|k| k.kind);
    Some(Route {
        api_version,
        plural: plural.to_owned(),
        kind,
        namespace,
        name: name.map(|s| s.to_string()),
        subresource: subresource.map(|s| s.to_string()),
    })
}

/// The parsed query string of a request.
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(query: &str) -> Query {
        Query(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("true" | "1"))
    }
}

/// Equality-based label and field selectors (`k=v`, `k==v`, `k!=v`, `k`, `!k`; fields
/// `metadata.name` and `metadata.namespace`). Set-based selectors are refused, not ignored.
#[derive(Clone)]
pub(crate) struct Selector {
    labels: Vec<(String, Requirement)>,
    fields: Vec<(String, Requirement)>,
}

#[derive(Clone)]
enum Requirement {
    Equals(String),
    NotEquals(String),
    Exists,
    Absent,
}

impl Selector {
    pub(crate) fn parse(query: &Query) -> Result<Selector, Reply> {
        Ok(Selector {
            labels: requirements(query.get("labelSelector").unwrap_or(""))?,
            fields: requirements(query.get("fieldSelector").unwrap_or(""))?,
        })
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.labels
            .iter()
            .all(|(k, r)| r.holds(labels.get(k).and_then(Value::as_str)))
            && self.fields.iter().all(|(k, r)| {
                let value = match k.as_str() {
                    "metadata.name" => field(object, "name"),
                    "metadata.namespace" => field(object, "namespace"),
                    _ => None,
                };
                r.holds(value)
            })
    }
}

impl Requirement {
    fn holds(&self, value: Option<&str>) -> bool {
        match self {
            Requirement::Equals(want) => value == Some(want),
            Requirement::NotEquals(want) => value != Some(want),
            Requirement::Exists => value.is_some(),
            Requirement::Absent => value.is_none(),
        }
    }
}

fn requirements(text: &str) -> Result<Vec<(String, Requirement)>, Reply> {
    let mut out = Vec::new();
    for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if term.contains(" in ") || term.contains(" notin ") || term.contains('(') {
            return Err(status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("set-based selector {term:?} not supported by the fake API"),
            ));
        }
        let requirement = if let Some((k, v)) = term.split_once("!=") {
            (k, Requirement::NotEquals(v.to_owned()))
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (k, Requirement::Equals(v.to_owned()))
        } else if let Some(k) = term.strip_prefix('!') {
            (k, Requirement::Absent)
        } else {
            (term, Requirement::Exists)
        };
        out.push((requirement.0.trim().to_owned(), requirement.1));
    }
    Ok(out)
}

/// `metadata.<name>` of an object, when it is a string.
pub(crate) fn field<'a>(object: &'a Value, name: &str) -> Option<&'a str> {
    object["metadata"][name].as_str()
}
