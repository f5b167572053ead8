//! TLS from certificate files (`server.tls_cert_file`, `server.tls_key_file`)
//! with rustls and ring. The certificate is served through a resolver whose
//! key pair is swapped atomically when the files change (checked every
//! `server.tls_reload_seconds`, by content), so a renewed certificate (cert-manager,
//! certbot, Vault PKI) is picked up without a restart or a dropped
//! connection. A renewed pair that does not load is refused with a warning,
//! and the one in use keeps serving.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use crate::settings::TlsFiles;

/// Serves whichever key pair was loaded last.
#[derive(Debug)]
pub struct Reloading {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Why a certificate and key pair does not load: a boot error, or a
/// warning when a renewed pair is refused. Messages name the setting and
/// the file, never key material (the parsers' errors hold none).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("server.tls_cert_file {}: {source}", .path.display())]
    Cert {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("server.tls_cert_file {} holds no certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("server.tls_key_file {}: {source}", .path.display())]
    Key {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("server.tls_key_file {}: {source}", .path.display())]
    KeyType { path: PathBuf, source: rustls::Error },
    #[error("server.tls_key_file does not match server.tls_cert_file: {0}")]
    Mismatch(rustls::Error),
    #[error("TLS: {0}")]
    Config(rustls::Error),
}

/// The certificate chain and private key of `files`, ready to serve.
pub fn load(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let cert = |source| TlsError::Cert {
        path: files.cert.clone(),
        source,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(cert)?
        .collect::<Result<_, _>>()
        .map_err(cert)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(files.cert.clone()));
    }
    // The key's own error never holds key material; the path is named.
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Key {
        path: files.key.clone(),
        source,
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|source| TlsError::KeyType {
        path: files.key.clone(),
        source,
    })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(TlsError::Mismatch)?;
    Ok(certified)
}

/// The rustls server configuration, and its resolver for [`watch`].
pub fn server_config(files: &TlsFiles) -> Result<(rustls::ServerConfig, Arc<Reloading>), TlsError> {
    let resolver = Arc::new(Reloading {
        current: ArcSwap::from_pointee(load(files)?),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, resolver))
}

/// What the two files hold now (their contents, not their times: a copy
/// that keeps the modification time is a change too).
fn fingerprint(files: &TlsFiles) -> Option<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(std::fs::read(&files.cert).ok()?);
    h.update([0]);
    h.update(std::fs::read(&files.key).ok()?);
    Some(h.finalize().into())
}

/// Re-reads the files when they change, on the current arbiter. A change is
/// loaded once it has held still for a whole check (a renewal caught
/// half-written is not served), and a pair that does not load is warned
/// about once per change.
pub fn watch(files: TlsFiles, resolver: Arc<Reloading>) {
    let Some(every) = files.reload_every else {
        return;
    };
    actix_web::rt::spawn(async move {
        let mut served = fingerprint(&files);
        let mut last = served;
        let mut refused = None;
        loop {
            tokio::time::sleep(every).await;
            let now = fingerprint(&files);
            let settled = now == last;
            last = now;
            if now.is_none() || now == served || now == refused || !settled {
                continue;
            }
            match load(&files) {
                Ok(pair) => {
                    resolver.current.store(Arc::new(pair));
                    served = now;
                    tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
                }
                Err(e) => {
                    refused = now;
                    tracing::warn!(error = %e, "TLS certificate files changed but do not load; the current one keeps serving");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(cert: &std::path::Path, key: &std::path::Path) -> TlsFiles {
        TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reload_every: None,
        }
    }

    #[test]
    fn errors_name_the_setting_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = load(&files(&missing, &missing)).unwrap_err();
        assert!(matches!(err, TlsError::Cert { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with(&format!("server.tls_cert_file {}: ", missing.display())),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = load(&files(&empty, &missing)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("server.tls_cert_file {} holds no certificate", empty.display())
        );
    }
}
