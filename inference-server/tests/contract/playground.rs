use crate::harness::{gte_tiny, TestServer};

async fn get(server: &TestServer, path: &str) -> (u16, String, String) {
    let response = server.client.get(server.url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

/// The page and the files it references are served from the binary, with a CSP that allows
/// nothing from other origins.
#[tokio::test]
async fn playground_is_served_and_self_contained() {
    let server = TestServer::start(&["--model", &gte_tiny(), "--task", "embedding"]).await;
    let (status, content_type, html) = get(&server, "/").await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/html; charset=utf-8")
    );
    let csp = server
        .client
        .get(server.url("/"))
        .send()
        .await
        .unwrap()
        .headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page must not load anything from elsewhere"
    );
    for (asset, kind) in [
        ("/playground/playground.js", "text/javascript"),
        ("/playground/playground.css", "text/css"),
    ] {
        assert!(html.contains(asset), "the page references {asset}");
        let (status, content_type, body) = get(&server, asset).await;
        assert_eq!(status, 200, "{asset}");
        assert!(content_type.starts_with(kind), "{asset}: {content_type}");
        assert!(
            !body.contains("https://"),
            "{asset} loads nothing from elsewhere"
        );
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn no_playground_turns_the_page_off() {
    let server = TestServer::start(&[
        "--model",
        &gte_tiny(),
        "--task",
        "embedding",
        "--no-playground",
    ])
    .await;
    for path in ["/", "/playground/playground.js"] {
        let (status, _, body) = get(&server, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(body.contains("\"not_found\""), "{body}");
    }
    assert_eq!(get(&server, "/openapi.json").await.0, 200);
    server.stop().await.unwrap();
}
