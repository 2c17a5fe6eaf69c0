//! ES512 tokens (ECDSA on P-521 with SHA-512), which etcd signs with as it does ES256 and ES384
//! and which the JWT library behind the other methods lacks (as does ring, its cryptography).
//! A token is the JWS compact form: base64url of the header, of the claims and of the signature
//! (the 66-byte big-endian `r` and `s`, RFC 7518 section 3.4), joined by dots. Only the
//! signature is checked here; the claims are read by the caller, as for the other methods.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p521::ecdsa::signature::{Signer, Verifier};
use p521::ecdsa::{Signature, SigningKey, VerifyingKey};
use p521::pkcs8::{DecodePrivateKey, DecodePublicKey};
use p521::{PublicKey, SecretKey};

/// The header etcd's library writes for this method.
const HEADER: &str = r#"{"alg":"ES512","typ":"JWT"}"#;

pub struct Es512Keys {
    /// `None` in verify-only mode.
    signing: Option<SigningKey>,
    verifying: VerifyingKey,
}

impl Es512Keys {
    /// From the PEM files of `--auth-token jwt,...`: a private key (SEC1, as `openssl ecparam
    /// -genkey -noout` writes it, or PKCS#8), a public key (SubjectPublicKeyInfo), or both,
    /// which must be a pair.
    pub fn from_pems(private: Option<&[u8]>, public: Option<&[u8]>) -> Result<Es512Keys, String> {
        let signing = private.map(signing_key).transpose()?;
        let verifying = match (public.map(verifying_key).transpose()?, &signing) {
            (Some(public), Some(signing)) if !same_point(&public, &VerifyingKey::from(signing)) => {
                return Err(super::jwt::KEY_MISMATCH.into())
            }
            (Some(public), _) => public,
            (None, Some(signing)) => VerifyingKey::from(signing),
            (None, None) => return Err(super::jwt::MISSING_KEY.into()),
        };
        Ok(Es512Keys { signing, verifying })
    }

    pub fn can_sign(&self) -> bool {
        self.signing.is_some()
    }

    /// A token carrying `claims` (their JSON); `None` in verify-only mode.
    pub fn sign(&self, claims: &[u8]) -> Option<String> {
        let key = self.signing.as_ref()?;
        let mut token = URL_SAFE_NO_PAD.encode(HEADER);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut token);
        let signature: Signature = key.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut token);
        Some(token)
    }

    /// The claims (their JSON) of a token this key signed with ES512, or `None`.
    pub fn verify(&self, token: &str) -> Option<Vec<u8>> {
        let (signed, signature) = token.rsplit_once('.')?;
        let (header, claims) = signed.split_once('.')?;
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header.get("alg")? != "ES512" {
            return None;
        }
        let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).ok()?).ok()?;
        self.verifying.verify(signed.as_bytes(), &signature).ok()?;
        URL_SAFE_NO_PAD.decode(claims).ok()
    }
}

fn same_point(a: &VerifyingKey, b: &VerifyingKey) -> bool {
    a.to_encoded_point(false) == b.to_encoded_point(false)
}

fn signing_key(pem: &[u8]) -> Result<SigningKey, String> {
    let bad = |e: String| format!("auth: EC private key: {e}");
    let blocks = pem::parse_many(pem).map_err(|e| bad(e.to_string()))?;
    let secret = blocks
        .iter()
        .find_map(|block| match block.tag() {
            "EC PRIVATE KEY" => {
                Some(SecretKey::from_sec1_der(block.contents()).map_err(|e| e.to_string()))
            }
            "PRIVATE KEY" => {
                Some(SecretKey::from_pkcs8_der(block.contents()).map_err(|e| e.to_string()))
            }
            _ => None,
        })
        .ok_or_else(|| bad("no private key in the file".into()))?
        .map_err(bad)?;
    SigningKey::from_bytes(&secret.to_bytes()).map_err(|e| bad(e.to_string()))
}

fn verifying_key(pem: &[u8]) -> Result<VerifyingKey, String> {
    let bad = |e: String| format!("auth: EC public key: {e}");
    let block = pem::parse(pem).map_err(|e| bad(e.to_string()))?;
    let public =
        PublicKey::from_public_key_der(block.contents()).map_err(|e| bad(e.to_string()))?;
    VerifyingKey::from_affine(*public.as_affine()).map_err(|e| bad(e.to_string()))
}
