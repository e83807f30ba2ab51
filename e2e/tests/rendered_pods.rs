//! Every Deployment the operator renders (each case of `operator/tests/snapshots/`) runs in the
//! process cluster, with the server's real binary and the operator's flags, and becomes Ready.
//! What a snapshot points at outside any cluster is replaced by this machine's counterpart: its
//! example model URL by the cluster hub's archive, its inline Redis host by a real
//! `redis-server`. Args, probes, volumes and env stay as rendered.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::PostParams;
use kube::Api;
use nlu_crds::access::jwks::jwk_set;
use nlu_crds::access::SigningKey;
use nlu_testkit::{workspace_binary, ClusterOptions, ProcessCluster, RedisServer};
use serde::Deserialize;
use serde_json::{json, Value};

const GTE_REPO: &str = "thenlper/gte-base-zh";
const UNINLU_REPO: &str = "damo/nlp_structbert_siamese-uninlu_chinese-base";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> PathBuf {
    root().join("../shared/fixtures").join(name).join("model")
}

/// The Deployments of every snapshot, by case name.
fn rendered() -> Vec<(String, Value)> {
    let dir = root().join("operator/tests/snapshots");
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let case = path.file_stem().unwrap().to_string_lossy().into_owned();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let object = Value::deserialize(doc).unwrap();
            if object["kind"] == "Deployment" {
                cases.push((case.clone(), object));
            }
        }
    }
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(cases.len() >= 4, "{cases:?}");
    cases
}

/// Points what lies outside any cluster at this machine's stand-ins.
fn localise(deployment: &mut Value, cluster: &ProcessCluster, redis_url: &str) {
    for key in ["initContainers", "containers"] {
        for c in deployment["spec"]["template"]["spec"][key]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            for arg in c["args"].as_array_mut().into_iter().flatten() {
                if arg
                    .as_str()
                    .is_some_and(|a| a.starts_with("https://models.example.com/"))
                {
                    *arg = json!(cluster.archive_url(GTE_REPO));
                }
            }
            for env in c["env"].as_array_mut().into_iter().flatten() {
                if env.get("value").is_some() && env["name"] == "NLU_REDIS_URL" {
                    env["value"] = json!(redis_url);
                }
            }
        }
    }
}

async fn create<K>(api: &Api<K>, object: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
}

#[tokio::test]
async fn every_rendered_deployment_runs_and_becomes_ready() {
    let redis = RedisServer::start().expect("redis-server");
    let work = tempfile::tempdir().unwrap();
    let claim = work.path().join("claims/models");
    std::fs::create_dir_all(claim.join("gte")).unwrap();
    std::os::unix::fs::symlink(fixture("gte-tiny"), claim.join("gte/base-zh")).unwrap();
    let mut options = ClusterOptions::new(work.path().join("cluster"));
    options.images.insert(
        "nlu-server".into(),
        workspace_binary("nlu-server", "nlu-server"),
    );
    options.claims.insert("models".into(), claim);
    options.models = BTreeMap::from([
        (GTE_REPO.to_owned(), fixture("gte-tiny")),
        (UNINLU_REPO.to_owned(), fixture("uninlu-tiny")),
    ]);
    let Some(cluster) = ProcessCluster::start(options) else {
        return;
    };
    let client = cluster.client();
    let key = SigningKey::generate();
    let jwks = serde_json::to_string(&jwk_set([&key.verifying_key()])).unwrap();

    let mut expected = Vec::new();
    for (case, mut deployment) in rendered() {
        let ns = format!("snap-{case}");
        deployment["metadata"]["namespace"] = json!(ns);
        // Their owner (an NluService) is not part of this test.
        deployment["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("ownerReferences");
        localise(&mut deployment, &cluster, &redis.url());
        create::<ConfigMap>(
            &Api::namespaced(client.clone(), &ns),
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "nlu-jwks", "namespace": ns}, "data": {"jwks.json": jwks},
            }),
        )
        .await;
        // The task types of the UniNLU case's spec.model.taskPresets.
        create::<ConfigMap>(
            &Api::namespaced(client.clone(), &ns),
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "uninlu-presets", "namespace": ns},
                "data": {"presets.json": r#"{"topic": {"schema": {"主题": null}, "labels": ["体育", "财经"]}}"#},
            }),
        )
        .await;
        for (secret, key) in [("nlu-redis", "url"), ("tenants-redis", "connection")] {
            create::<Secret>(
                &Api::namespaced(client.clone(), &ns),
                json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": secret, "namespace": ns}, "stringData": {key: redis.url()},
                }),
            )
            .await;
        }
        let replicas = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
        let name = deployment["metadata"]["name"].as_str().unwrap().to_owned();
        create::<Deployment>(&Api::namespaced(client.clone(), &ns), deployment).await;
        expected.push((case, ns, name, replicas));
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    for (case, ns, name, replicas) in expected {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        loop {
            let status = api.get(&name).await.unwrap().status.unwrap_or_default();
            if status.ready_replicas.unwrap_or(0) == replicas as i32
                && status.updated_replicas.unwrap_or(0) == replicas as i32
            {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                let logs: Vec<String> = cluster
                    .pods()
                    .iter()
                    .filter(|p| p.namespace == ns)
                    .map(|p| {
                        format!(
                            "--- {}\n{}{}",
                            p.name,
                            cluster.logs(&ns, &p.name, "download-model"),
                            cluster.logs(&ns, &p.name, "server")
                        )
                    })
                    .collect();
                panic!("{case}: {name} not ready ({status:?})\n{}", logs.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // Each ready pod answers on its own address, as the server it is.
        let pods: Vec<_> = cluster
            .pods()
            .into_iter()
            .filter(|p| p.namespace == ns && p.ready)
            .collect();
        assert_eq!(pods.len() as i64, replicas, "{case}");
    }
}
