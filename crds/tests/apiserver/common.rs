//! Helpers: samples as JSON, raw requests that keep the server's full `Status` (field causes),
//! and JSON pointer edits.

use std::path::{Path, PathBuf};

use http::{Method, Request, StatusCode};
use serde_json::{json, Value};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A file of `manifests/samples/` as JSON.
pub fn sample(file: &str) -> Value {
    let text = std::fs::read_to_string(root().join("manifests/samples").join(file)).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// `object` renamed into `namespace` (each test keeps to its own namespace; the server has no
/// Namespace objects, any name works).
pub fn placed(mut object: Value, namespace: &str, name: &str) -> Value {
    object["metadata"] = json!({"name": name, "namespace": namespace});
    object
}

/// The collection URL of a custom resource object.
pub fn collection(object: &Value) -> String {
    let plural = match object["kind"].as_str() {
        Some("NluService") => "nluservices",
        Some("Tenant") => "tenants",
        other => panic!("not one of our kinds: {other:?}"),
    };
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .expect("namespaced object");
    format!("/apis/nlu.dev/v1alpha1/namespaces/{namespace}/{plural}")
}

/// The URL of the object itself (`/status` appended for the subresource).
pub fn item(object: &Value, subresource: Option<&str>) -> String {
    let name = object["metadata"]["name"].as_str().expect("named object");
    let base = format!("{}/{name}", collection(object));
    subresource.map_or(base.clone(), |sub| format!("{base}/{sub}"))
}

/// One request with a JSON body; returns the status code and the JSON answer (a `Status` on
/// failure, with its `details.causes`, which `kube::Error` does not keep).
pub async fn send(
    client: &kube::Client,
    method: Method,
    url: &str,
    content_type: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let body = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", content_type)
        .body(kube::client::Body::from(body))
        .unwrap();
    let response = client.send(request).await.expect("the API server answers");
    let status = response.status();
    let bytes = response.into_body().collect_bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

pub async fn create(client: &kube::Client, object: &Value) -> (StatusCode, Value) {
    send(
        client,
        Method::POST,
        &collection(object),
        "application/json",
        Some(object),
    )
    .await
}

/// Creates `object` and panics with the server's answer unless it is accepted.
pub async fn create_ok(client: &kube::Client, object: &Value) -> Value {
    let (status, answer) = create(client, object).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{} rejected: {answer:#}",
        object["metadata"]["name"]
    );
    answer
}

pub async fn get(client: &kube::Client, object: &Value) -> Value {
    let (status, answer) = send(
        client,
        Method::GET,
        &item(object, None),
        "application/json",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer:#}");
    answer
}

/// `object` replaced through the main resource or a subresource (a PUT of the whole object).
pub async fn replace(
    client: &kube::Client,
    object: &Value,
    subresource: Option<&str>,
) -> (StatusCode, Value) {
    send(
        client,
        Method::PUT,
        &item(object, subresource),
        "application/json",
        Some(object),
    )
    .await
}

/// The `(reason, field, message)` causes of a failure `Status`.
pub fn causes(status: &Value) -> Vec<(String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    status["details"]["causes"]
        .as_array()
        .map(|causes| {
            causes
                .iter()
                .map(|c| (text(&c["reason"]), text(&c["field"]), text(&c["message"])))
                .collect()
        })
        .unwrap_or_default()
}

/// `object` with `value` at the JSON pointer (parents created); `Value::Null` removes the field.
pub fn with(mut object: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let mut node = &mut object;
    for part in parent.split('/').skip(1) {
        node = match node {
            Value::Array(items) => &mut items[part.parse::<usize>().unwrap()],
            _ => node
                .as_object_mut()
                .unwrap()
                .entry(part)
                .or_insert(json!({})),
        };
    }
    match (node, value) {
        (Value::Array(items), value) => items[key.parse::<usize>().unwrap()] = value,
        (Value::Object(map), Value::Null) => {
            map.remove(key);
        }
        (Value::Object(map), value) => {
            map.insert(key.to_owned(), value);
        }
        (other, _) => panic!("{pointer}: cannot edit inside {other}"),
    }
    object
}
