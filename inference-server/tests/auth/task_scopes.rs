//! Per-task scopes of UniNLU (`predict:<task>`) over real HTTP on the tiny UniNLU model: a
//! token, or a tenant record, narrowed to one task reaches the predict routes but runs the
//! requests of that task only; `predict` runs them all.

use nlu_crds::access::{Scope, TenantRecord, TokenRequest, UninluTask};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::costs::{post, serve};
use crate::harness::*;

const TEXT: &str = "1月22日，在北京举行的比赛中，中国队战胜了日本队。";

fn entity_schema() -> Value {
    json!({"text": TEXT, "schema": {"地理位置": null, "组织机构": null}})
}

fn relation_schema() -> Value {
    json!({"text": TEXT, "schema": {"组织机构": {"对手(组织机构)": null}}})
}

/// Entities and relations at once: no one task.
fn mixed_schema() -> Value {
    json!({"text": TEXT, "schema": {"组织机构": {"对手(组织机构)": null}, "地理位置": null}})
}

fn task_type(task_type: &str) -> Value {
    json!({"task_type": task_type, "input_text": TEXT})
}

/// The status of an answer, and the error's code and message when it is one.
async fn answer(response: reqwest::Response) -> (StatusCode, String, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    let field = |name: &str| body["error"][name].as_str().unwrap_or_default().to_owned();
    (status, field("code"), field("message"))
}

#[tokio::test]
async fn a_tenant_with_only_predict_ner_runs_entity_schemas_only() {
    let redis = shared_redis();
    let keys = Keys::new();
    let prefix = unique_prefix();
    let ner = Scope::PredictTask(UninluTask::Ner);
    for (tenant, scopes) in [
        ("team-a/ner-token", vec![]),
        ("team-a/broad", vec![]),
        // The record narrows the tenant even when its token still grants everything.
        ("team-a/ner-record", vec![ner]),
    ] {
        let record = TenantRecord {
            scopes,
            ..open_record()
        };
        put_record(&redis.url(), &prefix, tenant, &record).await;
    }
    let base = serve("uninlu-tiny", "uninlu", &redis.url(), &keys, &prefix, &[]).await;
    let mint = |tenant: &str, scopes: Vec<Scope>| {
        let request = TokenRequest {
            scopes,
            ..Keys::request(tenant)
        };
        request.mint(&keys.key).unwrap().0
    };
    let ner_token = mint("team-a/ner-token", vec![ner]);
    let ner_record = mint("team-a/ner-record", vec![]);
    let broad = mint("team-a/broad", vec![Scope::Predict]);

    for (who, token) in [("token", &ner_token), ("record", &ner_record)] {
        let (status, ..) = answer(post(&base, "/api/predict", token, &entity_schema()).await).await;
        assert_eq!(status, StatusCode::OK, "{who}: entity schema");
        let (status, code, _) =
            answer(post(&base, "/api/predict", token, &relation_schema()).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::FORBIDDEN, "scope_not_granted"),
            "{who}: relation schema"
        );
        let (status, ..) = answer(post(&base, "/predict", token, &task_type("ner")).await).await;
        assert_eq!(status, StatusCode::OK, "{who}: task_type ner");
        for refused in [
            task_type("relation"),
            // A task type's name does not cover a schema the request brings.
            json!({"task_type": "ner", "input_text": TEXT, "schema": {"组织机构": {"对手(组织机构)": null}}}),
            mixed_schema(),
        ] {
            let path = if refused.get("task_type").is_some() {
                "/predict"
            } else {
                "/api/predict"
            };
            let (status, code, _) = answer(post(&base, path, token, &refused).await).await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::FORBIDDEN, "scope_not_granted"),
                "{who}: {refused}"
            );
        }
    }

    // The refusal names the scope the request needs.
    let (_, _, message) =
        answer(post(&base, "/api/predict", &ner_token, &relation_schema()).await).await;
    assert!(message.contains("predict:relation"), "{message}");
    let (_, _, message) =
        answer(post(&base, "/api/predict", &ner_token, &mixed_schema()).await).await;
    assert!(
        message.contains("cannot be told") && message.contains("the scope predict,"),
        "{message}"
    );

    for body in [entity_schema(), relation_schema(), mixed_schema()] {
        let (status, ..) = answer(post(&base, "/api/predict", &broad, &body).await).await;
        assert_eq!(status, StatusCode::OK, "predict: {body}");
    }
    for name in ["ner", "relation"] {
        let (status, ..) = answer(post(&base, "/predict", &broad, &task_type(name)).await).await;
        assert_eq!(status, StatusCode::OK, "predict: task_type {name}");
    }
}
