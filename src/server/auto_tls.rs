//! `--auto-tls` and `--peer-auto-tls`: the member's own self-signed certificate, as etcd makes
//! it.
//!
//! ```text
//! <data-dir>/fixtures/client/cert.pem, key.pem   for the client port (--auto-tls)
//! <data-dir>/fixtures/peer/cert.pem, key.pem     between members (--peer-auto-tls)
//! ```
//! Made at the first start that needs them (an `https://` URL with the flag and no key pair
//! given) and kept: later starts use the files they find, so clients that pinned the
//! certificate go on working across restarts. The certificate names the listeners' addresses,
//! says `O=etcd`, serves and dials, and is valid for `--self-signed-cert-validity` years of
//! 365 days from its making, as etcd's is. Its key is ECDSA P-256 (etcd's is P-521, which
//! ring cannot sign with; clients that skip the check do not care).

use crate::server::log;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};

use super::tls::TlsFiles;

const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";

impl TlsFiles {
    /// The flags as the member uses them: with the auto flag and no key pair given, its own
    /// self-signed pair for `hosts`, kept in `dir`, and no client certificates asked for (a
    /// self-signed certificate vouches for no one); with a key pair given, the auto flag is
    /// ignored, as etcd ignores it.
    pub fn with_auto_tls(
        self,
        dir: &Path,
        hosts: &[IpAddr],
        validity_years: u32,
    ) -> Result<TlsFiles, String> {
        let p = self.prefix;
        if !self.auto_tls {
            return Ok(self);
        }
        if self.has_key_pair_given() {
            log::warning!(
                "detcd: ignoring --{p}auto-tls: --{p}cert-file and --{p}key-file are given"
            );
            return Ok(TlsFiles {
                auto_tls: false,
                ..self
            });
        }
        if self.client_cert_auth {
            log::warning!(
                "detcd: ignoring --{p}client-cert-auth: --{p}auto-tls certificates vouch for no one"
            );
        }
        let (cert_file, key_file) = self_signed(dir, hosts, validity_years)?;
        Ok(TlsFiles {
            prefix: p,
            cert_file: Some(cert_file),
            key_file: Some(key_file),
            trusted_ca_file: None,
            client_cert_auth: false,
            auto_tls: true,
            ..self
        })
    }
}

/// The certificate and key files in `dir`: the ones there, or new ones.
fn self_signed(
    dir: &Path,
    hosts: &[IpAddr],
    validity_years: u32,
) -> Result<(PathBuf, PathBuf), String> {
    let (cert_file, key_file) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    if cert_file.exists() && key_file.exists() {
        return Ok((cert_file, key_file));
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot make a key for a self-signed certificate: {e}"))?;
    let cert = certificate_params(hosts, validity_years)
        .self_signed(&key)
        .map_err(|e| format!("cannot make a self-signed certificate: {e}"))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(failed("cannot create", dir))?;
    // The key first: a crash between the two leaves no certificate, so the next start makes
    // both again instead of pairing a certificate with a key that is not its own.
    write_new(&key_file, key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&cert_file, cert.pem().as_bytes(), 0o644)?;
    log::info!(
        "detcd: made a self-signed certificate, valid for {validity_years} year(s): {}",
        cert_file.display()
    );
    Ok((cert_file, key_file))
}

fn certificate_params(hosts: &[IpAddr], validity_years: u32) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.subject_alt_names = hosts.iter().map(|ip| SanType::IpAddress(*ip)).collect();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "etcd");
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = time::OffsetDateTime::now_utc();
    params.not_after = params.not_before + time::Duration::days(365 * i64::from(validity_years));
    params
}

/// Writes `data` to a file that must not exist yet, with `mode`, durably.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(failed("cannot create", path))?;
    file.write_all(data).map_err(failed("cannot write", path))?;
    file.sync_all().map_err(failed("cannot sync", path))
}

fn failed<'a>(what: &'a str, path: &'a Path) -> impl FnOnce(std::io::Error) -> String + 'a {
    move |e| format!("{what} {}: {e}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto(prefix: &'static str) -> TlsFiles {
        TlsFiles {
            prefix,
            client_cert_auth: true,
            auto_tls: true,
            ..TlsFiles::default()
        }
    }

    #[test]
    fn a_self_signed_pair_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("detcd-auto-tls-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let hosts = ["127.0.0.1".parse().unwrap()];
        let made = auto("").with_auto_tls(&dir, &hosts, 1).unwrap();
        assert!(made.auto_tls && !made.client_cert_auth);
        let cert = fs::read(made.cert_file.as_ref().unwrap()).unwrap();
        let key_mode = fs::metadata(made.key_file.as_ref().unwrap()).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&key_mode.permissions()) & 0o777,
            0o600
        );
        made.acceptor().expect("the pair serves");
        made.peer_connector().expect("and dials without a CA");

        let again = auto("peer-").with_auto_tls(&dir, &hosts, 1).unwrap();
        assert_eq!(fs::read(again.cert_file.unwrap()).unwrap(), cert);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_given_key_pair_wins_over_the_auto_flag() {
        let given = TlsFiles {
            cert_file: Some("c.pem".into()),
            key_file: Some("k.pem".into()),
            ..auto("")
        };
        let used = given
            .clone()
            .with_auto_tls(Path::new("/nonexistent"), &[], 1)
            .unwrap();
        assert_eq!(
            used,
            TlsFiles {
                auto_tls: false,
                ..given
            }
        );
    }
}
