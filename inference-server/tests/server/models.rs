//! OpenAI's model list on servers of both tasks.

use serde_json::Value;

use super::harness::{error_code, gte_tiny, uninlu_tiny, TestServer};

async fn get_json(server: &TestServer, path: &str) -> (u16, Value) {
    let (status, body) = server.get(path).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_lists_its_one_model() {
    for (model, task, name) in [
        (gte_tiny(), "embedding", "org/gte-tiny"),
        (uninlu_tiny(), "uninlu", "uninlu-tiny"),
    ] {
        let server = TestServer::start(&[
            "--model",
            &model,
            "--task",
            task,
            "--served-model-name",
            name,
        ])
        .await;
        let (status, list) = get_json(&server, "/v1/models").await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["object"], "list");
        let data = list["data"].as_array().unwrap();
        assert_eq!(data.len(), 1, "{list}");
        assert_eq!(data[0]["id"], name);
        assert_eq!(data[0]["object"], "model");
        assert_eq!(data[0]["owned_by"], "nlu-server");
        let created = data[0]["created"].as_u64().unwrap();
        assert!(created > 1_700_000_000, "{created}");

        // Hub ids hold a slash: the id is the rest of the path.
        let (status, one) = get_json(&server, &format!("/v1/models/{name}")).await;
        assert_eq!(status, 200, "{one}");
        assert_eq!(one, data[0]);

        let (status, other) = get_json(&server, "/v1/models/someone-else").await;
        assert_eq!(status, 404, "{other}");
        assert_eq!(error_code(&other), "model_not_found");
        server.stop().await.unwrap();
    }
}
