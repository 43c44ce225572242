//! JSON Web Keys (RFC 7517) and their RFC 7638 thumbprints.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use der::Decode as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{BigUint, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{Error, JwkMember, KeyError};

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
    /// Attestation publishes its signing keys: the key of `x5c[0]` is the
    /// JWK's key. The certificates themselves are not checked (MAA's are
    /// self-signed): trust comes from where the JWKS was fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
}

impl Jwk {
    /// The JWK of an RSA public key, with `kid` set to its RFC 7638
    /// thumbprint and no `use`, `key_ops` or `alg`.
    pub fn from_rsa(key: &RsaPublicKey) -> Self {
        Jwk::from_rsa_components(&key.n().to_bytes_be(), &key.e().to_bytes_be())
    }

    /// The JWK of an RSA public key given as unsigned big-endian modulus
    /// and exponent, as [`from_rsa`](Self::from_rsa).
    pub(crate) fn from_rsa_components(n: &[u8], e: &[u8]) -> Self {
        let n = URL_SAFE_NO_PAD.encode(n);
        let e = URL_SAFE_NO_PAD.encode(e);
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
    /// they appear in the key, or, for a key given only as `x5c`, as
    /// `x5c[0]`'s key encodes them.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] if the key is not RSA, or has neither `n` and `e`
    /// nor a usable `x5c`.
    pub fn thumbprint(&self) -> Result<String, Error> {
        if self.kty != "RSA" {
            return Err(KeyError::NotRsa(self.kty.clone()).into());
        }
        match (&self.e, &self.n) {
            (Some(e), Some(n)) => Ok(rsa_thumbprint(e, n)),
            _ => {
                let key = self.rsa_key()?;
                let n = URL_SAFE_NO_PAD.encode(key.n().to_bytes_be());
                let e = URL_SAFE_NO_PAD.encode(key.e().to_bytes_be());
                Ok(rsa_thumbprint(&e, &n))
            }
        }
    }

    /// The RSA public key of this JWK: from `n` and `e`, or from the
    /// certificate `x5c[0]` when they are absent (Microsoft Azure
    /// Attestation's `/certs` publishes only `x5c`). When both are given
    /// they must be the same key.
    ///
    /// `n` and `e` must be canonical base64url without padding, without
    /// leading zero bytes; `x5c` entries are standard base64 DER (RFC 7517
    /// section 4.7). The modulus must be 2048 to 4096 bits.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] with the [`KeyError`] that says what is wrong.
    pub fn rsa_public_key(&self) -> Result<RsaPublicKey, Error> {
        Ok(self.rsa_key()?)
    }

    pub(crate) fn rsa_key(&self) -> Result<RsaPublicKey, KeyError> {
        if self.kty != "RSA" {
            return Err(KeyError::NotRsa(self.kty.clone()));
        }
        let from_ne = match (&self.n, &self.e) {
            (Some(n), Some(e)) => {
                let n = decode_uint(n, JwkMember::N)?;
                let e = decode_uint(e, JwkMember::E)?;
                check_size(n.bits())?;
                Some(RsaPublicKey::new(n, e).map_err(|_| KeyError::InvalidRsa)?)
            }
            _ => None,
        };
        let from_x5c = match &self.x5c {
            Some(chain) => Some(x5c_key(chain)?),
            None => None,
        };
        match (from_ne, from_x5c) {
            (Some(a), Some(b)) if a != b => Err(KeyError::X5cMismatch),
            (Some(key), _) | (None, Some(key)) => Ok(key),
            (None, None) => Err(KeyError::NoPublicKey),
        }
    }
}

/// The RSA key of the first certificate of an `x5c` chain.
fn x5c_key(chain: &[String]) -> Result<RsaPublicKey, KeyError> {
    let first = chain.first().ok_or(KeyError::Empty(JwkMember::X5c))?;
    let der = STANDARD
        .decode(first)
        .map_err(|_| KeyError::Base64(JwkMember::X5c))?;
    let cert = x509_cert::Certificate::from_der(&der)
        .map_err(|e| KeyError::Certificate(crate::CertError::Der(e)))?;
    let key = crate::certs::rsa_key_of(&cert).map_err(KeyError::Certificate)?;
    check_size(key.n().bits())?;
    Ok(key)
}

fn check_size(bits: usize) -> Result<(), KeyError> {
    if (MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(KeyError::Size { bits })
    }
}

/// Decodes one base64url big-endian unsigned integer member of a JWK.
fn decode_uint(text: &str, member: JwkMember) -> Result<BigUint, KeyError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| KeyError::Base64(member))?;
    match bytes.first() {
        None => Err(KeyError::Empty(member)),
        Some(0) => Err(KeyError::LeadingZero(member)),
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
    /// [`Error::BadKey`] ([`KeyError::Json`]) if the bytes are not a JWKS.
    pub fn from_json(json: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(json).map_err(|err| KeyError::Json(err).into())
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
