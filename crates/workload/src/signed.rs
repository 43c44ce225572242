//! Signed responses: every `/v1/documents` and `/v1/summaries` answer is a
//! JWS in the flattened JSON serialization (RFC 7515 section 7.2.2),
//! `{"protected","payload","signature"}`, ES256 with the attested
//! response-signing key. The answer's JSON is the base64url `payload`; a
//! client that wants it must verify to read it, so an unverified answer
//! is never mistaken for a verified one.
//!
//! The signing input is JWS's: `protected || "." || payload` as ASCII,
//! the signature the 64-byte `r || s` that WebCrypto's ECDSA also uses.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::keys::{RESPONSE_ALG, ec_thumbprint};
use crate::{Error, SignatureProblem};

/// A signed answer: a flattened JWS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedResponse {
    /// base64url of the header JSON, `{"alg":"ES256","kid":…}`.
    pub protected: String,
    /// base64url of the answer's JSON.
    pub payload: String,
    /// base64url of the ES256 signature (`r || s`, 64 bytes).
    pub signature: String,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Checks signed answers against the response-signing key that an
/// attestation token's runtime data published.
#[derive(Debug, Clone)]
pub struct ResponseVerifier {
    kid: String,
    point: Vec<u8>,
}

fn b64(text: &str) -> Result<Vec<u8>, SignatureProblem> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| SignatureProblem::Malformed)
}

impl ResponseVerifier {
    /// The verifier for the signing key in runtime data (the token's
    /// `x-ms-runtime`): the first key with `kty` `EC`, `crv` `P-256` and
    /// `key_ops` holding `verify`. Its `kid` must be its thumbprint.
    ///
    /// # Errors
    ///
    /// [`SignatureProblem::NoSigningKey`] if there is no such key.
    pub fn from_runtime_json(runtime_json: &str) -> Result<Self, Error> {
        let value: Value =
            serde_json::from_str(runtime_json).map_err(|_| SignatureProblem::NoSigningKey)?;
        let keys = value
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(SignatureProblem::NoSigningKey)?;
        let text = |k: &Value, m: &str| k.get(m).and_then(Value::as_str).map(str::to_owned);
        for key in keys {
            let verify = key
                .get("key_ops")
                .and_then(Value::as_array)
                .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
            if !verify
                || text(key, "kty").as_deref() != Some("EC")
                || text(key, "crv").as_deref() != Some("P-256")
            {
                continue;
            }
            let (Some(x), Some(y)) = (text(key, "x"), text(key, "y")) else {
                continue;
            };
            let kid = ec_thumbprint(&x, &y);
            if text(key, "kid").is_some_and(|k| k != kid) {
                continue;
            }
            let (Ok(xb), Ok(yb)) = (b64(&x), b64(&y)) else {
                continue;
            };
            if xb.len() != 32 || yb.len() != 32 {
                continue;
            }
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(&xb);
            point.extend_from_slice(&yb);
            return Ok(ResponseVerifier { kid, point });
        }
        Err(SignatureProblem::NoSigningKey.into())
    }

    /// The attested signing key's id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Verifies `signed` and returns its payload bytes.
    ///
    /// # Errors
    ///
    /// [`Error::Signature`] saying which check failed.
    pub fn verify(&self, signed: &SignedResponse) -> Result<Vec<u8>, Error> {
        let header: Header = serde_json::from_slice(&b64(&signed.protected)?)
            .map_err(|_| SignatureProblem::Malformed)?;
        if header.alg != RESPONSE_ALG {
            return Err(SignatureProblem::Algorithm(header.alg).into());
        }
        let kid = header.kid.unwrap_or_default();
        if kid != self.kid {
            return Err(SignatureProblem::WrongKey {
                expected: self.kid.clone(),
                found: kid,
            }
            .into());
        }
        let payload = b64(&signed.payload)?;
        let signature = b64(&signed.signature)?;
        let input = format!("{}.{}", signed.protected, signed.payload);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.point)
            .verify(input.as_bytes(), &signature)
            .map_err(|_| SignatureProblem::BadSignature)?;
        Ok(payload)
    }

    /// Reads an answer's body as a signed response, verifies it and parses
    /// its payload.
    ///
    /// # Errors
    ///
    /// [`Error::Signature`], or [`Error::Malformed`] for a verified payload
    /// that is not a `T`.
    pub fn verify_body<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T, Error> {
        let signed: SignedResponse =
            serde_json::from_slice(body).map_err(|_| SignatureProblem::NotSigned)?;
        let payload = self.verify(&signed)?;
        serde_json::from_slice(&payload).map_err(|source| Error::Malformed {
            what: "signed payload",
            source,
        })
    }
}
