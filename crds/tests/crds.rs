//! The generated CRDs: kept in sync with the committed YAML, samples valid against schema and CEL
//! rules, and every rule exercised once passing and once failing.

use std::path::{Path, PathBuf};

use kube::CustomResourceExt;
use nlu_crds::{NluService, Tenant};
use serde_json::{json, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn sample(name: &str) -> Value {
    let text = std::fs::read_to_string(root().join("manifests/samples").join(name)).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// The openAPIV3Schema of a CRD, as JSON.
fn schema_of(crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition) -> Value {
    serde_json::to_value(crd.spec.versions[0].schema.as_ref().unwrap().open_api_v3_schema.as_ref().unwrap()).unwrap()
}

/// Schema errors (types, enums, minimums, required) of `object`, as text.
fn schema_errors(schema: &Value, object: &Value) -> Vec<String> {
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .build(schema)
        .unwrap();
    validator.iter_errors(object).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

/// CEL errors of an NluService object (and of a transition from `old`), as one text.
fn nlus_cel(object: &Value, old: Option<&Value>) -> Result<(), String> {
    let new: NluService = serde_json::from_value(object.clone()).unwrap();
    match old {
        None => new.validate_cel(),
        Some(old) => new.validate_cel_update(&serde_json::from_value(old.clone()).unwrap()),
    }
    .map_err(|e| e.to_string())
}

fn tenant_cel(object: &Value, old: Option<&Value>) -> Result<(), String> {
    let new: Tenant = serde_json::from_value(object.clone()).unwrap();
    match old {
        None => new.validate_cel(),
        Some(old) => new.validate_cel_update(&serde_json::from_value(old.clone()).unwrap()),
    }
    .map_err(|e| e.to_string())
}

/// Set `value` at a JSON pointer, creating objects on the way; `Value::Null` removes the field.
fn with(mut object: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let mut node = &mut object;
    for part in parent.split('/').skip(1) {
        node = node.as_object_mut().unwrap().entry(part).or_insert(json!({}));
    }
    let map = node.as_object_mut().unwrap();
    if value.is_null() {
        map.remove(key);
    } else {
        map.insert(key.to_owned(), value);
    }
    object
}

fn assert_rejected(result: Result<(), String>, message: &str) {
    let err = result.expect_err("the object must be rejected");
    assert!(err.contains(message), "error {err:?} does not name the rule {message:?}");
}

#[test]
fn committed_crd_yaml_matches_the_types() {
    for dir in nlu_crds::crdgen::CRD_DIRS {
        for file in nlu_crds::crdgen::crd_files() {
            let path = root().join(dir).join(file.file_name);
            let committed = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}; run `cargo run -p nlu-crds --bin crdgen`", path.display()));
            assert!(
                committed == file.yaml,
                "{} is stale: run `cargo run -p nlu-crds --bin crdgen`",
                path.display()
            );
        }
    }
}

#[test]
fn crds_have_names_columns_and_status() {
    let nlus = NluService::crd();
    assert_eq!(nlus.spec.group, "nlu.dev");
    assert_eq!(nlus.spec.names.short_names.as_deref(), Some(&["nlus".to_owned()][..]));
    let version = &nlus.spec.versions[0];
    assert!(version.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<_> = version.additional_printer_columns.as_ref().unwrap().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(columns, ["Task", "Ready", "Replicas", "URL", "Age"]);

    let tenant = Tenant::crd();
    assert_eq!(tenant.spec.names.short_names.as_deref(), Some(&["nlt".to_owned()][..]));
    let columns: Vec<_> = tenant.spec.versions[0].additional_printer_columns.as_ref().unwrap().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(columns, ["Quota", "Usage", "Tokens", "Suspended", "Age"]);

    // Conditions are a list-map keyed by type, so server-side apply merges them per condition.
    let schema = schema_of(&nlus);
    let conditions = &schema["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
}

#[test]
fn samples_are_valid_and_round_trip_without_unknown_fields() {
    let nlus_schema = schema_of(&NluService::crd());
    let tenant_schema = schema_of(&Tenant::crd());
    let mut seen = 0;
    for entry in std::fs::read_dir(root().join("manifests/samples")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let object = sample(&name);
        let (errors, typed) = match object["kind"].as_str().unwrap() {
            "NluService" => {
                nlus_cel(&object, None).unwrap_or_else(|e| panic!("{name}: {e}"));
                let typed = serde_json::to_value(serde_json::from_value::<NluService>(object.clone()).unwrap()).unwrap();
                (schema_errors(&nlus_schema, &object), typed)
            }
            "Tenant" => {
                tenant_cel(&object, None).unwrap_or_else(|e| panic!("{name}: {e}"));
                let typed = serde_json::to_value(serde_json::from_value::<Tenant>(object.clone()).unwrap()).unwrap();
                (schema_errors(&tenant_schema, &object), typed)
            }
            other => panic!("{name}: unexpected kind {other}"),
        };
        assert!(errors.is_empty(), "{name}: {errors:?}");
        // A misspelt field would be dropped by the typed round trip (and pruned by the API server).
        assert_eq!(typed["spec"], object["spec"], "{name}: fields the types do not know");
        seen += 1;
    }
    assert!(seen >= 3, "expected the UniNLU, embedding and tenant samples");
}

#[test]
fn schema_rejects_bad_types_enums_and_minimums() {
    let schema = schema_of(&NluService::crd());
    let good = sample("nluservice-uninlu.yaml");
    assert!(schema_errors(&schema, &good).is_empty());
    for (pointer, value, path) in [
        ("/spec/model/task", json!("translation"), "/spec/model/task"),
        ("/spec/autoscaling/minReplicas", json!(0), "/spec/autoscaling/minReplicas"),
        ("/spec/autoscaling/targetCPUUtilizationPercentage", json!(101), "/spec/autoscaling/targetCPUUtilizationPercentage"),
        ("/spec/batching/maxWaitMillis", json!(-1), "/spec/batching/maxWaitMillis"),
        ("/spec/auth/failurePolicy", json!("Sometimes"), "/spec/auth/failurePolicy"),
        ("/spec/model/maxSequenceLength", json!(4), "/spec/model/maxSequenceLength"),
        ("/spec/model/task", Value::Null, "/spec/model"),
    ] {
        let errors = schema_errors(&schema, &with(good.clone(), pointer, value.clone()));
        assert!(errors.iter().any(|e| e.ends_with(path)), "{pointer} = {value}: {errors:?}");
    }

    let schema = schema_of(&Tenant::crd());
    let good = sample("tenant.yaml");
    for (pointer, value) in [
        ("/spec/services", json!([])),
        ("/spec/scopes", json!(["admin"])),
        ("/spec/scopes", json!(["predict:summary"])),
        ("/spec/token/generation", json!(0)),
    ] {
        let errors = schema_errors(&schema, &with(good.clone(), pointer, value.clone()));
        assert!(!errors.is_empty(), "{pointer} = {value} must be rejected");
    }
    let per_task = with(good, "/spec/scopes", json!(["predict:ner", "predict:mrc", "embed"]));
    assert_eq!(schema_errors(&schema, &per_task), Vec::<String>::new());
}

#[test]
fn exactly_one_model_source() {
    let good = sample("nluservice-uninlu.yaml");
    assert!(nlus_cel(&good, None).is_ok());
    let message = "exactly one of huggingFace, modelScope, pvc or url must be set";
    let two = with(good.clone(), "/spec/model/source/url", json!("https://models.example.com/m.tar.gz"));
    assert_rejected(nlus_cel(&two, None), message);
    let none = with(good.clone(), "/spec/model/source/modelScope", Value::Null);
    assert_rejected(nlus_cel(&none, None), message);
    let hub = with(none, "/spec/model/source/huggingFace", json!({"repo": "thenlper/gte-base-zh"}));
    assert!(nlus_cel(&hub, None).is_ok());
}

#[test]
fn model_url_and_pvc_path_rules() {
    let base = with(sample("nluservice-uninlu.yaml"), "/spec/model/source/modelScope", Value::Null);
    assert!(nlus_cel(&with(base.clone(), "/spec/model/source/url", json!("https://x/m.tar.gz")), None).is_ok());
    assert_rejected(nlus_cel(&with(base.clone(), "/spec/model/source/url", json!("ftp://x/m.tar.gz")), None), "url must be an http(s) URL");

    let pvc = |path: &str| with(base.clone(), "/spec/model/source/pvc", json!({"claimName": "models", "path": path}));
    assert!(nlus_cel(&pvc("gte/base"), None).is_ok());
    let message = "path must be relative to the volume root";
    assert_rejected(nlus_cel(&pvc("/etc"), None), message);
    assert_rejected(nlus_cel(&pvc("a/../../b"), None), message);
}

#[test]
fn replicas_and_autoscaling_rules() {
    let good = sample("nluservice-uninlu.yaml");
    assert_rejected(
        nlus_cel(&with(good.clone(), "/spec/replicas", json!(3)), None),
        "set either replicas or autoscaling, not both",
    );
    let fixed = with(with(good.clone(), "/spec/autoscaling", Value::Null), "/spec/replicas", json!(3));
    assert!(nlus_cel(&fixed, None).is_ok());

    let equal = with(good.clone(), "/spec/autoscaling/minReplicas", json!(6));
    assert!(nlus_cel(&equal, None).is_ok());
    let inverted = with(good, "/spec/autoscaling/minReplicas", json!(7));
    assert_rejected(nlus_cel(&inverted, None), "minReplicas must not exceed maxReplicas");
}

#[test]
fn ingress_rules() {
    let good = sample("nluservice-uninlu.yaml");
    let no_host = with(good.clone(), "/spec/ingress/host", Value::Null);
    assert_rejected(nlus_cel(&no_host, None), "tls needs a host");
    let no_tls = with(no_host, "/spec/ingress/tls", Value::Null);
    assert!(nlus_cel(&no_tls, None).is_ok(), "an Ingress without TLS may omit the host");

    let both = with(good.clone(), "/spec/ingress/tls/issuer", json!("local-ca"));
    assert_rejected(nlus_cel(&both, None), "set at most one of clusterIssuer or issuer");
    let issuer_only = with(with(both, "/spec/ingress/tls/clusterIssuer", Value::Null), "/spec/ingress/tls/issuer", json!("local-ca"));
    assert!(nlus_cel(&issuer_only, None).is_ok());

    // auth none behind an Ingress only when meant; without an Ingress it is in-cluster only.
    let open = with(good.clone(), "/spec/auth", json!({"mode": "none"}));
    assert_rejected(nlus_cel(&open, None), nlu_crds::nlu_service::UNAUTHENTICATED_INGRESS);
    let meant = with(open.clone(), "/spec/auth/allowUnauthenticated", json!(true));
    assert!(nlus_cel(&meant, None).is_ok());
    let internal = with(open, "/spec/ingress", Value::Null);
    assert!(nlus_cel(&internal, None).is_ok());

    // The CEL rule and the server's --path-prefix parser agree on every case.
    for path in ["/api", "/uninlu/", "/a/b", "/v1.0/a_b~c-d", "api", "/a/../b", "/a?x=1", "/a#top", "/..", "a/b", "/a(.*)", "/a$1", "/a b", "/{a}", "/ü"] {
        let cel = nlus_cel(&with(good.clone(), "/spec/ingress/path", json!(path)), None);
        let server = nlu_crds::serve::path_prefix(path);
        assert_eq!(cel.is_ok(), server.is_ok(), "{path:?}: CEL {cel:?}, --path-prefix {server:?}");
        if cel.is_err() {
            assert_rejected(cel, "path must be a path such as /uninlu");
        }
    }
}

#[test]
fn redis_reference_rules() {
    let good = sample("nluservice-uninlu.yaml");
    let both = with(good.clone(), "/spec/auth/redis/url", json!("redis://redis:6379"));
    assert_rejected(nlus_cel(&both, None), "exactly one of url or secretRef must be set");
    let url_only = with(both, "/spec/auth/redis/secretRef", Value::Null);
    assert!(nlus_cel(&url_only, None).is_ok());
    let cluster_url = json!("rediss+cluster://r-0:6379,r-1:6379");
    let cluster = with(url_only.clone(), "/spec/auth/redis/url", cluster_url);
    assert!(nlus_cel(&cluster, None).is_ok());
    let bad_scheme = with(url_only, "/spec/auth/redis/url", json!("http://redis:6379"));
    assert_rejected(
        nlus_cel(&bad_scheme, None),
        "url must start with redis://, rediss://, redis+cluster:// or rediss+cluster://",
    );
}

#[test]
fn quotas_are_non_negative_and_exact_in_the_quota_script() {
    let good = sample("tenant.yaml");
    let zero = with(good.clone(), "/spec/quota/requestsPerDay", json!(0));
    assert!(tenant_cel(&zero, None).is_ok(), "0 means unlimited");
    let max = nlu_crds::access::redis_keys::MAX_LIMIT;
    for field in ["requestsPerDay", "requestsPerMinute", "tokensPerDay", "tokensPerMinute"] {
        let path = format!("/spec/quota/{field}");
        assert!(tenant_cel(&with(good.clone(), &path, json!(max)), None).is_ok());
        for bad in [json!(-1), json!(max + 1)] {
            assert_rejected(
                tenant_cel(&with(good.clone(), &path, bad), None),
                &format!("{field} must be from 0 (unlimited) to {max}"),
            );
        }
    }
}

#[test]
fn token_ttl_has_a_floor_and_the_servers_ceiling() {
    let good = sample("tenant.yaml");
    let tenant: Tenant = serde_json::from_value(good.clone()).unwrap();
    assert_eq!(tenant.spec.token_ttl().unwrap(), std::time::Duration::from_secs(720 * 3600));
    assert!(tenant_cel(&with(good.clone(), "/spec/token/ttl", json!("5m")), None).is_ok());
    // The ceiling is the servers' default --max-token-lifetime: every minted token passes it.
    let max = nlu_crds::access::verify::MAX_TOKEN_LIFETIME.as_secs();
    assert!(tenant_cel(&with(good.clone(), "/spec/token/ttl", json!(format!("{max}s"))), None).is_ok());
    for too_far in ["90s".to_owned(), format!("{}s", max + 1)] {
        assert_rejected(
            tenant_cel(&with(good.clone(), "/spec/token/ttl", json!(too_far)), None),
            "ttl must be a duration from 5m to 8760h",
        );
    }
}

#[test]
fn token_generation_only_goes_up() {
    let old = with(sample("tenant.yaml"), "/spec/token/generation", json!(3));
    let raised = with(old.clone(), "/spec/token/generation", json!(4));
    assert!(tenant_cel(&raised, Some(&old)).is_ok());
    let lowered = with(old.clone(), "/spec/token/generation", json!(2));
    assert!(tenant_cel(&lowered, None).is_ok(), "a transition rule only applies to updates");
    assert_rejected(tenant_cel(&lowered, Some(&old)), "generation can only be raised");
}
