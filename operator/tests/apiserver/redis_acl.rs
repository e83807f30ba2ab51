//! The namespace's Redis credential: both controllers against the real server and a real
//! redis-server. An NluService with auth on and no Redis of its own gets the namespace's ACL
//! user and the Secret with its URL, its Deployment reads that Secret, and a deleted Secret
//! comes back with a new password (the old one stops working) and rolls the pods.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use nlu_crds::access::redis_acl::{url_credentials, user_name};
use nlu_crds::NluService;
use nlu_operator::nlu_service::build::deployment::REDIS_CREDENTIAL_ANNOTATION;
use nlu_operator::tenant::redis_acl::COMPONENT;
use nlu_testkit::RedisServer;

use crate::harness::{eventually, sample, Running};

/// The URL in the operator's credential Secret, once it is there (and differs from `not`).
async fn credential(secrets: &Api<Secret>, not: Option<&str>) -> String {
    eventually("the namespace's Redis credential Secret", 30, || async {
        let secret = secrets.get_opt("nlu-redis").await.ok()??;
        let labels = secret.metadata.labels.clone().unwrap_or_default();
        (labels
            .get("app.kubernetes.io/component")
            .map(String::as_str)
            == Some(COMPONENT))
        .then_some(())?;
        let url = String::from_utf8(secret.data?.get("url")?.0.clone()).ok()?;
        (Some(url.as_str()) != not).then_some(url)
    })
    .await
}

async fn ping(url: &str) -> redis::RedisResult<String> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    redis::cmd("PING").query_async(&mut conn).await
}

#[tokio::test]
async fn an_nluservice_gets_its_namespace_credential_and_a_deleted_one_is_renewed() {
    let Some(server) = nlu_testkit::api_server() else {
        return;
    };
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let ns = "redis-acl";
    let op = Running::operator(server, ns, &redis.url()).await;
    let services: Api<NluService> = Api::namespaced(op.client.clone(), ns);
    services
        .create(
            &PostParams::default(),
            &sample("nluservice-embedding.yaml", ns, "gte"),
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(op.client.clone(), ns);
    let first = credential(&secrets, None).await;
    let deployments: Api<Deployment> = Api::namespaced(op.client.clone(), ns);
    // The pod template's mark of the credential, once the Deployment carries one (other than
    // `not`): the pods read the URL only when they start.
    let stamp = |not: Option<String>| {
        let deployments = deployments.clone();
        async move {
            eventually("the pod template's credential mark", 30, || async {
                let deployment = deployments.get_opt("gte").await.ok()??;
                let template = deployment.spec?.template.metadata?;
                let mark = template
                    .annotations?
                    .get(REDIS_CREDENTIAL_ANNOTATION)?
                    .clone();
                (Some(&mark) != not.as_ref()).then_some(mark)
            })
            .await
        }
    };
    let first_stamp = stamp(None).await;
    assert_eq!(first_stamp.len(), 16);
    assert!(!first.contains(&first_stamp));
    let (user, _) = url_credentials(&first).unwrap();
    assert_eq!(user, user_name(ns));
    assert!(!first.contains(&redis.url()), "never the operator's URL");
    assert_eq!(ping(&first).await.unwrap(), "PONG");
    let secret = secrets.get("nlu-redis").await.unwrap();
    assert!(
        secret
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty(),
        "no owner: collected with the last NluService, it would strand running pods"
    );

    // The Deployment reads that Secret.
    let deployment = eventually("the Deployment", 30, || async {
        deployments.get_opt("gte").await.ok()?
    })
    .await;
    let env =
        serde_json::to_value(&deployment.spec.unwrap().template.spec.unwrap().containers[0].env)
            .unwrap();
    assert_eq!(
        env[0]["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "nlu-redis", "key": "url"}),
        "{env}"
    );

    // Deleted: a new password, and the old one no longer authenticates.
    secrets
        .delete("nlu-redis", &DeleteParams::default())
        .await
        .unwrap();
    let second = credential(&secrets, Some(&first)).await;
    assert_eq!(ping(&second).await.unwrap(), "PONG");
    // The new password reaches the pods: their template changes, so they are replaced.
    stamp(Some(first_stamp)).await;
    let error = ping(&first).await.unwrap_err().to_string();
    assert!(
        error.to_lowercase().contains("authentication failed"),
        "{error}"
    );
}
