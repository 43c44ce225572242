//! JSON Web Keys (RFC 7517) and their RFC 7638 thumbprints.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::traits::PublicKeyParts as _;
use rsa::{BigUint, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::Error;

/// The smallest RSA modulus, in bits, that a token key may have.
const MIN_RSA_BITS: usize = 2048;
/// The largest RSA modulus, in bits, that a token key may have.
const MAX_RSA_BITS: usize = 4096;

/// One JSON Web Key (RFC 7517).
///
/// Only RSA keys are usable for tokens; the other members are kept so that
/// a JWKS from elsewhere (Microsoft Azure Attestation's `/certs`, which
/// carries `x5c`, or the TEE's runtime keys, which carry `key_ops`) parses
/// and serializes without losing them. Members this type does not know are
/// dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type; `"RSA"` for every key this crate makes or uses.
    pub kty: String,
    /// Key id; for keys this crate makes, the RFC 7638 thumbprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Intended use: `"sig"` for token signing keys, `"enc"` for wrapping keys.
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    /// Permitted operations, such as `["encrypt"]` on the TEE's wrapping key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    /// The algorithm the key is for, `"RS256"` on token signing keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// RSA modulus, unsigned big-endian, base64url without padding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent, unsigned big-endian, base64url without padding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// X.509 certificate chain (standard base64 DER), as Microsoft Azure
    /// Attestation publishes its signing keys. Kept but not used to verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
}

impl Jwk {
    /// The JWK of an RSA public key, with `kid` set to its RFC 7638
    /// thumbprint and no `use`, `key_ops` or `alg`.
    pub fn from_rsa(key: &RsaPublicKey) -> Self {
        let n = URL_SAFE_NO_PAD.encode(key.n().to_bytes_be());
        let e = URL_SAFE_NO_PAD.encode(key.e().to_bytes_be());
        Jwk {
            kty: "RSA".to_owned(),
            kid: Some(rsa_thumbprint(&e, &n)),
            key_use: None,
            key_ops: None,
            alg: None,
            n: Some(n),
            e: Some(e),
            x5c: None,
        }
    }

    /// The RFC 7638 thumbprint of an RSA JWK: base64url (no padding) of
    /// SHA-256 over `{"e":…,"kty":"RSA","n":…}`, with `e` and `n` exactly as
    /// they appear in the key.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] if the key is not RSA or lacks `n` or `e`.
    pub fn thumbprint(&self) -> Result<String, Error> {
        if self.kty != "RSA" {
            return Err(Error::BadKey(format!("key type {:?} is not RSA", self.kty)));
        }
        match (&self.e, &self.n) {
            (Some(e), Some(n)) => Ok(rsa_thumbprint(e, n)),
            _ => Err(Error::BadKey("RSA key without n or e".to_owned())),
        }
    }

    /// The RSA public key of this JWK.
    ///
    /// `n` and `e` must be canonical base64url without padding, without
    /// leading zero bytes, and the modulus must be 2048 to 4096 bits.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] for anything else, including a key published only
    /// as an `x5c` certificate chain.
    pub fn rsa_public_key(&self) -> Result<RsaPublicKey, Error> {
        if self.kty != "RSA" {
            return Err(Error::BadKey(format!("key type {:?} is not RSA", self.kty)));
        }
        let (Some(n), Some(e)) = (&self.n, &self.e) else {
            return Err(Error::BadKey(
                "RSA key without n or e (x5c-only keys are not supported)".to_owned(),
            ));
        };
        let n = decode_uint(n, "n")?;
        let e = decode_uint(e, "e")?;
        let bits = n.bits();
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(Error::BadKey(format!(
                "RSA modulus of {bits} bits is outside {MIN_RSA_BITS}..={MAX_RSA_BITS}"
            )));
        }
        RsaPublicKey::new(n, e).map_err(|err| Error::BadKey(err.to_string()))
    }
}

/// Decodes one base64url big-endian unsigned integer member of a JWK.
fn decode_uint(text: &str, member: &str) -> Result<BigUint, Error> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| Error::BadKey(format!("{member} is not base64url without padding")))?;
    match bytes.first() {
        None => Err(Error::BadKey(format!("{member} is empty"))),
        Some(0) => Err(Error::BadKey(format!("{member} has a leading zero byte"))),
        Some(_) => Ok(BigUint::from_bytes_be(&bytes)),
    }
}

/// RFC 7638 section 3.2: the required members in lexicographic order, no
/// whitespace. `e` and `n` are base64url text, which needs no JSON escaping,
/// but they are escaped through serde anyway so odd input cannot inject.
fn rsa_thumbprint(e: &str, n: &str) -> String {
    let json = format!(
        r#"{{"e":{},"kty":"RSA","n":{}}}"#,
        serde_json::Value::from(e),
        serde_json::Value::from(n)
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(json.as_bytes()))
}

/// A JSON Web Key Set: `{"keys":[…]}`.
///
/// This is both what an attestation service publishes at `/certs` and what
/// the TEE sends as runtime data (its ephemeral wrapping key).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

impl Jwks {
    /// Parses a JWKS from JSON.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] if the bytes are not a JWKS.
    pub fn from_json(json: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(json).map_err(|err| Error::BadKey(format!("bad JWKS JSON: {err}")))
    }

    /// The key whose `kid` is `kid`, if there is exactly one.
    ///
    /// Two keys with the same `kid` make the lookup ambiguous, and the
    /// answer is `None`, as for a `kid` that is not there.
    pub fn find(&self, kid: &str) -> Option<&Jwk> {
        let mut found = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid));
        match (found.next(), found.next()) {
            (Some(key), None) => Some(key),
            _ => None,
        }
    }
}
