//! TLS on the client port, from etcd's flags: `--cert-file` and `--key-file` (the member's
//! certificate chain and private key, PEM), `--client-cert-auth` with `--trusted-ca-file`
//! (every client must present a certificate that a CA of that file signed). A listen URL with
//! the `https://` scheme is served with TLS, one with `http://` without, as etcd does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::crypto::ring::default_provider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// The client port's TLS flags, as given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    pub client_cert_auth: bool,
}

impl ClientTls {
    /// Whether the flags name a certificate and key, which an `https://` URL needs.
    pub fn has_key_pair(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }

    /// The acceptor for `https://` listeners, its files read and checked now, so that a bad
    /// file stops the member at start instead of failing every handshake.
    pub fn acceptor(&self) -> Result<TlsAcceptor, String> {
        let (Some(cert_file), Some(key_file)) = (&self.cert_file, &self.key_file) else {
            return Err("TLS needs both --cert-file and --key-file".to_string());
        };
        let chain = certificates(cert_file)?;
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|e| format!("--key-file {}: {e}", key_file.display()))?;
        let provider = Arc::new(default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = if self.client_cert_auth {
            let Some(ca_file) = &self.trusted_ca_file else {
                return Err("--client-cert-auth needs --trusted-ca-file".to_string());
            };
            let mut roots = RootCertStore::empty();
            for ca in certificates(ca_file)? {
                roots
                    .add(ca)
                    .map_err(|e| format!("--trusted-ca-file {}: {e}", ca_file.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--trusted-ca-file {}: {e}", ca_file.display()))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| format!("--cert-file/--key-file: {e}"))?;
        // gRPC clients insist on HTTP/2 by ALPN; /health and /version also answer HTTP/1.1.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

fn certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", file.display()));
    }
    Ok(certs)
}
