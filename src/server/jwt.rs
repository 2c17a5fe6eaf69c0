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
//!
//! The methods are etcd 3.6's: HS, RS and PS (256, 384, 512), ES256, ES384, ES512 and EdDSA.
//! ES512 is signed and checked by `jwt_es512.rs`, the others by the `jsonwebtoken` library.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde::{Deserialize, Serialize};

use super::jwt_es512::Es512Keys;
use crate::error::EtcdError;

/// etcd's refusals of the keys given, word for word.
pub const MISSING_KEY: &str = "auth: missing key data";
pub const KEY_MISMATCH: &str = "auth: public and private keys don't match";

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
    method: String,
    keys: Keys,
    ttl: Duration,
}

/// A method's keys, by who signs and checks its tokens.
enum Keys {
    Library {
        algorithm: Algorithm,
        /// `None` in verify-only mode.
        signing: Option<EncodingKey>,
        verifying: DecodingKey,
        validation: Validation,
    },
    Es512(Es512Keys),
}

impl std::fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verify_only = match &self.keys {
            Keys::Library { signing, .. } => signing.is_none(),
            Keys::Es512(keys) => !keys.can_sign(),
        };
        f.debug_struct("JwtTokens")
            .field("method", &self.method)
            .field("verify_only", &verify_only)
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
        let keys = if options.method == "ES512" {
            let keys = Es512Keys::from_pems(
                options.private_key.as_deref(),
                options.public_key.as_deref(),
            )?;
            Keys::Es512(keys)
        } else {
            let algorithm: Algorithm = options
                .method
                .parse()
                .map_err(|_| "auth: invalid auth signature method".to_string())?;
            let (signing, verifying) = keys(algorithm, &options)?;
            let mut validation = Validation::new(algorithm);
            // As etcd's JWT library: `exp` is checked when present, to the second, no leeway.
            validation.leeway = 0;
            validation.required_spec_claims = HashSet::new();
            Keys::Library {
                algorithm,
                signing,
                verifying,
                validation,
            }
        };
        Ok(JwtTokens {
            method: options.method,
            keys,
            ttl: options.ttl.unwrap_or(DEFAULT_TTL),
        })
    }

    /// A token for `user`, checked at the store's `revision`.
    pub fn sign(&self, user: &str, revision: u64) -> Result<String, EtcdError> {
        let claims = Claims {
            exp: Some(unix_seconds(SystemTime::now() + self.ttl)),
            revision,
            username: user.to_string(),
        };
        match &self.keys {
            Keys::Library {
                algorithm, signing, ..
            } => {
                let key = signing.as_ref().ok_or(EtcdError::VerifyOnlyKey)?;
                jsonwebtoken::encode(&Header::new(*algorithm), &claims, key)
                    .map_err(|_| EtcdError::VerifyOnlyKey)
            }
            Keys::Es512(keys) => {
                let claims = serde_json::to_vec(&claims).expect("claims encode as JSON");
                keys.sign(&claims).ok_or(EtcdError::VerifyOnlyKey)
            }
        }
    }

    /// The user and revision a token names, if it is one of ours and has not expired.
    pub fn verify(&self, token: &str) -> Result<(String, u64), EtcdError> {
        let claims = match &self.keys {
            Keys::Library {
                verifying,
                validation,
                ..
            } => {
                jsonwebtoken::decode::<Claims>(token, verifying, validation)
                    .map_err(|_| EtcdError::InvalidAuthToken)?
                    .claims
            }
            Keys::Es512(keys) => {
                let claims = keys.verify(token).ok_or(EtcdError::InvalidAuthToken)?;
                let claims: Claims =
                    serde_json::from_slice(&claims).map_err(|_| EtcdError::InvalidAuthToken)?;
                // As the library checks `exp`: still valid in its last second.
                let now = unix_seconds(SystemTime::now());
                if claims.exp.is_some_and(|exp| exp < now) {
                    return Err(EtcdError::InvalidAuthToken);
                }
                claims
            }
        };
        Ok((claims.username, claims.revision))
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
/// derived from the private one) for `algorithm`; given both, they must be a pair.
fn keys(
    algorithm: Algorithm,
    options: &Options,
) -> Result<(Option<EncodingKey>, DecodingKey), String> {
    let private = options.private_key.as_deref();
    let public = options.public_key.as_deref();
    let pkcs8;
    let private = match (algorithm, private) {
        (Algorithm::ES256, Some(pem)) => {
            pkcs8 = ec_pkcs8_pem(pem, P256_OID)?;
            Some(&pkcs8[..])
        }
        (Algorithm::ES384, Some(pem)) => {
            pkcs8 = ec_pkcs8_pem(pem, P384_OID)?;
            Some(&pkcs8[..])
        }
        _ => private,
    };
    let family = match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            let secret = private.ok_or(MISSING_KEY)?;
            return Ok((
                Some(EncodingKey::from_secret(secret)),
                DecodingKey::from_secret(secret),
            ));
        }
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => KeyFamily {
            kind: "RSA",
            signing: EncodingKey::from_rsa_pem,
            verifying: DecodingKey::from_rsa_pem,
            public_of: rsa_public_of,
            verifying_of: DecodingKey::from_rsa_der,
        },
        Algorithm::ES256 => KeyFamily::ec(|der| {
            ec_public_of(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, der)
        }),
        Algorithm::ES384 => KeyFamily::ec(|der| {
            ec_public_of(&ring::signature::ECDSA_P384_SHA384_FIXED_SIGNING, der)
        }),
        Algorithm::EdDSA => KeyFamily {
            kind: "Ed25519",
            signing: EncodingKey::from_ed_pem,
            verifying: DecodingKey::from_ed_pem,
            public_of: ed_public_of,
            verifying_of: DecodingKey::from_ed_der,
        },
    };
    family.keys(private, public)
}

type PemKey<K> = fn(&[u8]) -> jsonwebtoken::errors::Result<K>;

/// How the keys of one family of asymmetric methods are read.
struct KeyFamily {
    /// Names the keys in errors.
    kind: &'static str,
    signing: PemKey<EncodingKey>,
    verifying: PemKey<DecodingKey>,
    /// The public key of a private one (its DER), in the form `verifying_of` takes and a public
    /// key's DER ends with.
    public_of: fn(&[u8]) -> Result<Vec<u8>, String>,
    verifying_of: fn(&[u8]) -> DecodingKey,
}

impl KeyFamily {
    fn ec(public_of: fn(&[u8]) -> Result<Vec<u8>, String>) -> KeyFamily {
        KeyFamily {
            kind: "EC",
            signing: EncodingKey::from_ec_pem,
            verifying: DecodingKey::from_ec_pem,
            public_of,
            verifying_of: DecodingKey::from_ec_der,
        }
    }

    fn keys(
        &self,
        private: Option<&[u8]>,
        public: Option<&[u8]>,
    ) -> Result<(Option<EncodingKey>, DecodingKey), String> {
        let kind = self.kind;
        let bad = |what: &str, e: &dyn std::fmt::Display| format!("auth: {kind} {what}: {e}");
        let Some(private) = private else {
            let public = public.ok_or(MISSING_KEY)?;
            return Ok((
                None,
                (self.verifying)(public).map_err(|e| bad("public key", &e))?,
            ));
        };
        let signing = (self.signing)(private).map_err(|e| bad("private key", &e))?;
        let der = pem::parse(private).map_err(|e| bad("private key", &e))?;
        let derived = (self.public_of)(der.contents()).map_err(|e| bad("private key", &e))?;
        if let Some(public) = public {
            (self.verifying)(public).map_err(|e| bad("public key", &e))?;
            // A SubjectPublicKeyInfo ends with the key itself; an RSA public key in PKCS#1 is it.
            let given = pem::parse(public).map_err(|e| bad("public key", &e))?;
            if !given.contents().ends_with(&derived) {
                return Err(KEY_MISMATCH.into());
            }
        }
        Ok((Some(signing), (self.verifying_of)(&derived)))
    }
}

/// The RSA public key (PKCS#1 DER) of a private key's DER (PKCS#8 or PKCS#1).
fn rsa_public_of(der: &[u8]) -> Result<Vec<u8>, String> {
    let pair = RsaKeyPair::from_pkcs8(der)
        .or_else(|_| RsaKeyPair::from_der(der))
        .map_err(|e| e.to_string())?;
    Ok(pair.public().as_ref().to_vec())
}

/// The public point of an EC private key's DER (PKCS#8).
fn ec_public_of(
    signing: &'static ring::signature::EcdsaSigningAlgorithm,
    der: &[u8],
) -> Result<Vec<u8>, String> {
    let random = ring::rand::SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(signing, der, &random).map_err(|e| e.to_string())?;
    Ok(pair.public_key().as_ref().to_vec())
}

/// The DER of the object identifiers of the EC public key algorithm and of the curves of ES256
/// (prime256v1) and ES384 (secp384r1).
const EC_PUBLIC_KEY_OID: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// An EC private key in SEC1 (`EC PRIVATE KEY`, as `openssl ecparam -genkey` writes it and as
/// etcd reads it) as PKCS#8, the one form the library reads; a PEM without one unchanged.
fn ec_pkcs8_pem(text: &[u8], curve_oid: &[u8]) -> Result<Vec<u8>, String> {
    let blocks = pem::parse_many(text).map_err(|e| format!("auth: EC private key: {e}"))?;
    let Some(sec1) = blocks.iter().find(|block| block.tag() == "EC PRIVATE KEY") else {
        return Ok(text.to_vec());
    };
    let algorithm = der(0x30, &[EC_PUBLIC_KEY_OID, curve_oid].concat());
    let info = [
        &[0x02, 0x01, 0x00][..],
        &algorithm,
        &der(0x04, sec1.contents()),
    ]
    .concat();
    Ok(pem::encode(&pem::Pem::new("PRIVATE KEY", der(0x30, &info))).into_bytes())
}

/// One DER element: `tag`, the length of `content` (short or long form), `content`.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// The public key of an Ed25519 private key's DER (PKCS#8).
fn ed_public_of(der: &[u8]) -> Result<Vec<u8>, String> {
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| e.to_string())?;
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
        let ec = rcgen::KeyPair::generate().unwrap();
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        for (pair, method) in [(ec, "ES256"), (ed, "EdDSA")] {
            let private = file(&format!("{method}.key"), pair.serialize_pem().as_bytes());
            let public = file(&format!("{method}.pub"), pair.public_key_pem().as_bytes());
            let tokens = |key: String| {
                JwtTokens::from_options(&format!("{key},sign-method={method}"), seconds).unwrap()
            };
            let signer = tokens(format!("priv-key={private}"));
            let verifier = tokens(format!("pub-key={public}"));
            let token = signer.sign("root", 3).unwrap();
            assert_eq!(signer.verify(&token), Ok(("root".to_string(), 3)));
            assert_eq!(verifier.verify(&token), Ok(("root".to_string(), 3)));
            assert_eq!(verifier.sign("root", 3), Err(EtcdError::VerifyOnlyKey));
        }
    }

    /// A fresh P-521 key pair as PEM: (private in SEC1, the same in PKCS#8, public).
    fn p521_pems() -> (String, String, String) {
        use p521::elliptic_curve::rand_core::OsRng;
        use p521::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
        let secret = p521::SecretKey::random(&mut OsRng);
        let sec1 = secret.to_sec1_pem(LineEnding::LF).unwrap().to_string();
        let pkcs8 = secret.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
        let public = secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        (sec1, pkcs8, public)
    }

    #[test]
    fn es512_tokens_sign_and_verify_with_either_private_key_form() {
        let (sec1, pkcs8, public) = p521_pems();
        let sec1 = file("es512-sec1.key", sec1.as_bytes());
        let pkcs8 = file("es512-pkcs8.key", pkcs8.as_bytes());
        let public = file("es512.pub", public.as_bytes());
        let tokens = |options: String| JwtTokens::from_options(&options, seconds).unwrap();
        let signer = tokens(format!(
            "priv-key={sec1},pub-key={public},sign-method=ES512"
        ));
        let other_form = tokens(format!("priv-key={pkcs8},sign-method=ES512"));
        let verifier = tokens(format!("pub-key={public},sign-method=ES512"));
        let token = signer.sign("alice", 9).unwrap();
        assert!(
            token.starts_with("eyJhbGciOiJFUzUxMiIsInR5cCI6IkpXVCJ9."),
            "{token}"
        );
        for tokens in [&signer, &other_form, &verifier] {
            assert_eq!(tokens.verify(&token), Ok(("alice".to_string(), 9)));
        }
        assert_eq!(verifier.sign("alice", 9), Err(EtcdError::VerifyOnlyKey));
        // Another key's token, a damaged one, and one of another method are refused.
        let (_, stranger, _) = p521_pems();
        let stranger = file("es512-stranger.key", stranger.as_bytes());
        let stranger = tokens(format!("priv-key={stranger},sign-method=ES512"));
        let foreign = stranger.sign("alice", 9).unwrap();
        assert_eq!(verifier.verify(&foreign), Err(EtcdError::InvalidAuthToken));
        let damaged = format!("{}A", &token[..token.len() - 1]);
        assert_eq!(verifier.verify(&damaged), Err(EtcdError::InvalidAuthToken));
        let secret = file("hs3.key", b"a shared secret");
        let hs = tokens(format!("priv-key={secret},sign-method=HS256"));
        let hs_token = hs.sign("alice", 9).unwrap();
        assert_eq!(verifier.verify(&hs_token), Err(EtcdError::InvalidAuthToken));
        let short = tokens(format!("priv-key={sec1},sign-method=ES512,ttl=0s"));
        let token = short.sign("alice", 9).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(short.verify(&token), Err(EtcdError::InvalidAuthToken));
    }

    #[test]
    fn a_public_key_that_is_not_the_private_keys_is_refused() {
        let (a, b) = (
            rcgen::KeyPair::generate().unwrap(),
            rcgen::KeyPair::generate().unwrap(),
        );
        let private = file("ec-a.key", a.serialize_pem().as_bytes());
        let own = file("ec-a.pub", a.public_key_pem().as_bytes());
        let other = file("ec-b.pub", b.public_key_pem().as_bytes());
        let options =
            |public: &str| format!("priv-key={private},pub-key={public},sign-method=ES256");
        assert!(JwtTokens::from_options(&options(&own), seconds).is_ok());
        let refused = JwtTokens::from_options(&options(&other), seconds).unwrap_err();
        assert_eq!(refused, KEY_MISMATCH);
        let (sec1, _, _) = p521_pems();
        let (_, _, stranger) = p521_pems();
        let sec1 = file("es512-a.key", sec1.as_bytes());
        let stranger = file("es512-b.pub", stranger.as_bytes());
        let es512 = format!("priv-key={sec1},pub-key={stranger},sign-method=ES512");
        assert_eq!(
            JwtTokens::from_options(&es512, seconds).unwrap_err(),
            KEY_MISMATCH
        );
    }

    #[test]
    fn options_that_cannot_make_tokens_are_refused_with_the_reason() {
        let secret = file("hs2.key", b"secret");
        let refused = |options: &str| JwtTokens::from_options(options, seconds).unwrap_err();
        assert!(refused("pub-key=/nonexistent/key,sign-method=RS256").contains("/nonexistent"));
        assert!(refused(&format!("priv-key={secret}")).contains("invalid auth signature method"));
        assert!(refused(&format!("priv-key={secret},sign-method=XX1")).contains("method"));
        assert_eq!(refused("sign-method=RS256"), MISSING_KEY);
        assert_eq!(refused("sign-method=ES512"), MISSING_KEY);
        assert!(refused(&format!("priv-key={secret},sign-method=RS256")).contains("RSA"));
        assert!(refused(&format!("priv-key={secret},sign-method=HS256,ttl=x")).contains("ttl"));
    }
}
