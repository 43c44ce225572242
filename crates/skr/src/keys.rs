//! Key material as Managed HSM imports and releases it: a private JWK in,
//! raw bytes (`oct`) or PKCS#8 DER (RSA, EC) out.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::pkcs8::EncodePrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{BigUint, RsaPrivateKey};
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use crate::error::{Error, KeyProblem};
use crate::wrap::{MAX_RSA_BITS, MIN_RSA_BITS, jwk_bytes};

/// The kind of a stored key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyType {
    /// A symmetric key (`oct-HSM`), released as its raw bytes.
    Oct,
    /// An RSA key (`RSA-HSM`), released as PKCS#8 DER.
    Rsa,
    /// An EC key (`EC-HSM`, P-256 or P-384), released as PKCS#8 DER.
    Ec,
}

impl KeyType {
    /// The `kty` an HSM-backed key of this kind has (`oct-HSM`, `RSA-HSM`,
    /// `EC-HSM`); the sidecar accepts these and the plain forms.
    pub fn hsm_name(self) -> &'static str {
        match self {
            KeyType::Oct => "oct-HSM",
            KeyType::Rsa => "RSA-HSM",
            KeyType::Ec => "EC-HSM",
        }
    }

    /// Reads `oct`, `RSA`, `EC` with or without `-HSM`.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] for anything else.
    pub fn from_kty(kty: &str) -> Result<Self, Error> {
        match kty {
            "oct" | "oct-HSM" => Ok(KeyType::Oct),
            "RSA" | "RSA-HSM" => Ok(KeyType::Rsa),
            "EC" | "EC-HSM" => Ok(KeyType::Ec),
            other => Err(Error::BadKey(KeyProblem::UnsupportedType(other.to_owned()))),
        }
    }
}

/// A key's secret material in the form Managed HSM releases it, and its
/// public JWK members. Zeroized on drop; `Debug` shows only the type.
pub struct KeyMaterial {
    kty: KeyType,
    bytes: Zeroizing<Vec<u8>>,
    public: Map<String, Value>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyMaterial({}, <redacted>)", self.kty.hsm_name())
    }
}

impl KeyMaterial {
    /// Reads a private JWK as Key Vault's import takes it:
    /// - `oct`/`oct-HSM`: `k` of 16, 24 or 32 bytes;
    /// - `RSA`/`RSA-HSM`: `n`, `e`, `d`, `p`, `q` (`dp`, `dq`, `qi`
    ///   recomputed), 2048 to 4096 bits, checked for consistency;
    /// - `EC`/`EC-HSM`: `crv` P-256 or P-384, `d`, and `x`, `y`, which must
    ///   be `d`'s public point.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] saying what is wrong.
    pub fn from_jwk(jwk: &Value) -> Result<Self, Error> {
        let kty = jwk
            .get("kty")
            .and_then(Value::as_str)
            .ok_or(Error::BadKey(KeyProblem::Member("kty")))?;
        match KeyType::from_kty(kty)? {
            KeyType::Oct => {
                let k = jwk_bytes(jwk, "k")?;
                if ![16, 24, 32].contains(&k.len()) {
                    return Err(Error::BadKey(KeyProblem::OctSize(k.len())));
                }
                Ok(KeyMaterial {
                    kty: KeyType::Oct,
                    bytes: k,
                    public: Map::new(),
                })
            }
            KeyType::Rsa => rsa_from_jwk(jwk),
            KeyType::Ec => ec_from_jwk(jwk),
        }
    }

    /// Wraps already-encoded material (raw `oct` bytes, or PKCS#8 DER for
    /// RSA and EC), as read back from storage.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] if the bytes are not a key of that type.
    pub fn from_bytes(kty: KeyType, bytes: Zeroizing<Vec<u8>>) -> Result<Self, Error> {
        let public = match kty {
            KeyType::Oct => {
                if ![16, 24, 32].contains(&bytes.len()) {
                    return Err(Error::BadKey(KeyProblem::OctSize(bytes.len())));
                }
                Map::new()
            }
            KeyType::Rsa => {
                use rsa::pkcs8::DecodePrivateKey as _;
                let key = RsaPrivateKey::from_pkcs8_der(&bytes)
                    .map_err(|_| Error::BadKey(KeyProblem::Encoding("PKCS#8")))?;
                rsa_public(&key)
            }
            KeyType::Ec => ec_public_from_pkcs8(&bytes)?,
        };
        Ok(KeyMaterial { kty, bytes, public })
    }

    /// Reads a key file as the owner has it: `oct` as the raw key bytes;
    /// RSA and EC as PKCS#8 (PEM `PRIVATE KEY` or DER), RSA also as PKCS#1
    /// PEM (`RSA PRIVATE KEY`).
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] if the bytes are not a key of that type.
    pub fn from_key_file(kty: KeyType, bytes: &[u8]) -> Result<Self, Error> {
        if kty == KeyType::Oct {
            return Self::from_bytes(kty, Zeroizing::new(bytes.to_vec()));
        }
        let der = if bytes.starts_with(b"-----BEGIN") {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| Error::BadKey(KeyProblem::Encoding("PEM")))?;
            let (label, der) = der::pem::decode_vec(text.trim().as_bytes())
                .map_err(|_| Error::BadKey(KeyProblem::Encoding("PEM")))?;
            let der = Zeroizing::new(der);
            match (kty, label) {
                (_, "PRIVATE KEY") => der,
                (KeyType::Rsa, "RSA PRIVATE KEY") => {
                    use rsa::pkcs1::DecodeRsaPrivateKey as _;
                    let key = RsaPrivateKey::from_pkcs1_der(&der)
                        .map_err(|_| Error::BadKey(KeyProblem::Encoding("PKCS#1")))?;
                    let pkcs8 = key
                        .to_pkcs8_der()
                        .map_err(|_| Error::BadKey(KeyProblem::Encoding("PKCS#8")))?;
                    Zeroizing::new(pkcs8.as_bytes().to_vec())
                }
                _ => return Err(Error::BadKey(KeyProblem::Encoding("PEM"))),
            }
        } else {
            Zeroizing::new(bytes.to_vec())
        };
        Self::from_bytes(kty, der)
    }

    /// The private JWK that Key Vault's import takes (`kty` `oct-HSM`,
    /// `RSA-HSM` or `EC-HSM`): what a client sends in
    /// [`ImportKeyRequest::key`](crate::ImportKeyRequest). It holds the
    /// secret: send it, never print or store it.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] if the stored material no longer parses.
    pub fn to_import_jwk(&self) -> Result<Value, Error> {
        let mut jwk = self.public.clone();
        jwk.insert("kty".into(), Value::String(self.kty.hsm_name().to_owned()));
        match self.kty {
            KeyType::Oct => {
                jwk.insert("k".into(), b64(&self.bytes));
            }
            KeyType::Rsa => {
                use rsa::pkcs8::DecodePrivateKey as _;
                use rsa::traits::PrivateKeyParts as _;
                let bad = || Error::BadKey(KeyProblem::Encoding("PKCS#8"));
                let key = RsaPrivateKey::from_pkcs8_der(&self.bytes).map_err(|_| bad())?;
                let [p, q] = key.primes() else {
                    return Err(Error::BadKey(KeyProblem::Inconsistent("RSA")));
                };
                let uint = |v: &BigUint| b64(&Zeroizing::new(v.to_bytes_be()));
                jwk.insert("d".into(), uint(key.d()));
                jwk.insert("p".into(), uint(p));
                jwk.insert("q".into(), uint(q));
                if let (Some(dp), Some(dq), Some(qi)) = (key.dp(), key.dq(), key.crt_coefficient())
                {
                    jwk.insert("dp".into(), uint(dp));
                    jwk.insert("dq".into(), uint(dq));
                    jwk.insert("qi".into(), uint(&qi));
                }
            }
            KeyType::Ec => {
                use p256::pkcs8::DecodePrivateKey as _;
                let bad = || Error::BadKey(KeyProblem::Encoding("PKCS#8"));
                let d = if let Ok(secret) = p256::SecretKey::from_pkcs8_der(&self.bytes) {
                    Zeroizing::new(secret.to_bytes().to_vec())
                } else {
                    let secret = p384::SecretKey::from_pkcs8_der(&self.bytes).map_err(|_| bad())?;
                    Zeroizing::new(secret.to_bytes().to_vec())
                };
                jwk.insert("d".into(), b64(&d));
            }
        }
        Ok(Value::Object(jwk))
    }

    /// The key type.
    pub fn kty(&self) -> KeyType {
        self.kty
    }

    /// The released form: raw bytes (`oct`) or PKCS#8 DER.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The public JWK members (`n`, `e` or `crv`, `x`, `y`; none for
    /// `oct`), without `kty`, `kid` or `key_ops`.
    pub fn public_jwk(&self) -> &Map<String, Value> {
        &self.public
    }
}

fn b64(bytes: &[u8]) -> Value {
    Value::String(URL_SAFE_NO_PAD.encode(bytes))
}

fn rsa_public(key: &RsaPrivateKey) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("n".into(), b64(&key.n().to_bytes_be()));
    map.insert("e".into(), b64(&key.e().to_bytes_be()));
    map
}

fn rsa_from_jwk(jwk: &Value) -> Result<KeyMaterial, Error> {
    let uint = |m| jwk_bytes(jwk, m).map(|b| BigUint::from_bytes_be(&b));
    let n = uint("n")?;
    let bits = n.bits();
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(Error::BadKey(KeyProblem::RsaSize(bits)));
    }
    let key =
        RsaPrivateKey::from_components(n, uint("e")?, uint("d")?, vec![uint("p")?, uint("q")?])
            .map_err(|_| Error::BadKey(KeyProblem::Inconsistent("RSA")))?;
    key.validate()
        .map_err(|_| Error::BadKey(KeyProblem::Inconsistent("RSA")))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|_| Error::BadKey(KeyProblem::Encoding("PKCS#8")))?;
    Ok(KeyMaterial {
        kty: KeyType::Rsa,
        bytes: Zeroizing::new(der.as_bytes().to_vec()),
        public: rsa_public(&key),
    })
}

fn ec_from_jwk(jwk: &Value) -> Result<KeyMaterial, Error> {
    let crv = jwk
        .get("crv")
        .and_then(Value::as_str)
        .ok_or(Error::BadKey(KeyProblem::Member("crv")))?;
    let d = jwk_bytes(jwk, "d")?;
    let x = jwk_bytes(jwk, "x")?;
    let y = jwk_bytes(jwk, "y")?;
    let (der, px, py) = match crv {
        "P-256" => {
            let secret = p256::SecretKey::from_slice(&d)
                .map_err(|_| Error::BadKey(KeyProblem::Inconsistent("EC")))?;
            let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                &secret.public_key(),
                false,
            );
            let der = secret
                .to_pkcs8_der()
                .map_err(|_| Error::BadKey(KeyProblem::Encoding("PKCS#8")))?;
            (
                Zeroizing::new(der.as_bytes().to_vec()),
                point.x().map(|v| v.to_vec()),
                point.y().map(|v| v.to_vec()),
            )
        }
        "P-384" => {
            let secret = p384::SecretKey::from_slice(&d)
                .map_err(|_| Error::BadKey(KeyProblem::Inconsistent("EC")))?;
            let point = p384::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                &secret.public_key(),
                false,
            );
            let der = secret
                .to_pkcs8_der()
                .map_err(|_| Error::BadKey(KeyProblem::Encoding("PKCS#8")))?;
            (
                Zeroizing::new(der.as_bytes().to_vec()),
                point.x().map(|v| v.to_vec()),
                point.y().map(|v| v.to_vec()),
            )
        }
        other => {
            return Err(Error::BadKey(KeyProblem::UnsupportedCurve(
                other.to_owned(),
            )));
        }
    };
    if px.as_deref() != Some(x.as_slice()) || py.as_deref() != Some(y.as_slice()) {
        return Err(Error::BadKey(KeyProblem::Inconsistent("EC")));
    }
    let mut public = Map::new();
    public.insert("crv".into(), Value::String(crv.to_owned()));
    public.insert("x".into(), b64(&x));
    public.insert("y".into(), b64(&y));
    Ok(KeyMaterial {
        kty: KeyType::Ec,
        bytes: der,
        public,
    })
}

fn ec_public_from_pkcs8(der: &[u8]) -> Result<Map<String, Value>, Error> {
    use p256::pkcs8::DecodePrivateKey as _;
    let (crv, x, y) = if let Ok(secret) = p256::SecretKey::from_pkcs8_der(der) {
        let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
            &secret.public_key(),
            false,
        );
        (
            "P-256",
            point.x().map(|v| v.to_vec()),
            point.y().map(|v| v.to_vec()),
        )
    } else if let Ok(secret) = p384::SecretKey::from_pkcs8_der(der) {
        let point = p384::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
            &secret.public_key(),
            false,
        );
        (
            "P-384",
            point.x().map(|v| v.to_vec()),
            point.y().map(|v| v.to_vec()),
        )
    } else {
        return Err(Error::BadKey(KeyProblem::Encoding("PKCS#8")));
    };
    let (Some(x), Some(y)) = (x, y) else {
        return Err(Error::BadKey(KeyProblem::Inconsistent("EC")));
    };
    match json!({"crv": crv, "x": b64(&x), "y": b64(&y)}) {
        Value::Object(map) => Ok(map),
        _ => Err(Error::BadKey(KeyProblem::Inconsistent("EC"))),
    }
}
