//! JWT auth tokens (`--auth-token jwt,pub-key=FILE,priv-key=FILE,sign-method=ALG,ttl=DUR`), as
//! etcd issues them: the claims `username`, `revision` (the auth store's revision the login was
//! checked at) and `exp`, signed with the configured method. Every member with the key verifies
//! every member's tokens, across restarts, with no state kept; a token older than the store
//! (`revision` below the store's) is refused with "revision of auth store is old", after which
//! etcd's clients log in again, as etcd refuses it. A member given only the public key verifies
//! tokens but issues none (etcd's verify-only mode).
//!
//! Tokens are checked on the client port, not in the node: `exp` is wall-clock time, which the
//! node never reads. The node receives the identity a token carries.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde::{Deserialize, Serialize};

use crate::error::EtcdError;

/// etcd's default lifetime of a token.
const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);

/// The claims, in the order etcd's (sorted) JSON has them.
#[derive(Serialize, Deserialize)]
struct Claims {
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
    revision: u64,
    username: String,
}

pub struct JwtTokens {
    algorithm: Algorithm,
    /// `None` in verify-only mode.
    signing: Option<EncodingKey>,
    verifying: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtTokens")
            .field("algorithm", &self.algorithm)
            .field("verify_only", &self.signing.is_none())
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// The options after `jwt,`, as etcd names them.
#[derive(Default)]
struct Options {
    public_key: Option<Vec<u8>>,
    private_key: Option<Vec<u8>>,
    method: String,
    ttl: Option<Duration>,
}

impl JwtTokens {
    /// From the options of `--auth-token jwt,...` (the part after `jwt,`); an error says why
    /// they cannot make tokens, as etcd refuses to start on them.
    pub fn from_options(
        options: &str,
        duration: impl Fn(&str) -> Option<Duration>,
    ) -> Result<JwtTokens, String> {
        let options = parse_options(options, duration)?;
        let algorithm: Algorithm = options
            .method
            .parse()
            .map_err(|_| "auth: invalid auth signature method".to_string())?;
        let (signing, verifying) = keys(algorithm, &options)?;
        let mut validation = Validation::new(algorithm);
        // As etcd's JWT library: `exp` is checked when present, to the second, no leeway.
        validation.leeway = 0;
        validation.required_spec_claims = HashSet::new();
        Ok(JwtTokens {
            algorithm,
            signing,
            verifying,
            validation,
            ttl: options.ttl.unwrap_or(DEFAULT_TTL),
        })
    }

    /// A token for `user`, checked at the store's `revision`.
    pub fn sign(&self, user: &str, revision: u64) -> Result<String, EtcdError> {
        let key = self.signing.as_ref().ok_or(EtcdError::VerifyOnlyKey)?;
        let claims = Claims {
            exp: Some(unix_seconds(SystemTime::now() + self.ttl)),
            revision,
            username: user.to_string(),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key)
            .map_err(|_| EtcdError::VerifyOnlyKey)
    }

    /// The user and revision a token names, if it is one of ours and has not expired.
    pub fn verify(&self, token: &str) -> Result<(String, u64), EtcdError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.verifying, &self.validation)
            .map_err(|_| EtcdError::InvalidAuthToken)?;
        Ok((data.claims.username, data.claims.revision))
    }
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn parse_options(
    text: &str,
    duration: impl Fn(&str) -> Option<Duration>,
) -> Result<Options, String> {
    let mut options = Options::default();
    let read = |file: &str| std::fs::read(file).map_err(|e| format!("open {file}: {e}"));
    for option in text.split(',').filter(|o| !o.is_empty()) {
        let (name, value) = option.split_once('=').unwrap_or((option, ""));
        match name {
            "pub-key" if !value.is_empty() => options.public_key = Some(read(value)?),
            "priv-key" if !value.is_empty() => options.private_key = Some(read(value)?),
            "sign-method" => options.method = value.to_string(),
            "ttl" if !value.is_empty() => {
                let ttl = duration(value).ok_or(format!("invalid JWT ttl {value:?}"))?;
                options.ttl = Some(ttl);
            }
            "pub-key" | "priv-key" | "ttl" => {}
            unknown => super::log::warning!("detcd: unknown JWT option {unknown:?} ignored"),
        }
    }
    Ok(options)
}

/// The signing key (if a private one was given) and the verifying key (the public one, or
/// derived from the private one) for `algorithm`.
fn keys(
    algorithm: Algorithm,
    options: &Options,
) -> Result<(Option<EncodingKey>, DecodingKey), String> {
    let private = options.private_key.as_deref();
    let public = options.public_key.as_deref();
    match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            let secret = private.ok_or("auth: missing key")?;
            Ok((
                Some(EncodingKey::from_secret(secret)),
                DecodingKey::from_secret(secret),
            ))
        }
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => key_pair(
            ("RSA", private, public),
            EncodingKey::from_rsa_pem,
            DecodingKey::from_rsa_pem,
            |pem| Ok(DecodingKey::from_rsa_der(&rsa_public_of(pem)?)),
        ),
        Algorithm::ES256 | Algorithm::ES384 => key_pair(
            ("EC", private, public),
            EncodingKey::from_ec_pem,
            DecodingKey::from_ec_pem,
            |pem| Ok(DecodingKey::from_ec_der(&ec_public_of(algorithm, pem)?)),
        ),
        other => Err(format!("unsupported signing method: {other:?}")),
    }
}

type PemKey<K> = fn(&[u8]) -> jsonwebtoken::errors::Result<K>;

/// An asymmetric method's keys from their PEM files (`kind` names them in errors): the
/// verifying key is the public one if given, else derived from the private one.
fn key_pair(
    (kind, private, public): (&str, Option<&[u8]>, Option<&[u8]>),
    signing: PemKey<EncodingKey>,
    verifying: PemKey<DecodingKey>,
    derive: impl Fn(&[u8]) -> Result<DecodingKey, String>,
) -> Result<(Option<EncodingKey>, DecodingKey), String> {
    let bad = |what: &str, e: jsonwebtoken::errors::Error| format!("auth: {kind} {what}: {e}");
    let signing = private
        .map(|pem| signing(pem).map_err(|e| bad("private key", e)))
        .transpose()?;
    let verifying = match (public, private) {
        (Some(pem), _) => verifying(pem).map_err(|e| bad("public key", e))?,
        (None, Some(pem)) => derive(pem)?,
        (None, None) => return Err("auth: missing key".into()),
    };
    Ok((signing, verifying))
}

/// The DER of the RSA public key (PKCS#1) that belongs to a private key in PEM (PKCS#1 or #8).
fn rsa_public_of(pem: &[u8]) -> Result<Vec<u8>, String> {
    let der = pem::parse(pem).map_err(|e| format!("auth: RSA private key: {e}"))?;
    let pair = RsaKeyPair::from_pkcs8(der.contents())
        .or_else(|_| RsaKeyPair::from_der(der.contents()))
        .map_err(|e| format!("auth: RSA private key: {e}"))?;
    Ok(pair.public().as_ref().to_vec())
}

/// The public point of an EC private key in PEM (PKCS#8).
fn ec_public_of(algorithm: Algorithm, pem: &[u8]) -> Result<Vec<u8>, String> {
    let der = pem::parse(pem).map_err(|e| format!("auth: EC private key: {e}"))?;
    let signing = match algorithm {
        Algorithm::ES256 => &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        _ => &ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
    };
    let random = ring::rand::SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(signing, der.contents(), &random)
        .map_err(|e| format!("auth: EC private key: {e}"))?;
    Ok(pair.public_key().as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `contents` to a file of its own; returns its path.
    fn file(name: &str, contents: &[u8]) -> String {
        let dir = std::env::temp_dir().join(format!("detcd-jwt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    }

    fn seconds(text: &str) -> Option<Duration> {
        text.strip_suffix('s')?
            .parse()
            .ok()
            .map(Duration::from_secs)
    }

    #[test]
    fn tokens_name_the_user_and_revision_and_expire() {
        let secret = file("hs.key", b"a shared secret");
        let tokens =
            JwtTokens::from_options(&format!("priv-key={secret},sign-method=HS256"), seconds)
                .unwrap();
        let token = tokens.sign("alice", 7).unwrap();
        assert_eq!(tokens.verify(&token), Ok(("alice".to_string(), 7)));
        assert_eq!(
            tokens.verify(&format!("{token}x")),
            Err(EtcdError::InvalidAuthToken)
        );
        let short = JwtTokens::from_options(
            &format!("priv-key={secret},sign-method=HS256,ttl=0s"),
            seconds,
        )
        .unwrap();
        let token = short.sign("alice", 7).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(short.verify(&token), Err(EtcdError::InvalidAuthToken));
    }

    #[test]
    fn a_private_key_alone_signs_and_verifies_and_a_public_key_alone_only_verifies() {
        let pair = rcgen::KeyPair::generate().unwrap();
        let private = file("ec.key", pair.serialize_pem().as_bytes());
        let public = file("ec.pub", pair.public_key_pem().as_bytes());
        let signer =
            JwtTokens::from_options(&format!("priv-key={private},sign-method=ES256"), seconds)
                .unwrap();
        let verifier =
            JwtTokens::from_options(&format!("pub-key={public},sign-method=ES256"), seconds)
                .unwrap();
        let token = signer.sign("root", 3).unwrap();
        assert_eq!(signer.verify(&token), Ok(("root".to_string(), 3)));
        assert_eq!(verifier.verify(&token), Ok(("root".to_string(), 3)));
        assert_eq!(verifier.sign("root", 3), Err(EtcdError::VerifyOnlyKey));
    }

    #[test]
    fn options_that_cannot_make_tokens_are_refused_with_the_reason() {
        let secret = file("hs2.key", b"secret");
        let refused = |options: &str| JwtTokens::from_options(options, seconds).unwrap_err();
        assert!(refused("pub-key=/nonexistent/key,sign-method=RS256").contains("/nonexistent"));
        assert!(refused(&format!("priv-key={secret}")).contains("invalid auth signature method"));
        assert!(refused(&format!("priv-key={secret},sign-method=XX1")).contains("method"));
        assert!(refused("sign-method=RS256").contains("missing key"));
        assert!(refused(&format!("priv-key={secret},sign-method=RS256")).contains("RSA"));
        assert!(refused(&format!("priv-key={secret},sign-method=HS256,ttl=x")).contains("ttl"));
    }
}
