//! HTTPS and WSS: the TLS setup (rustls, ring provider) for a certificate and key. The
//! handshakes run in [`crate::http::serve`], each on its connection's task and within its
//! timeout, so a client that stalls in one holds up nobody else.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The TLS setup for `cert` (PEM chain) and `key` (PEM private key); `keys` names the config
/// section in errors (`server` for onair-signal, `http` for onaird).
pub fn acceptor(keys: &str, cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .with_context(|| format!("{keys}.tls_cert {}", cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{keys}.tls_cert {}: no certificate in it",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("{keys}.tls_key {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .with_context(|| format!("{keys}.tls_cert and {keys}.tls_key do not go together"))?;
    // WebSocket upgrades are HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
