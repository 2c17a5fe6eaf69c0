//! Who may connect, past "a trusted CA signed the certificate": `--peer-cert-allowed-cn` (the
//! certificate's common name), `--peer-cert-allowed-hostname` and
//! `--client-cert-allowed-hostname` (a name the certificate is valid for), checked as etcd
//! checks them on both sides of a handshake its port's TLS flags configure; and the
//! revocation lists of `--client-crl-file` and `--peer-crl-file`, which the listeners check
//! the certificates they are shown against (a certificate the list names is refused, one it
//! does not name passes, as with etcd).

use std::net::IpAddr;
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

/// etcd's check of a member's client certificate against the address it connected from
/// (unless `--experimental-peer-skip-client-san-verification`): a certificate with subject
/// alternative names must be valid for that address, or name a host whose DNS records lead to
/// it (the address's reverse name, wildcards allowed, or a name of the certificate that
/// resolves to the address). A certificate without such names passes, as in etcd.
pub async fn check_peer_address(
    end_entity: &CertificateDer<'_>,
    from: IpAddr,
) -> Result<(), String> {
    let (address_named, dns_names) = {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| format!("tls: unreadable certificate: {e:?}"))?;
        let address = ServerName::IpAddress(from.into());
        let names: Vec<String> = cert.valid_dns_names().map(str::to_string).collect();
        (
            cert.verify_is_valid_for_subject_name(&address).is_ok(),
            names,
        )
    };
    if address_named || (dns_names.is_empty() && !has_subject_alt_names(end_entity)) {
        return Ok(());
    }
    if dns_names.is_empty() {
        return Err(format!("tls: the certificate is not valid for {from}"));
    }
    if address_has_name(from, &dns_names).await {
        return Ok(());
    }
    Err(format!(
        "tls: \"{from}\" does not match any of DNSNames {dns_names:?}"
    ))
}

/// Whether `address`'s reverse name is one of `names` (or under one of its wildcards), or one
/// of `names` resolves to `address`.
async fn address_has_name(address: IpAddr, names: &[String]) -> bool {
    let reverse = tokio::task::spawn_blocking(move || reverse_name(address))
        .await
        .ok()
        .flatten();
    if let Some(reverse) = reverse {
        let reverse = reverse.trim_end_matches('.');
        let matches = |name: &String| match name.strip_prefix('*') {
            Some(suffix) => reverse.ends_with(suffix),
            None => name == reverse,
        };
        if names.iter().any(matches) {
            return true;
        }
    }
    for name in names.iter().filter(|n| !n.starts_with("*.")) {
        if let Ok(mut resolved) = tokio::net::lookup_host((name.as_str(), 0)).await {
            if resolved.any(|a| a.ip() == address) {
                return true;
            }
        }
    }
    false
}

/// The host name the system's resolver gives `address` (a PTR record or /etc/hosts), if any.
fn reverse_name(address: IpAddr) -> Option<String> {
    dns_lookup::lookup_addr(&address).ok()
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

/// The handshake-signature checks of a verifier that wraps another (`inner`): the wrapped
/// one's, as the identity check concerns only the certificate.
macro_rules! signatures_checked_by_inner {
    () => {
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
    };
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

    signatures_checked_by_inner!();
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

    signatures_checked_by_inner!();
}

/// The fields of a certificate's TBSCertificate from its subject on (subject, public key,
/// then the optional unique ids and `[3]` extensions), read from its DER:
/// Certificate { TBSCertificate { [0] version?, serial, signature, issuer, validity, subject,
/// ... }, ... }.
fn fields_from_subject(cert: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let (_, certificate, _) = der_element(cert)?;
    let (_, mut tbs, _) = der_element(certificate)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs)?.2;
    }
    for _serial_signature_issuer_validity in 0..4 {
        tbs = der_element(tbs)?.2;
    }
    let mut fields = Vec::new();
    while !tbs.is_empty() {
        let (tag, contents, rest) = der_element(tbs)?;
        fields.push((tag, contents));
        tbs = rest;
    }
    Some(fields)
}

/// The common name of a verified client certificate: with `--client-cert-auth`, the auth user
/// of a request that carries no token, as etcd takes it.
#[derive(Clone, Debug)]
pub struct PeerCommonName(pub String);

impl PeerCommonName {
    /// The name the first certificate of a TLS connection's verified chain gives, if any.
    pub fn of(
        certificates: Option<&[tokio_rustls::rustls::pki_types::CertificateDer<'_>]>,
    ) -> Option<Self> {
        let name = common_name(certificates?.first()?)?;
        Some(PeerCommonName(String::from_utf8(name).ok()?))
    }
}

/// The value of the subject's first common name (OID 2.5.4.3).
fn common_name(cert: &[u8]) -> Option<Vec<u8>> {
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    let mut subject = fields_from_subject(cert)?.first()?.1;
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

/// Whether the certificate has a subject alternative name extension (OID 2.5.29.17).
fn has_subject_alt_names(cert: &[u8]) -> bool {
    const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
    let Some(fields) = fields_from_subject(cert) else {
        return false;
    };
    let Some((_, explicit)) = fields.into_iter().find(|(tag, _)| *tag == 0xa3) else {
        return false;
    };
    let Some((_, mut extensions, _)) = der_element(explicit) else {
        return false;
    };
    while let Some((_, extension, rest)) = der_element(extensions) {
        if der_element(extension)
            .is_some_and(|(tag, oid, _)| tag == 0x06 && oid == SUBJECT_ALT_NAME)
        {
            return true;
        }
        extensions = rest;
    }
    false
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

    #[tokio::test]
    async fn a_peer_certificate_must_be_valid_for_the_address_it_comes_from() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let for_loopback = certificate("m", &["127.0.0.1"]);
        assert!(check_peer_address(&for_loopback, loopback).await.is_ok());
        let elsewhere = certificate("m", &["10.9.8.7"]);
        assert!(check_peer_address(&elsewhere, loopback).await.is_err());
        // /etc/hosts names the loopback `localhost`, forwards and backwards.
        let by_name = certificate("m", &["localhost"]);
        assert!(check_peer_address(&by_name, loopback).await.is_ok());
        let other_name = certificate("m", &["member.invalid"]);
        let refused = check_peer_address(&other_name, loopback).await.unwrap_err();
        assert!(
            refused.contains("does not match any of DNSNames"),
            "{refused}"
        );
        assert!(has_subject_alt_names(&other_name));
        let no_names = certificate("m", &[]);
        assert!(!has_subject_alt_names(&no_names));
        assert!(check_peer_address(&no_names, loopback).await.is_ok());
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
