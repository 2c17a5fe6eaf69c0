//! TLS from etcd's flags, on the client port and between members.
//!
//! Client port: `--cert-file` and `--key-file` (the member's certificate chain and private
//! key, PEM), `--client-cert-auth` with `--trusted-ca-file` (every client must present a
//! certificate that a CA of that file signed). A listen URL with the `https://` scheme is served
//! with TLS, one with `http://` without, as etcd does.
//!
//! Peers: the same four flags with `--peer-` in front. With `https://` peer URLs a member
//! accepts its peers' connections with TLS (and, with `--peer-client-cert-auth`, only from
//! members whose certificate a CA of `--peer-trusted-ca-file` signed), and dials them with TLS,
//! checking that their certificate was signed by such a CA for the host it dialled and showing
//! its own certificate, as etcd's members do.
//!
//! `--auto-tls` and `--peer-auto-tls` stand for a key pair not given: the member makes its own
//! self-signed one (`auto_tls.rs`). As with etcd, such a certificate authenticates no one: with
//! `--peer-auto-tls` members do not check each other's certificates (the sessions are
//! encrypted, not authenticated), and clients must skip the check too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpStream;

use super::cipher_suites::CipherSuites;
use super::tls_identity::{self, AllowedIdentity, ClientIdentity, ServerIdentity};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// One port's TLS flags, as given; `prefix` is how their names start (`""` or `"peer-"`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    pub prefix: &'static str,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    pub client_cert_auth: bool,
    /// `--auto-tls` / `--peer-auto-tls`: without a key pair given, the member's own
    /// self-signed one, and (between members) no check of the other side's certificate.
    pub auto_tls: bool,
    /// `--cipher-suites`, for both ports.
    pub cipher_suites: CipherSuites,
    /// `--client-crl-file` / `--peer-crl-file`: certificates the listener refuses.
    pub crl_file: Option<PathBuf>,
    /// `--peer-cert-allowed-cn`, `--{client,peer}-cert-allowed-hostname`: the identity the
    /// other side's certificate must show, on both sides of the handshake.
    pub allowed_identity: AllowedIdentity,
    /// `--experimental-peer-skip-client-san-verification`: peers' certificates need not name
    /// the address they connect from.
    pub skip_client_san_verification: bool,
}

impl TlsFiles {
    /// Whether the flags name a certificate and key, or let the member make its own, as an
    /// `https://` URL needs.
    pub fn has_key_pair(&self) -> bool {
        self.auto_tls || self.has_key_pair_given()
    }

    pub(super) fn has_key_pair_given(&self) -> bool {
        self.cert_file.is_some() && self.key_file.is_some()
    }

    /// The acceptor for `https://` client listeners, its files read and checked now, so that
    /// a bad file stops the member at start instead of failing every handshake.
    pub fn acceptor(&self) -> Result<TlsAcceptor, String> {
        let mut config = self.server_config()?;
        // gRPC clients insist on HTTP/2 by ALPN; /health and /version also answer HTTP/1.1.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// The acceptor for the peer listener (no ALPN: the peer protocol is detcd's own).
    pub fn peer_acceptor(&self) -> Result<PeerAcceptor, String> {
        Ok(PeerAcceptor {
            tls: TlsAcceptor::from(Arc::new(self.server_config()?)),
            check_address: !self.skip_client_san_verification,
        })
    }

    /// The dialler's side of peer TLS: trusts the CAs of the trusted-CA file, and shows the
    /// member's own certificate to peers that ask for one.
    /// With `--peer-auto-tls`, any certificate is accepted.
    pub fn peer_connector(&self) -> Result<PeerConnector, String> {
        let p = self.prefix;
        let provider = self.cipher_suites.provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = match &self.trusted_ca_file {
            _ if self.auto_tls => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))),
            Some(ca_file) => {
                let roots = Arc::new(self.roots(ca_file)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| format!("--{p}trusted-ca-file {}: {e}", ca_file.display()))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ServerIdentity {
                        inner: webpki,
                        allowed: self.allowed_identity.clone(),
                    }))
            }
            None => {
                return Err(format!(
                    "TLS between members needs --{p}trusted-ca-file to verify the other \
                     members (or --{p}auto-tls, which verifies none)"
                ))
            }
        };
        let (chain, key) = self.key_pair()?;
        let config = builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("--{p}cert-file/--{p}key-file: {e}"))?;
        Ok(PeerConnector(TlsConnector::from(Arc::new(config))))
    }

    fn server_config(&self) -> Result<ServerConfig, String> {
        let p = self.prefix;
        let (chain, key) = self.key_pair()?;
        let provider = self.cipher_suites.provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = if self.client_cert_auth {
            let Some(ca_file) = &self.trusted_ca_file else {
                return Err(format!("--{p}client-cert-auth needs --{p}trusted-ca-file"));
            };
            let mut verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(self.roots(ca_file)?),
                provider,
            );
            if let Some(crl_file) = &self.crl_file {
                let side = if p.is_empty() { "client-" } else { p };
                let lists = tls_identity::revocation_lists(crl_file)
                    .map_err(|e| format!("--{side}crl-file {e}"))?;
                verifier = verifier.with_crls(lists).allow_unknown_revocation_status();
            }
            let verifier = verifier
                .build()
                .map_err(|e| format!("--{p}trusted-ca-file {}: {e}", ca_file.display()))?;
            builder.with_client_cert_verifier(Arc::new(ClientIdentity {
                inner: verifier,
                allowed: self.allowed_identity.clone(),
            }))
        } else {
            builder.with_no_client_auth()
        };
        builder
            .with_single_cert(chain, key)
            .map_err(|e| format!("--{p}cert-file/--{p}key-file: {e}"))
    }

    fn key_pair(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
        let p = self.prefix;
        let (Some(cert_file), Some(key_file)) = (&self.cert_file, &self.key_file) else {
            return Err(format!("TLS needs both --{p}cert-file and --{p}key-file"));
        };
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|e| format!("--{p}key-file {}: {e}", key_file.display()))?;
        Ok((certificates(cert_file)?, key))
    }

    fn roots(&self, ca_file: &Path) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        for ca in certificates(ca_file)? {
            roots.add(ca).map_err(|e| {
                format!(
                    "--{}trusted-ca-file {}: {e}",
                    self.prefix,
                    ca_file.display()
                )
            })?;
        }
        Ok(roots)
    }
}

/// Accepts peers' TLS connections: the handshake, then (unless skipped) etcd's check that the
/// certificate a member showed is valid for the address it connected from.
#[derive(Clone)]
pub struct PeerAcceptor {
    tls: TlsAcceptor,
    check_address: bool,
}

impl PeerAcceptor {
    pub async fn accept(
        &self,
        stream: TcpStream,
        from: std::net::IpAddr,
    ) -> Result<tokio_rustls::server::TlsStream<TcpStream>, String> {
        let stream = self.tls.accept(stream).await.map_err(|e| e.to_string())?;
        let shown = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(<[_]>::first);
        if let (true, Some(end_entity)) = (self.check_address, shown) {
            tls_identity::check_peer_address(end_entity, from).await?;
        }
        Ok(stream)
    }
}

/// Dials peers with TLS.
#[derive(Clone)]
pub struct PeerConnector(TlsConnector);

impl PeerConnector {
    /// The TLS session over `stream`, connected to `addr` (`host:port`), whose certificate must
    /// name `host`.
    pub async fn connect(
        &self,
        addr: &str,
        stream: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host}: {e}"))
        })?;
        self.0.connect(name, stream).await
    }
}

/// The dialler's check under `--peer-auto-tls`: any certificate, as etcd's members accept
/// each other's self-signed ones. The handshake's signatures are still checked against the
/// certificate shown, so the session is with whoever holds its key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
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
