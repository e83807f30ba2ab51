//! Multi-tenant access: `Authorization: Bearer <EdDSA JWT>` verified against a JWK Set, then one
//! atomic Redis script for the tenant record, daily quota and per-minute limit.
//!
//! Flow per request: bearer token -> signature, issuer, audience, lifetime ([`jwt`]) -> scope of
//! the route -> quota script ([`quota`]) or, while Redis is down, the failure policy ([`policy`])
//! -> handler. Answers: 401 (token), 403 (tenant not allowed), 429 (limits), 503 (Redis down,
//! fail-closed), with `X-RateLimit-*` headers on every response the quota script counted.

pub mod jwt;
pub mod metrics;
pub mod policy;
pub mod quota;

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use clap::Args;
use nlu_crds::access::redis_keys::DEFAULT_PREFIX;
use nlu_crds::access::tokens::DEFAULT_ISSUER;
use nlu_crds::access::{QualifiedName, QuotaOutcome, Scope};
use prometheus_client::registry::Registry;

use crate::config::parse_duration;
use crate::http::{ApiError, TenantId};
use jwt::{bearer, BearerError, TokenVerifier};
use metrics::{AuthMetrics, TenantLabels};
use policy::{BackendHealth, FailurePolicy, LocalLimiter};
use quota::{rate_limit, QuotaStore, RateLimit};

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

    /// The `iss` claim tokens must carry.
    #[arg(long, env = "NLU_JWT_ISSUER", default_value = DEFAULT_ISSUER)]
    pub jwt_issuer: String,

    /// This service as `namespace/name`: tokens must list it in `aud`, and tenants of that
    /// namespace only may call it.
    #[arg(long, env = "NLU_SERVICE_ID", required_if_eq("auth", "jwt"))]
    pub service_id: Option<QualifiedName>,

    /// Redis holding tenant records and counters, e.g. redis://:password@redis:6379/0, or
    /// rediss://... for TLS (server certificate checked against the system's roots or
    /// --redis-ca-file).
    #[arg(
        long,
        env = "NLU_REDIS_URL",
        hide_env_values = true,
        required_if_eq("auth", "jwt")
    )]
    pub redis_url: Option<String>,

    /// PEM file of the CA certificates to trust for a rediss:// --redis-url, instead of the
    /// system's roots (a private CA).
    #[arg(long, env = "NLU_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// Prefix of every Redis key (must match the operator's).
    #[arg(long, env = "NLU_REDIS_PREFIX", default_value = DEFAULT_PREFIX)]
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
    /// The token's `jti`, for audit logs.
    pub token_id: String,
}

/// Bounded tenant label for metrics, in the response extensions next to [`TenantId`].
#[derive(Debug, Clone)]
pub struct TenantLabel(pub String);

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
    /// (it starts the JWK Set watcher and the Redis probe).
    pub fn from_args(
        args: &AuthArgs,
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

    async fn admit(&self, headers: &HeaderMap, path: &str) -> Result<Admitted, Refusal> {
        let token = bearer(headers).map_err(|e| match e {
            BearerError::Missing => Refusal::unauthenticated(
                "missing_token",
                "an Authorization: Bearer token is required",
            ),
            BearerError::Malformed => {
                Refusal::invalid_token("the Authorization header is not a Bearer token")
            }
        })?;
        let scope = Scope::for_route(path).ok_or_else(|| {
            Refusal::forbidden(
                None,
                "scope_not_granted",
                "this route is not a tenant operation",
            )
        })?;
        let claims = self
            .verifier
            .verify(token)
            .map_err(|e| Refusal::invalid_token(e.to_string()))?;
        let tenant = Tenant {
            id: claims
                .tenant()
                .map_err(|e| Refusal::invalid_token(e.to_string()))?,
            token_id: claims.jti.clone(),
        };
        let label = self.metrics.tenants.label(&tenant.id.to_string());
        let refuse =
            |code, message: &str| Refusal::forbidden(Some((&tenant, &label)), code, message);
        if !claims.grants(scope) {
            return Err(refuse(
                "scope_not_granted",
                &format!("the token does not grant {scope}"),
            ));
        }
        if tenant.id.namespace != self.service.namespace {
            return Err(refuse(
                "service_not_granted",
                "tenants of another namespace may not call this service",
            ));
        }
        let today = chrono::Utc::now().date_naive();
        match self
            .store
            .check(&tenant.id, claims.gen, scope, &self.service.name, today)
            .await
        {
            Ok(outcome) => {
                self.health.set(true);
                decide(outcome, chrono::Utc::now())
                    .map(|limit| Admitted {
                        tenant: tenant.clone(),
                        label: label.clone(),
                        limit,
                    })
                    .map_err(|mut r| {
                        r.tenant = Some((tenant.id.to_string(), label.clone()));
                        r
                    })
            }
            Err(e) => {
                self.health.set(false);
                self.metrics.backend_errors.inc();
                tracing::warn!(error = %e, policy = ?self.policy, tenant = %tenant.id, "quota check failed");
                match self.policy {
                    FailurePolicy::FailClosed => Err(Refusal {
                        tenant: Some((tenant.id.to_string(), label)),
                        ..Refusal::new(ApiError {
                            retry_after: Some(1),
                            ..ApiError::new(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "quota_backend_unavailable",
                                "quotas cannot be checked right now",
                            )
                        })
                    }),
                    FailurePolicy::FailOpen => match self.local.check(&tenant.id.to_string()) {
                        Ok(()) => Ok(Admitted {
                            tenant,
                            label,
                            limit: None,
                        }),
                        Err(wait) => Err(Refusal {
                            tenant: Some((tenant.id.to_string(), label)),
                            ..Refusal::new(ApiError {
                                retry_after: Some(u32::try_from(wait).unwrap_or(u32::MAX)),
                                ..ApiError::new(
                                    StatusCode::TOO_MANY_REQUESTS,
                                    "rate_limited",
                                    "too many requests; retry later",
                                )
                            })
                        }),
                    },
                }
            }
        }
    }
}

/// Maps the quota script's decision to the limits to report, or to the refusal. Pure.
// A refusal is built once per refused request and turned into the response at once: boxing
// it would only add an allocation.
#[allow(clippy::result_large_err)]
pub fn decide(
    outcome: QuotaOutcome,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Option<RateLimit>, Refusal> {
    let forbidden = |code, message| Err(Refusal::forbidden(None, code, message));
    let too_many = |usage, code, message: &str| {
        let limit = rate_limit(&usage, now);
        let retry = limit.map_or(1, |l| l.reset_secs);
        Err(Refusal {
            limit,
            ..Refusal::new(ApiError {
                retry_after: Some(u32::try_from(retry).unwrap_or(u32::MAX)),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
            })
        })
    };
    match outcome {
        QuotaOutcome::Allowed(usage) => Ok(rate_limit(&usage, now)),
        QuotaOutcome::NoRecord => forbidden("unknown_tenant", "the tenant has no access record"),
        // Refused for this tenant only: the quota store itself is healthy.
        QuotaOutcome::InvalidRecord => forbidden(
            "invalid_tenant_record",
            "the tenant's access record is incomplete or damaged; the operator rewrites it",
        ),
        QuotaOutcome::Suspended => forbidden("tenant_suspended", "the tenant is suspended"),
        QuotaOutcome::Revoked => Err(Refusal::invalid_token("token was revoked")),
        QuotaOutcome::ScopeNotGranted => {
            forbidden("scope_not_granted", "the tenant may not use this operation")
        }
        QuotaOutcome::ServiceNotGranted => forbidden(
            "service_not_granted",
            "the tenant may not call this service",
        ),
        QuotaOutcome::DailyQuotaExceeded(usage) => too_many(
            usage,
            "quota_exceeded",
            "the daily request quota is used up",
        ),
        QuotaOutcome::RateLimited(usage) => {
            too_many(usage, "rate_limited", "too many requests this minute")
        }
    }
}

/// An admitted request: who, and the limits to report.
struct Admitted {
    tenant: Tenant,
    label: String,
    limit: Option<RateLimit>,
}

/// A refused request: the error, its extra headers, and the tenant when known (for metrics).
#[derive(Debug)]
pub struct Refusal {
    pub error: ApiError,
    pub www_authenticate: Option<&'static str>,
    pub limit: Option<RateLimit>,
    /// Tenant id and metrics label.
    pub tenant: Option<(String, String)>,
}

impl Refusal {
    fn new(error: ApiError) -> Self {
        Self {
            error,
            www_authenticate: None,
            limit: None,
            tenant: None,
        }
    }

    fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            www_authenticate: Some("Bearer"),
            ..Self::new(ApiError::new(StatusCode::UNAUTHORIZED, code, message))
        }
    }

    fn invalid_token(message: impl Into<String>) -> Self {
        Self {
            www_authenticate: Some(r#"Bearer error="invalid_token""#),
            ..Self::unauthenticated("invalid_token", message)
        }
    }

    fn forbidden(tenant: Option<(&Tenant, &String)>, code: &'static str, message: &str) -> Self {
        Self {
            tenant: tenant.map(|(t, l)| (t.id.to_string(), l.clone())),
            ..Self::new(ApiError::new(StatusCode::FORBIDDEN, code, message))
        }
    }
}

static LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

fn add_rate_limit_headers(response: &mut Response, limit: Option<RateLimit>) {
    if let Some(l) = limit {
        let headers = response.headers_mut();
        headers.insert(LIMIT.clone(), HeaderValue::from(l.limit));
        headers.insert(REMAINING.clone(), HeaderValue::from(l.remaining));
        headers.insert(RESET.clone(), HeaderValue::from(l.reset_secs));
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
        Ok(Admitted {
            tenant,
            label,
            limit,
        }) => {
            auth.metrics.decision(&label, "allowed");
            let id = tenant.id.to_string();
            req.extensions_mut().insert(tenant);
            let mut response = next.run(req).await;
            add_rate_limit_headers(&mut response, limit);
            tag_tenant(&mut response, Some((id, label)));
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
            if let Some(challenge) = refusal.www_authenticate {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            add_rate_limit_headers(&mut response, refusal.limit);
            tag_tenant(&mut response, refusal.tenant);
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use nlu_crds::access::redis_keys::Usage;

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc.with_ymd_and_hms(2026, 3, 1, 23, 0, 0).unwrap()
    }

    fn status(outcome: QuotaOutcome) -> (StatusCode, &'static str) {
        let r = decide(outcome, now()).unwrap_err();
        (r.error.status, r.error.code)
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

    #[test]
    fn limits_are_reported_and_retry_after_is_the_binding_reset() {
        let usage = Usage {
            per_day: 50,
            used_today: 50,
            per_minute: 0,
            used_last_minute: 0,
            minute_reset_ms: 0,
        };
        let daily = decide(QuotaOutcome::DailyQuotaExceeded(usage), now()).unwrap_err();
        assert_eq!(
            (daily.error.status, daily.error.retry_after),
            (StatusCode::TOO_MANY_REQUESTS, Some(3600))
        );
        assert_eq!(
            daily.limit,
            Some(RateLimit {
                limit: 50,
                remaining: 0,
                reset_secs: 3600
            })
        );

        let usage = Usage {
            per_day: 0,
            used_today: 9,
            per_minute: 5,
            used_last_minute: 5,
            minute_reset_ms: 41_500,
        };
        let minute = decide(QuotaOutcome::RateLimited(usage), now()).unwrap_err();
        assert_eq!(
            (minute.error.code, minute.error.retry_after),
            ("rate_limited", Some(42))
        );

        let usage = Usage {
            per_day: 50,
            used_today: 1,
            per_minute: 0,
            used_last_minute: 0,
            minute_reset_ms: 0,
        };
        assert_eq!(
            decide(QuotaOutcome::Allowed(usage), now())
                .unwrap()
                .map(|l| l.remaining),
            Some(49)
        );
    }
}
