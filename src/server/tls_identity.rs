//! Who may connect, past "a trusted CA signed the certificate": `--peer-cert-allowed-cn` (the
//! certificate's common name), `--peer-cert-allowed-hostname` and
//! `--client-cert-allowed-hostname` (a name the certificate is valid for), checked as etcd
//! checks them on both sides of a handshake its port's TLS flags configure; and the
//! revocation lists of `--client-crl-file` and `--peer-crl-file`, which the listeners check
//! the certificates they are shown against (a certificate the list names is refused, one it
//! does not name passes, as with etcd).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, ServerName, UnixTime,
};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme,
};

/// The identity a port's certificates must show, besides a trusted signature.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AllowedIdentity {
    #[default]
    Any,
    /// The subject's common name, exactly.
    CommonName(String),
    /// A DNS name or IP address the certificate is valid for (its subject alternative names).
    Hostname(String),
}

impl AllowedIdentity {
    /// From a port's `...-allowed-cn` and `...-allowed-hostname` values; etcd takes one or the
    /// other.
    pub fn from_flags(cn: &str, hostname: &str) -> Result<AllowedIdentity, String> {
        match (cn.trim(), hostname.trim()) {
            ("", "") => Ok(AllowedIdentity::Any),
            (cn, "") => Ok(AllowedIdentity::CommonName(cn.to_string())),
            ("", host) => {
                ServerName::try_from(host.to_string())
                    .map_err(|e| format!("invalid allowed hostname {host:?}: {e}"))?;
                Ok(AllowedIdentity::Hostname(host.to_string()))
            }
            (cn, host) => Err(format!(
                "AllowedCN and AllowedHostname are mutually exclusive (cn={cn:?}, hostname={host:?})"
            )),
        }
    }

    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), Error> {
        let refused = |e| Err(Error::InvalidCertificate(e));
        match self {
            AllowedIdentity::Any => Ok(()),
            AllowedIdentity::CommonName(allowed) => {
                if common_name(end_entity).as_deref() == Some(allowed.as_bytes()) {
                    Ok(())
                } else {
                    refused(CertificateError::ApplicationVerificationFailure)
                }
            }
            AllowedIdentity::Hostname(host) => {
                let name = ServerName::try_from(host.as_str())
                    .map_err(|_| Error::InvalidCertificate(CertificateError::NotValidForName))?;
                let cert = webpki::EndEntityCert::try_from(end_entity)
                    .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
                cert.verify_is_valid_for_subject_name(&name)
                    .or_else(|_| refused(CertificateError::NotValidForName))
            }
        }
    }
}

/// The revocation lists in `file`, PEM (`X509 CRL` blocks) or one DER list.
pub fn revocation_lists(file: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let pem = CertificateRevocationListDer::pem_file_iter(file)
        .and_then(|lists| lists.collect::<Result<Vec<_>, _>>())
        .unwrap_or_default();
    if !pem.is_empty() {
        return Ok(pem);
    }
    let der = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(vec![CertificateRevocationListDer::from(der)])
}

/// A client-certificate verifier that also requires the allowed identity.
#[derive(Debug)]
pub struct ClientIdentity {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub allowed: AllowedIdentity,
}

impl ClientCertVerifier for ClientIdentity {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.allowed.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A dialler's server-certificate verifier that also requires the allowed identity.
#[derive(Debug)]
pub struct ServerIdentity {
    pub inner: Arc<dyn ServerCertVerifier>,
    pub allowed: AllowedIdentity,
}

impl ServerCertVerifier for ServerIdentity {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.allowed.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The value of the subject's first common name (OID 2.5.4.3), read from the certificate's
/// DER: Certificate { TBSCertificate { [0] version?, serial, signature, issuer, validity,
/// subject, ... }, ... }.
fn common_name(cert: &[u8]) -> Option<Vec<u8>> {
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    let (_, certificate, _) = der_element(cert)?;
    let (_, mut tbs, _) = der_element(certificate)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs)?.2;
    }
    for _serial_signature_issuer_validity in 0..4 {
        tbs = der_element(tbs)?.2;
    }
    let (_, mut subject, _) = der_element(tbs)?;
    while !subject.is_empty() {
        let (_, set, rest) = der_element(subject)?;
        subject = rest;
        let (_, attribute, _) = der_element(set)?;
        let (oid_tag, oid, value) = der_element(attribute)?;
        if oid_tag == 0x06 && oid == COMMON_NAME {
            return Some(der_element(value)?.1.to_vec());
        }
    }
    None
}

/// One DER element at the start of `bytes`: its tag, its contents and what follows it.
fn der_element(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > std::mem::size_of::<usize>() || rest.len() < count {
            return None;
        }
        let (len_bytes, after) = rest.split_at(count);
        rest = after;
        len_bytes
            .iter()
            .fold(0usize, |len, b| (len << 8) | usize::from(*b))
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn certificate(cn: &str, names: &[&str]) -> CertificateDer<'static> {
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "o");
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn the_common_name_is_read_from_the_subject() {
        let cert = certificate("member-1", &["127.0.0.1"]);
        assert_eq!(common_name(&cert).unwrap(), b"member-1");
        let allowed = AllowedIdentity::from_flags("member-1", "").unwrap();
        assert!(allowed.check(&cert).is_ok());
        let other = AllowedIdentity::from_flags("member-2", "").unwrap();
        assert!(other.check(&cert).is_err());
        assert!(common_name(&cert[..cert.len() / 2]).is_none());
    }

    #[test]
    fn a_hostname_must_be_among_the_certificates_names() {
        let cert = certificate("x", &["peer.example.com", "10.0.0.1"]);
        for name in ["peer.example.com", "10.0.0.1"] {
            let allowed = AllowedIdentity::from_flags("", name).unwrap();
            assert!(allowed.check(&cert).is_ok(), "{name}");
        }
        let other = AllowedIdentity::from_flags("", "other.example.com").unwrap();
        assert!(other.check(&cert).is_err());
        // As Go since 1.15: the common name is not a hostname.
        let by_cn = certificate("cn.example.com", &["san.example.com"]);
        let cn_host = AllowedIdentity::from_flags("", "cn.example.com").unwrap();
        assert!(cn_host.check(&by_cn).is_err());
    }

    #[test]
    fn cn_and_hostname_exclude_each_other_as_in_etcd() {
        assert_eq!(
            AllowedIdentity::from_flags("", "").unwrap(),
            AllowedIdentity::Any
        );
        let both = AllowedIdentity::from_flags("a", "b").unwrap_err();
        assert!(both.contains("mutually exclusive"), "{both}");
    }
}
