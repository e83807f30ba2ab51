//! Multi-tenant access: `Authorization: Bearer <EdDSA JWT>` verified against a JWK Set, then one
//! atomic Redis script for the tenant record, daily quota and per-minute limit.
//!
//! Flow per request: bearer token -> signature, issuer, audience, lifetime ([`jwt`]) -> scope of
//! the route -> quota script ([`quota`]) or, while Redis is down, the failure policy ([`policy`])
//! -> handler. Answers: 401 (token), 403 (tenant not allowed), 429 (limits), 503 (Redis down,
//! fail-closed), with `X-RateLimit-*` headers on every response the quota script counted.
//! UniNLU's per-task scopes (`predict:<task>`) reach its routes like `predict`; once the handler
//! knows the request's task it asks the meter again (`Payer::allow_task`).

pub mod jwt;
pub mod metrics;
pub mod policy;
pub mod quota;

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use clap::Args;
use nlu_crds::access::redis_keys::DEFAULT_PREFIX;
use nlu_crds::access::redis_keys::{Charge, Usage};
use nlu_crds::access::tokens::DEFAULT_ISSUER;
use nlu_crds::access::{Credential, QualifiedName, QuotaOutcome, Scope, UninluTask};
use nlu_crds::routes::Route;
use prometheus_client::registry::Registry;

use crate::cost::Payer;
use crate::duration_flag::parse_duration;
use crate::error::{Error, Kind};
use jwt::{bearer, BearerError, TokenVerifier};
use metrics::{AuthMetrics, TenantLabels};
use policy::{BackendHealth, FailurePolicy, LocalLimiter};
use quota::{rate_limit, secs_to_midnight, QuotaStore, RateLimit};

pub use nlu_crds::serve::AuthMode;

#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// Client authentication of the model routes: `none`, or `jwt` (needs --jwks, --service-id
    /// and --redis-url). Probes and /metrics never need a token.
    #[arg(long = "auth", env = "NLU_AUTH", value_enum, default_value = "none")]
    pub auth: AuthMode,

    /// JWK Set file with the issuer's Ed25519 public keys; re-read when it changes.
    #[arg(long, env = "NLU_JWKS", required_if_eq("auth", "jwt"))]
    pub jwks: Option<PathBuf>,

    /// The tenants' identity providers (`identities.json`, written by the operator beside the
    /// JWK Set): their keys and which tokens speak for which tenant; re-read when it changes.
    /// Unset, or no such file yet: only the operator's tokens are accepted (docs/auth.md,
    /// "Federated tokens").
    #[arg(long, env = "NLU_IDENTITIES")]
    pub identities: Option<PathBuf>,

    /// The `iss` claim tokens must carry.
    #[arg(long, env = "NLU_JWT_ISSUER", default_value = DEFAULT_ISSUER)]
    pub jwt_issuer: String,

    /// This service as `namespace/name`: tokens must list it in `aud`, and tenants of that
    /// namespace only may call it.
    #[arg(long, env = "NLU_SERVICE_ID", required_if_eq("auth", "jwt"))]
    pub service_id: Option<QualifiedName>,

    /// Redis holding tenant records and counters, e.g. redis://:password@redis:6379/0, or
    /// rediss://... for TLS (server certificate checked against the system's roots or
    /// --redis-ca-file); a Redis Cluster as redis+cluster://:password@host:port,host:port (or
    /// rediss+cluster://...), naming some of its nodes.
    #[arg(
        long,
        env = "NLU_REDIS_URL",
        hide_env_values = true,
        required_if_eq("auth", "jwt")
    )]
    pub redis_url: Option<String>,

    /// PEM file of the CA certificates to trust for a rediss:// or rediss+cluster://
    /// --redis-url, instead of the system's roots (a private CA).
    #[arg(long, env = "NLU_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Prefix of every Redis key (must match the operator's).
    #[arg(long, env = "NLU_REDIS_PREFIX", default_value = DEFAULT_PREFIX, value_parser = nlu_crds::access::redis_keys::prefix)]
    pub redis_prefix: String,

    /// Longest wait for Redis per request before the failure policy applies.
    #[arg(long, env = "NLU_REDIS_TIMEOUT_MILLIS", default_value_t = 500)]
    pub redis_timeout_millis: u64,

    /// What to do while Redis is unreachable.
    #[arg(
        long,
        env = "NLU_REDIS_FAILURE_POLICY",
        value_enum,
        default_value = "fail-closed"
    )]
    pub redis_failure_policy: FailurePolicy,

    /// Fail-open only: requests per minute each tenant may make in this process while Redis is down.
    #[arg(long, env = "NLU_FAIL_OPEN_REQUESTS_PER_MINUTE", default_value_t = NonZeroU32::new(60).unwrap())]
    pub fail_open_requests_per_minute: NonZeroU32,

    /// Longest token lifetime (`exp - iat`) accepted, e.g. `720h`; longer tokens are refused
    /// with 401. The default is the longest `Tenant.spec.token.ttl` the CRD allows.
    #[arg(long, env = "NLU_MAX_TOKEN_LIFETIME", value_parser = parse_duration, default_value = "8760h")]
    pub max_token_lifetime: Duration,

    /// Tenants (`namespace/name`, comma-separated) that get their own metrics label; others are
    /// `other`. Empty: the first --metrics-max-tenants tenants seen.
    #[arg(long, env = "NLU_METRICS_TENANTS", value_delimiter = ',')]
    pub metrics_tenants: Vec<String>,

    /// Most tenants with their own metrics label when no allow-list is given.
    #[arg(long, env = "NLU_METRICS_MAX_TENANTS", default_value_t = 50)]
    pub metrics_max_tenants: usize,
}

/// The authenticated caller, in the request extensions for handlers and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: QualifiedName,
    /// The token's `sub`: the tenant for the operator's tokens, the user or client for an
    /// identity provider's.
    pub subject: String,
    /// The token's `jti`, for audit logs.
    pub token_id: String,
}

/// Who called, as established by this layer: put into the *response* extensions, also of its
/// refusals, with its bounded metrics label ([`TenantLabel`]), for the access log to read after
/// the call.
#[derive(Debug, Clone)]
pub struct TenantId(pub String);

/// Bounded tenant label for metrics, in the response extensions next to [`TenantId`].
#[derive(Debug, Clone)]
pub struct TenantLabel(pub String);

/// What the audit log tells of a request whose token verified, besides its tenant: in the
/// response extensions next to [`TenantId`], of admitted and refused requests alike.
#[derive(Debug, Clone)]
pub struct Audit {
    /// The token's `sub` (the identity provider's user or client for a federated token).
    pub subject: String,
    /// The token's `jti`.
    pub token_id: String,
    /// The UniNLU task the request was checked for (`unknown`: its task could not be told);
    /// `None` for other requests.
    pub task: Option<&'static str>,
    /// Tokens charged to the tenant's quotas.
    pub cost: u64,
}

/// The auth layer's state.
pub struct Auth {
    verifier: TokenVerifier,
    store: Arc<QuotaStore>,
    service: QualifiedName,
    policy: FailurePolicy,
    health: Arc<BackendHealth>,
    local: LocalLimiter,
    metrics: Arc<AuthMetrics>,
}

impl Auth {
    /// `None` for `--auth none`. Registers the auth metrics; must run on the Tokio runtime
    /// (it starts the JWK Set watcher and the Redis probe). `request_timeout`: how long a
    /// request may hold a place under its tenant's concurrency limit if this server dies.
    pub fn from_args(
        args: &AuthArgs,
        request_timeout: Duration,
        registry: &mut Registry,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        if args.auth == AuthMode::None {
            return Ok(None);
        }
        let missing = |flag: &str| anyhow::anyhow!("--auth jwt needs {flag}");
        let jwks = args.jwks.clone().ok_or_else(|| missing("--jwks"))?;
        let service = args
            .service_id
            .clone()
            .ok_or_else(|| missing("--service-id"))?;
        let url = args
            .redis_url
            .as_deref()
            .ok_or_else(|| missing("--redis-url"))?;
        let metrics = Arc::new(AuthMetrics::register(
            registry,
            TenantLabels::new(
                args.metrics_tenants.iter().map(|t| t.trim().to_string()),
                args.metrics_max_tenants,
            ),
        ));
        let verifier = TokenVerifier::start(
            jwks,
            args.identities.clone(),
            args.jwt_issuer.clone(),
            service.clone(),
            args.max_token_lifetime,
        )?;
        let ca_pem = match &args.redis_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                anyhow::anyhow!("cannot read --redis-ca-file {}: {e}", path.display())
            })?),
            None => None,
        };
        let store = Arc::new(QuotaStore::new(
            url,
            ca_pem,
            &args.redis_prefix,
            Duration::from_millis(args.redis_timeout_millis),
            request_timeout,
        )?);
        let health = Arc::new(BackendHealth::new(metrics.clone()));
        policy::spawn_probe(&store, health.clone());
        Ok(Some(Arc::new(Self {
            verifier,
            store,
            service,
            policy: args.redis_failure_policy,
            health,
            local: LocalLimiter::per_minute(args.fail_open_requests_per_minute),
            metrics,
        })))
    }

    /// Readiness as far as auth is concerned: under fail-closed, Redis must answer.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if self.policy == FailurePolicy::FailClosed && !self.health.is_up() {
            Err("quota backend (Redis) unreachable")
        } else {
            Ok(())
        }
    }

    /// Puts the auth layer in front of every route of `router` (give it the model routes only).
    pub fn protect<S: Clone + Send + Sync + 'static>(
        self: &Arc<Self>,
        router: Router<S>,
    ) -> Router<S> {
        router.route_layer(axum::middleware::from_fn_with_state(
            self.clone(),
            authenticate,
        ))
    }

    /// Checks the token and the tenant's record and limits; an admitted request gets its meter
    /// and, under a concurrency limit, the place it holds until it ends.
    async fn admit(
        self: &Arc<Self>,
        headers: &HeaderMap,
        path: &str,
    ) -> Result<(Meter, Option<Place>), Refusal> {
        let token = bearer(headers).map_err(|e| match e {
            BearerError::Missing => Refusal::unauthenticated(
                "missing_token",
                "an Authorization: Bearer token is required",
            ),
            BearerError::Malformed => {
                Refusal::invalid_token("the Authorization header is not a Bearer token")
            }
        })?;
        let operation = Route::find(path).and_then(Route::scope).ok_or_else(|| {
            Refusal::forbidden("scope_not_granted", "this route is not a tenant operation")
        })?;
        let need = Scope::reaching(operation);
        let caller = self
            .verifier
            .verify(token)
            .map_err(|e| Refusal::invalid_token(e.to_string()))?;
        let tenant = Tenant {
            id: caller.tenant.clone(),
            subject: caller.subject.clone(),
            token_id: caller.token_id.clone(),
        };
        let meter = Meter {
            auth: self.clone(),
            label: self.metrics.tenants.label(&tenant.id.to_string()),
            tenant,
            credential: caller.credential.clone(),
            token_scopes: caller.scopes.clone(),
            need,
            request_nonce: rand::random(),
            report: Arc::default(),
        };
        let refuse = |code, message: &str| meter.tag(Refusal::forbidden(code, message));
        if !caller.grants(&meter.need) {
            return Err(refuse(
                "scope_not_granted",
                &format!("the token does not grant {operation}"),
            ));
        }
        if meter.tenant.id.namespace != self.service.namespace {
            return Err(refuse(
                "service_not_granted",
                "tenants of another namespace may not call this service",
            ));
        }
        let reported = meter.run(Charge::Request).await?;
        meter.report().requests = reported.requests;
        let place = reported.holds_place.then(|| Place {
            store: self.store.clone(),
            tenant: meter.tenant.id.clone(),
            nonce: meter.request_nonce,
        });
        Ok((meter, place))
    }
}

/// A request's place under its tenant's concurrency limit, freed in Redis when dropped (the
/// request answered, timed out, or its client went away). If the release fails, the place
/// ends with its lease.
pub struct Place {
    store: Arc<QuotaStore>,
    tenant: QualifiedName,
    nonce: u64,
}

impl Drop for Place {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, tenant, nonce) = (self.store.clone(), self.tenant.clone(), self.nonce);
        runtime.spawn(async move {
            if let Err(e) = store.release(&tenant, nonce).await {
                tracing::warn!(error = %e, %tenant, "could not free a concurrency place; its lease ends it");
            }
        });
    }
}

/// What one quota script call reported, for the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reported {
    /// The request limit closest to exhaustion (`X-RateLimit-Limit`, `-Remaining`, `-Reset`).
    pub requests: Option<RateLimit>,
    /// The token limit closest to exhaustion (the same headers with a `-Tokens` suffix).
    pub tokens: Option<RateLimit>,
    /// The request took a place under its tenant's concurrency limit.
    pub holds_place: bool,
}

impl Reported {
    fn of(usage: &Usage, now: chrono::DateTime<chrono::Utc>) -> Self {
        Self {
            requests: rate_limit(&usage.requests, now),
            tokens: rate_limit(&usage.tokens, now),
            holds_place: usage.concurrency.limit > 0,
        }
    }
}

/// Maps the quota script's decision for `charge` to the limits to report, or to the refusal.
/// Pure.
// A refusal is built once per refused request and turned into the response at once: boxing
// it would only add an allocation.
#[allow(clippy::result_large_err)]
pub fn decide(
    outcome: QuotaOutcome,
    charge: Charge,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Reported, Refusal> {
    let forbidden = |code, message| Err(Refusal::forbidden(code, message));
    let too_many = |usage: Usage, retry: u64, code, message: String| {
        Err(Refusal {
            reported: Reported::of(&usage, now),
            ..Refusal::new(
                Error::new(Kind::Exhausted, code, message)
                    .retry_after(u32::try_from(retry.max(1)).unwrap_or(u32::MAX)),
            )
        })
    };
    let cost = match charge {
        Charge::Request => 0,
        Charge::Tokens(n) => n,
    };
    let tokens_left = |limit: u64, used: u64| {
        format!(
            "this work needs {cost} tokens; {} of {limit} are left",
            limit.saturating_sub(used)
        )
    };
    match outcome {
        QuotaOutcome::Allowed(usage) => Ok(Reported::of(&usage, now)),
        QuotaOutcome::NoRecord => forbidden("unknown_tenant", "the tenant has no access record"),
        // Refused for this tenant only: the quota store itself is healthy.
        QuotaOutcome::InvalidRecord => forbidden(
            "invalid_tenant_record",
            "the tenant's access record is incomplete or damaged; the operator rewrites it",
        ),
        QuotaOutcome::Suspended => forbidden("tenant_suspended", "the tenant is suspended"),
        QuotaOutcome::Revoked => Err(Refusal::invalid_token("token was revoked")),
        QuotaOutcome::ScopeNotGranted => forbidden(
            "scope_not_granted",
            "the tenant's record does not grant this operation or task (its token may predate \
             a change of the Tenant's scopes)",
        ),
        QuotaOutcome::ServiceNotGranted => forbidden(
            "service_not_granted",
            "the tenant may not call this service",
        ),
        QuotaOutcome::DailyQuotaExceeded(usage) | QuotaOutcome::RateLimited(usage) => {
            let (code, message) = match outcome {
                QuotaOutcome::DailyQuotaExceeded(_) => {
                    ("quota_exceeded", "the daily request quota is used up")
                }
                _ => ("rate_limited", "too many requests this minute"),
            };
            let retry = rate_limit(&usage.requests, now).map_or(1, |l| l.reset_secs);
            too_many(usage, retry, code, message.into())
        }
        QuotaOutcome::DailyTokensExceeded(usage) => too_many(
            usage,
            secs_to_midnight(now),
            "token_quota_exceeded",
            format!(
                "the daily token quota is used up: {}",
                tokens_left(usage.tokens.per_day, usage.tokens.used_today)
            ),
        ),
        QuotaOutcome::TooManyInFlight(usage) => too_many(
            usage,
            1,
            "too_many_in_flight",
            format!(
                "the tenant has {} requests in flight, its limit (maxConcurrentRequests); retry \
                 when one has finished",
                usage.concurrency.limit
            ),
        ),
        QuotaOutcome::TokenRateLimited(usage) => too_many(
            usage,
            usage.tokens.minute_reset_ms.div_ceil(1000),
            "token_rate_limited",
            format!(
                "too many tokens this minute: {}",
                tokens_left(usage.tokens.per_minute, usage.tokens.used_last_minute)
            ),
        ),
        // Waiting cannot help: not a 429.
        QuotaOutcome::CostOverTokenLimit(usage) => Err(Refusal {
            reported: Reported::of(&usage, now),
            ..Refusal::new(Error::new(
                Kind::TooLarge,
                "request_too_costly",
                format!(
                    "this work needs {cost} tokens, more than the tenant's token limit of {} \
                     allows at once; send smaller requests",
                    [usage.tokens.per_minute, usage.tokens.per_day]
                        .into_iter()
                        .filter(|&l| l > 0)
                        .min()
                        .unwrap_or(0)
                ),
            ))
        }),
    }
}

/// An admitted request's access to its tenant's quotas: in the request extensions (absent
/// under `--auth none`), so the handler can charge the tokens of each piece of model work
/// before it runs.
#[derive(Clone)]
pub struct Meter {
    auth: Arc<Auth>,
    tenant: Tenant,
    label: String,
    /// The tenant incarnation and generation the token speaks for.
    credential: Credential,
    /// What the token grants.
    token_scopes: Vec<Scope>,
    /// The scopes that would each allow the request: the tenant record must list one (or
    /// none at all) at every quota script call. First those reaching the route, then, for
    /// UniNLU, those granting the request's task ([`Meter::allow_task`]).
    need: Vec<Scope>,
    /// Names the request in Redis: its place under a concurrency limit.
    request_nonce: u64,
    /// Headers to add to the response, shared with the middleware.
    report: Arc<Mutex<MeterReport>>,
}

#[derive(Debug, Default)]
struct MeterReport {
    requests: Option<RateLimit>,
    tokens: Option<RateLimit>,
    www_authenticate: Option<&'static str>,
    /// Tokens charged so far (the audit log's cost).
    charged: u64,
    /// The UniNLU task checked ([`Audit::task`]).
    task: Option<&'static str>,
}

// Refusals become responses at once (see `decide`).
#[allow(clippy::result_large_err)]
impl Meter {
    /// Charges `tokens` to the tenant's token quotas (counted even when unlimited, for usage),
    /// or says why the work may not run: 429 when the tokens are used up for now, 413 when this
    /// work alone exceeds a token limit, 401/403 when the tenant lost access meanwhile, 503
    /// when Redis is down under fail-closed (fail-open lets it run).
    pub async fn charge(&self, tokens: u64) -> Result<(), Error> {
        match self.run(Charge::Tokens(tokens)).await {
            Ok(reported) => {
                self.auth
                    .metrics
                    .tokens
                    .get_or_create(&metrics::TenantLabel {
                        tenant: self.label.clone(),
                    })
                    .inc_by(tokens);
                let mut report = self.report();
                report.tokens = reported.tokens;
                report.charged = report.charged.saturating_add(tokens);
                Ok(())
            }
            Err(refusal) => {
                self.auth.metrics.decision(&self.label, refusal.error.code);
                let mut report = self.report();
                report.tokens = refusal.reported.tokens;
                report.www_authenticate = refusal.www_authenticate;
                Err(refusal.error)
            }
        }
    }

    fn report(&self) -> std::sync::MutexGuard<'_, MeterReport> {
        self.report.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Names the tenant in a refusal (for metrics and the access log) and the token (for the
    /// audit log).
    fn tag(&self, refusal: Refusal) -> Refusal {
        Refusal {
            tenant: Some((self.tenant.id.to_string(), self.label.clone())),
            audit: Some(self.audit()),
            ..refusal
        }
    }

    /// What the audit line tells of this request so far. Takes the report's lock.
    fn audit(&self) -> Audit {
        let report = self.report();
        Audit {
            subject: self.tenant.subject.clone(),
            token_id: self.tenant.token_id.clone(),
            task: report.task,
            cost: report.charged,
        }
    }

    /// One quota script call, or the failure policy while Redis does not answer.
    async fn run(&self, charge: Charge) -> Result<Reported, Refusal> {
        let auth = &self.auth;
        // The request's own nonce names its place under a concurrency limit; token charges
        // need one of their own per call (it names their entry in the minute log).
        let nonce = match charge {
            Charge::Request => self.request_nonce,
            Charge::Tokens(_) => rand::random(),
        };
        let checked = auth
            .store
            .check(
                &self.tenant.id,
                &self.credential,
                &self.need,
                &auth.service.name,
                charge,
                nonce,
            )
            .await;
        let outcome = match checked {
            Ok(outcome) => {
                auth.health.set(true);
                outcome
            }
            Err(e) => {
                auth.health.set(false);
                auth.metrics.backend_errors.inc();
                tracing::warn!(error = %e, policy = ?auth.policy, tenant = %self.tenant.id, "quota check failed");
                return self.unchecked(charge);
            }
        };
        decide(outcome, charge, chrono::Utc::now()).map_err(|r| self.tag(r))
    }

    /// The failure policy: fail-closed refuses; fail-open admits requests within the local
    /// per-minute limit, and their model work with them.
    fn unchecked(&self, charge: Charge) -> Result<Reported, Refusal> {
        let auth = &self.auth;
        let refuse = |kind, code, message, retry| {
            Err(self.tag(Refusal::new(
                Error::new(kind, code, message).retry_after(retry),
            )))
        };
        match (auth.policy, charge) {
            (FailurePolicy::FailClosed, _) => refuse(
                Kind::Unavailable,
                "quota_backend_unavailable",
                "quotas cannot be checked right now",
                1,
            ),
            (FailurePolicy::FailOpen, Charge::Tokens(_)) => Ok(Reported::default()),
            (FailurePolicy::FailOpen, Charge::Request) => {
                match auth.local.check(&self.tenant.id.to_string()) {
                    Ok(()) => Ok(Reported::default()),
                    Err(wait) => refuse(
                        Kind::Exhausted,
                        "rate_limited",
                        "too many requests; retry later",
                        u32::try_from(wait).unwrap_or(u32::MAX),
                    ),
                }
            }
        }
    }
}

impl Payer for Meter {
    fn charge(&self, tokens: u64) -> futures::future::BoxFuture<'_, Result<(), Error>> {
        Box::pin(Meter::charge(self, tokens))
    }

    /// The token must grant the task ([`Scope::granting`]); the record is asked at the
    /// charges, which come before any model work, so a record narrowed since the token was
    /// issued refuses the task too.
    fn allow_task(&mut self, task: Option<UninluTask>) -> Result<(), Error> {
        self.report().task = Some(task.map_or("unknown", UninluTask::as_str));
        let need = Scope::granting(task);
        if !self.token_scopes.iter().any(|s| need.contains(s)) {
            let error = Error::new(Kind::Forbidden, "scope_not_granted", task_refusal(task));
            self.auth.metrics.decision(&self.label, error.code);
            return Err(error);
        }
        self.need = need;
        Ok(())
    }

    fn turn_key(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.tenant.id.hash(&mut hasher);
        hasher.finish()
    }
}

/// Why a token is refused a UniNLU request of `task` (`None`: its task cannot be told).
fn task_refusal(task: Option<UninluTask>) -> String {
    match task {
        Some(task) => format!(
            "this request is a {task} task: it needs the scope predict:{task} or predict, which \
             the token does not grant"
        ),
        None => "the task of this request cannot be told from its schema and text (see \
                 docs/auth.md, \"Per-task scopes\"): it needs the scope predict, which the token \
                 does not grant"
            .into(),
    }
}

/// A refused request: the error, its extra headers, and the tenant when known (for metrics).
#[derive(Debug)]
pub struct Refusal {
    pub error: Error,
    pub www_authenticate: Option<&'static str>,
    pub reported: Reported,
    /// Tenant id and metrics label.
    pub tenant: Option<(String, String)>,
    /// The token's subject and id, when it verified.
    pub audit: Option<Audit>,
}

impl Refusal {
    fn new(error: Error) -> Self {
        Self {
            error,
            www_authenticate: None,
            reported: Reported::default(),
            tenant: None,
            audit: None,
        }
    }

    fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            www_authenticate: Some("Bearer"),
            ..Self::new(Error::new(Kind::Unauthenticated, code, message))
        }
    }

    fn invalid_token(message: impl Into<String>) -> Self {
        Self {
            www_authenticate: Some(r#"Bearer error="invalid_token""#),
            ..Self::unauthenticated("invalid_token", message)
        }
    }

    fn forbidden(code: &'static str, message: &str) -> Self {
        Self::new(Error::new(Kind::Forbidden, code, message))
    }
}

/// `X-RateLimit-{Limit,Remaining,Reset}` for requests, and the same names ending in `-Tokens`.
fn add_rate_limit_headers(
    response: &mut Response,
    requests: Option<RateLimit>,
    tokens: Option<RateLimit>,
) {
    static NAMES: [[HeaderName; 3]; 2] = [
        [
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-reset"),
        ],
        [
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
        ],
    ];
    let headers = response.headers_mut();
    for ([limit, remaining, reset], reported) in NAMES.iter().zip([requests, tokens]) {
        if let Some(l) = reported {
            headers.insert(limit.clone(), HeaderValue::from(l.limit));
            headers.insert(remaining.clone(), HeaderValue::from(l.remaining));
            headers.insert(reset.clone(), HeaderValue::from(l.reset_secs));
        }
    }
}

fn add_challenge(response: &mut Response, challenge: Option<&'static str>) {
    if let Some(challenge) = challenge {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
}

fn tag_tenant(response: &mut Response, tenant: Option<(String, String)>) {
    if let Some((id, label)) = tenant {
        response.extensions_mut().insert(TenantId(id));
        response.extensions_mut().insert(TenantLabel(label));
    }
}

/// Reads what the client is sending (bounded in size and time) before a refusal goes out. Over
/// HTTP/2 an answer that leaves the request body unread ends with RST_STREAM(NO_ERROR), which is
/// legal but makes some clients (curl 7.x, older browsers) report a failed request instead of the
/// 401/403/429.
async fn drain(body: axum::body::Body) {
    const LIMIT: usize = 64 * 1024; // HTTP/2's initial window: what a client sends unasked
    let _ = tokio::time::timeout(
        Duration::from_millis(250),
        axum::body::to_bytes(body, LIMIT),
    )
    .await;
}

/// The middleware (`from_fn_with_state`); see [`Auth::protect`].
pub async fn authenticate(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let admitted = auth.admit(req.headers(), req.uri().path()).await;
    auth.metrics
        .check_seconds
        .observe(started.elapsed().as_secs_f64());
    match admitted {
        Ok((meter, place)) => {
            auth.metrics.decision(&meter.label, "allowed");
            let tenant = (meter.tenant.id.to_string(), meter.label.clone());
            let caller = meter.clone();
            let report = meter.report.clone();
            req.extensions_mut().insert(meter.tenant.clone());
            req.extensions_mut().insert(meter);
            let mut response = next.run(req).await;
            let report = report.lock().unwrap_or_else(|e| e.into_inner());
            add_rate_limit_headers(&mut response, report.requests, report.tokens);
            if response.status() == StatusCode::UNAUTHORIZED {
                add_challenge(&mut response, report.www_authenticate);
            }
            tag_tenant(&mut response, Some(tenant));
            drop(report);
            response.extensions_mut().insert(caller.audit());
            drop(place);
            response
        }
        Err(refusal) => {
            drain(req.into_body()).await;
            let label = refusal
                .tenant
                .as_ref()
                .map(|(_, l)| l.as_str())
                .unwrap_or_default();
            auth.metrics.decision(label, refusal.error.code);
            let mut response = refusal.error.into_response();
            add_challenge(&mut response, refusal.www_authenticate);
            add_rate_limit_headers(
                &mut response,
                refusal.reported.requests,
                refusal.reported.tokens,
            );
            tag_tenant(&mut response, refusal.tenant);
            if let Some(audit) = refusal.audit {
                response.extensions_mut().insert(audit);
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use nlu_crds::access::redis_keys::Counts;

    /// What the client sees (the status table lives in `http`).
    fn http_status(e: &Error) -> StatusCode {
        crate::http::errors::status(e.kind)
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc.with_ymd_and_hms(2026, 3, 1, 23, 0, 0).unwrap()
    }

    fn status(outcome: QuotaOutcome) -> (StatusCode, &'static str) {
        let r = decide(outcome, Charge::Request, now()).unwrap_err();
        (http_status(&r.error), r.error.code)
    }

    #[test]
    fn token_lifetime_defaults_to_the_contract_maximum() {
        let args = crate::config::tests::parse_serve("uninlu", &[]).unwrap();
        assert_eq!(
            args.auth.max_token_lifetime,
            nlu_crds::access::verify::MAX_TOKEN_LIFETIME
        );
    }

    #[test]
    fn outcomes_map_to_the_contract_status_codes() {
        assert_eq!(
            status(QuotaOutcome::NoRecord),
            (StatusCode::FORBIDDEN, "unknown_tenant")
        );
        assert_eq!(
            status(QuotaOutcome::InvalidRecord),
            (StatusCode::FORBIDDEN, "invalid_tenant_record")
        );
        assert_eq!(
            status(QuotaOutcome::Suspended),
            (StatusCode::FORBIDDEN, "tenant_suspended")
        );
        assert_eq!(
            status(QuotaOutcome::Revoked),
            (StatusCode::UNAUTHORIZED, "invalid_token")
        );
        assert_eq!(
            status(QuotaOutcome::ScopeNotGranted).0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status(QuotaOutcome::ServiceNotGranted).0,
            StatusCode::FORBIDDEN
        );
    }

    fn counts(per_day: u64, used_today: u64, per_minute: u64, used: u64, reset_ms: u64) -> Counts {
        Counts {
            per_day,
            used_today,
            per_minute,
            used_last_minute: used,
            minute_reset_ms: reset_ms,
        }
    }

    fn requests(c: Counts) -> Usage {
        Usage {
            requests: c,
            ..Usage::default()
        }
    }

    fn tokens(c: Counts) -> Usage {
        Usage {
            tokens: c,
            ..Usage::default()
        }
    }

    #[test]
    fn limits_are_reported_and_retry_after_is_the_binding_reset() {
        let usage = requests(counts(50, 50, 0, 0, 0));
        let daily = decide(
            QuotaOutcome::DailyQuotaExceeded(usage),
            Charge::Request,
            now(),
        )
        .unwrap_err();
        assert_eq!(
            (http_status(&daily.error), daily.error.retry_after),
            (StatusCode::TOO_MANY_REQUESTS, Some(3600))
        );
        assert_eq!(
            daily.reported.requests,
            Some(RateLimit {
                limit: 50,
                remaining: 0,
                reset_secs: 3600
            })
        );
        assert_eq!(daily.reported.tokens, None);

        let usage = requests(counts(0, 9, 5, 5, 41_500));
        let minute = decide(QuotaOutcome::RateLimited(usage), Charge::Request, now()).unwrap_err();
        assert_eq!(
            (minute.error.code, minute.error.retry_after),
            ("rate_limited", Some(42))
        );

        let usage = requests(counts(50, 1, 0, 0, 0));
        assert_eq!(
            decide(QuotaOutcome::Allowed(usage), Charge::Request, now())
                .unwrap()
                .requests
                .map(|l| l.remaining),
            Some(49)
        );
    }

    #[test]
    fn token_refusals_say_what_the_work_needs_and_when_to_retry() {
        let charge = Charge::Tokens(700);
        // 600 of 1,000 left this minute, plenty today: the minute refuses.
        let usage = tokens(counts(10_000, 400, 1_000, 400, 12_300));
        let r = decide(QuotaOutcome::TokenRateLimited(usage), charge, now()).unwrap_err();
        assert_eq!(
            (http_status(&r.error), r.error.code, r.error.retry_after),
            (
                StatusCode::TOO_MANY_REQUESTS,
                "token_rate_limited",
                Some(13)
            )
        );
        assert!(
            r.error.message.contains("needs 700 tokens; 600 of 1000"),
            "{}",
            r.error.message
        );
        assert_eq!(
            r.reported.tokens.map(|l| (l.limit, l.remaining)),
            Some((1_000, 600))
        );

        let usage = tokens(counts(1_000, 500, 0, 0, 0));
        let r = decide(QuotaOutcome::DailyTokensExceeded(usage), charge, now()).unwrap_err();
        assert_eq!(
            (r.error.code, r.error.retry_after),
            ("token_quota_exceeded", Some(3600))
        );

        let usage = tokens(counts(0, 0, 500, 0, 0));
        let r = decide(QuotaOutcome::CostOverTokenLimit(usage), charge, now()).unwrap_err();
        assert_eq!(
            (http_status(&r.error), r.error.code, r.error.retry_after),
            (StatusCode::PAYLOAD_TOO_LARGE, "request_too_costly", None)
        );
        assert!(
            r.error.message.contains("limit of 500"),
            "{}",
            r.error.message
        );

        let usage = tokens(counts(0, 900, 2_000, 700, 60_000));
        let ok = decide(QuotaOutcome::Allowed(usage), charge, now()).unwrap();
        assert_eq!(ok.requests, None, "a token charge reports no request limit");
        assert_eq!(
            ok.tokens.map(|l| (l.remaining, l.reset_secs)),
            Some((1_300, 60))
        );
    }
}
