use std::path::PathBuf;

use nlu_crds::routes::{Method, Route};
use serde_json::Value;

use crate::harness::{uninlu_tiny, TestServer};

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json")
}

/// Fails when `docs/openapi.json` differs from what the code generates; `UPDATE_OPENAPI=1`
/// rewrites it.
#[test]
fn committed_document_is_in_sync() {
    let generated = nlu_server::http::openapi::json() + "\n";
    let path = committed_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is out of date with the code: run `UPDATE_OPENAPI=1 cargo test -p nlu-server --test contract` and commit it"
    );
}

#[test]
fn document_describes_every_route_errors_and_auth() {
    let doc: Value = serde_json::from_str(&nlu_server::http::openapi::json()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut names: Vec<&str> = paths.keys().map(String::as_str).collect();
    names.sort();
    // The route table is the one list of routes: the document describes each documented one
    // under the table's path and method, and no other.
    let documented = nlu_server::http::handlers::DOCUMENTED;
    let mut routes: Vec<String> = documented.iter().map(|r| r.openapi_path()).collect();
    routes.sort();
    assert_eq!(names, routes);
    for route in documented {
        let method = match route.method() {
            Method::Get => "get",
            Method::Post => "post",
        };
        let operations: Vec<&String> = paths[&route.openapi_path()]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(operations, [method], "{route:?}");
    }
    // Generated clients name their methods after operation ids: each is unique.
    let mut ids: Vec<&str> = paths
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .map(|op| op["operationId"].as_str().unwrap())
        .collect();
    ids.sort();
    let count = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), count, "an operationId is used twice: {ids:?}");
    // Only the playground's files are left out.
    for route in Route::ALL {
        assert!(
            documented.contains(&route)
                || matches!(route, Route::PlaygroundScript | Route::PlaygroundStyle),
            "{route:?} is not in the OpenAPI document"
        );
    }
    for route in Route::ALL.into_iter().filter(|r| r.scope().is_some()) {
        let route = route.path();
        let op = &paths[route]["post"];
        assert_eq!(
            op["security"],
            serde_json::json!([{}, {"bearer": []}]),
            "{route}"
        );
        for status in ["400", "401", "403", "408", "413", "429", "503", "504"] {
            assert_eq!(
                op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{route} {status}"
            );
        }
    }
    let predict = &paths["/api/predict"]["post"]["responses"];
    assert_eq!(
        predict["200"]["headers"]["X-Request-Cost"]["$ref"],
        "#/components/headers/X-Request-Cost"
    );
    assert_eq!(
        predict["429"]["headers"]["Retry-After"]["$ref"],
        "#/components/headers/Retry-After"
    );
    assert!(predict["429"]["headers"]["X-RateLimit-Remaining-Tokens"].is_object());
    assert_eq!(
        doc["components"]["headers"]["X-Request-Cost"]["schema"]["type"],
        "integer"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let error = &doc["components"]["schemas"]["ErrorDetail"];
    assert_eq!(error["required"], serde_json::json!(["code", "message"]));
}

/// Every documented operation is routed (answers something other than the router's 404/405),
/// and the server serves the committed document.
#[tokio::test]
async fn served_document_matches_and_every_operation_is_routed() {
    let server = TestServer::start(&["--model", &uninlu_tiny(), "--task", "uninlu"]).await;
    let served: Value = server
        .client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let generated: Value = serde_json::from_str(&nlu_server::http::openapi::json()).unwrap();
    assert_eq!(served, generated);

    for (path, ops) in generated["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let request = match method.as_str() {
                "get" => server.client.get(server.url(path)),
                "post" => server.client.post(server.url(path)).body("{}"),
                other => panic!("unexpected method {other}"),
            };
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            // The embedding routes answer 404 on a UniNLU server, with their own message.
            let unrouted = status == 405 || body.contains("no such route");
            assert!(!unrouted, "{method} {path}: {status} {body}");
        }
    }
    server.stop().await.unwrap();
}
