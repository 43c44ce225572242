//! The signed release response: an RS256 JWS with the signer's certificate
//! chain in `x5c`, as Managed HSM answers a key release and as the
//! confidential sidecar checks it.
//!
//! Signing uses `ring` (no RSA private-key operation of the `rsa` crate).
//! Checking follows the sidecar (`pkg/common/akv.go`): the signature with
//! `x5c[0]`'s key; `x5c[0]` chained to a CA the client trusts, with the
//! certificates between the first and the last of `x5c` as intermediates
//! (the last is taken to be the root and never used); extended key usage
//! serverAuth or none; and a DNS name equal to the broker's endpoint as
//! configured. An endpoint with a port (`localhost:8443`) is matched, as
//! Go does, exactly against the certificate's DNS names.

use std::str::FromStr as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use der::{Decode as _, Encode as _};
use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use webpki::{EndEntityCert, KeyUsage};
use x509_cert::Certificate;
use x509_cert::builder::{Builder as _, CertificateBuilder, Profile};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{ExtendedKeyUsage, SubjectAltName};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};
use zeroize::Zeroizing;

use crate::error::{Error, JwsProblem, KeyProblem};
use crate::wire::{KeyHsm, ReleasePayload};
use crate::wrap::{WrapAlgorithm, WrappingPrivateKey, unwrap_key};

const ALG: &str = "RS256";

/// The broker's signing key and certificate chain. `Debug` shows only the
/// key id.
pub struct SigningIdentity {
    key: ring::signature::RsaKeyPair,
    chain: Vec<Vec<u8>>,
    header_b64: String,
    kid: String,
}

impl std::fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningIdentity")
            .field("kid", &self.kid)
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    x5c: Vec<String>,
    #[serde(rename = "x5t#S256", default)]
    x5t_s256: Option<String>,
}

impl SigningIdentity {
    /// From an RSA key (PKCS#8 DER) and its certificate chain (DER, leaf
    /// first, root last: the sidecar ignores the last entry).
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] if the key is not RSA (2048 to 8192 bits) or is not
    /// the leaf certificate's key, or the chain is empty.
    pub fn new(pkcs8_der: &[u8], chain: Vec<Vec<u8>>) -> Result<Self, Error> {
        let key = ring::signature::RsaKeyPair::from_pkcs8(pkcs8_der)
            .map_err(|_| Error::BadKey(KeyProblem::Encoding("RSA PKCS#8 signing key")))?;
        let leaf = chain
            .first()
            .ok_or(Error::BadKey(KeyProblem::Encoding("certificate chain")))?;
        let cert = Certificate::from_der(leaf)
            .map_err(|_| Error::BadKey(KeyProblem::Encoding("certificate")))?;
        let leaf_key = cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes();
        if leaf_key != ring::signature::KeyPair::public_key(&key).as_ref() {
            return Err(Error::BadKey(KeyProblem::Inconsistent(
                "signing key and leaf certificate",
            )));
        }
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(leaf));
        let header = Header {
            alg: ALG.to_owned(),
            kid: Some(kid.clone()),
            x5c: chain.iter().map(|c| STANDARD.encode(c)).collect(),
            x5t_s256: Some(kid.clone()),
        };
        let header_b64 = URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&header).map_err(|_| Error::Crypto("JWS header encoding"))?);
        Ok(SigningIdentity {
            key,
            chain,
            header_b64,
            kid,
        })
    }

    /// From PEM: a PKCS#8 `PRIVATE KEY` and a chain of `CERTIFICATE`s (leaf
    /// first).
    ///
    /// # Errors
    ///
    /// As [`SigningIdentity::new`], and [`Error::BadKey`] for bad PEM.
    pub fn from_pem(key_pem: &str, chain_pem: &str) -> Result<Self, Error> {
        let (label, der) = der::pem::decode_vec(key_pem.as_bytes())
            .map_err(|_| Error::BadKey(KeyProblem::Encoding("PEM")))?;
        let der = Zeroizing::new(der);
        if label != "PRIVATE KEY" {
            return Err(Error::BadKey(KeyProblem::Encoding("PKCS#8 PEM")));
        }
        let chain = Certificate::load_pem_chain(chain_pem.as_bytes())
            .map_err(|_| Error::BadKey(KeyProblem::Encoding("certificate PEM")))?
            .iter()
            .map(|c| c.to_der())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Error::BadKey(KeyProblem::Encoding("certificate")))?;
        Self::new(&der, chain)
    }

    /// A fresh RSA-2048 signing key with a certificate for `names` (DNS
    /// names, `host:port` forms, or IP addresses), issued by a fresh local
    /// CA (ECDSA P-384) valid from an hour before `now` for ten years.
    /// Clients must be given [`LocalCa::cert_der`] to trust: nothing else
    /// trusts this CA.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] if key generation or certificate building fails.
    pub fn generate_with_local_ca(
        names: &[&str],
        now: SystemTime,
    ) -> Result<(Self, LocalCa), Error> {
        let not_before = now
            .checked_sub(Duration::from_secs(3600))
            .unwrap_or(UNIX_EPOCH);
        let not_after = now + Duration::from_secs(10 * 365 * 24 * 3600);
        let validity = Validity {
            not_before: Time::try_from(not_before).map_err(cert_fail)?,
            not_after: Time::try_from(not_after).map_err(cert_fail)?,
        };
        let mut rng = rsa::rand_core::OsRng;

        let ca_key = p384::ecdsa::SigningKey::random(&mut rng);
        let ca_name = Name::from_str("CN=confsum key broker local CA").map_err(cert_fail)?;
        let ca_spki =
            SubjectPublicKeyInfoOwned::from_key(*ca_key.verifying_key()).map_err(cert_fail)?;
        let ca_cert = CertificateBuilder::new(
            Profile::Root,
            serial()?,
            validity,
            ca_name.clone(),
            ca_spki,
            &ca_key,
        )
        .map_err(cert_fail)?
        .build::<p384::ecdsa::DerSignature>()
        .map_err(cert_fail)?;

        let leaf_key = rsa::RsaPrivateKey::new(&mut rng, 2048)
            .map_err(|_| Error::Crypto("RSA key generation failed"))?;
        let leaf_pkcs8 = leaf_key.to_pkcs8_der().map_err(cert_fail)?;
        let leaf_spki_der = leaf_key
            .to_public_key()
            .to_public_key_der()
            .map_err(cert_fail)?;
        let leaf_spki =
            SubjectPublicKeyInfoOwned::from_der(leaf_spki_der.as_bytes()).map_err(cert_fail)?;
        let subject = Name::from_str("CN=confsum key broker").map_err(cert_fail)?;
        let mut builder = CertificateBuilder::new(
            Profile::Leaf {
                issuer: ca_name,
                enable_key_agreement: false,
                enable_key_encipherment: false,
            },
            serial()?,
            validity,
            subject,
            leaf_spki,
            &ca_key,
        )
        .map_err(cert_fail)?;
        let mut general_names = Vec::new();
        for name in names {
            match name.parse::<std::net::IpAddr>() {
                Ok(ip) => {
                    let octets = match ip {
                        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
                        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
                    };
                    general_names.push(GeneralName::IpAddress(
                        der::asn1::OctetString::new(octets).map_err(cert_fail)?,
                    ));
                }
                Err(_) => general_names.push(GeneralName::DnsName(
                    der::asn1::Ia5String::new(name).map_err(cert_fail)?,
                )),
            }
        }
        builder
            .add_extension(&SubjectAltName(general_names))
            .map_err(cert_fail)?;
        builder
            .add_extension(&ExtendedKeyUsage(vec![
                const_oid::db::rfc5280::ID_KP_SERVER_AUTH,
            ]))
            .map_err(cert_fail)?;
        let leaf_cert = builder
            .build::<p384::ecdsa::DerSignature>()
            .map_err(cert_fail)?;

        let ca_der = ca_cert.to_der().map_err(cert_fail)?;
        let identity = Self::new(
            leaf_pkcs8.as_bytes(),
            vec![leaf_cert.to_der().map_err(cert_fail)?, ca_der.clone()],
        )?;
        Ok((identity, LocalCa { cert_der: ca_der }))
    }

    /// The JWS `kid` (= `x5t#S256`, the leaf certificate's SHA-256).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The certificate chain (DER, leaf first).
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The leaf certificate as PEM followed by the rest of the chain, for
    /// a TLS server that presents the same certificate.
    pub fn chain_pem(&self) -> String {
        self.chain
            .iter()
            .map(|der| pem("CERTIFICATE", der))
            .collect()
    }

    /// Signs `payload` as a compact RS256 JWS with header `alg`, `kid`,
    /// `x5c`, `x5t#S256`.
    ///
    /// # Errors
    ///
    /// [`Error::Crypto`] if signing fails.
    pub fn sign(&self, payload: &[u8]) -> Result<String, Error> {
        let mut jws = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 400);
        jws.push_str(&self.header_b64);
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(payload, &mut jws);
        let mut signature = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                jws.as_bytes(),
                &mut signature,
            )
            .map_err(|_| Error::Crypto("RS256 signing failed"))?;
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut jws);
        Ok(jws)
    }
}

fn cert_fail<E>(_: E) -> Error {
    Error::Crypto("certificate generation failed")
}

fn serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| Error::Crypto("random number generator failed"))?;
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte
    SerialNumber::new(&bytes).map_err(|_| Error::Crypto("certificate serial"))
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A CA made by [`SigningIdentity::generate_with_local_ca`]; its private
/// key is already gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCa {
    /// The CA certificate (DER).
    pub cert_der: Vec<u8>,
}

impl LocalCa {
    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> String {
        pem("CERTIFICATE", &self.cert_der)
    }
}

/// Checks release responses as the confidential sidecar does.
#[derive(Debug, Clone)]
pub struct ReleaseVerifier {
    anchors: Vec<rustls_pki_types::TrustAnchor<'static>>,
    endpoint: String,
}

impl ReleaseVerifier {
    /// Trusts the CA certificates `trusted_ca_der` for a broker reached at
    /// `endpoint` (host, or `host:port`, exactly as configured).
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] if a CA certificate does not parse.
    pub fn new<C: AsRef<[u8]>>(trusted_ca_der: &[C], endpoint: &str) -> Result<Self, Error> {
        let anchors = trusted_ca_der
            .iter()
            .map(|der| {
                webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_ref()))
                    .map(|a| a.to_owned())
                    .map_err(|_| Error::BadKey(KeyProblem::Encoding("CA certificate")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ReleaseVerifier {
            anchors,
            endpoint: endpoint.to_owned(),
        })
    }

    /// Verifies a release JWS at time `now` and returns what it releases.
    ///
    /// # Errors
    ///
    /// [`Error::Jws`] saying which check failed, or
    /// [`Error::UnsupportedAlgorithm`] for an unknown `request.enc`.
    pub fn verify(&self, jws: &str, now: SystemTime) -> Result<ReleasedKey, Error> {
        let mut parts = jws.split('.');
        let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::Jws(JwsProblem::Malformed("not three parts")));
        };
        let header: Header = decode_json(header_b64, "header")?;
        if header.alg != ALG {
            return Err(Error::Jws(JwsProblem::Algorithm(header.alg)));
        }
        let chain = header
            .x5c
            .iter()
            .map(|c| STANDARD.decode(c).map(CertificateDer::from))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Error::Jws(JwsProblem::BadChain))?;
        let leaf_der = chain.first().ok_or(Error::Jws(JwsProblem::BadChain))?;
        if header
            .x5t_s256
            .as_ref()
            .is_some_and(|x5t| *x5t != URL_SAFE_NO_PAD.encode(Sha256::digest(leaf_der)))
        {
            return Err(Error::Jws(JwsProblem::Thumbprint));
        }
        let leaf =
            EndEntityCert::try_from(leaf_der).map_err(|_| Error::Jws(JwsProblem::BadChain))?;

        let signature = URL_SAFE_NO_PAD
            .decode(sig_b64)
            .map_err(|_| Error::Jws(JwsProblem::Malformed("signature is not base64url")))?;
        let signed_len = header_b64.len() + 1 + payload_b64.len();
        let signed = jws
            .as_bytes()
            .get(..signed_len)
            .ok_or(Error::Jws(JwsProblem::Malformed("length")))?;
        leaf.verify_signature(webpki::ring::RSA_PKCS1_2048_8192_SHA256, signed, &signature)
            .map_err(|_| Error::Jws(JwsProblem::Signature))?;

        // As the sidecar: everything between the leaf and the last entry.
        let intermediates = chain
            .get(1..chain.len().saturating_sub(1))
            .unwrap_or_default();
        let since_epoch = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::Jws(JwsProblem::Untrusted("time before 1970".to_owned())))?;
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            intermediates,
            UnixTime::since_unix_epoch(since_epoch),
            KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| Error::Jws(JwsProblem::Untrusted(e.to_string())))?;
        self.check_name(&leaf, leaf_der)?;

        let payload: ReleasePayload = decode_json(payload_b64, "payload")?;
        let enc = WrapAlgorithm::from_name(&payload.request.enc)?;
        let key_hsm: KeyHsm = decode_json(&payload.response.key.key.key_hsm, "key_hsm")?;
        let ciphertext = URL_SAFE_NO_PAD
            .decode(&key_hsm.ciphertext)
            .map_err(|_| Error::Jws(JwsProblem::Malformed("ciphertext is not base64url")))?;
        Ok(ReleasedKey {
            enc,
            ciphertext,
            payload,
        })
    }

    fn check_name(&self, leaf: &EndEntityCert<'_>, leaf_der: &[u8]) -> Result<(), Error> {
        let wrong = || Error::Jws(JwsProblem::WrongName(self.endpoint.clone()));
        if let Ok(name) = ServerName::try_from(self.endpoint.as_str()) {
            return leaf
                .verify_is_valid_for_subject_name(&name)
                .map_err(|_| wrong());
        }
        // Not a DNS name or IP (a port, say): Go compares such names with
        // the certificate's DNS names exactly, ignoring ASCII case.
        let cert = Certificate::from_der(leaf_der).map_err(|_| Error::Jws(JwsProblem::BadChain))?;
        let exts = cert.tbs_certificate.extensions.unwrap_or_default();
        for ext in exts {
            if ext.extn_id != const_oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME {
                continue;
            }
            let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
                .map_err(|_| Error::Jws(JwsProblem::BadChain))?;
            let found = san.0.iter().any(|name| {
                matches!(name, GeneralName::DnsName(dns)
                    if dns.as_str().eq_ignore_ascii_case(&self.endpoint))
            });
            if found {
                return Ok(());
            }
        }
        Err(wrong())
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(b64: &str, what: &'static str) -> Result<T, Error> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| Error::Jws(JwsProblem::Malformed(what)))?;
    serde_json::from_slice(&bytes).map_err(|_| Error::Jws(JwsProblem::Malformed(what)))
}

/// A verified release: what the JWS carries.
#[derive(Debug, Clone)]
pub struct ReleasedKey {
    /// The wrapping algorithm (`request.enc`).
    pub enc: WrapAlgorithm,
    /// The wrapped key (`key_hsm.ciphertext`, decoded).
    pub ciphertext: Vec<u8>,
    /// The whole signed payload.
    pub payload: ReleasePayload,
}

impl ReleasedKey {
    /// The released key's `kty`.
    pub fn kty(&self) -> &str {
        &self.payload.response.key.key.kty
    }

    /// Unwraps the key with the workload's private key: raw bytes for
    /// `oct`, PKCS#8 DER for RSA and EC.
    ///
    /// # Errors
    ///
    /// [`Error::Unwrap`].
    pub fn unwrap(&self, private: &WrappingPrivateKey) -> Result<Zeroizing<Vec<u8>>, Error> {
        unwrap_key(private, self.enc, &self.ciphertext)
    }
}
