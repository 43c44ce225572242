//! **Insecure:** an emulated SEV-SNP TEE for tests and local development
//! (the `insecure` feature). The documentation is on
//! [`InsecureEmulatedTee`], where embedders see it.

use std::{
    fmt,
    str::FromStr,
    time::{Duration, SystemTime},
};

use der::{
    Decode, Encode, EncodePem,
    asn1::{ObjectIdentifier, OctetString, OctetStringRef},
    oid::AssociatedOid,
    pem::LineEnding,
};
use p384::ecdsa::signature::Signer as _;
use rsa::{
    RsaPrivateKey,
    pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _},
    pss::SigningKey as PssSigningKey,
    rand_core::OsRng,
};
use sha2::{Digest as _, Sha384, Sha512};
use spki::SubjectPublicKeyInfoOwned;
use x509_cert::{
    Certificate,
    builder::{Builder as _, CertificateBuilder, Profile},
    ext::{AsExtension, Extension},
    name::Name,
    serial_number::SerialNumber,
    time::{Time, Validity},
};

use crate::{
    CertError, CertRole, Error, KeyError, SnpEvidence, report::REPORT_LEN, report::SIGNED_LEN,
};

/// Subject CN of the emulated ARK.
pub const INSECURE_ARK_CN: &str = "ARK-Insecure-Emulated";
/// Subject CN of the emulated ASK.
pub const INSECURE_ASK_CN: &str = "SEV-Insecure-Emulated";
/// Subject CN of the emulated VCEK (the one AMD's VCEKs have).
pub const INSECURE_VCEK_CN: &str = "SEV-VCEK";

/// RSA modulus size of the emulated ARK and ASK (AMD's are 4096 bits;
/// 2048 keeps key generation fast).
const RSA_BITS: usize = 2048;
/// How long the emulated certificates are valid, from a day ago.
const VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const DAY: Duration = Duration::from_secs(24 * 3600);
/// A guest policy with SMT allowed and the must-be-one bit 17, debug off.
const POLICY: u64 = 0x3_0000;

/// Building or encoding an emulated certificate failed; the detail (a
/// `der` or builder error) says nothing a user could act on.
fn cert_error<E>(_: E) -> Error {
    Error::BadCert {
        role: CertRole::Chain,
        error: CertError::Build,
    }
}

fn key_error<E>(_: E) -> Error {
    Error::BadKey(KeyError::Encoding)
}

/// **Insecure:** an emulated SEV-SNP TEE for tests and local development,
/// with its own certificate chain. What it signs proves nothing.
///
/// It makes its own ARK → ASK → VCEK chain (RSA-2048 ARK and ASK signing
/// with RSA-PSS, SHA-384, MGF1-SHA-384, salt 48, as AMD's do; a P-384
/// VCEK), keeps the keys in memory, and signs SNP-shaped reports (version
/// 2 layout, 1184 bytes, debug off, VMPL 0) with the VCEK. The VCEK
/// carries AMD's TCB and hwID extensions, which match the reports'
/// REPORTED_TCB (zero) and CHIP_ID (SHA-512 of the VCEK's public key); a
/// state saved before these extensions existed makes reports that no
/// longer verify. Such a report verifies only with a [`crate::Verifier`]
/// whose roots include the emulated ARK through
/// [`crate::TrustedRoots::add_insecure_root`]; AMD's roots refuse it with
/// [`crate::Error::UnknownRoot`].
///
/// Nothing it produces proves anything about hardware: anyone can run it.
/// It exists only with the crate's `insecure` feature, and a program that
/// uses it should print [`crate::INSECURE_WARNING`] loudly (this library
/// never prints). The emulated ARK and ASK sign with the `rsa` crate,
/// whose private-key operations are not constant-time (RUSTSEC-2023-0071);
/// that is harmless for keys that protect nothing.
///
/// ```
/// use std::time::SystemTime;
/// use confsum_attest::{CertChain, Error, InsecureEmulatedTee, TrustedRoots, Verifier};
///
/// let tee = InsecureEmulatedTee::generate()?;
/// let report = tee.report(&[1; 64], &[2; 32]);
/// let chain = CertChain::from_pem(tee.cert_chain_pem()?.as_bytes())?;
///
/// // AMD's roots refuse it...
/// let amd = Verifier::new(TrustedRoots::amd());
/// assert!(matches!(amd.verify(&report, &chain, SystemTime::now()), Err(Error::UnknownRoot)));
///
/// // ...and a verifier told to trust the emulated ARK says it is insecure.
/// let mut roots = TrustedRoots::amd();
/// roots.add_insecure_root(&tee.insecure_ark_der()?)?;
/// let verified = Verifier::new(roots).verify(&report, &chain, SystemTime::now())?;
/// assert!(verified.insecure_root());
/// # Ok::<(), Error>(())
/// ```
pub struct InsecureEmulatedTee {
    ark: Certificate,
    ask: Certificate,
    vcek: Certificate,
    ark_key: RsaPrivateKey,
    ask_key: RsaPrivateKey,
    vcek_key: p384::ecdsa::SigningKey,
    measurement: [u8; 48],
}

impl fmt::Debug for InsecureEmulatedTee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InsecureEmulatedTee")
            .field("measurement", &hex::encode(self.measurement))
            .finish_non_exhaustive()
    }
}

/// The emulated chip's CHIP_ID: SHA-512 of the VCEK's public key, so
/// that it follows from the saved state.
fn chip_id(vcek_key: &p384::ecdsa::SigningKey) -> [u8; 64] {
    Sha512::digest(vcek_key.verifying_key().to_encoded_point(false).as_bytes()).into()
}

/// One of AMD's VCEK extensions (KDS specification): its value is put
/// in `extnValue` as is.
struct AmdExtension {
    oid: ObjectIdentifier,
    value: Vec<u8>,
}

impl AssociatedOid for AmdExtension {
    const OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1");
}

impl Encode for AmdExtension {
    fn encoded_len(&self) -> der::Result<der::Length> {
        OctetStringRef::new(&self.value)?.encoded_len()
    }
    fn encode(&self, writer: &mut impl der::Writer) -> der::Result<()> {
        OctetStringRef::new(&self.value)?.encode(writer)
    }
}

impl AsExtension for AmdExtension {
    fn critical(&self, _: &Name, _: &[Extension]) -> bool {
        false
    }
    fn to_extension(&self, _: &Name, _: &[Extension]) -> Result<Extension, der::Error> {
        Ok(Extension {
            extn_id: self.oid,
            critical: false,
            extn_value: OctetString::new(self.value.clone())?,
        })
    }
}

/// The extensions of the emulated VCEK: TCB components all zero (the
/// reports' REPORTED_TCB) and the hwID (the reports' CHIP_ID, raw bytes
/// as AMD's KDS writes it).
fn vcek_extensions(vcek_key: &p384::ecdsa::SigningKey) -> Result<Vec<AmdExtension>, Error> {
    let zero = 0u8.to_der().map_err(cert_error)?;
    let mut exts = Vec::new();
    for oid in [
        "1.3.6.1.4.1.3704.1.3.1", // blSPL
        "1.3.6.1.4.1.3704.1.3.2", // teeSPL
        "1.3.6.1.4.1.3704.1.3.3", // snpSPL
        "1.3.6.1.4.1.3704.1.3.8", // ucodeSPL
    ] {
        exts.push(AmdExtension {
            oid: ObjectIdentifier::new(oid).map_err(cert_error)?,
            value: zero.clone(),
        });
    }
    exts.push(AmdExtension {
        oid: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4"),
        value: chip_id(vcek_key).to_vec(),
    });
    Ok(exts)
}

/// An emulated ARK, ASK and VCEK, signed with RSA-PSS (SHA-384, salt 48).
fn build_chain(
    ark_key: &RsaPrivateKey,
    ask_key: &RsaPrivateKey,
    vcek_key: &p384::ecdsa::SigningKey,
) -> Result<(Certificate, Certificate, Certificate), Error> {
    let now = SystemTime::now();
    let validity = Validity {
        not_before: Time::try_from(now.checked_sub(DAY).unwrap_or(now)).map_err(cert_error)?,
        not_after: Time::try_from(now + VALIDITY).map_err(cert_error)?,
    };
    let name = |cn: &str| Name::from_str(&format!("CN={cn},O=Insecure Emulated TEE"));
    let ark_name = name(INSECURE_ARK_CN).map_err(cert_error)?;
    let ask_name = name(INSECURE_ASK_CN).map_err(cert_error)?;
    let vcek_name = name(INSECURE_VCEK_CN).map_err(cert_error)?;
    let ark_signer = PssSigningKey::<Sha384>::new(ark_key.clone());
    let ask_signer = PssSigningKey::<Sha384>::new(ask_key.clone());
    let spki_of = |der: Vec<u8>| SubjectPublicKeyInfoOwned::from_der(&der).map_err(cert_error);

    let ark_spki = spki_of(
        ark_key
            .to_public_key()
            .to_public_key_der()
            .map_err(cert_error)?
            .into_vec(),
    )?;
    let ark = CertificateBuilder::new(
        Profile::Root,
        SerialNumber::from(1u32),
        validity,
        ark_name.clone(),
        ark_spki,
        &ark_signer,
    )
    .map_err(cert_error)?
    .build_with_rng::<rsa::pss::Signature>(&mut OsRng)
    .map_err(cert_error)?;

    let ask_spki = spki_of(
        ask_key
            .to_public_key()
            .to_public_key_der()
            .map_err(cert_error)?
            .into_vec(),
    )?;
    let ask = CertificateBuilder::new(
        Profile::SubCA {
            issuer: ark_name,
            path_len_constraint: Some(0),
        },
        SerialNumber::from(2u32),
        validity,
        ask_name.clone(),
        ask_spki,
        &ark_signer,
    )
    .map_err(cert_error)?
    .build_with_rng::<rsa::pss::Signature>(&mut OsRng)
    .map_err(cert_error)?;

    let vcek_spki = spki_of(
        p384::PublicKey::from(vcek_key.verifying_key())
            .to_public_key_der()
            .map_err(cert_error)?
            .into_vec(),
    )?;
    let mut vcek = CertificateBuilder::new(
        Profile::Leaf {
            issuer: ask_name,
            enable_key_agreement: false,
            enable_key_encipherment: false,
        },
        SerialNumber::from(3u32),
        validity,
        vcek_name,
        vcek_spki,
        &ask_signer,
    )
    .map_err(cert_error)?;
    for ext in vcek_extensions(vcek_key)? {
        vcek.add_extension(&ext).map_err(cert_error)?;
    }
    let vcek = vcek
        .build_with_rng::<rsa::pss::Signature>(&mut OsRng)
        .map_err(cert_error)?;
    Ok((ark, ask, vcek))
}

const PEM_ARK_KEY: &str = "INSECURE EMULATED ARK PRIVATE KEY";
const PEM_ASK_KEY: &str = "INSECURE EMULATED ASK PRIVATE KEY";
const PEM_VCEK_KEY: &str = "INSECURE EMULATED VCEK PRIVATE KEY";

impl InsecureEmulatedTee {
    /// **Insecure:** a new emulated TEE with fresh keys and certificates
    /// (valid from a day ago for ten years).
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] if key generation fails, [`Error::BadCert`] if a
    /// certificate cannot be built.
    pub fn generate() -> Result<Self, Error> {
        let keygen = || {
            RsaPrivateKey::new(&mut OsRng, RSA_BITS)
                .map_err(|_| Error::BadKey(KeyError::Generation))
        };
        let ark_key = keygen()?;
        let ask_key = keygen()?;
        let vcek_key = p384::ecdsa::SigningKey::random(&mut OsRng);
        let (ark, ask, vcek) = build_chain(&ark_key, &ask_key, &vcek_key)?;
        Ok(InsecureEmulatedTee {
            ark,
            ask,
            vcek,
            ark_key,
            ask_key,
            vcek_key,
            measurement: [0; 48],
        })
    }

    /// **Insecure:** the emulated TEE saved by
    /// [`to_insecure_state_pem`](Self::to_insecure_state_pem).
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] ([`KeyError::NotPkcs8`]) or [`Error::BadCert`] if
    /// the state is incomplete or does not parse.
    pub fn from_insecure_state_pem(pem: &str) -> Result<Self, Error> {
        let bad_state = || Error::BadKey(KeyError::NotPkcs8);
        let mut certs = Vec::new();
        let (mut ark_key, mut ask_key, mut vcek_key) = (None, None, None);
        let mut rest = pem;
        while let Some(start) = rest.find("-----BEGIN ") {
            let block = rest.get(start..).unwrap_or_default();
            let end_marker = block
                .find("-----END ")
                .map(|e| {
                    let tail = block.get(e..).unwrap_or_default();
                    e + tail.find('\n').unwrap_or(tail.len())
                })
                .ok_or_else(bad_state)?;
            let (block, after) = block.split_at(end_marker);
            rest = after;
            let (label, der) = der::pem::decode_vec(block.as_bytes()).map_err(|_| bad_state())?;
            let der = zeroize::Zeroizing::new(der);
            let rsa = |der: &[u8]| RsaPrivateKey::from_pkcs8_der(der).map_err(|_| bad_state());
            match label {
                "CERTIFICATE" => {
                    certs.push(Certificate::from_der(&der).map_err(|e| Error::BadCert {
                        role: CertRole::Chain,
                        error: CertError::Der(e),
                    })?)
                }
                PEM_ARK_KEY => ark_key = Some(rsa(&der)?),
                PEM_ASK_KEY => ask_key = Some(rsa(&der)?),
                PEM_VCEK_KEY => {
                    let key = p384::SecretKey::from_pkcs8_der(&der).map_err(|_| bad_state())?;
                    vcek_key = Some(p384::ecdsa::SigningKey::from(key));
                }
                _ => return Err(bad_state()),
            }
        }
        let [ark, ask, vcek]: [Certificate; 3] = certs
            .try_into()
            .map_err(|_| Error::MissingCert(CertRole::Chain))?;
        Ok(InsecureEmulatedTee {
            ark,
            ask,
            vcek,
            ark_key: ark_key.ok_or_else(bad_state)?,
            ask_key: ask_key.ok_or_else(bad_state)?,
            vcek_key: vcek_key.ok_or_else(bad_state)?,
            measurement: [0; 48],
        })
    }

    /// **Insecure:** the whole state, private keys included, as PEM, to
    /// reuse the same emulated chain across runs.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] or [`Error::BadCert`] if encoding fails.
    pub fn to_insecure_state_pem(&self) -> Result<zeroize::Zeroizing<String>, Error> {
        let mut out = zeroize::Zeroizing::new(String::new());
        for cert in [&self.ark, &self.ask, &self.vcek] {
            out.push_str(&cert.to_pem(LineEnding::LF).map_err(cert_error)?);
        }
        let blocks = [
            (PEM_ARK_KEY, self.ark_key.to_pkcs8_der().map_err(key_error)?),
            (PEM_ASK_KEY, self.ask_key.to_pkcs8_der().map_err(key_error)?),
            (
                PEM_VCEK_KEY,
                p384::SecretKey::from(&self.vcek_key)
                    .to_pkcs8_der()
                    .map_err(key_error)?,
            ),
        ];
        for (label, doc) in blocks {
            let pem = zeroize::Zeroizing::new(
                der::pem::encode_string(label, LineEnding::LF, doc.as_bytes())
                    .map_err(key_error)?,
            );
            out.push_str(&pem);
        }
        Ok(out)
    }

    /// Sets the launch measurement that reports carry (zero by default).
    pub fn set_measurement(&mut self, measurement: [u8; 48]) {
        self.measurement = measurement;
    }

    /// The emulated ARK, DER: pass it to
    /// [`crate::TrustedRoots::add_insecure_root`].
    ///
    /// # Errors
    ///
    /// [`Error::BadCert`] if encoding fails.
    pub fn insecure_ark_der(&self) -> Result<Vec<u8>, Error> {
        self.ark.to_der().map_err(cert_error)
    }

    /// The chain VCEK, ASK, ARK as one PEM bundle (the form of MAA's
    /// `VcekCertChain`).
    ///
    /// # Errors
    ///
    /// [`Error::BadCert`] if encoding fails.
    pub fn cert_chain_pem(&self) -> Result<String, Error> {
        let mut out = String::new();
        for cert in [&self.vcek, &self.ask, &self.ark] {
            out.push_str(&cert.to_pem(LineEnding::LF).map_err(cert_error)?);
        }
        Ok(out)
    }

    /// **Insecure:** a 1184-byte SNP-shaped report (version 2, VMPL 0,
    /// debug off) holding `report_data` and `host_data`, signed with the
    /// emulated VCEK.
    pub fn report(&self, report_data: &[u8; 64], host_data: &[u8; 32]) -> Vec<u8> {
        let mut r = vec![0u8; REPORT_LEN];
        r[0x00..0x04].copy_from_slice(&2u32.to_le_bytes()); // version
        r[0x08..0x10].copy_from_slice(&POLICY.to_le_bytes());
        r[0x30..0x34].copy_from_slice(&0u32.to_le_bytes()); // VMPL 0
        r[0x34..0x38].copy_from_slice(&1u32.to_le_bytes()); // ECDSA P-384
        // KEY_INFO 0: signed by the VCEK. REPORTED_TCB 0, as the VCEK's
        // TCB extensions say.
        r[0x50..0x90].copy_from_slice(report_data);
        r[0x90..0xC0].copy_from_slice(&self.measurement);
        r[0xC0..0xE0].copy_from_slice(host_data);
        r[0x1A0..0x1E0].copy_from_slice(&chip_id(&self.vcek_key)); // CHIP_ID: the VCEK's hwID
        let signature: p384::ecdsa::Signature = self.vcek_key.sign(&r[..SIGNED_LEN]);
        let (sig_r, sig_s) = signature.split_bytes();
        for (field, scalar) in [(SIGNED_LEN, sig_r), (SIGNED_LEN + 72, sig_s)] {
            let mut le = scalar.to_vec();
            le.reverse();
            r[field..field + 48].copy_from_slice(&le);
        }
        r
    }

    /// **Insecure:** [`report`](Self::report) wrapped with the chain as
    /// the `SnpEvidence` of an MAA request (no UVM endorsements).
    ///
    /// # Errors
    ///
    /// [`Error::BadCert`] if encoding the chain fails.
    pub fn evidence(
        &self,
        report_data: &[u8; 64],
        host_data: &[u8; 32],
    ) -> Result<SnpEvidence, Error> {
        let report = self.report(report_data, host_data);
        Ok(SnpEvidence::new(
            &report,
            self.cert_chain_pem()?.as_bytes(),
            &[],
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{CertChain, TrustedRoots, Verifier};

    #[test]
    fn emulated_report_verifies_only_with_the_insecure_root() {
        let tee = InsecureEmulatedTee::generate().unwrap();
        let report = tee.report(&[1; 64], &[2; 32]);
        let chain = CertChain::from_pem(tee.cert_chain_pem().unwrap().as_bytes()).unwrap();
        let now = SystemTime::now();

        let mut roots = TrustedRoots::empty();
        roots
            .add_insecure_root(&tee.insecure_ark_der().unwrap())
            .unwrap();
        let verified = Verifier::new(roots.clone())
            .verify(&report, &chain, now)
            .unwrap();
        assert!(verified.insecure_root());
        assert_eq!(verified.report_data, [1; 64]);
        assert_eq!(verified.host_data, [2; 32]);
        assert_eq!(verified.vmpl, 0);
        assert!(!verified.policy.debug());
        // CHIP_ID is the VCEK's hwID, so the extension check compared it.
        assert_eq!(verified.chip_id, chip_id(&tee.vcek_key));
        assert!(verified.chip_id.iter().any(|&b| b != 0));

        let err = Verifier::new(TrustedRoots::amd())
            .verify(&report, &chain, now)
            .unwrap_err();
        assert!(matches!(err, Error::UnknownRoot), "{err}");

        for offset in [0x50, 0xC0, SIGNED_LEN + 3, REPORT_LEN - 1] {
            let mut flipped = report.clone();
            flipped[offset] ^= 1;
            assert!(
                Verifier::new(roots.clone())
                    .verify(&flipped, &chain, now)
                    .is_err(),
                "flipped byte {offset:#x} verified"
            );
        }
    }

    #[test]
    fn state_round_trips() {
        let tee = InsecureEmulatedTee::generate().unwrap();
        let state = tee.to_insecure_state_pem().unwrap();
        let again = InsecureEmulatedTee::from_insecure_state_pem(&state).unwrap();
        assert_eq!(
            again.insecure_ark_der().unwrap(),
            tee.insecure_ark_der().unwrap()
        );
        let report = again.report(&[3; 64], &[4; 32]);
        let chain = CertChain::from_pem(tee.cert_chain_pem().unwrap().as_bytes()).unwrap();
        let mut roots = TrustedRoots::empty();
        roots
            .add_insecure_root(&tee.insecure_ark_der().unwrap())
            .unwrap();
        Verifier::new(roots)
            .verify(&report, &chain, SystemTime::now())
            .unwrap();
    }
}
