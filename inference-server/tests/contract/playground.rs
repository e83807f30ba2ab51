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
        // Relative, so the page works under an Ingress path prefix.
        let relative = format!("\"{}\"", asset.trim_start_matches('/'));
        assert!(html.contains(&relative), "the page references {relative}");
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

/// Behind an Ingress path (`--path-prefix /uninlu`) the bare prefix redirects to `/uninlu/`, where
/// the page's relative links resolve to prefixed paths the server answers; bare paths (probes)
/// still route.
#[tokio::test]
async fn playground_works_under_a_path_prefix() {
    let server = TestServer::start(&[
        "--model",
        &gte_tiny(),
        "--task",
        "embedding",
        "--path-prefix",
        "/uninlu",
    ])
    .await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_redirects
        .get(server.url("/uninlu?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(response.headers()["location"], "/uninlu/?x=1");

    let page = server
        .client
        .get(server.url("/uninlu"))
        .send()
        .await
        .unwrap();
    let base = page.url().clone();
    assert_eq!(base.path(), "/uninlu/");
    let html = page.text().await.unwrap();
    for relative in [
        "playground/playground.js",
        "playground/playground.css",
        "openapi.json",
        "info",
    ] {
        if relative != "info" {
            assert!(html.contains(&format!("\"{relative}\"")), "{relative}");
        }
        let url = base.join(relative).unwrap();
        let (status, _, _) = get(&server, url.path()).await;
        assert_eq!(status, 200, "{url}");
    }
    assert_eq!(get(&server, "/healthz").await.0, 200);
    server.stop().await.unwrap();
}
