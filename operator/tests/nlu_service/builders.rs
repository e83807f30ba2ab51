//! Plain asserts on the pure builders: the rules each child must follow, case by case.

use k8s_openapi::api::core::v1::{Container, PodSpec};
use nlu_operator::config::OperatorConfig;
use nlu_operator::nlu_service::build::{children, deployment::deployment, Children};

use crate::fixtures::{auth_off, embeddings_pvc, minimal, service, uninlu_tls_autoscaling};

fn build(svc: &nlu_crds::NluService) -> Children {
    children(svc, &OperatorConfig::default())
}

fn pod(c: &Children) -> PodSpec {
    c.deployment.spec.clone().unwrap().template.spec.unwrap()
}

fn server(c: &Children) -> Container {
    pod(c)
        .containers
        .into_iter()
        .find(|c| c.name == "server")
        .unwrap()
}

fn args(c: &Children) -> Vec<String> {
    server(c).args.unwrap()
}

/// The value following `flag` in `args`.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .map(|i| args[i + 1].as_str())
}

#[test]
fn every_child_carries_labels_and_controller_owner() {
    let c = build(&uninlu_tls_autoscaling());
    let metas = [
        &c.deployment.metadata,
        &c.service.metadata,
        &c.network_policy.metadata,
        &c.ingress.as_ref().unwrap().metadata,
        &c.hpa.as_ref().unwrap().metadata,
        &c.pdb.as_ref().unwrap().metadata,
    ];
    for meta in metas {
        let labels = meta.labels.clone().unwrap();
        assert_eq!(labels["app.kubernetes.io/name"], "nlu-server");
        assert_eq!(labels["app.kubernetes.io/instance"], "uninlu");
        assert_eq!(labels["app.kubernetes.io/component"], "inference");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "nlu-operator");
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("NluService", "uninlu", "uid-uninlu")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(meta.namespace.as_deref(), Some("nlp"));
    }
}

#[test]
fn replicas_are_left_to_the_hpa_when_autoscaling() {
    assert_eq!(
        build(&uninlu_tls_autoscaling())
            .deployment
            .spec
            .unwrap()
            .replicas,
        None
    );
    assert_eq!(
        build(&embeddings_pvc()).deployment.spec.unwrap().replicas,
        Some(3)
    );
    assert_eq!(build(&minimal()).deployment.spec.unwrap().replicas, Some(1));
}

#[test]
fn optional_children_follow_their_features() {
    let m = build(&minimal());
    assert!(m.ingress.is_none() && m.hpa.is_none() && m.pdb.is_none());
    let u = build(&uninlu_tls_autoscaling());
    assert!(u.ingress.is_some() && u.hpa.is_some());
    assert!(u.pdb.is_some(), "minReplicas 2 gets a PDB");
    let pvc = build(&embeddings_pvc());
    assert_eq!(
        pvc.pdb.unwrap().spec.unwrap().max_unavailable,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
    );
    let one = service(
        "one",
        "model: {task: embedding, source: {url: 'https://x/m.tar.gz'}}\nautoscaling: {minReplicas: 1, maxReplicas: 3}",
    );
    assert!(
        build(&one).pdb.is_none(),
        "a PDB on one pod would block drains"
    );
}

#[test]
fn pods_are_locked_down() {
    for svc in [
        minimal(),
        uninlu_tls_autoscaling(),
        embeddings_pvc(),
        auth_off(),
    ] {
        let c = build(&svc);
        let pod = pod(&c);
        assert_eq!(pod.automount_service_account_token, Some(false));
        let psc = pod.security_context.clone().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        for container in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            let sc = container.security_context.clone().unwrap();
            assert_eq!(
                sc.read_only_root_filesystem,
                Some(true),
                "{}",
                container.name
            );
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
            let mounts: Vec<_> = container
                .volume_mounts
                .iter()
                .flatten()
                .map(|m| m.mount_path.as_str())
                .collect();
            assert!(
                mounts.contains(&"/tmp"),
                "{}: writable /tmp on a read-only root",
                container.name
            );
        }
        let strategy = c
            .deployment
            .spec
            .unwrap()
            .strategy
            .unwrap()
            .rolling_update
            .unwrap();
        assert_eq!(
            strategy.max_unavailable,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0))
        );
    }
}

#[test]
fn memory_limit_follows_the_batching_settings_unless_the_spec_sets_memory() {
    let memory = |svc: &nlu_crds::NluService| {
        let r = server(&build(svc)).resources.unwrap();
        let get = |m: Option<std::collections::BTreeMap<String, _>>| {
            m.and_then(|m| {
                m.get("memory")
                    .map(|q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| q.0.clone())
            })
        };
        (get(r.requests), get(r.limits))
    };
    // Defaults: 1 GiB for the model + 16384 batch positions x 64 KiB + 524288 in flight x 3 KiB.
    assert_eq!(
        memory(&minimal()),
        (Some("1024Mi".into()), Some("3584Mi".into()))
    );
    // The spec's own memory is kept as written.
    assert_eq!(
        memory(&uninlu_tls_autoscaling()),
        (Some("2Gi".into()), Some("3Gi".into()))
    );
    // Resources without memory get the derived limit of their batching settings.
    let mut cpu_only = minimal();
    cpu_only.spec.resources =
        Some(serde_json::from_value(serde_json::json!({"requests": {"cpu": "4"}})).unwrap());
    cpu_only.spec.batching = Some(
        serde_json::from_value(
            serde_json::json!({"maxBatchTokens": 4096, "maxQueueTokens": 65536}),
        )
        .unwrap(),
    );
    assert_eq!(
        memory(&cpu_only),
        (None, Some(format!("{}Mi", 1024 + 256 + 192)))
    );
}

#[test]
fn probes_and_drain() {
    let s = server(&build(&minimal()));
    assert_eq!(
        s.liveness_probe.unwrap().http_get.unwrap().path.as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        s.readiness_probe.unwrap().http_get.unwrap().path.as_deref(),
        Some("/readyz")
    );
    let startup = s.startup_probe.unwrap();
    let budget = startup.period_seconds.unwrap() * startup.failure_threshold.unwrap();
    assert!(
        budget >= 300,
        "model loading may take minutes, startup budget is {budget}s"
    );
    assert!(
        s.lifecycle
            .unwrap()
            .pre_stop
            .unwrap()
            .sleep
            .unwrap()
            .seconds
            > 0
    );
}

#[test]
fn hub_model_downloads_into_the_folder_the_server_reads() {
    let c = build(&minimal());
    let init = pod(&c).init_containers.unwrap().remove(0);
    let init_args = init.args.unwrap();
    assert_eq!(init_args[0], "download");
    assert_eq!(flag(&init_args, "--model"), Some("thenlper/gte-base-zh"));
    assert_eq!(flag(&init_args, "--cache-dir"), Some("/models"));
    assert_eq!(
        flag(&args(&c), "--model"),
        Some("/models/thenlper--gte-base-zh/main")
    );
    assert_eq!(init.image, server(&c).image);
}

#[test]
fn downloads_are_capped_and_checked_and_their_volumes_sized() {
    let size_limit = |c: &Children, name: &str| {
        let volume = pod(c)
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == name)
            .unwrap();
        volume.empty_dir.unwrap().size_limit.unwrap().0
    };
    let max = nlu_crds::serve::download::DEFAULT_MAX_BYTES;
    // A hub model: the cap plus slack; a URL's archive and its contents: twice the cap.
    let hub = build(&minimal());
    assert_eq!(size_limit(&hub, "model"), format!("{}Mi", (max >> 20) + 64));
    assert_eq!(size_limit(&hub, "tmp"), "64Mi");
    let url = build(&service(
        "u",
        "model: {task: embedding, source: {url: 'https://x/m.tar.gz'}}",
    ));
    assert_eq!(
        size_limit(&url, "model"),
        format!("{}Mi", 2 * (max >> 20) + 64)
    );

    let init_args = |c: &Children| pod(c).init_containers.unwrap().remove(0).args.unwrap();
    let max = max.to_string();
    assert_eq!(
        flag(&init_args(&hub), "--max-download-bytes"),
        Some(max.as_str())
    );
    assert_eq!(flag(&init_args(&hub), "--sha256"), None);
    let sha = "ab".repeat(32);
    let pinned = build(&service(
        "u",
        &format!(
            "model: {{task: embedding, source: {{url: 'https://x/m.tar.gz', sha256: {sha}}}}}"
        ),
    ));
    assert_eq!(flag(&init_args(&pinned), "--sha256"), Some(sha.as_str()));
}

#[test]
fn pvc_model_mounts_read_only_without_download() {
    let c = build(&embeddings_pvc());
    let pod = pod(&c);
    assert!(pod.init_containers.is_none());
    let volume = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "model")
        .unwrap();
    let claim = volume.persistent_volume_claim.unwrap();
    assert_eq!(
        (claim.claim_name.as_str(), claim.read_only),
        ("models", Some(true))
    );
    assert_eq!(flag(&args(&c), "--model"), Some("/models/gte/base-zh"));
    assert_eq!(flag(&args(&c), "--pooling"), Some("mean"));
}

#[test]
fn auth_wiring() {
    let c = build(&uninlu_tls_autoscaling());
    let a = args(&c);
    assert_eq!(flag(&a, "--auth"), Some("jwt"));
    assert_eq!(flag(&a, "--jwks"), Some("/etc/nlu/jwks/jwks.json"));
    assert_eq!(flag(&a, "--service-id"), Some("nlp/uninlu"));
    assert_eq!(flag(&a, "--redis-failure-policy"), Some("fail-open"));
    let env = server(&c).env.unwrap();
    let secret = env[0].value_from.clone().unwrap().secret_key_ref.unwrap();
    assert_eq!(
        (
            env[0].name.as_str(),
            secret.name.as_str(),
            secret.key.as_str()
        ),
        ("NLU_REDIS_URL", "tenants-redis", "connection")
    );
    assert!(
        !a.iter().any(|x| x.contains("redis://")),
        "the Redis URL never appears in args"
    );
    let jwks = pod(&c)
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "jwks")
        .unwrap();
    assert_eq!(jwks.config_map.unwrap().name, "nlu-jwks");

    let m = build(&minimal());
    let secret = server(&m).env.unwrap()[0]
        .value_from
        .clone()
        .unwrap()
        .secret_key_ref
        .unwrap();
    assert_eq!(
        (secret.name.as_str(), secret.key.as_str()),
        ("nlu-redis", "url"),
        "operator default Secret"
    );

    let off = build(&auth_off());
    assert_eq!(flag(&args(&off), "--auth"), Some("none"));
    assert!(server(&off).env.is_none());
    assert!(!pod(&off).volumes.unwrap().iter().any(|v| v.name == "jwks"));
}

#[test]
fn playground_is_off_behind_an_ingress_unless_asked_for() {
    let no_playground = |svc| args(&build(&svc)).contains(&"--no-playground".to_owned());
    assert!(!no_playground(minimal()), "in-cluster only: playground on");
    assert!(
        no_playground(uninlu_tls_autoscaling()),
        "public: playground off by default"
    );
    assert!(!no_playground(auth_off()), "explicit playground: true");
}

#[test]
fn ingress_uses_cert_manager_and_never_a_secret_object() {
    let ing = build(&uninlu_tls_autoscaling()).ingress.unwrap();
    assert_eq!(
        ing.metadata.annotations.unwrap()["cert-manager.io/cluster-issuer"],
        "letsencrypt-prod"
    );
    let spec = ing.spec.unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    let tls = &spec.tls.unwrap()[0];
    assert_eq!(tls.secret_name.as_deref(), Some("uninlu-tls"));
    assert_eq!(
        tls.hosts.as_deref(),
        Some(&["nlu.example.com".to_owned()][..])
    );
    let rules = spec.rules.unwrap();
    let paths: Vec<_> = rules[0]
        .http
        .as_ref()
        .unwrap()
        .paths
        .iter()
        .map(|p| (p.path.as_deref().unwrap(), p.path_type.as_str()))
        .collect();
    // Public by default: the model routes of its task, model discovery and the seed app's
    // health route only; no playground, probes or metrics.
    assert_eq!(
        paths,
        [
            ("/uninlu/api/predict", "Exact"),
            ("/uninlu/predict", "Exact"),
            ("/uninlu/v1/models", "Exact"),
            ("/uninlu/v1/models", "Prefix"),
            ("/uninlu/health", "Exact")
        ]
    );

    let issuer = build(&auth_off()).ingress.unwrap();
    let ann = issuer.metadata.annotations.unwrap();
    assert_eq!(
        ann.get("cert-manager.io/issuer").map(String::as_str),
        Some("local-ca")
    );
    assert!(!ann.contains_key("cert-manager.io/cluster-issuer"));
    assert_eq!(
        issuer.spec.unwrap().tls.unwrap()[0].secret_name.as_deref(),
        Some("open-cert")
    );
}

#[test]
fn hpa_targets_cpu_and_inflight_requests() {
    let hpa = build(&uninlu_tls_autoscaling()).hpa.unwrap().spec.unwrap();
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(2), 8));
    assert_eq!(hpa.scale_target_ref.kind, "Deployment");
    let metrics = hpa.metrics.unwrap();
    assert_eq!(
        metrics[0]
            .resource
            .as_ref()
            .unwrap()
            .target
            .average_utilization,
        Some(60)
    );
    let pods = metrics[1].pods.as_ref().unwrap();
    // The gauge the server exports (checked against its registry in nlu-server's contract tests).
    assert_eq!(pods.metric.name, "nlu_in_flight_requests");
    assert!(
        hpa.behavior
            .unwrap()
            .scale_down
            .unwrap()
            .stabilization_window_seconds
            .unwrap()
            > 0
    );
}

#[test]
fn network_policy_admits_ingress_and_monitoring_and_allows_dns_and_redis() {
    let cfg = OperatorConfig {
        ingress_namespace: "traefik".into(),
        monitoring_namespace: "prom".into(),
        ..OperatorConfig::default()
    };
    let np = children(&embeddings_pvc(), &cfg)
        .network_policy
        .spec
        .unwrap();
    let json = serde_json::to_string(&np).unwrap();
    assert!(
        json.contains(r#""kubernetes.io/metadata.name":"traefik""#),
        "{json}"
    );
    assert!(json.contains(r#""kubernetes.io/metadata.name":"prom""#));
    let egress = np.egress.unwrap();
    let ports: Vec<i32> = egress
        .iter()
        .flat_map(|r| r.ports.iter().flatten())
        .map(|p| match p.port.clone().unwrap() {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => n,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(ports.contains(&53) && ports.contains(&6379));
    assert!(!ports.contains(&443), "a PVC model needs no web egress");
    let hub = children(&minimal(), &cfg).network_policy.spec.unwrap();
    assert!(
        serde_json::to_string(&hub)
            .unwrap()
            .contains(r#""port":443"#),
        "the download init container needs https"
    );
}

/// Told where its Redis runs, the operator lets a service that reads that Redis reach only those
/// pods; a service with a Redis of its own keeps the port open to any address.
#[test]
fn redis_egress_reaches_only_the_operators_redis_pods_when_they_are_known() {
    let cfg = OperatorConfig {
        redis_url: Some("redis://redis.nlu-system:6379/0".into()),
        redis_namespace: Some("nlu-system".into()),
        redis_pod_labels: vec![("app.kubernetes.io/component".into(), "redis".into())],
        ..OperatorConfig::default()
    };
    let redis_rule = |svc: &nlu_crds::NluService, cfg: &OperatorConfig| {
        let np = serde_json::to_value(children(svc, cfg).network_policy.spec.unwrap()).unwrap();
        np["egress"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["ports"][0]["port"] == 6379)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        redis_rule(&minimal(), &cfg)["to"],
        serde_json::json!([{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "nlu-system"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/component": "redis"}},
        }])
    );
    // Unknown pods, or a Redis of the service's own: the port, to anywhere.
    assert!(redis_rule(&minimal(), &OperatorConfig::default())
        .get("to")
        .is_none());
    let mut own = minimal();
    own.spec.auth =
        serde_json::from_value(serde_json::json!({"redis": {"secretRef": {"name": "mine"}}}))
            .unwrap();
    assert!(redis_rule(&own, &cfg).get("to").is_none());
}

#[test]
fn image_comes_from_the_spec_or_the_operator() {
    let cfg = OperatorConfig {
        image: "registry.local/nlu-server:1".into(),
        ..OperatorConfig::default()
    };
    let d = deployment(&minimal(), &cfg);
    assert_eq!(
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("registry.local/nlu-server:1")
    );
    let mut own = minimal();
    own.spec.image = Some("mine:2".into());
    let d = deployment(&own, &cfg);
    assert_eq!(
        d.spec.unwrap().template.spec.unwrap().containers[0]
            .image
            .as_deref(),
        Some("mine:2")
    );
    // Digests pass through as written, in the pod and in the download init container.
    let sha = format!("sha256:{}", "0f".repeat(32));
    for image in [
        format!("registry.local/nlu-server@{sha}"),
        format!("registry.local:5000/nlu-server:1@{sha}"),
    ] {
        for (spec_image, cfg_image) in [
            (Some(image.clone()), cfg.image.clone()),
            (None, image.clone()),
        ] {
            let mut svc = minimal();
            svc.spec.image = spec_image;
            let cfg = OperatorConfig {
                image: cfg_image,
                ..OperatorConfig::default()
            };
            let pod = deployment(&svc, &cfg).spec.unwrap().template.spec.unwrap();
            assert_eq!(pod.containers[0].image.as_ref(), Some(&image));
            assert_eq!(pod.init_containers.unwrap()[0].image.as_ref(), Some(&image));
        }
    }
}

#[test]
fn a_rerank_service_serves_the_rerank_task_and_publishes_only_its_routes() {
    let c = build(&service(
        "rerank",
        "model: {task: rerank, source: {huggingFace: {repo: BAAI/bge-reranker-base}}, maxSequenceLength: 512}\ningress: {host: r.example.com, tls: {issuer: ca}}",
    ));
    let a = args(&c);
    assert_eq!(flag(&a, "--task"), Some("rerank"));
    assert_eq!(flag(&a, "--max-input-length"), Some("512"));
    assert_eq!(flag(&a, "--pooling"), None);
    let paths: Vec<String> = c.ingress.unwrap().spec.unwrap().rules.unwrap()[0]
        .http
        .as_ref()
        .unwrap()
        .paths
        .iter()
        .map(|p| p.path.clone().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/rerank",
            "/v1/rerank",
            "/v1/models",
            "/v1/models",
            "/health"
        ]
    );
}
