//! `--cipher-suites`: the TLS 1.2 cipher suites the member offers on both ports, by the names
//! etcd takes (Go's). As with etcd, the list bounds TLS 1.2 only: TLS 1.3 connections use
//! their own suites, all of them safe. Names of suites etcd knows but detcd's TLS library does
//! not implement (CBC, RC4, 3DES and RSA key exchange: all weaker than what it offers) are
//! accepted and left out, with a warning.

use std::sync::Arc;

use tokio_rustls::rustls::crypto::ring::{cipher_suite, default_provider};
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::SupportedCipherSuite;

/// The TLS 1.2 suites detcd offers, by Go's name (and its older alias without `_SHA256`).
const OFFERED: &[(&str, Option<&str>, SupportedCipherSuite)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        None,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        None,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        Some("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"),
        cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        None,
        cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        None,
        cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        Some("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305"),
        cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// Suites etcd takes that detcd does not offer: TLS 1.3's (never configurable, always on) and
/// TLS 1.2's weaker ones.
const TLS13_NAMES: &[&str] = &[
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];
const NOT_OFFERED: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// The TLS 1.2 suites a `--cipher-suites` list allows; `None` for an empty list (all of them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CipherSuites(Option<Vec<&'static str>>);

impl CipherSuites {
    /// Reads the flag's comma-separated names, refusing one etcd would not take with etcd's
    /// error; `warn` hears of the names taken but not offered.
    pub fn parse(list: &str, mut warn: impl FnMut(String)) -> Result<CipherSuites, String> {
        let names: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return Ok(CipherSuites(None));
        }
        let mut offered = Vec::new();
        for name in names {
            if let Some((go_name, _, _)) = OFFERED
                .iter()
                .find(|(n, alias, _)| *n == name || *alias == Some(name))
            {
                offered.push(*go_name);
            } else if TLS13_NAMES.contains(&name) {
                warn(format!(
                    "detcd: --cipher-suites: {name} is a TLS 1.3 suite; TLS 1.3 always offers \
                     its own suites, as with etcd"
                ));
            } else if NOT_OFFERED.contains(&name) {
                warn(format!(
                    "detcd: --cipher-suites: {name} is not offered (detcd's TLS implements only \
                     ECDHE with AES-GCM or ChaCha20-Poly1305 for TLS 1.2)"
                ));
            } else {
                return Err(format!("unexpected TLS cipher suite {name:?}"));
            }
        }
        Ok(CipherSuites(Some(offered)))
    }

    /// The crypto provider for both ports: every TLS 1.3 suite, and the TLS 1.2 ones allowed.
    pub fn provider(&self) -> Arc<CryptoProvider> {
        let mut provider = default_provider();
        if let Some(allowed) = &self.0 {
            provider.cipher_suites.retain(|suite| {
                suite.tls13().is_some()
                    || OFFERED
                        .iter()
                        .any(|(name, _, s)| s.suite() == suite.suite() && allowed.contains(name))
            });
        }
        Arc::new(provider)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls12_suites(suites: &CipherSuites) -> usize {
        let provider = suites.provider();
        provider
            .cipher_suites
            .iter()
            .filter(|s| s.tls13().is_none())
            .count()
    }

    #[test]
    fn names_are_etcd_s_and_bound_tls_1_2_only() {
        let mut warnings = Vec::new();
        let all = CipherSuites::parse("", |w| warnings.push(w)).unwrap();
        assert_eq!(tls12_suites(&all), 6);
        let two = CipherSuites::parse(
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
            |w| warnings.push(w),
        )
        .unwrap();
        assert_eq!(tls12_suites(&two), 2);
        assert_eq!(
            two.provider().cipher_suites.len(),
            5,
            "TLS 1.3's three stay"
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        let weak = CipherSuites::parse("TLS_AES_128_GCM_SHA256,TLS_RSA_WITH_RC4_128_SHA", |w| {
            warnings.push(w)
        })
        .unwrap();
        assert_eq!(tls12_suites(&weak), 0);
        assert_eq!(warnings.len(), 2);
        assert_eq!(
            CipherSuites::parse("bogus", |_| {}).unwrap_err(),
            "unexpected TLS cipher suite \"bogus\""
        );
    }
}
