//! The audit log of the real binary: one JSON line per tenant request on its own sink
//! (`--audit-log FILE`), telling who called (tenant, token subject and id), the UniNLU task,
//! the cost charged, the answer and the request id; never the request's text or its token.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use nlu_crds::access::{Scope, TokenRequest};

use crate::harness::*;

const TEXT: &str = "1月22日，在北京举行的比赛中，中国队战胜了日本队。";

/// The audit lines written so far.
fn audit_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every audit line is JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_request_has_a_json_audit_line_on_its_own_sink_without_its_body() {
    let redis = shared_redis();
    let keys = Keys::new();
    let prefix = unique_prefix();
    let tenant = "team-a/audited";
    put_record(&redis.url(), &prefix, tenant, &open_record()).await;
    let audit = keys.dir.path().join("audit.log");
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nlu-server"))
        .args([
            "serve",
            "--task",
            "uninlu",
            "--model",
            &tiny_model("uninlu-tiny"),
        ])
        .args([
            "--listen",
            &listen.to_string(),
            "--audit-log",
            audit.to_str().unwrap(),
        ])
        .args(jwt_flags(&redis.url(), &keys, &prefix))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://{listen}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map_or(true, |r| r.status() != StatusCode::OK)
    {
        assert!(Instant::now() < deadline, "the binary did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (token, claims) = Keys::request(tenant).mint(&keys.key).unwrap();
    let predict = |id: &'static str, token: Option<&str>| {
        let mut request = client
            .post(format!("{base}/api/predict"))
            .header("x-request-id", id)
            .json(&json!({"text": TEXT, "schema": {"地理位置": null}}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let served = predict("audit-ok", Some(&token)).await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    let cost: u64 = served.headers()["x-request-cost"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let refused = predict("audit-anonymous", None).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let (embed_only, embed_claims) = TokenRequest {
        scopes: vec![Scope::Embed],
        ..Keys::request(tenant)
    }
    .mint(&keys.key)
    .unwrap();
    let forbidden = predict("audit-forbidden", Some(&embed_only)).await.unwrap();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    while audit_lines(&audit).len() < 3 {
        assert!(Instant::now() < deadline, "three audit lines");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    let stderr = String::from_utf8(child.wait_with_output().unwrap().stderr).unwrap();

    let lines = audit_lines(&audit);
    assert_eq!(
        lines.len(),
        3,
        "tenant operations only, not probes: {lines:#?}"
    );
    let line = |id: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("an audit line for {id}: {lines:#?}"))
    };
    let ok = line("audit-ok");
    assert_eq!(ok["target"], "nlu_audit");
    assert_eq!(ok["tenant"], tenant);
    assert_eq!(ok["subject"], claims.sub.as_str());
    assert_eq!(ok["jti"], claims.jti.as_str());
    assert_eq!(ok["task"], "ner");
    assert_eq!(ok["cost"], cost);
    assert!(cost > 0);
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["route"], "/api/predict");
    assert!(ok["timestamp"].is_string());
    let anonymous = line("audit-anonymous");
    assert_eq!(anonymous["status"], 401);
    assert_eq!(
        (&anonymous["tenant"], &anonymous["jti"]),
        (&json!(""), &json!(""))
    );

    // Refused at admission, after the token verified: who it was is known.
    let forbidden = line("audit-forbidden");
    assert_eq!(forbidden["status"], 403);
    assert_eq!(forbidden["tenant"], tenant);
    assert_eq!(forbidden["jti"], embed_claims.jti.as_str());
    assert_eq!(forbidden["subject"], embed_claims.sub.as_str());
    assert_eq!(forbidden["cost"], 0);

    let text = std::fs::read_to_string(&audit).unwrap();
    for secret in [TEXT, "地理位置", token.as_str()] {
        assert!(
            !text.contains(secret),
            "the audit log holds no body or token"
        );
    }
    // On their own sink: the other logs (stderr) carry the access lines, not the audit ones.
    assert!(stderr.contains("audit-ok"), "{stderr}");
    assert!(!stderr.contains("nlu_audit"), "{stderr}");
}
