//! Key wrapping as Managed HSM releases a key and the confidential sidecar
//! unwraps it: RSA-OAEP of a fresh AES KEK, then AES key wrap with padding
//! (RFC 5649) of the key material, concatenated.
//!
//! - `CKM_RSA_AES_KEY_WRAP`: OAEP with SHA-1, `RSA_AES_KEY_WRAP_256`:
//!   SHA-256, `RSA_AES_KEY_WRAP_384`: SHA-384; MGF1 with the same hash and
//!   an empty label in every case.
//! - The RSA part is as long as the wrapping key's modulus (2048 to 4096
//!   bits). The sidecar itself hard-codes 256 bytes; we split by modulus.
//! - We wrap with an AES-256 KEK. Unwrapping accepts 128-, 192- and 256-bit
//!   KEKs, as the sidecar's Go code does.
//! - RFC 5649 comes from RustCrypto's `aes-kw` (KWP).
//!
//! # RSA private-key operations and RUSTSEC-2023-0071
//!
//! The `rsa` crate (every version, 0.10 included: the advisory lists no
//! patched version) has a timing side channel in private-key operations
//! (the Marvin attack). `ring` signs but has no OAEP decryption, so OAEP
//! decryption ([`unwrap_key`]) uses AWS-LC through `aws-lc-rs`, whose RSA
//! decryption is constant-time. OAEP encryption ([`wrap_key`]) uses
//! AWS-LC too, for speed: `rsa`'s took about 0.35 ms per 2048-bit wrap,
//! a fifth of a release's CPU time. `rsa` is kept for key types, key
//! generation, and PEM/PKCS#8 encoding, none of which the advisory
//! concerns. The key broker signs with `ring`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use rsa::pkcs1::DecodeRsaPrivateKey as _;
use rsa::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _};
use rsa::rand_core::OsRng;
use rsa::traits::{PrivateKeyParts as _, PublicKeyParts as _};
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, KeyProblem};

/// Smallest wrapping key modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest wrapping key modulus accepted, in bits.
pub const MAX_RSA_BITS: usize = 4096;

/// The HKDF info the sidecar uses when `key_derivation.label` is empty.
pub const DEFAULT_DERIVATION_LABEL: &str = "Symmetric Encryption Key";

/// A key release's wrapping algorithm (`enc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WrapAlgorithm {
    /// `CKM_RSA_AES_KEY_WRAP`: OAEP with SHA-1 (Managed HSM's default).
    RsaAesKeyWrap,
    /// `RSA_AES_KEY_WRAP_256`: OAEP with SHA-256.
    RsaAesKeyWrap256,
    /// `RSA_AES_KEY_WRAP_384`: OAEP with SHA-384.
    RsaAesKeyWrap384,
}

impl WrapAlgorithm {
    /// Every algorithm.
    pub const ALL: [WrapAlgorithm; 3] = [
        WrapAlgorithm::RsaAesKeyWrap,
        WrapAlgorithm::RsaAesKeyWrap256,
        WrapAlgorithm::RsaAesKeyWrap384,
    ];

    /// The name Key Vault uses in `enc`.
    pub fn name(self) -> &'static str {
        match self {
            WrapAlgorithm::RsaAesKeyWrap => "CKM_RSA_AES_KEY_WRAP",
            WrapAlgorithm::RsaAesKeyWrap256 => "RSA_AES_KEY_WRAP_256",
            WrapAlgorithm::RsaAesKeyWrap384 => "RSA_AES_KEY_WRAP_384",
        }
    }

    /// Parses an `enc` name (exact spelling).
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedAlgorithm`] for any other name.
    pub fn from_name(name: &str) -> Result<Self, Error> {
        WrapAlgorithm::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| Error::UnsupportedAlgorithm(name.to_owned()))
    }

    fn aws_lc_oaep(self) -> &'static aws_lc_rs::rsa::OaepAlgorithm {
        match self {
            WrapAlgorithm::RsaAesKeyWrap => &aws_lc_rs::rsa::OAEP_SHA1_MGF1SHA1,
            WrapAlgorithm::RsaAesKeyWrap256 => &aws_lc_rs::rsa::OAEP_SHA256_MGF1SHA256,
            WrapAlgorithm::RsaAesKeyWrap384 => &aws_lc_rs::rsa::OAEP_SHA384_MGF1SHA384,
        }
    }
}

impl std::fmt::Display for WrapAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The public half of a wrapping key: what the workload publishes in its
/// attestation runtime data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappingPublicKey {
    key: RsaPublicKey,
    kid: Option<String>,
}

impl WrappingPublicKey {
    /// From an RSA public key; the modulus must be 2048 to 4096 bits.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] for another size.
    pub fn new(key: RsaPublicKey, kid: Option<String>) -> Result<Self, Error> {
        check_size(&key)?;
        Ok(WrappingPublicKey { key, kid })
    }

    /// From a DER SubjectPublicKeyInfo.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] if it is not an RSA key of a supported size.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, Error> {
        let key = RsaPublicKey::from_public_key_der(der)
            .map_err(|_| Error::BadKey(KeyProblem::Encoding("SubjectPublicKeyInfo")))?;
        Self::new(key, None)
    }

    /// From an RSA JWK (`n`, `e`); `kid` is kept.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] if it is not a usable RSA public key.
    pub fn from_jwk(jwk: &Value) -> Result<Self, Error> {
        if jwk.get("kty").and_then(Value::as_str) != Some("RSA") {
            return Err(Error::BadKey(KeyProblem::UnsupportedType(
                jwk.get("kty")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            )));
        }
        let n = jwk_uint(jwk, "n")?;
        let e = jwk_uint(jwk, "e")?;
        let key =
            RsaPublicKey::new(n, e).map_err(|_| Error::BadKey(KeyProblem::Inconsistent("RSA")))?;
        let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
        Self::new(key, kid)
    }

    /// The wrapping key a token names: the first key in the claims'
    /// `x-ms-runtime.keys` whose `kty` is `RSA` and whose `key_ops` include
    /// `encrypt` (a response-signing key published beside it, with
    /// `key_ops: ["verify"]`, is never used).
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] with [`KeyProblem::NoWrappingKey`] if there is
    /// none, or the key's own problem if the chosen key is unusable.
    pub fn from_claims(claims: &serde_json::Map<String, Value>) -> Result<Self, Error> {
        let keys = claims
            .get("x-ms-runtime")
            .and_then(|r| r.get("keys"))
            .and_then(Value::as_array)
            .ok_or(Error::BadKey(KeyProblem::NoWrappingKey))?;
        let key = keys
            .iter()
            .find(|k| {
                k.get("kty").and_then(Value::as_str) == Some("RSA")
                    && k.get("key_ops")
                        .and_then(Value::as_array)
                        .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("encrypt")))
            })
            .ok_or(Error::BadKey(KeyProblem::NoWrappingKey))?;
        Self::from_jwk(key)
    }

    /// The key's `kid`, if it had one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The modulus size in bits.
    pub fn bits(&self) -> usize {
        self.key.n().bits()
    }

    /// The RSA public key.
    pub fn rsa(&self) -> &RsaPublicKey {
        &self.key
    }
}

/// The private half of a wrapping key, held by the workload. Zeroized on
/// drop; never printed.
pub struct WrappingPrivateKey {
    key: RsaPrivateKey,
    /// The same key in AWS-LC, for the one private-key operation.
    oaep: aws_lc_rs::rsa::OaepPrivateDecryptingKey,
}

impl std::fmt::Debug for WrappingPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WrappingPrivateKey(RSA-{}, <redacted>)",
            self.key.n().bits()
        )
    }
}

impl WrappingPrivateKey {
    /// A fresh RSA key (the sidecar uses 2048 bits).
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] for a size outside 2048–4096, [`Error::Crypto`] if
    /// generation fails.
    pub fn generate(bits: usize) -> Result<Self, Error> {
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
            return Err(Error::BadKey(KeyProblem::RsaSize(bits)));
        }
        let key = RsaPrivateKey::new(&mut OsRng, bits)
            .map_err(|_| Error::Crypto("RSA key generation failed"))?;
        WrappingPrivateKey::from_rsa(key)
    }

    /// From PEM: PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`).
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] if it does not parse or has an unsupported size.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        let key = RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| Error::BadKey(KeyProblem::Encoding("RSA private key PEM")))?;
        check_size(&key.to_public_key())?;
        WrappingPrivateKey::from_rsa(key)
    }

    /// From PKCS#8 DER.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] if it does not parse or has an unsupported size.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, Error> {
        let key = RsaPrivateKey::from_pkcs8_der(der)
            .map_err(|_| Error::BadKey(KeyProblem::Encoding("PKCS#8")))?;
        check_size(&key.to_public_key())?;
        WrappingPrivateKey::from_rsa(key)
    }

    fn from_rsa(key: RsaPrivateKey) -> Result<Self, Error> {
        let der = key
            .to_pkcs8_der()
            .map_err(|_| Error::Crypto("PKCS#8 encoding failed"))?;
        let private = aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(der.as_bytes())
            .map_err(|_| Error::BadKey(KeyProblem::Encoding("PKCS#8")))?;
        let oaep = aws_lc_rs::rsa::OaepPrivateDecryptingKey::new(private)
            .map_err(|_| Error::BadKey(KeyProblem::Encoding("PKCS#8")))?;
        Ok(WrappingPrivateKey { key, oaep })
    }

    /// PKCS#8 PEM, for handing the key to another process.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] if encoding fails.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, Error> {
        self.key
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .map_err(|_| Error::Crypto("PKCS#8 encoding failed"))
    }

    /// The public half, with `kid` = its RFC 7638 thumbprint.
    pub fn public_key(&self) -> WrappingPublicKey {
        let key = self.key.to_public_key();
        let kid = Some(jwk_thumbprint(&key));
        WrappingPublicKey { key, kid }
    }

    /// The runtime data the confidential sidecar sends with its evidence:
    /// `{"keys":[{"e","key_ops":["encrypt"],"kid","kty":"RSA","n"}]}`, no
    /// whitespace, `kid` the RFC 7638 SHA-256 thumbprint. For the same key
    /// these are the sidecar's bytes exactly (checked against its test
    /// vector).
    pub fn runtime_jwks(&self) -> String {
        let public = self.key.to_public_key();
        // serde_json orders object members by name, as Go's jwx does here.
        json!({"keys": [{
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
            "key_ops": ["encrypt"],
            "kid": jwk_thumbprint(&public),
            "kty": "RSA",
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
        }]})
        .to_string()
    }
}

/// RFC 7638 thumbprint (SHA-256, base64url) of an RSA public key.
pub fn jwk_thumbprint(key: &RsaPublicKey) -> String {
    let canonical = format!(
        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

fn check_size(key: &RsaPublicKey) -> Result<(), Error> {
    let bits = key.n().bits();
    if (MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(Error::BadKey(KeyProblem::RsaSize(bits)))
    }
}

pub(crate) fn jwk_bytes(jwk: &Value, member: &'static str) -> Result<Zeroizing<Vec<u8>>, Error> {
    let text = jwk
        .get(member)
        .and_then(Value::as_str)
        .ok_or(Error::BadKey(KeyProblem::Member(member)))?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map(Zeroizing::new)
        .map_err(|_| Error::BadKey(KeyProblem::Member(member)))
}

fn jwk_uint(jwk: &Value, member: &'static str) -> Result<BigUint, Error> {
    Ok(BigUint::from_bytes_be(&jwk_bytes(jwk, member)?))
}

/// Wraps `key` to `public` with `algorithm`: RSA-OAEP of a fresh AES-256
/// KEK, followed by the RFC 5649 wrap of `key` under that KEK.
///
/// # Errors
///
/// [`Error::BadRequest`] for an empty key, [`Error::Crypto`] if the RNG or
/// a primitive fails.
pub fn wrap_key(
    public: &WrappingPublicKey,
    algorithm: WrapAlgorithm,
    key: &[u8],
) -> Result<Vec<u8>, Error> {
    if key.is_empty() {
        return Err(Error::BadRequest("cannot wrap an empty key".to_owned()));
    }
    let mut kek = Zeroizing::new([0u8; 32]);
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), kek.as_mut())
        .map_err(|_| Error::Crypto("random number generator failed"))?;
    let mut out = oaep_encrypt(public, algorithm, kek.as_ref())?;
    let wrapped = aes_kw::KekAes256::new(&(*kek).into())
        .wrap_with_padding_vec(key)
        .map_err(|_| Error::Crypto("AES key wrap failed"))?;
    out.extend_from_slice(&wrapped);
    Ok(out)
}

/// Unwraps what [`wrap_key`] (or Managed HSM) produced.
///
/// # Errors
///
/// [`Error::Unwrap`], without saying which step failed.
pub fn unwrap_key(
    private: &WrappingPrivateKey,
    algorithm: WrapAlgorithm,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let split = private.key.size();
    let (rsa_part, wrapped) = ciphertext.split_at_checked(split).ok_or(Error::Unwrap)?;
    let kek = oaep_decrypt(private, algorithm, rsa_part)?;
    // RFC 5649 output is the input less its 8-byte integrity block.
    let out_len = wrapped.len().checked_sub(8).ok_or(Error::Unwrap)?;
    let mut out = Zeroizing::new(vec![0u8; out_len]);
    let len = match kek.len() {
        16 => aes_kw::KekAes128::try_from(kek.as_slice())
            .map_err(|_| Error::Unwrap)?
            .unwrap_with_padding(wrapped, &mut out)
            .map_err(|_| Error::Unwrap)?
            .len(),
        24 => aes_kw::KekAes192::try_from(kek.as_slice())
            .map_err(|_| Error::Unwrap)?
            .unwrap_with_padding(wrapped, &mut out)
            .map_err(|_| Error::Unwrap)?
            .len(),
        32 => aes_kw::KekAes256::try_from(kek.as_slice())
            .map_err(|_| Error::Unwrap)?
            .unwrap_with_padding(wrapped, &mut out)
            .map_err(|_| Error::Unwrap)?
            .len(),
        _ => return Err(Error::Unwrap),
    };
    out.truncate(len);
    Ok(out)
}

/// RSA-OAEP encryption in AWS-LC (see the module docs for why not
/// `rsa`'s).
fn oaep_encrypt(
    public: &WrappingPublicKey,
    algorithm: WrapAlgorithm,
    plaintext: &[u8],
) -> Result<Vec<u8>, Error> {
    use rsa::pkcs8::EncodePublicKey as _;
    let failed = || Error::Crypto("RSA-OAEP encryption failed");
    let der = public.key.to_public_key_der().map_err(|_| failed())?;
    let key =
        aws_lc_rs::rsa::PublicEncryptingKey::from_der(der.as_bytes()).map_err(|_| failed())?;
    let key = aws_lc_rs::rsa::OaepPublicEncryptingKey::new(key).map_err(|_| failed())?;
    let mut out = vec![0u8; key.ciphertext_size()];
    let len = key
        .encrypt(algorithm.aws_lc_oaep(), plaintext, &mut out, None)
        .map_err(|_| failed())?
        .len();
    out.truncate(len);
    Ok(out)
}

/// The one RSA private-key operation of this crate, in AWS-LC (see the
/// module docs on RUSTSEC-2023-0071). Errors are coarse.
fn oaep_decrypt(
    private: &WrappingPrivateKey,
    algorithm: WrapAlgorithm,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let mut out = Zeroizing::new(vec![0u8; private.oaep.min_output_size()]);
    let len = private
        .oaep
        .decrypt(algorithm.aws_lc_oaep(), ciphertext, &mut out, None)
        .map_err(|_| Error::Unwrap)?
        .len();
    out.truncate(len);
    Ok(out)
}

/// The disk key the encfs sidecar derives from a released `RSA-HSM` key:
/// HKDF-SHA256 with IKM = the private exponent D as minimal big-endian
/// bytes, salt = `salt_hex` decoded, info = `label` (or
/// [`DEFAULT_DERIVATION_LABEL`] when empty); 32 bytes.
///
/// `pkcs8_der` is the released key material (PKCS#8 DER).
///
/// # Errors
///
/// [`Error::BadKey`] if the key does not parse, [`Error::Encoding`] if the
/// salt is not hex.
pub fn derive_rsa_hsm_key(
    pkcs8_der: &[u8],
    salt_hex: &str,
    label: &str,
) -> Result<Zeroizing<[u8; 32]>, Error> {
    let key = RsaPrivateKey::from_pkcs8_der(pkcs8_der)
        .map_err(|_| Error::BadKey(KeyProblem::Encoding("PKCS#8")))?;
    let salt = hex::decode(salt_hex).map_err(|_| Error::Encoding {
        what: "key_derivation.salt",
        encoding: "hex",
    })?;
    let info = if label.is_empty() {
        DEFAULT_DERIVATION_LABEL
    } else {
        label
    };
    let ikm = Zeroizing::new(key.d().to_bytes_be());
    let mut out = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&salt), &ikm)
        .expand(info.as_bytes(), out.as_mut())
        .map_err(|_| Error::Crypto("HKDF expand failed"))?;
    Ok(out)
}
