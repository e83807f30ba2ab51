//! HTTPS with rustls (ring provider): HTTP/2 and HTTP/1.1 by ALPN, certificate and key re-read
//! when their files change (cert-manager renews the mounted Secret in place). The configuration
//! made here is served by [`crate::listener`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::reloading::Reloading;

#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// PEM certificate chain (leaf first) to serve HTTPS with; re-read when it changes.
    #[arg(long, env = "NLU_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "NLU_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The TLS configuration, or `None` to serve plain HTTP. Must run on the Tokio runtime.
    pub fn server_config(&self) -> anyhow::Result<Option<Arc<ServerConfig>>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => server_config(cert, key).map(Some),
            (None, None) => Ok(None),
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
    };
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{}: invalid PEM certificate: {e}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", cert.display());
    let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| anyhow::anyhow!("{}: invalid PEM private key: {e}", key.display()))?;
    let certified = CertifiedKey::from_der(chain, key_der, provider).map_err(|e| {
        anyhow::anyhow!(
            "{} and {} do not form a usable pair: {e}",
            cert.display(),
            key.display()
        )
    })?;
    Ok(certified)
}

/// Serves whatever certificate the files hold now.
struct ReloadingCert(Reloading<CertifiedKey>);

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadingCert")
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get())
    }
}

/// A rustls server configuration (TLS 1.2/1.3, ALPN h2 and http/1.1) whose certificate follows
/// the files. Fails when they cannot be loaded now.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = provider();
    let resolver = {
        let (cert, key, provider) = (cert.to_path_buf(), key.to_path_buf(), provider.clone());
        Reloading::start(
            "TLS certificate",
            vec![cert.clone(), key.clone()],
            move || load_certified_key(&cert, &key, &provider),
        )?
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(ReloadingCert(resolver)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
