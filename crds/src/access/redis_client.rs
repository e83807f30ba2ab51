//! How the operator and the server open Redis: `redis://`, `unix://`, or `rediss://` through
//! rustls, verified against the system's roots or, when given, only the CA certificates of a
//! PEM file (`--redis-ca-file` of both binaries).

/// A Redis client for `url`; `ca_pem`: the only roots to trust (needs a `rediss://` URL).
pub fn redis_client(url: &str, ca_pem: Option<Vec<u8>>) -> Result<redis::Client, String> {
    // redis's rustls takes the process's default crypto provider: ring, the workspace's one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let invalid = |e: redis::RedisError| format!("invalid Redis URL: {e}");
    let Some(root_cert) = ca_pem else {
        return redis::Client::open(url).map_err(invalid);
    };
    if !url.starts_with("rediss://") {
        return Err("a Redis CA file needs a rediss:// URL".into());
    }
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert),
    };
    redis::Client::build_with_tls(url, certificates).map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_needs_a_tls_url_and_bad_urls_are_errors() {
        assert!(redis_client("redis://127.0.0.1:6379/", None).is_ok());
        let refused = redis_client("redis://127.0.0.1:6379/", Some(b"pem".to_vec()));
        assert_eq!(
            refused.unwrap_err(),
            "a Redis CA file needs a rediss:// URL"
        );
        assert!(redis_client("http://example.com", None).is_err());
    }
}
