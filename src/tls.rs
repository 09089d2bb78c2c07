//! The TLS listener's configuration, from PEM files.
//!
//! Only TLS 1.2 and 1.3 are offered (USAePay requires 1.2; nothing older is
//! safe). ALPN offers `h2` and `http/1.1`, so clients that speak HTTP/2 get it.
//! Sessions are cached ([`SESSION_CACHE_ENTRIES`]) so a vendor that reconnects
//! resumes instead of paying a full handshake (a P-256 signature and key
//! exchange) again.
//! Errors name the file and what was wrong with it, because a bad certificate
//! path is the most common start-up failure.

use std::path::Path;
use std::sync::Arc;

use rustls::server::ServerSessionMemoryCache;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsPaths;

/// TLS sessions remembered for resumption (TLS 1.2 session ids and TLS 1.3
/// tickets, which rustls makes stateful with this cache). Vendors reconnect
/// often (USAePay opens up to 20 connections per endpoint, others one per
/// webhook), so the cache is sized for a few thousand recent clients; at a few
/// hundred bytes per entry it stays around a megabyte, and the least recently
/// used sessions go first.
pub const SESSION_CACHE_ENTRIES: usize = 4096;

/// A certificate or key that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is missing, unreadable or holds no certificate.
    #[error("server.tls_cert `{path}`: {reason}")]
    Cert {
        /// File named in the config.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The key file is missing, unreadable or holds no private key.
    #[error("server.tls_key `{path}`: {reason}")]
    Key {
        /// File named in the config.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The key does not match the certificate, or rustls refused them.
    #[error("server.tls_cert/tls_key: {0}")]
    Pair(String),
}

/// Builds the rustls server configuration from the configured PEM files.
pub fn server_config(paths: &TlsPaths) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(&paths.cert)?;
    let key = PrivateKeyDer::from_pem_file(&paths.key).map_err(|e| TlsError::Key {
        path: paths.key.display().to_string(),
        reason: format!("no usable PEM private key ({e})"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Pair(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Pair(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    Ok(Arc::new(config))
}

/// The listener's TLS acceptor for the configured files; `None` for plain
/// HTTP (tests and a TLS-terminating proxy in front).
pub fn acceptor(paths: Option<&TlsPaths>) -> Result<Option<tokio_rustls::TlsAcceptor>, TlsError> {
    paths
        .map(|paths| Ok(tokio_rustls::TlsAcceptor::from(server_config(paths)?)))
        .transpose()
}

/// Whether the configured certificate chains to a public root (Mozilla's,
/// as browsers and curl's default bundle trust them). `hookgate sign` adds
/// `--cacert` to its curl when it does not, so the printed command works
/// pasted as is against a self-signed or private-CA certificate.
pub fn chains_to_public_root(paths: &TlsPaths) -> Result<bool, TlsError> {
    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls::{CertificateError, Error};

    let certs = load_certs(&paths.cert)?;
    let Some((leaf, intermediates)) = certs.split_first() else {
        return Ok(false);
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| TlsError::Pair(e.to_string()))?;
    // The chain is checked before the name, so a name error means the chain
    // is trusted; no name is known here (the public host is not in the config).
    let name = rustls_pki_types::ServerName::try_from("hookgate.invalid")
        .map_err(|e| TlsError::Pair(e.to_string()))?;
    let now = rustls_pki_types::UnixTime::now();
    Ok(
        match verifier.verify_server_cert(leaf, intermediates, &name, &[], now) {
            Ok(_) => true,
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => true,
            Err(_) => false,
        },
    )
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Cert {
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(format!("cannot read ({e})")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("invalid PEM ({e})")))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}
