//! Certificates of the VCEK/VLEK → ASK/ASVK → ARK chain, and the ways
//! they arrive: THIM JSON, PEM bundles, DER files.

use std::time::SystemTime;

use der::{
    Decode, Reader, SliceReader,
    asn1::{ObjectIdentifier, PrintableStringRef, Utf8StringRef},
};
use p384::ecdsa::signature::Verifier as _;
use rsa::{Pss, RsaPublicKey, pkcs1::DecodeRsaPublicKey, pkcs1::RsaPssParams};
use sha2::{Digest, Sha384};
use x509_cert::Certificate;

use crate::{CertError, CertRole, Error, report::TcbVersion, roots::Product};

const OID_CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const OID_RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
const OID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

fn bad(role: CertRole, error: CertError) -> Error {
    Error::BadCert { role, error }
}

/// A parsed certificate that keeps the exact bytes its signature covers.
#[derive(Debug, Clone)]
pub(crate) struct Cert {
    cert: Certificate,
    tbs: Vec<u8>,
}

impl Cert {
    pub(crate) fn from_der(der: &[u8], role: CertRole) -> Result<Cert, Error> {
        let der_error = |e| bad(role, CertError::Der(e));
        let cert = Certificate::from_der(der).map_err(der_error)?;
        // The signed bytes exactly as they came, not re-encoded.
        let mut reader = SliceReader::new(der).map_err(der_error)?;
        let tbs = reader
            .sequence(|r| {
                let tbs = r.tlv_bytes()?.to_vec();
                // Leave the rest (algorithm, signature) unread but consumed.
                let rest = r.remaining_len();
                r.read_slice(rest)?;
                Ok(tbs)
            })
            .map_err(der_error)?;
        if cert.signature_algorithm != cert.tbs_certificate.signature {
            return Err(bad(role, CertError::AlgorithmMismatch));
        }
        Ok(Cert { cert, tbs })
    }

    /// Reads every `CERTIFICATE` PEM block in `pem`, ignoring text
    /// between blocks. (Not `Certificate::load_pem_chain`: x509-cert 0.2.5
    /// underflows on empty input, found by the `snp_report` fuzz target.)
    pub(crate) fn from_pem_bundle(pem: &[u8]) -> Result<Vec<Cert>, Error> {
        const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
        const END: &[u8] = b"-----END CERTIFICATE-----";
        fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
            haystack.windows(needle.len()).position(|w| w == needle)
        }
        let mut certs = Vec::new();
        let mut rest = pem;
        while let Some(start) = find(rest, BEGIN) {
            let block = rest.get(start..).unwrap_or_default();
            let end = find(block, END)
                .and_then(|e| e.checked_add(END.len()))
                .ok_or_else(|| bad(CertRole::Chain, CertError::UnterminatedPem))?;
            let (block, after) = block
                .split_at_checked(end)
                .ok_or_else(|| bad(CertRole::Chain, CertError::UnterminatedPem))?;
            let (_, der) = der::pem::decode_vec(block)
                .map_err(|e| bad(CertRole::Chain, CertError::Der(e.into())))?;
            certs.push(Cert::from_der(&der, CertRole::Chain)?);
            rest = after;
        }
        if certs.is_empty() {
            return Err(bad(CertRole::Chain, CertError::NoPem));
        }
        Ok(certs)
    }

    pub(crate) fn common_name(&self) -> Option<String> {
        self.cert
            .tbs_certificate
            .subject
            .0
            .iter()
            .flat_map(|rdn| rdn.0.iter())
            .find(|atv| atv.oid == OID_CN)
            .and_then(|atv| {
                atv.value
                    .decode_as::<Utf8StringRef<'_>>()
                    .map(|s| s.as_str().to_owned())
                    .or_else(|_| {
                        atv.value
                            .decode_as::<PrintableStringRef<'_>>()
                            .map(|s| s.as_str().to_owned())
                    })
                    .ok()
            })
    }

    pub(crate) fn is_issued_by(&self, issuer: &Cert) -> bool {
        self.cert.tbs_certificate.issuer == issuer.cert.tbs_certificate.subject
    }

    pub(crate) fn same_key(&self, other: &Cert) -> bool {
        self.cert.tbs_certificate.subject_public_key_info
            == other.cert.tbs_certificate.subject_public_key_info
    }

    pub(crate) fn check_validity(&self, now: SystemTime, role: CertRole) -> Result<(), Error> {
        let validity = &self.cert.tbs_certificate.validity;
        let not_before = validity.not_before.to_system_time();
        let not_after = validity.not_after.to_system_time();
        if now < not_before {
            return Err(Error::CertNotYetValid { role, not_before });
        }
        if now > not_after {
            return Err(Error::CertExpired { role, not_after });
        }
        Ok(())
    }

    pub(crate) fn rsa_key(&self, role: CertRole) -> Result<RsaPublicKey, Error> {
        rsa_key_of(&self.cert).map_err(|error| bad(role, error))
    }

    /// Checks that `issuer` signed this certificate with RSA-PSS, SHA-384,
    /// MGF1-SHA-384 and a 48-byte salt, as all of AMD's certificates are.
    pub(crate) fn verify_signed_by(
        &self,
        issuer: &Cert,
        role: CertRole,
        issuer_role: CertRole,
    ) -> Result<(), Error> {
        let alg = &self.cert.signature_algorithm;
        if alg.oid != OID_RSASSA_PSS {
            return Err(bad(role, CertError::NotPss));
        }
        let params = alg
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<RsaPssParams<'_>>().ok())
            .ok_or_else(|| bad(role, CertError::PssParameters))?;
        let mgf_hash = params.mask_gen.parameters.as_ref().map(|h| h.oid);
        if params.hash.oid != OID_SHA384
            || params.mask_gen.oid != OID_MGF1
            || mgf_hash != Some(OID_SHA384)
            || params.salt_len != 48
        {
            return Err(bad(role, CertError::PssParameters));
        }
        let key = issuer.rsa_key(issuer_role)?;
        let signature = self
            .cert
            .signature
            .as_bytes()
            .ok_or(Error::BadCertSignature { role })?;
        let digest = Sha384::digest(&self.tbs);
        key.verify(Pss::new_with_salt::<Sha384>(48), &digest, signature)
            .map_err(|_| Error::BadCertSignature { role })
    }

    /// The certificate, DER-encoded again.
    #[cfg(test)]
    pub(crate) fn to_der(&self) -> Vec<u8> {
        der::Encode::to_der(&self.cert).unwrap_or_default()
    }

    /// The value (the content of `extnValue`) of the extension `oid`, or
    /// `None` if the certificate has none; `Err` with a reason if it has
    /// more than one.
    pub(crate) fn extension(
        &self,
        oid: ObjectIdentifier,
    ) -> Result<Option<&[u8]>, crate::ExtensionError> {
        let mut found = self
            .cert
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .filter(|ext| ext.extn_id == oid)
            .map(|ext| ext.extn_value.as_bytes());
        let first = found.next();
        if found.next().is_some() {
            return Err(crate::ExtensionError::Repeated);
        }
        Ok(first)
    }

    /// Checks an ECDSA P-384 signature (SHA-384) over `message` with this
    /// certificate's key.
    pub(crate) fn verify_p384(
        &self,
        role: CertRole,
        message: &[u8],
        signature: &p384::ecdsa::Signature,
    ) -> Result<(), Error> {
        let spki = &self.cert.tbs_certificate.subject_public_key_info;
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        if spki.algorithm.oid != OID_EC_PUBLIC_KEY || curve != Some(OID_SECP384R1) {
            return Err(bad(role, CertError::NotP384));
        }
        let key = spki
            .subject_public_key
            .as_bytes()
            .and_then(|point| p384::ecdsa::VerifyingKey::from_sec1_bytes(point).ok())
            .ok_or_else(|| bad(role, CertError::BadPublicKey))?;
        key.verify(message, signature)
            .map_err(|_| Error::BadReportSignature)
    }
}

/// The RSA public key of a certificate (rsaEncryption or RSASSA-PSS).
pub(crate) fn rsa_key_of(cert: &Certificate) -> Result<RsaPublicKey, CertError> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    if spki.algorithm.oid != OID_RSA && spki.algorithm.oid != OID_RSASSA_PSS {
        return Err(CertError::NotRsa);
    }
    let bits = spki
        .subject_public_key
        .as_bytes()
        .ok_or(CertError::BadPublicKey)?;
    RsaPublicKey::from_pkcs1_der(bits).map_err(|_| CertError::BadPublicKey)
}

/// What a certificate is, from its subject CN.
fn role_of(cert: &Cert) -> Result<CertRole, Error> {
    let cn = cert
        .common_name()
        .ok_or_else(|| bad(CertRole::Chain, CertError::NoCommonName))?;
    // "Insecure-Emulated" names the emulated TEE's ASK and ARK; they only
    // verify against a root added with `TrustedRoots::add_insecure_root`.
    let product = |name: &str| ["Milan", "Genoa", "Turin", "Insecure-Emulated"].contains(&name);
    Ok(match cn.as_str() {
        "SEV-VCEK" => CertRole::Vcek,
        "SEV-VLEK" => CertRole::Vlek,
        cn if cn.strip_prefix("SEV-VLEK-").is_some_and(product) => CertRole::Asvk,
        cn if cn.strip_prefix("SEV-").is_some_and(product) => CertRole::Ask,
        cn if cn.strip_prefix("ARK-").is_some_and(product) => CertRole::Ark,
        _ => return Err(bad(CertRole::Chain, CertError::UnknownName(cn))),
    })
}

/// The certificates that endorse a report: the VCEK or VLEK, and
/// optionally the ASK (or ASVK for a VLEK) and the ARK. A missing ASK or
/// ARK is taken from the verifier's trusted roots.
///
/// Certificates arrive as THIM JSON (what Azure's platform serves),
/// PEM bundles, or DER; [`from_bytes`](Self::from_bytes) tells them
/// apart, and a [`CertificateFetcher`] gets them from a service.
#[derive(Debug, Clone)]
pub struct CertChain {
    pub(crate) vek: Cert,
    pub(crate) vek_is_vlek: bool,
    pub(crate) ask: Option<Cert>,
    pub(crate) ark: Option<Cert>,
    tcbm: Option<u64>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ThimJson {
    vcek_cert: String,
    certificate_chain: String,
    tcbm: Option<String>,
}

impl CertChain {
    /// Builds a chain from parsed certificates, each identified by its
    /// subject CN (`SEV-VCEK`, `SEV-VLEK`, `SEV-<product>`,
    /// `SEV-VLEK-<product>`, `ARK-<product>`), in any order.
    fn from_certs(certs: Vec<Cert>) -> Result<CertChain, Error> {
        let mut vek = None;
        let mut ask = None;
        let mut ark = None;
        for cert in certs {
            let role = role_of(&cert)?;
            let (slot, vlek) = match role {
                CertRole::Vcek => (&mut vek, false),
                CertRole::Vlek => (&mut vek, true),
                CertRole::Ask => (&mut ask, false),
                CertRole::Asvk => (&mut ask, true),
                _ => (&mut ark, false),
            };
            if slot.is_some() {
                return Err(bad(CertRole::Chain, CertError::Duplicate(role)));
            }
            *slot = Some((cert, vlek));
        }
        let (vek, vek_is_vlek) = vek.ok_or(Error::MissingCert(CertRole::Vcek))?;
        Ok(CertChain {
            vek,
            vek_is_vlek,
            ask: ask.map(|(c, _)| c),
            ark: ark.map(|(c, _)| c),
            tcbm: None,
        })
    }

    /// Reads a PEM bundle of the VCEK or VLEK and, optionally, the ASK
    /// (or ASVK) and ARK, in any order.
    ///
    /// # Errors
    ///
    /// [`Error::BadCert`] for a bundle without certificates, with a
    /// malformed one, an unknown one or two of a kind, and
    /// [`Error::MissingCert`] for a bundle without a VCEK or VLEK.
    pub fn from_pem(pem: &[u8]) -> Result<CertChain, Error> {
        CertChain::from_certs(Cert::from_pem_bundle(pem)?)
    }

    /// Reads DER certificates (the VCEK or VLEK and optionally the ASK or
    /// ASVK and the ARK), in any order.
    ///
    /// # Errors
    ///
    /// As [`from_pem`](Self::from_pem).
    pub fn from_der<'a>(ders: impl IntoIterator<Item = &'a [u8]>) -> Result<CertChain, Error> {
        let certs = ders
            .into_iter()
            .map(|der| Cert::from_der(der, CertRole::Chain))
            .collect::<Result<Vec<_>, _>>()?;
        CertChain::from_certs(certs)
    }

    /// Reads the JSON that Azure's THIM endpoint (and the ACI sidecar's
    /// `UVM_HOST_AMD_CERTIFICATE`) serves: `{"vcekCert": PEM,
    /// "certificateChain": PEM of ASK and ARK, "tcbm": hex}`.
    ///
    /// # Errors
    ///
    /// As [`from_pem`](Self::from_pem), and [`Error::BadCert`] for bytes
    /// that are not THIM JSON or a `vcekCert` that holds a VLEK.
    pub fn from_thim_json(json: &[u8]) -> Result<CertChain, Error> {
        let thim: ThimJson =
            serde_json::from_slice(json).map_err(|e| bad(CertRole::Chain, CertError::Thim(e)))?;
        let mut pem = thim.vcek_cert.into_bytes();
        pem.push(b'\n');
        pem.extend_from_slice(thim.certificate_chain.as_bytes());
        let mut chain = CertChain::from_pem(&pem)?;
        if chain.vek_is_vlek {
            return Err(bad(CertRole::Vcek, CertError::VlekAsVcek));
        }
        chain.tcbm = match thim.tcbm {
            Some(hex) => Some(
                u64::from_str_radix(&hex, 16)
                    .map_err(|e| bad(CertRole::Chain, CertError::Tcbm(e)))?,
            ),
            None => None,
        };
        Ok(chain)
    }

    /// Reads certificates in whichever form they come: THIM JSON (the
    /// first non-space byte is `{`), a PEM bundle, or one DER certificate
    /// (the VCEK or VLEK alone).
    ///
    /// # Errors
    ///
    /// As [`from_thim_json`](Self::from_thim_json), [`from_pem`](Self::from_pem)
    /// or [`from_der`](Self::from_der).
    pub fn from_bytes(data: &[u8]) -> Result<CertChain, Error> {
        // A DER certificate starts with a SEQUENCE tag; PEM and JSON are text.
        if data.first() == Some(&0x30) {
            return CertChain::from_der([data]);
        }
        match data.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => CertChain::from_thim_json(data),
            _ => CertChain::from_pem(data),
        }
    }

    /// Reads the file at `path` with [`from_bytes`](Self::from_bytes).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the file cannot be read, otherwise as
    /// [`from_bytes`](Self::from_bytes).
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<CertChain, Error> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        CertChain::from_bytes(&data)
    }

    /// Whether the endorsement key is a VLEK (otherwise a VCEK).
    pub fn is_vlek(&self) -> bool {
        self.vek_is_vlek
    }

    /// Whether the chain brings its own ASK (or ASVK).
    pub fn has_ask(&self) -> bool {
        self.ask.is_some()
    }

    /// Whether the chain brings its own ARK.
    pub fn has_ark(&self) -> bool {
        self.ark.is_some()
    }

    /// The THIM `tcbm` (the raw TCB the VCEK was issued for), if read
    /// from THIM JSON.
    pub fn tcbm(&self) -> Option<u64> {
        self.tcbm
    }

    pub(crate) fn vek_role(&self) -> CertRole {
        if self.vek_is_vlek {
            CertRole::Vlek
        } else {
            CertRole::Vcek
        }
    }

    pub(crate) fn ask_role(&self) -> CertRole {
        if self.vek_is_vlek {
            CertRole::Asvk
        } else {
            CertRole::Ask
        }
    }
}

/// Gets the certificates for a chip and TCB from somewhere: AMD's key
/// distribution service, Azure THIM, a cache. This crate has no network
/// code; `confsum-server`'s `KdsFetcher` implements it over HTTPS, and
/// tests inject their own.
pub trait CertificateFetcher {
    /// The chain (VCEK, and the ASK and ARK when the source has them) for
    /// `chip_id` at `reported_tcb` on `product`.
    ///
    /// # Errors
    ///
    /// [`Error::Fetch`] when the source cannot be reached or refuses, and
    /// the errors of [`CertChain`]'s readers for what it sends.
    fn fetch(
        &self,
        product: Product,
        chip_id: &[u8; 64],
        reported_tcb: &TcbVersion,
    ) -> Result<CertChain, Error>;
}
