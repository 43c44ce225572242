//! The workload's two ephemeral keys and the runtime data that publishes
//! them.
//!
//! - The key-release key: RSA-2048 (`confsum_skr::WrappingPrivateKey`),
//!   `key_ops: ["encrypt"]`, the JWK the confidential sidecar publishes,
//!   byte for byte. The broker wraps the disk key to it.
//! - The response-signing key: ECDSA P-256 (ES256) with *ring*,
//!   `key_ops: ["verify"]`, so a broker never wraps to it (skr's
//!   `WrappingPublicKey::from_claims` takes only an `encrypt` key) and a
//!   consumer knows which key signs answers. P-256 because *ring* makes
//!   such keys in microseconds, signs in constant time, and browsers'
//!   WebCrypto verifies ES256 natively.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::Error;
use crate::signed::SignedResponse;

/// The JWS algorithm of signed responses.
pub const RESPONSE_ALG: &str = "ES256";

/// The workload's response-signing key (ECDSA P-256, in memory only).
/// `Debug` shows only the key id.
pub struct ResponseSigner {
    key: EcdsaKeyPair,
    kid: String,
    x: String,
    y: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for ResponseSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// RFC 7638 thumbprint of a P-256 JWK.
pub(crate) fn ec_thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

impl ResponseSigner {
    /// A fresh key.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] if the system's randomness fails.
    pub fn generate() -> Result<Self, Error> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| Error::Crypto("P-256 key generation failed"))?;
        // The PKCS#8 document is dropped here; the key pair keeps the key.
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| Error::Crypto("P-256 key generation failed"))?;
        let point = key.public_key().as_ref();
        // Uncompressed SEC1: 0x04 || x || y.
        let (Some(x), Some(y)) = (point.get(1..33), point.get(33..65)) else {
            return Err(Error::Crypto("P-256 public key has an unexpected encoding"));
        };
        let x = URL_SAFE_NO_PAD.encode(x);
        let y = URL_SAFE_NO_PAD.encode(y);
        Ok(ResponseSigner {
            kid: ec_thumbprint(&x, &y),
            key,
            x,
            y,
            rng,
        })
    }

    /// The key id: the RFC 7638 thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as the JWK published in the runtime data:
    /// `{"alg":"ES256","crv":"P-256","key_ops":["verify"],"kid","kty":"EC","use":"sig","x","y"}`.
    pub fn jwk(&self) -> Value {
        json!({
            "alg": RESPONSE_ALG,
            "crv": "P-256",
            "key_ops": ["verify"],
            "kid": self.kid,
            "kty": "EC",
            "use": "sig",
            "x": self.x,
            "y": self.y,
        })
    }

    /// Signs `payload` as a flattened JWS with header
    /// `{"alg":"ES256","kid":…}`.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] if signing fails.
    pub fn sign(&self, payload: &[u8]) -> Result<SignedResponse, Error> {
        let header = json!({"alg": RESPONSE_ALG, "kid": self.kid}).to_string();
        let protected = URL_SAFE_NO_PAD.encode(header);
        let payload = URL_SAFE_NO_PAD.encode(payload);
        let signing_input = format!("{protected}.{payload}");
        let signature = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| Error::Crypto("signing failed"))?;
        Ok(SignedResponse {
            protected,
            payload,
            signature: URL_SAFE_NO_PAD.encode(signature.as_ref()),
        })
    }
}

/// The workload's ephemeral keys: one to receive the disk key, one to sign
/// answers. Both live in memory only and die with the process.
#[derive(Debug)]
pub struct WorkloadKeys {
    wrapping: confsum_skr::WrappingPrivateKey,
    signer: ResponseSigner,
}

impl WorkloadKeys {
    /// Fresh keys: RSA-2048 for key release (what the sidecar makes), and
    /// P-256 for responses.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] if key generation fails.
    pub fn generate() -> Result<Self, Error> {
        let wrapping = confsum_skr::WrappingPrivateKey::generate(2048)
            .map_err(|_| Error::Crypto("RSA key generation failed"))?;
        Ok(WorkloadKeys {
            wrapping,
            signer: ResponseSigner::generate()?,
        })
    }

    /// The key-release key.
    pub fn wrapping(&self) -> &confsum_skr::WrappingPrivateKey {
        &self.wrapping
    }

    /// The response-signing key.
    pub fn signer(&self) -> &ResponseSigner {
        &self.signer
    }

    /// The runtime data hashed into report_data: a compact JWKS with the
    /// key-release key first (exactly the sidecar's JWK) and the signing
    /// key second, `{"keys":[{…"key_ops":["encrypt"]…},{…"key_ops":["verify"]…}]}`.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] if the wrapping key's JWKS does not read back
    /// (it always does).
    pub fn runtime_json(&self) -> Result<String, Error> {
        let sidecar: Value = serde_json::from_str(&self.wrapping.runtime_jwks())
            .map_err(|_| Error::Crypto("wrapping key JWKS"))?;
        let wrap = sidecar
            .get("keys")
            .and_then(|k| k.get(0))
            .cloned()
            .ok_or(Error::Crypto("wrapping key JWKS"))?;
        Ok(json!({"keys": [wrap, self.signer.jwk()]}).to_string())
    }
}

impl WorkloadKeys {
    /// The signing key alone, once the key-release key has done its work
    /// (it is zeroized as it drops).
    pub fn into_signer(self) -> ResponseSigner {
        self.signer
    }
}
