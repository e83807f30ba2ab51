//! How the operator and the server open Redis: one server (`redis://`, `unix://`, or
//! `rediss://` through rustls), or a Redis Cluster (`redis+cluster://` or `rediss+cluster://`
//! followed by comma-separated seed nodes). TLS is verified against the system's roots or, when
//! given, only the CA certificates of a PEM file (`--redis-ca-file` of both binaries).
//!
//! Both modes hand out a [`RedisConnection`] that connects lazily (a binary starts while Redis is
//! down) and fails fast while Redis is away, so callers apply their own failure policy instead
//! of hanging.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, TlsCertificates, Value,
};

/// How long one attempt may take, and the longest pause before reconnecting.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub timeout: Duration,
    pub max_delay: Duration,
}

/// A reconnecting connection to one Redis server or to a Redis Cluster. Cheap to clone (clones
/// share the connection); commands, scripts and pipelines run on either through
/// [`ConnectionLike`]. In cluster mode each command goes to the master of its key's slot, and
/// the client follows `MOVED` replies and failovers by reloading the slot map.
#[derive(Clone)]
pub enum RedisConnection {
    Single(Single),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(c) => {
                c.run(move |mut m| async move { m.req_packed_command(cmd).await })
            }
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(c) => c.run(move |mut m| async move {
                m.req_packed_commands(pipeline, offset, count).await
            }),
            RedisConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(c) => c.current().1.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
        }
    }
}

/// One Redis server through a [`ConnectionManager`], which reconnects only after I/O errors: a
/// reconnect the server refuses (a password it does not know yet, as for a namespace's ACL user
/// after a Redis restart, until the operator makes the user again) would otherwise stay the
/// answer to every later command. Such a refusal replaces the manager with a fresh one, so the
/// next command logs in again.
#[derive(Clone)]
pub struct Single(Arc<SingleInner>);

struct SingleInner {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// The manager in use and its generation (replaced at most once per refused generation).
    manager: Mutex<(u64, ConnectionManager)>,
}

impl Single {
    fn new(client: redis::Client, config: ConnectionManagerConfig) -> RedisResult<Self> {
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        Ok(Self(Arc::new(SingleInner {
            client,
            config,
            manager: Mutex::new((0, manager)),
        })))
    }

    fn current(&self) -> (u64, ConnectionManager) {
        self.0
            .manager
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs `op` on the current manager, and replaces that manager when the server refused to
    /// let it log in.
    fn run<'a, T, F, Fut>(&'a self, op: F) -> RedisFuture<'a, T>
    where
        T: Send + 'a,
        F: FnOnce(ConnectionManager) -> Fut + Send + 'a,
        Fut: std::future::Future<Output = RedisResult<T>> + Send + 'a,
    {
        Box::pin(async move {
            let (generation, manager) = self.current();
            let result = op(manager).await;
            if let Err(e) = &result {
                if login_refused(e) {
                    self.replace(generation);
                }
            }
            result
        })
    }

    fn replace(&self, refused: u64) {
        let inner = &self.0;
        let mut current = inner.manager.lock().unwrap_or_else(|e| e.into_inner());
        if current.0 != refused {
            return; // another command already replaced it
        }
        // It was made once from the same client and settings, so making it again succeeds; if
        // it did not, the old manager stays and the next refusal tries again.
        if let Ok(fresh) =
            ConnectionManager::new_lazy_with_config(inner.client.clone(), inner.config.clone())
        {
            *current = (refused + 1, fresh);
        }
    }
}

/// Whether `error` says the server refused the connection's login; unlike an I/O error,
/// [`ConnectionManager`] keeps that answer instead of connecting again.
fn login_refused(error: &RedisError) -> bool {
    error.kind() == ErrorKind::AuthenticationFailed
}

/// Opens `url` without connecting yet (needs a Tokio runtime); `ca_pem`: the only roots to trust
/// (needs a TLS URL). Errors describe what is wrong with the URL.
pub fn connect(
    url: &str,
    ca_pem: Option<Vec<u8>>,
    timeouts: Timeouts,
) -> Result<RedisConnection, String> {
    // redis's rustls takes the process's default crypto provider: ring, the workspace's one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let invalid = |e: redis::RedisError| format!("invalid Redis URL: {e}");
    let tls = url.starts_with("rediss://") || url.starts_with("rediss+cluster://");
    if ca_pem.is_some() && !tls {
        return Err("a Redis CA file needs a rediss:// or rediss+cluster:// URL".into());
    }
    let certificates = ca_pem.map(|root_cert| TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert),
    });
    if let Some(seeds) = cluster_seeds(url)? {
        let mut builder = ClusterClientBuilder::new(seeds)
            // A few quick retries: in a cluster they also follow `MOVED` redirects, which the
            // first commands after a failover get (a reconnect to the dead master, then a node
            // naming the new one). The timeout still bounds the whole command, retries included,
            // so the caller fails fast while Redis is away.
            .retries(3)
            .min_retry_wait(10)
            .max_retry_wait(
                timeouts
                    .max_delay
                    .as_millis()
                    .try_into()
                    .unwrap_or(u64::MAX),
            )
            // A node that stays unreachable leaves the connection table after three attempts
            // (about 0.4 s). Otherwise redis-rs retries it for ever, and only a slot map reload
            // (which needs a MOVED reply) drops it; until then every command for all masters
            // (the readiness PING) fails on a master that died and was replaced. The next slot
            // map brings a node back when it returns.
            .max_connection_attempts(NonZeroUsize::new(3).expect("3 is not zero"));
        if let Some(certificates) = certificates {
            builder = builder.certs(certificates);
        }
        let client = builder.build().map_err(invalid)?;
        let config = ClusterConfig::new()
            .set_connection_timeout(timeouts.timeout)
            .set_response_timeout(timeouts.timeout);
        return Ok(RedisConnection::Cluster(
            client.get_pending_async_connection_with_config(config),
        ));
    }
    let client = match certificates {
        None => redis::Client::open(url),
        Some(certificates) => redis::Client::build_with_tls(url, certificates),
    }
    .map_err(invalid)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeouts.timeout))
        .set_response_timeout(Some(timeouts.timeout))
        .set_number_of_retries(1)
        .set_max_delay(timeouts.max_delay);
    Single::new(client, config)
        .map(RedisConnection::Single)
        .map_err(invalid)
}

/// The seed nodes of a cluster URL, each as a one-server URL that redis-rs understands
/// (`redis://[user:password@]host:port/`, `rediss://...` for TLS); `None` for a URL of one
/// server. `redis+cluster://[user:password@]host[:port][,host[:port]...][/0]`: the credentials
/// apply to every node, the port defaults to 6379, and a cluster has database 0 only.
pub fn cluster_seeds(url: &str) -> Result<Option<Vec<String>>, String> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
        ("redis", rest)
    } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
        ("rediss", rest)
    } else {
        return Ok(None);
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if !matches!(path, "" | "0") {
        return Err(format!(
            "invalid Redis Cluster URL: {path:?} after the nodes (a cluster has database 0 only, and no options)"
        ));
    }
    // Passwords may contain '@' only percent-encoded, as in any URL; the last '@' ends them.
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (format!("{userinfo}@"), hosts),
        None => (String::new(), authority),
    };
    let seeds = hosts
        .split(',')
        .map(|node| {
            if node.is_empty() || node.contains(['?', '#']) {
                return Err(format!(
                    "invalid Redis Cluster URL: {node:?} is not host[:port] (nodes are separated by commas)"
                ));
            }
            // `[::1]:7000` keeps its brackets; a bare host or `[::1]` gets the default port.
            let has_port = node
                .rsplit_once(':')
                .is_some_and(|(host, _)| !host.is_empty() && (!host.starts_with('[') || host.ends_with(']')));
            let port = if has_port { "" } else { ":6379" };
            Ok(format!("{scheme}://{userinfo}{node}{port}/"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(seeds))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        timeout: Duration::from_millis(100),
        max_delay: Duration::from_millis(100),
    };

    #[test]
    fn cluster_urls_become_seed_nodes() {
        assert_eq!(cluster_seeds("redis://127.0.0.1:6379/").unwrap(), None);
        assert_eq!(cluster_seeds("rediss://r:6380/0").unwrap(), None);
        let seeds = |url| cluster_seeds(url).unwrap().unwrap();
        assert_eq!(
            seeds("redis+cluster://10.0.0.1:7000,10.0.0.2,redis-2.redis:7002/"),
            [
                "redis://10.0.0.1:7000/",
                "redis://10.0.0.2:6379/",
                "redis://redis-2.redis:7002/"
            ]
        );
        assert_eq!(
            seeds("rediss+cluster://user:p%40ss@a:7000,[::1]:7001,[::1]/0"),
            [
                "rediss://user:p%40ss@a:7000/",
                "rediss://user:p%40ss@[::1]:7001/",
                "rediss://user:p%40ss@[::1]:6379/"
            ]
        );
        assert_eq!(
            seeds("redis+cluster://:secret@a"),
            ["redis://:secret@a:6379/"]
        );
    }

    #[test]
    fn bad_cluster_urls_are_explained() {
        for (url, expected) in [
            ("redis+cluster://a:7000/1", "database 0 only"),
            ("redis+cluster://a:7000/?protocol=resp3", "database 0 only"),
            ("redis+cluster://a:7000?protocol=resp3", "not host[:port]"),
            ("redis+cluster://a:7000,,b:7001", "not host[:port]"),
            ("redis+cluster://", "not host[:port]"),
        ] {
            let error = cluster_seeds(url).unwrap_err();
            assert!(error.contains(expected), "{url}: {error}");
        }
    }

    #[tokio::test]
    async fn opening_checks_the_url_and_the_ca_without_connecting() {
        // Nothing listens on port 1: opening is lazy in both modes.
        assert!(matches!(
            connect("redis://127.0.0.1:1/", None, TIMEOUTS),
            Ok(RedisConnection::Single(_))
        ));
        assert!(matches!(
            connect("redis+cluster://127.0.0.1:1,127.0.0.1:2", None, TIMEOUTS),
            Ok(RedisConnection::Cluster(_))
        ));
        for (url, ca) in [
            ("redis://127.0.0.1:6379/", Some(b"pem".to_vec())),
            ("redis+cluster://127.0.0.1:6379", Some(b"pem".to_vec())),
        ] {
            assert_eq!(
                connect(url, ca, TIMEOUTS).err().unwrap(),
                "a Redis CA file needs a rediss:// or rediss+cluster:// URL"
            );
        }
        assert!(connect("http://example.com", None, TIMEOUTS).is_err());
        for url in ["redis+cluster://a:1/5", "redis+cluster://a:port"] {
            let error = connect(url, None, TIMEOUTS).err().unwrap();
            assert!(error.starts_with("invalid Redis"), "{url}: {error}");
        }
    }
}
