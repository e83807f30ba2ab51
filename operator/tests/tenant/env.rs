//! A Tenant controller context wired to the harness, plus the server's admission rules
//! (verifier, scope, namespace, quota script) used to judge the tokens the controller issues.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use nlu_crds::access::jwks::ed25519_keys;
use nlu_crds::access::redis_keys::{script_args, Charge, QUOTA_SCRIPT};
use nlu_crds::access::tokens::DEFAULT_ISSUER;
use nlu_crds::access::verify::DEFAULT_LEEWAY_SECS;
use nlu_crds::access::{
    Claims, QualifiedName, QuotaOutcome, RedisKeys, Scope, TokenError, Verifier,
};
use nlu_crds::{NluService, Tenant};
use nlu_operator::config::OperatorConfig;
use nlu_operator::context::Context;
use nlu_operator::metrics::Metrics;
use nlu_operator::tenant::controller::{self, Error, TenantContext};
use nlu_operator::tenant::signing_key::KeyRing;
use serde_json::{json, Value};
use tokio::sync::watch;

use nlu_testkit::{FakeApi, RedisServer};

use crate::harness::redis_conn;

pub const NS: &str = "team";

pub fn tenant_path(name: &str) -> String {
    format!("/apis/nlu.dev/v1alpha1/namespaces/{NS}/tenants/{name}")
}

pub fn secret_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/secrets/{name}")
}

pub struct Env {
    pub redis: RedisServer,
    pub api: FakeApi,
    pub client: kube::Client,
    pub ring: watch::Sender<Arc<KeyRing>>,
    pub ctx: Arc<TenantContext>,
    services: Writer<NluService>,
    /// Seconds the operator's clock (and the day the server counts on) runs ahead of the wall
    /// clock; tokens are still verified at wall-clock time.
    ahead: Arc<AtomicI64>,
}

impl Env {
    pub async fn new() -> Self {
        let redis = crate::harness::redis();
        let (client, api) = FakeApi::start();
        let (ring, _) = watch::channel(Arc::new(KeyRing::generate()));
        let (_, services) = reflector::store();
        let ahead = Arc::default();
        let ctx = context(
            &client,
            &redis,
            &ring,
            &services,
            OperatorConfig::default(),
            &ahead,
        )
        .await;
        Self {
            redis,
            api,
            client,
            ring,
            ctx,
            services,
            ahead,
        }
    }

    /// Moves the operator's clock, and the day the server counts on, `seconds` ahead.
    pub fn advance(&self, seconds: i64) {
        self.ahead.fetch_add(seconds, Ordering::SeqCst);
    }

    /// The UTC day on the operator's clock: the one the server counts usage on.
    pub fn today(&self) -> chrono::NaiveDate {
        nlu_operator::tenant::plan::utc_day(self.ctx.base.now())
    }

    /// A new controller context (as after an operator restart: no in-memory throttle state).
    pub async fn fresh_context(&self) -> Arc<TenantContext> {
        self.context_with(OperatorConfig::default()).await
    }

    /// A new controller context of an operator run with `config`.
    pub async fn context_with(&self, config: OperatorConfig) -> Arc<TenantContext> {
        context(
            &self.client,
            &self.redis,
            &self.ring,
            &self.services,
            config,
            &self.ahead,
        )
        .await
    }

    /// An NluService with a URL in its status, as the NluService controller reports it.
    pub fn service(&mut self, name: &str, url: &str) {
        let mut svc: NluService = serde_json::from_value(json!({
            "apiVersion": "nlu.dev/v1alpha1", "kind": "NluService",
            "metadata": {"name": name, "namespace": NS, "uid": format!("svc-{name}")},
            "spec": {"model": {"task": "embedding", "source": {"url": "https://models.example/m"}}},
        }))
        .unwrap();
        svc.status = Some(nlu_crds::NluServiceStatus {
            url: Some(url.into()),
            ..Default::default()
        });
        self.services
            .apply_watcher_event(&watcher::Event::Apply(svc));
    }

    /// Stores a Tenant as `kubectl apply` would leave it.
    pub fn create_tenant(&self, name: &str, spec: Value) {
        self.api.put(
            &tenant_path(name),
            json!({"apiVersion": "nlu.dev/v1alpha1", "kind": "Tenant",
                   "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"), "generation": 1},
                   "spec": spec}),
        );
    }

    /// Changes the spec (the API server bumps `metadata.generation`).
    pub fn edit_spec(&self, name: &str, f: impl FnOnce(&mut Value)) {
        self.api.edit(&tenant_path(name), |t| {
            f(&mut t["spec"]);
            let g = t["metadata"]["generation"].as_i64().unwrap();
            t["metadata"]["generation"] = json!(g + 1);
        });
    }

    pub fn annotate(&self, name: &str, key: &str, value: &str) {
        self.api.edit(&tenant_path(name), |t| {
            t["metadata"]["annotations"][key] = json!(value)
        });
    }

    pub fn tenant(&self, name: &str) -> Tenant {
        serde_json::from_value(self.api.get(&tenant_path(name)).expect("tenant stored")).unwrap()
    }

    pub async fn reconcile(&self, name: &str) -> Result<Action, Error> {
        controller::reconcile(Arc::new(self.tenant(name)), self.ctx.clone()).await
    }

    /// Reconciles until a pass changes nothing more in the API (the first pass only adds the
    /// finalizer; a revocation patches the Tenant and is seen by the next pass).
    pub async fn settle(&self, name: &str) {
        for _ in 0..5 {
            let before = self.api.get(&tenant_path(name));
            let writes_before = self.writes();
            self.reconcile(name).await.unwrap();
            if self.api.get(&tenant_path(name)) == before && self.writes() == writes_before {
                return;
            }
        }
        panic!("tenant {name} did not settle");
    }

    fn writes(&self) -> usize {
        self.api
            .calls()
            .iter()
            .filter(|r| r.method != "GET" && !r.path.ends_with("/events"))
            .count()
    }

    pub fn secret(&self, name: &str) -> Secret {
        serde_json::from_value(
            self.api
                .get(&secret_path(&format!("{name}-token")))
                .expect("token Secret"),
        )
        .unwrap()
    }

    pub fn token(&self, name: &str) -> String {
        let s = self.secret(name);
        String::from_utf8(s.data.unwrap()["token"].0.clone()).unwrap()
    }

    /// The verifier a server for `service` (`namespace/name`) builds from the published JWK Set.
    pub fn verifier(&self, service: &str) -> Verifier {
        let jwks = self.ring.borrow().jwks_json();
        Verifier::new(
            ed25519_keys(jwks.as_bytes()).unwrap(),
            DEFAULT_ISSUER,
            &service.parse().unwrap(),
            DEFAULT_LEEWAY_SECS,
        )
    }

    /// What the server decides for `token` on `service` and a route needing `scope`: the same
    /// steps in the same order as its auth middleware (verify, scope claim, namespace, quota
    /// script in Redis).
    pub fn server_decision(
        &self,
        token: &str,
        service: &str,
        scope: Scope,
    ) -> Result<QuotaOutcome, Refused> {
        let service: QualifiedName = service.parse().unwrap();
        let claims = self
            .verifier(&service.to_string())
            .verify(token)
            .map_err(Refused::Token)?;
        let need = Scope::reaching(scope);
        if !claims.grants(&need) {
            return Err(Refused::ScopeClaim);
        }
        let tenant = claims.tenant().unwrap();
        if tenant.namespace != service.namespace {
            return Err(Refused::Namespace);
        }
        Ok(self.quota_script(&tenant, &claims, &need, &service.name))
    }

    pub fn quota_script(
        &self,
        tenant: &QualifiedName,
        claims: &Claims,
        scopes: &[Scope],
        service: &str,
    ) -> QuotaOutcome {
        let keys = RedisKeys::default();
        let today = self.today();
        let script = redis::Script::new(QUOTA_SCRIPT);
        let mut call = script.prepare_invoke();
        call.key(&keys.script_keys(tenant, today)[..]).arg(
            &script_args(
                &claims.credential(),
                scopes,
                service,
                rand_nonce(),
                Charge::Request,
                60_000,
            )[..],
        );
        let reply: Vec<i64> = call.invoke(&mut redis_conn(&self.redis)).unwrap();
        QuotaOutcome::from_reply(&reply).unwrap()
    }
}

/// Why the server refused before reaching Redis.
#[derive(Debug, PartialEq)]
pub enum Refused {
    Token(TokenError),
    ScopeClaim,
    Namespace,
}

/// Claims of a token, read the way the server reads them (verified for one of its audiences).
pub fn claims_of(env: &Env, token: &str, service: &str) -> Claims {
    env.verifier(service).verify(token).unwrap()
}

fn rand_nonce() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

async fn context(
    client: &kube::Client,
    redis: &RedisServer,
    ring: &watch::Sender<Arc<KeyRing>>,
    services: &Writer<NluService>,
    config: OperatorConfig,
    ahead: &Arc<AtomicI64>,
) -> Arc<TenantContext> {
    let ahead = ahead.clone();
    let clock = Arc::new(move || {
        let ahead = k8s_openapi::jiff::SignedDuration::from_secs(ahead.load(Ordering::SeqCst));
        k8s_openapi::jiff::Timestamp::now() + ahead
    });
    let base =
        Arc::new(Context::new(client.clone(), config, Arc::new(Metrics::new())).with_clock(clock));
    let conn = nlu_operator::tenant::redis_sync::connect(&redis.url(), None).unwrap();
    Arc::new(TenantContext::new(
        base,
        conn,
        RedisKeys::default(),
        ring.subscribe(),
        services.as_reader(),
        DEFAULT_ISSUER.into(),
    ))
}
