//! The keys of the tenants' identity providers: for every issuer a Tenant's `spec.identity`
//! names, the operator reads `<issuer>/.well-known/openid-configuration`, then the JWK Set at its
//! `jwks_uri`, keeps the keys servers accept, and publishes per namespace the `identities.json`
//! document ([`Identities`]) that [`super::jwks_publish`] puts beside the operator's JWK Set.
//! Each issuer is read again when its JWK Set's `Cache-Control: max-age` runs out (within
//! [`MIN_REFRESH`] and [`MAX_REFRESH`]); a failed read keeps the keys already known and is
//! retried after [`RETRY`].
//!
//! HTTP goes through ureq on rustls: the system's roots, or `--identity-ca-file`; proxies from
//! `HTTPS_PROXY`/`ALL_PROXY`/`NO_PROXY`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use nlu_crds::access::identity::{
    fingerprint, signing_algorithm, Identities, Mapping, TrustedIssuer,
};
use nlu_crds::Tenant;
use serde::Deserialize;
use tokio::sync::watch;

/// Key of the document in the `nlu-jwks` ConfigMap.
pub const IDENTITIES_KEY: &str = "identities.json";
/// Shortest time between two reads of one issuer (a `max-age` below it is raised to it).
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Longest time keys go unread: a rotated-out key is dropped within this much.
pub const MAX_REFRESH: Duration = Duration::from_secs(3600);
/// How long keys are kept when the issuer says nothing about caching.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// Wait before reading a failing issuer again.
pub const RETRY: Duration = Duration::from_secs(10);
/// Largest discovery document or JWK Set read.
const MAX_DOCUMENT_BYTES: u64 = 1 << 20;
/// Why an issuer that `--allowed-identity-issuers` leaves out has no keys.
const NOT_ALLOWED: &str =
    "the operator's --allowed-identity-issuers does not list this issuer: it is not read";
/// How often the Tenants are looked at for issuers added or removed.
const POLL: Duration = Duration::from_secs(1);

/// The published document per namespace, as JSON (a namespace without identities is absent).
pub type Published = Arc<BTreeMap<String, String>>;

/// What the last read of each issuer gave: how many usable keys it publishes, or why it could
/// not be read (an issuer not read yet is absent). Shown on the Tenants as
/// `IdentityProviderReady`.
pub type Health = Arc<BTreeMap<String, Result<usize, String>>>;

/// Why an issuer's keys could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("GET {url}: {message}")]
    Http { url: String, message: String },
    #[error("the discovery document names issuer {found:?}, not {expected:?}")]
    IssuerMismatch { expected: String, found: String },
    #[error("jwks_uri {0:?} is not https:// (or http:// on the loopback address)")]
    InsecureJwksUri(String),
}

/// How long an issuer's keys are kept, from its JWK Set's `Cache-Control`: `max-age` within
/// [`MIN_REFRESH`]..=[`MAX_REFRESH`]; `no-cache`/`no-store` the minimum; otherwise
/// [`DEFAULT_REFRESH`].
pub fn refresh_after(cache_control: Option<&str>) -> Duration {
    let Some(header) = cache_control else {
        return DEFAULT_REFRESH;
    };
    let directives: Vec<String> = header
        .split(',')
        .map(|d| d.trim().to_ascii_lowercase())
        .collect();
    if directives
        .iter()
        .any(|d| d == "no-cache" || d == "no-store")
    {
        return MIN_REFRESH;
    }
    directives
        .iter()
        .find_map(|d| d.strip_prefix("max-age=")?.trim().parse::<u64>().ok())
        .map_or(DEFAULT_REFRESH, |secs| {
            Duration::from_secs(secs).clamp(MIN_REFRESH, MAX_REFRESH)
        })
}

/// Whether `url` may be fetched for keys: https, or http on the loopback address (the CRD
/// allows such issuers for development).
pub fn secure_url(url: &str) -> bool {
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"];
    url.starts_with("https://")
        || loopback.iter().any(|prefix| {
            url.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
        })
}

/// Whether `--allowed-identity-issuers` lets the operator read `issuer`: every issuer when the
/// list is empty, else one listed exactly or under a listed prefix ending in `/`.
pub fn issuer_allowed(issuer: &str, allowed: &[String]) -> bool {
    allowed.is_empty()
        || allowed
            .iter()
            .any(|a| issuer == a || (a.ends_with('/') && issuer.starts_with(a.as_str())))
}

/// The keys of `set` that servers accept ([`signing_algorithm`]).
pub fn usable_keys(set: JwkSet) -> Vec<Jwk> {
    set.keys
        .into_iter()
        .filter(|jwk| signing_algorithm(jwk).is_some())
        .collect()
}

/// The `identities.json` of every namespace with Tenants that name an identity provider, from
/// the issuers' keys known so far (an issuer not read yet has none, so its tokens fail until
/// it is). Issuers and tenants are sorted, so the same input gives the same bytes.
pub fn desired(
    tenants: &[Arc<Tenant>],
    keys: &HashMap<String, Vec<Jwk>>,
) -> BTreeMap<String, Identities> {
    let mut by_ns: BTreeMap<String, BTreeMap<String, Vec<Mapping>>> = BTreeMap::new();
    for tenant in tenants
        .iter()
        .filter(|t| t.metadata.deletion_timestamp.is_none())
    {
        let (Some(identity), Some(ns), Some(uid)) =
            (&tenant.spec.identity, tenant.namespace(), tenant.uid())
        else {
            continue;
        };
        by_ns
            .entry(ns.clone())
            .or_default()
            .entry(identity.issuer.clone())
            .or_default()
            .push(Mapping {
                tenant: format!("{ns}/{}", tenant.name_any()),
                tid: uid,
                audience: identity.audience.clone(),
                claims: identity.claims.clone(),
                fingerprint: fingerprint(&identity.issuer, &identity.audience, &identity.claims),
            });
    }
    by_ns
        .into_iter()
        .map(|(ns, issuers)| {
            let issuers = issuers
                .into_iter()
                .map(|(issuer, mut tenants)| {
                    tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
                    TrustedIssuer {
                        keys: keys.get(&issuer).cloned().unwrap_or_default(),
                        issuer,
                        tenants,
                    }
                })
                .collect();
            (ns, Identities { issuers })
        })
        .collect()
}

/// The HTTP client for identity providers: rustls with the system's (webpki) roots, or only the
/// CA certificates of `ca_file`; proxies from the environment.
pub fn agent(ca_file: Option<&Path>) -> anyhow::Result<ureq::Agent> {
    use ureq::tls::{parse_pem, PemItem, RootCerts, TlsConfig};
    let roots = match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                anyhow::anyhow!("cannot read --identity-ca-file {}: {e}", path.display())
            })?;
            let certs: Vec<_> = parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(cert)) => Some(Ok(cert)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<_, _>>()?;
            if certs.is_empty() {
                anyhow::bail!("--identity-ca-file {} holds no certificate", path.display());
            }
            RootCerts::Specific(Arc::new(certs))
        }
        None => RootCerts::WebPki,
    };
    Ok(ureq::Agent::config_builder()
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(true)
        .build()
        .into())
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// Reads the issuer's discovery document and JWK Set (blocking): its usable keys and how long
/// to keep them.
pub fn fetch(agent: &ureq::Agent, issuer: &str) -> Result<(Vec<Jwk>, Duration), FetchError> {
    let discovery_url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let discovery: Discovery = get(agent, &discovery_url)?.0;
    if discovery.issuer != issuer {
        return Err(FetchError::IssuerMismatch {
            expected: issuer.to_owned(),
            found: discovery.issuer,
        });
    }
    if !secure_url(&discovery.jwks_uri) {
        return Err(FetchError::InsecureJwksUri(discovery.jwks_uri));
    }
    let (set, cache_control): (JwkSet, _) = get(agent, &discovery.jwks_uri)?;
    Ok((usable_keys(set), refresh_after(cache_control.as_deref())))
}

/// A JSON document and its `Cache-Control` header.
fn get<T: serde::de::DeserializeOwned>(
    agent: &ureq::Agent,
    url: &str,
) -> Result<(T, Option<String>), FetchError> {
    let failed = |e: ureq::Error| FetchError::Http {
        url: url.to_owned(),
        message: e.to_string(),
    };
    let mut response = agent.get(url).call().map_err(failed)?;
    let cache_control = response
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_DOCUMENT_BYTES)
        .read_to_vec()
        .map_err(failed)?;
    let doc = serde_json::from_slice(&body).map_err(|e| FetchError::Http {
        url: url.to_owned(),
        message: format!("not the expected JSON: {e}"),
    })?;
    Ok((doc, cache_control))
}

/// Sends `value` unless the channel holds it already.
fn replace_if_changed<T: PartialEq>(channel: &watch::Sender<Arc<T>>, value: T) {
    channel.send_if_modified(|old| {
        let changed = **old != value;
        if changed {
            *old = Arc::new(value);
        }
        changed
    });
}

/// What is known of one issuer.
struct Known {
    keys: Vec<Jwk>,
    next_read: Instant,
}

/// Keeps `published` current: reads the issuers the Tenants name (those `allowed`) when due
/// and sends the namespaces' documents whenever they change.
pub async fn run(
    tenants: Store<Tenant>,
    agent: ureq::Agent,
    allowed: Vec<String>,
    published: watch::Sender<Published>,
    health: watch::Sender<Health>,
) {
    let mut known: HashMap<String, Known> = HashMap::new();
    let mut last_read: BTreeMap<String, Result<usize, String>> = BTreeMap::new();
    loop {
        let state = tenants.state();
        let mut wanted: Vec<String> = state
            .iter()
            .filter_map(|t| Some(t.spec.identity.as_ref()?.issuer.clone()))
            .collect();
        wanted.sort();
        wanted.dedup();
        known.retain(|issuer, _| wanted.contains(issuer));
        last_read.retain(|issuer, _| wanted.contains(issuer));
        for issuer in wanted {
            if !issuer_allowed(&issuer, &allowed) {
                last_read.insert(issuer, Err(NOT_ALLOWED.to_owned()));
                continue;
            }
            if known
                .get(&issuer)
                .is_some_and(|k| Instant::now() < k.next_read)
            {
                continue;
            }
            let (agent, url) = (agent.clone(), issuer.clone());
            let fetched = tokio::task::spawn_blocking(move || fetch(&agent, &url))
                .await
                .unwrap_or_else(|e| {
                    Err(FetchError::Http {
                        url: issuer.clone(),
                        message: e.to_string(),
                    })
                });
            let entry = known.entry(issuer.clone()).or_insert(Known {
                keys: Vec::new(),
                next_read: Instant::now(),
            });
            match fetched {
                Ok((keys, keep)) => {
                    if keys != entry.keys {
                        tracing::info!(%issuer, keys = keys.len(), "read the identity provider's keys");
                    }
                    last_read.insert(issuer.clone(), Ok(keys.len()));
                    *entry = Known {
                        keys,
                        next_read: Instant::now() + keep,
                    };
                }
                Err(e) => {
                    tracing::warn!(%issuer, error = %e, "cannot read the identity provider's keys; keeping those known");
                    last_read.insert(issuer.clone(), Err(e.to_string()));
                    entry.next_read = Instant::now() + RETRY;
                }
            }
        }
        let keys = known
            .iter()
            .map(|(issuer, k)| (issuer.clone(), k.keys.clone()))
            .collect();
        let docs: BTreeMap<String, String> = desired(&state, &keys)
            .into_iter()
            .map(|(ns, doc)| {
                let json = serde_json::to_string(&doc).expect("identities serialize");
                (ns, json)
            })
            .collect();
        replace_if_changed(&published, docs);
        replace_if_changed(&health, last_read.clone());
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_kept_as_long_as_the_issuer_says_within_bounds() {
        assert_eq!(refresh_after(None), DEFAULT_REFRESH);
        assert_eq!(
            refresh_after(Some("public, max-age=120")),
            Duration::from_secs(120)
        );
        assert_eq!(refresh_after(Some("Max-Age=0")), MIN_REFRESH);
        assert_eq!(refresh_after(Some("max-age=99999999")), MAX_REFRESH);
        assert_eq!(refresh_after(Some("no-store, max-age=600")), MIN_REFRESH);
        assert_eq!(refresh_after(Some("private")), DEFAULT_REFRESH);
        assert_eq!(refresh_after(Some("max-age=x")), DEFAULT_REFRESH);
    }

    #[test]
    fn only_listed_issuers_or_those_under_a_listed_prefix_are_read() {
        let allowed = [
            "https://a.example".to_owned(),
            "https://b.example/realms/".to_owned(),
        ];
        assert!(issuer_allowed("https://anything", &[]));
        assert!(issuer_allowed("https://a.example", &allowed));
        assert!(
            !issuer_allowed("https://a.example/x", &allowed),
            "no prefix without '/'"
        );
        assert!(!issuer_allowed("https://a.example.evil", &allowed));
        assert!(issuer_allowed("https://b.example/realms/acme", &allowed));
        assert!(!issuer_allowed("https://b.example/realmsx", &allowed));
    }

    #[test]
    fn keys_come_over_https_or_the_loopback_only() {
        for ok in [
            "https://idp.example/jwks",
            "http://127.0.0.1:8080/jwks",
            "http://localhost",
            "http://[::1]:9/k",
        ] {
            assert!(secure_url(ok), "{ok}");
        }
        for bad in [
            "http://idp.example/jwks",
            "http://127.0.0.1.evil.example/",
            "http://localhost.evil/",
            "file:///etc/passwd",
            "ftp://x",
        ] {
            assert!(!secure_url(bad), "{bad}");
        }
    }

    fn tenant(ns: &str, name: &str, issuer: Option<&str>) -> Arc<Tenant> {
        let mut spec = serde_json::json!({"services": ["svc"]});
        if let Some(issuer) = issuer {
            spec["identity"] = serde_json::json!({"issuer": issuer, "audience": "api",
                "claims": [{"claim": "azp", "equals": name}]});
        }
        let mut t = Tenant::new(name, serde_json::from_value(spec).unwrap());
        t.metadata.namespace = Some(ns.into());
        t.metadata.uid = Some(format!("uid-{name}"));
        Arc::new(t)
    }

    #[test]
    fn each_namespace_gets_its_tenants_grouped_by_issuer_with_the_keys_known() {
        let tenants = [
            tenant("a", "zed", Some("https://one")),
            tenant("a", "amy", Some("https://one")),
            tenant("a", "plain", None),
            tenant("b", "bob", Some("https://two")),
        ];
        let key: Jwk = serde_json::from_value(serde_json::json!(
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "k"}
        ))
        .unwrap();
        let keys = HashMap::from([("https://one".to_owned(), vec![key.clone()])]);
        let docs = desired(&tenants, &keys);
        assert_eq!(docs.keys().collect::<Vec<_>>(), ["a", "b"]);
        let one = &docs["a"].issuers[0];
        assert_eq!(
            (one.issuer.as_str(), one.keys.as_slice()),
            ("https://one", &[key][..])
        );
        let names: Vec<_> = one.tenants.iter().map(|m| m.tenant.as_str()).collect();
        assert_eq!(names, ["a/amy", "a/zed"], "sorted, so the bytes are stable");
        assert_eq!(one.tenants[0].tid, "uid-amy");
        assert!(
            docs["b"].issuers[0].keys.is_empty(),
            "not read yet: no keys"
        );
    }

    #[tokio::test]
    async fn reads_the_loopback_issuers_keys_and_follows_its_rotation() {
        let idp = nlu_testkit::OidcIssuer::start().await.unwrap();
        let issuer = idp.issuer().to_owned();
        let read = |issuer: String| {
            tokio::task::spawn_blocking(move || fetch(&agent(None).unwrap(), &issuer))
        };
        let (keys, keep) = read(issuer.clone()).await.unwrap().unwrap();
        assert_eq!(keep, MIN_REFRESH, "the stand-in says max-age=1");
        assert_eq!(keys.len(), 1);
        idp.rotate();
        let (rotated, _) = read(issuer.clone()).await.unwrap().unwrap();
        assert_ne!(rotated[0].common.key_id, keys[0].common.key_id);
        assert_eq!(idp.jwks_reads(), 2);

        let wrong = read(format!("{issuer}/")).await.unwrap();
        assert!(
            matches!(wrong, Err(FetchError::IssuerMismatch { .. })),
            "{wrong:?}"
        );
        let down = read("http://127.0.0.1:1".into()).await.unwrap();
        assert!(matches!(down, Err(FetchError::Http { .. })), "{down:?}");
    }
}
