//! One Redis ACL user per service namespace, and its credential in that namespace.
//!
//! Every namespace with an auth-on NluService that names no Redis of its own gets the ACL user
//! `nlu-ns-<namespace>` (rules: `nlu_crds::access::redis_acl`) and the Secret
//! `--default-redis-secret` (key `url`): the operator's Redis URL with that user and a random
//! password, which their pods read. The operator's own URL never leaves the operator. The
//! Secret has no owner: garbage collection after the last NluService of the moment went would
//! give the next one a new password while running pods still hold the old one.
//!
//! Every few seconds, per namespace: the Secret's password is kept while Redis knows it; a
//! Secret that is gone, or whose password does not authenticate (a user whose passwords do not
//! include it), gets a new password (the old one stops working at once); a user that Redis lost
//! (a restart without an ACL file) is made again with the Secret's password, so running pods
//! keep working. `ACL SETUSER` runs each time (on every node of a cluster: redis-rs sends it to
//! all of them), so rules changed by hand or a node that lost the user are put back.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::ObjectMeta;
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use nlu_crds::access::redis_acl::{
    credential_url, password_hash, setuser_args, url_credentials, user_name,
};
use nlu_crds::access::redis_client::RedisConnection;
use nlu_crds::access::RedisKeys;
use nlu_crds::NluService;
use rand::RngCore;

use super::jwks_publish::{auth_on, owners_by_namespace};
use crate::config::OperatorConfig;

/// `app.kubernetes.io/component` of the credential Secrets.
pub const COMPONENT: &str = "redis-credential";
/// Key of the Redis URL in the Secret.
pub const URL_KEY: &str = "url";

/// How often every namespace's user and Secret are checked.
const POLL: Duration = Duration::from_secs(5);

/// Whether the service reads the operator's Redis through its namespace's credential: auth on
/// and no Redis of its own (neither a URL nor a Secret reference).
pub fn uses_operator_redis(svc: &NluService) -> bool {
    auth_on(svc)
        && svc
            .spec
            .auth
            .as_ref()
            .and_then(|a| a.redis.as_ref())
            .is_none_or(|r| r.url.is_none() && r.secret_ref.is_none())
}

/// What to do with a namespace's password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Password {
    /// Redis knows the Secret's password: keep it.
    Keep(String),
    /// Redis has no such user (it lost its ACLs): make it again with the Secret's password.
    Restore(String),
    /// No usable Secret, or its password does not authenticate: a new one.
    New,
}

/// Decides from the Secret's password (`None`: no Secret, or no credential of this user in it)
/// and the user's password hashes in Redis (`None`: no such user).
pub fn decide(stored: Option<String>, hashes: Option<&[String]>) -> Password {
    match (stored, hashes) {
        (None, _) => Password::New,
        (Some(p), None) => Password::Restore(p),
        (Some(p), Some(h)) if h.contains(&password_hash(&p)) => Password::Keep(p),
        (Some(_), Some(_)) => Password::New,
    }
}

/// The credential Secret of `namespace`.
pub fn secret(name: &str, namespace: &str, url: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    crate::context::OPERATOR_NAME.to_owned(),
                ),
                (
                    "app.kubernetes.io/component".to_owned(),
                    COMPONENT.to_owned(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            URL_KEY.to_owned(),
            ByteString(url.as_bytes().to_vec()),
        )])),
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    }
}

/// The password of `user` in the Secret's URL, if the Secret holds one.
pub fn stored_password(secret: &Secret, user: &str) -> Option<String> {
    let url = secret.data.as_ref()?.get(URL_KEY)?;
    let (found, password) = url_credentials(std::str::from_utf8(&url.0).ok()?)?;
    (found == user).then_some(password)
}

/// The password hashes of `ACL GETUSER` (RESP2 list or RESP3 map); `None` when there is no user.
pub fn passwords_of(reply: &redis::Value) -> Option<Vec<String>> {
    use redis::Value;
    let pairs: Vec<(&Value, &Value)> = match reply {
        Value::Nil => return None,
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|c| Some((c.first()?, c.get(1)?)))
            .collect(),
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        _ => return Some(Vec::new()),
    };
    let text = |v: &Value| <String as redis::FromRedisValue>::from_redis_value_ref(v).ok();
    Some(
        pairs
            .into_iter()
            .find(|(k, _)| text(k).as_deref() == Some("passwords"))
            .and_then(|(_, v)| match v {
                Value::Array(items) | Value::Set(items) => {
                    Some(items.iter().filter_map(text).collect())
                }
                _ => None,
            })
            .unwrap_or_default(),
    )
}

/// A new random password: 32 bytes as hex (URL-safe).
fn new_password() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes sure `namespace` has its ACL user and a Secret whose password works; returns whether
/// a new password was made.
pub async fn ensure(
    client: &Client,
    redis: &mut RedisConnection,
    config: &OperatorConfig,
    namespace: &str,
) -> anyhow::Result<bool> {
    let operator_url = config
        .redis_url
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--redis-url is not set"))?;
    let keys = RedisKeys::new(config.redis_prefix.clone());
    let user = user_name(namespace);
    let name = &config.default_redis_secret;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let current = api.get_opt(name).await?;
    let reply: redis::Value = redis::cmd("ACL")
        .arg("GETUSER")
        .arg(&user)
        .query_async(redis)
        .await?;
    let stored = current.as_ref().and_then(|s| stored_password(s, &user));
    let hashes = passwords_of(&reply);
    let (password, renewed) = match decide(stored, hashes.as_deref()) {
        Password::Keep(p) | Password::Restore(p) => (p, false),
        Password::New => (new_password(), true),
    };
    redis::cmd("ACL")
        .arg(setuser_args(&keys, namespace, &password))
        .query_async::<()>(redis)
        .await?;
    let url = credential_url(operator_url, &user, &password).map_err(anyhow::Error::msg)?;
    let want = secret(name, namespace, &url);
    let same = current.as_ref().is_some_and(|c| {
        c.data == want.data
            && c.metadata
                .owner_references
                .as_ref()
                .is_none_or(Vec::is_empty)
            && c.metadata.labels.as_ref().is_some_and(|l| {
                want.metadata
                    .labels
                    .iter()
                    .flatten()
                    .all(|(k, v)| l.get(k) == Some(v))
            })
    });
    if !same {
        crate::apply::apply(client, &want).await?;
    }
    Ok(renewed)
}

/// Keeps every namespace's user and Secret, until the task is dropped.
pub async fn run(
    client: Client,
    services: Store<NluService>,
    mut redis: RedisConnection,
    config: OperatorConfig,
) {
    loop {
        let namespaces = owners_by_namespace(&services.state(), uses_operator_redis);
        for ns in namespaces.into_keys() {
            match ensure(&client, &mut redis, &config, &ns).await {
                Ok(true) => {
                    tracing::info!(namespace = %ns, "new Redis credential for the namespace")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(namespace = %ns, error = %e, "could not keep the namespace's Redis credential; retrying")
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    #[test]
    fn the_password_is_renewed_only_when_it_cannot_work() {
        let h = vec![password_hash("old")];
        assert_eq!(decide(None, Some(&h)), Password::New);
        assert_eq!(decide(None, None), Password::New);
        assert_eq!(
            decide(Some("old".into()), Some(&h)),
            Password::Keep("old".into())
        );
        assert_eq!(decide(Some("other".into()), Some(&h)), Password::New);
        assert_eq!(
            decide(Some("old".into()), None),
            Password::Restore("old".into())
        );
    }

    #[test]
    fn getuser_replies_give_the_password_hashes() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let reply = Value::Array(vec![
            bulk("flags"),
            Value::Array(vec![bulk("on")]),
            bulk("passwords"),
            Value::Array(vec![bulk("abc")]),
            bulk("commands"),
            bulk("-@all +ping"),
        ]);
        assert_eq!(passwords_of(&reply), Some(vec!["abc".to_owned()]));
        assert_eq!(passwords_of(&Value::Nil), None);
    }

    #[test]
    fn only_services_without_their_own_redis_use_the_namespace_credential() {
        let svc = |auth: serde_json::Value| {
            let spec = serde_json::json!({"model": {"task": "embedding", "source": {"url": "https://m"}}, "auth": auth});
            NluService::new("s", serde_json::from_value(spec).unwrap())
        };
        assert!(uses_operator_redis(&svc(serde_json::json!({}))));
        assert!(uses_operator_redis(&svc(
            serde_json::json!({"mode": "jwt"})
        )));
        assert!(!uses_operator_redis(&svc(
            serde_json::json!({"mode": "none"})
        )));
        assert!(!uses_operator_redis(&svc(
            serde_json::json!({"redis": {"secretRef": {"name": "mine"}}})
        )));
        assert!(!uses_operator_redis(&svc(
            serde_json::json!({"redis": {"url": "redis://r/"}})
        )));
    }

    #[test]
    fn the_secret_holds_the_url_and_its_password_is_read_back() {
        let s = secret("nlu-redis", "ns", "redis://nlu-ns-ns:pw@r:6379/0");
        assert_eq!(stored_password(&s, "nlu-ns-ns"), Some("pw".into()));
        assert_eq!(stored_password(&s, "nlu-ns-other"), None);
        assert_eq!(
            s.metadata.labels.unwrap()["app.kubernetes.io/component"],
            COMPONENT
        );
    }
}
