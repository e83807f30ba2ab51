//! What the real server does with stored objects: unknown fields pruned, status only through
//! the status subresource, `metadata.generation` bumped by spec changes only, the transition rule
//! on `spec.token.generation`, schema defaults.

use http::StatusCode;
use serde_json::{json, Value};

use crate::common::{causes, create_ok, get, placed, replace, sample, with};

const NAMESPACE: &str = "storage";

fn status() -> Value {
    json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Up", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
}

#[tokio::test]
async fn unknown_fields_are_pruned() {
    let Some(server) = nlu_testkit::api_server() else {
        return;
    };
    let client = server.client().await;
    let object = placed(sample("nluservice-embedding.yaml"), NAMESPACE, "pruned");
    let object = with(object, "/spec/unknownField", json!(1));
    let object = with(object, "/spec/model/source/pvc/extra", json!("x"));
    let object = with(object, "/extra", json!(true));
    let stored = create_ok(&client, &object).await;
    assert_eq!(
        stored["spec"],
        sample("nluservice-embedding.yaml")["spec"],
        "unknown spec fields are dropped, known ones kept"
    );
    assert!(
        stored.get("extra").is_none(),
        "unknown top-level field kept: {stored:#}"
    );
}

#[tokio::test]
async fn status_is_written_only_through_the_status_subresource() {
    let Some(server) = nlu_testkit::api_server() else {
        return;
    };
    let client = server.client().await;
    let object = with(
        placed(sample("nluservice-uninlu.yaml"), NAMESPACE, "status-split"),
        "/status",
        status(),
    );
    let created = create_ok(&client, &object).await;
    assert!(
        created["status"].is_null(),
        "status set on create must be dropped: {:#}",
        created["status"]
    );
    assert_eq!(created["metadata"]["generation"], 1);

    // Through the main resource: the spec change lands and bumps generation, the status does not.
    let main_write = with(
        with(created, "/status", status()),
        "/spec/model/maxSequenceLength",
        json!(256),
    );
    let (code, after_main) = replace(&client, &main_write, None).await;
    assert_eq!(code, StatusCode::OK, "{after_main:#}");
    assert!(
        after_main["status"].is_null(),
        "status written through the main resource must be ignored: {:#}",
        after_main["status"]
    );
    assert_eq!(after_main["spec"]["model"]["maxSequenceLength"], 256);
    assert_eq!(after_main["metadata"]["generation"], 2);

    // Through /status: the status lands, a spec change in the same body does not, generation holds.
    let status_write = with(
        with(after_main, "/status", status()),
        "/spec/model/maxSequenceLength",
        json!(128),
    );
    let (code, after_status) = replace(&client, &status_write, Some("status")).await;
    assert_eq!(code, StatusCode::OK, "{after_status:#}");
    assert_eq!(after_status["status"], status());
    assert_eq!(after_status["spec"]["model"]["maxSequenceLength"], 256);
    assert_eq!(after_status["metadata"]["generation"], 2);
    assert_eq!(get(&client, &status_write).await["status"], status());
}

#[tokio::test]
async fn tenant_generation_cannot_be_lowered() {
    let Some(server) = nlu_testkit::api_server() else {
        return;
    };
    let client = server.client().await;
    let object = with(
        placed(sample("tenant.yaml"), NAMESPACE, "generations"),
        "/spec/token/generation",
        json!(2),
    );
    let created = create_ok(&client, &object).await;

    let (code, answer) = replace(
        &client,
        &with(created.clone(), "/spec/token/generation", json!(1)),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{answer:#}");
    let message = "generation can only be raised (lowering it would revive revoked tokens)";
    assert!(
        causes(&answer)
            .iter()
            .any(|(_, field, text)| field == "spec.token.generation" && text.contains(message)),
        "no cause for spec.token.generation with our message: {answer:#}"
    );

    let (code, raised) = replace(
        &client,
        &with(created, "/spec/token/generation", json!(3)),
        None,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "raising is allowed: {raised:#}");
    let (code, same) = replace(
        &client,
        &with(raised, "/spec/token/ttl", json!("24h")),
        None,
    )
    .await;
    assert_eq!(
        code,
        StatusCode::OK,
        "keeping it while changing something else is allowed: {same:#}"
    );
    assert_eq!(get(&client, &same).await["spec"]["token"]["generation"], 3);
}

#[tokio::test]
async fn server_fills_defaults() {
    let Some(server) = nlu_testkit::api_server() else {
        return;
    };
    let client = server.client().await;
    let tenant = with(
        placed(sample("tenant.yaml"), NAMESPACE, "defaults"),
        "/spec/suspended",
        Value::Null,
    );
    let tenant = create_ok(&client, &tenant).await;
    assert_eq!(tenant["spec"]["suspended"], false);

    let tenant = with(
        tenant,
        "/status",
        json!({"usage": {"date": "2026-11-23", "requests": 0}}),
    );
    let nlus = create_ok(
        &client,
        &placed(sample("nluservice-embedding.yaml"), NAMESPACE, "defaults"),
    )
    .await;
    let nlus = with(
        nlus,
        "/status",
        json!({"url": "http://defaults.storage.svc:8080"}),
    );
    for object in [tenant, nlus] {
        let (code, stored) = replace(&client, &object, Some("status")).await;
        assert_eq!(code, StatusCode::OK, "{stored:#}");
        assert_eq!(
            stored["status"]["conditions"],
            json!([]),
            "{} status.conditions defaults to []",
            object["kind"]
        );
        if object["kind"] == "Tenant" {
            assert_eq!(
                stored["status"]["usage"]["tokens"], 0,
                "usage written before token quotas reads as 0 tokens"
            );
        }
    }
}
