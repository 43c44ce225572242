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

use crate::{Error, report::TcbVersion, roots::Product};

const OID_CN: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");
const OID_RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_MGF1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.8");
const OID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

fn bad(cert: &'static str, reason: impl ToString) -> Error {
    Error::BadCert {
        cert,
        reason: reason.to_string(),
    }
}

/// A parsed certificate that keeps the exact bytes its signature covers.
#[derive(Debug, Clone)]
pub(crate) struct Cert {
    cert: Certificate,
    tbs: Vec<u8>,
}

impl Cert {
    pub(crate) fn from_der(der: &[u8], label: &'static str) -> Result<Cert, Error> {
        let cert = Certificate::from_der(der).map_err(|e| bad(label, e))?;
        // The signed bytes exactly as they came, not re-encoded.
        let mut reader = SliceReader::new(der).map_err(|e| bad(label, e))?;
        let tbs = reader
            .sequence(|r| {
                let tbs = r.tlv_bytes()?.to_vec();
                // Leave the rest (algorithm, signature) unread but consumed.
                let rest = r.remaining_len();
                r.read_slice(rest)?;
                Ok(tbs)
            })
            .map_err(|e| bad(label, e))?;
        if cert.signature_algorithm != cert.tbs_certificate.signature {
            return Err(bad(
                label,
                "the signature algorithm differs from the one in the signed part",
            ));
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
                .ok_or_else(|| bad("chain", "a PEM certificate has no END line"))?;
            let (block, after) = block
                .split_at_checked(end)
                .ok_or_else(|| bad("chain", "a PEM certificate has no END line"))?;
            let (_, der) = der::pem::decode_vec(block).map_err(|e| bad("chain", e))?;
            certs.push(Cert::from_der(&der, "chain")?);
            rest = after;
        }
        if certs.is_empty() {
            return Err(bad("chain", "no PEM certificate found"));
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

    pub(crate) fn check_validity(&self, now: SystemTime, label: &'static str) -> Result<(), Error> {
        let validity = &self.cert.tbs_certificate.validity;
        let not_before = validity.not_before.to_system_time();
        let not_after = validity.not_after.to_system_time();
        if now < not_before {
            return Err(Error::CertNotYetValid {
                cert: label,
                not_before,
            });
        }
        if now > not_after {
            return Err(Error::CertExpired {
                cert: label,
                not_after,
            });
        }
        Ok(())
    }

    fn rsa_key(&self, label: &'static str) -> Result<RsaPublicKey, Error> {
        let spki = &self.cert.tbs_certificate.subject_public_key_info;
        if spki.algorithm.oid != OID_RSA && spki.algorithm.oid != OID_RSASSA_PSS {
            return Err(bad(label, "the public key is not an RSA key"));
        }
        let bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| bad(label, "the public key is not whole bytes"))?;
        RsaPublicKey::from_pkcs1_der(bits).map_err(|e| bad(label, e))
    }

    /// Checks that `issuer` signed this certificate with RSA-PSS, SHA-384,
    /// MGF1-SHA-384 and a 48-byte salt, as all of AMD's certificates are.
    pub(crate) fn verify_signed_by(
        &self,
        issuer: &Cert,
        label: &'static str,
        issuer_label: &'static str,
    ) -> Result<(), Error> {
        let alg = &self.cert.signature_algorithm;
        if alg.oid != OID_RSASSA_PSS {
            return Err(bad(label, "not signed with RSA-PSS"));
        }
        let params = alg
            .parameters
            .as_ref()
            .ok_or_else(|| bad(label, "RSA-PSS without parameters"))?
            .decode_as::<RsaPssParams<'_>>()
            .map_err(|e| bad(label, e))?;
        let mgf_hash = params.mask_gen.parameters.as_ref().map(|h| h.oid);
        if params.hash.oid != OID_SHA384
            || params.mask_gen.oid != OID_MGF1
            || mgf_hash != Some(OID_SHA384)
            || params.salt_len != 48
        {
            return Err(bad(
                label,
                "RSA-PSS parameters are not SHA-384, MGF1-SHA-384, salt 48",
            ));
        }
        let key = issuer.rsa_key(issuer_label)?;
        let signature = self
            .cert
            .signature
            .as_bytes()
            .ok_or(Error::BadCertSignature { cert: label })?;
        let digest = Sha384::digest(&self.tbs);
        key.verify(Pss::new_with_salt::<Sha384>(48), &digest, signature)
            .map_err(|_| Error::BadCertSignature { cert: label })
    }

    /// The certificate, DER-encoded again.
    #[cfg(test)]
    pub(crate) fn to_der(&self) -> Vec<u8> {
        der::Encode::to_der(&self.cert).unwrap_or_default()
    }

    /// The value (the content of `extnValue`) of the extension `oid`, or
    /// `None` if the certificate has none; `Err` with a reason if it has
    /// more than one.
    pub(crate) fn extension(&self, oid: ObjectIdentifier) -> Result<Option<&[u8]>, &'static str> {
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
            return Err("the extension appears more than once");
        }
        Ok(first)
    }

    /// Checks an ECDSA P-384 signature (SHA-384) over `message` with this
    /// certificate's key.
    pub(crate) fn verify_p384(
        &self,
        label: &'static str,
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
            return Err(bad(label, "the public key is not a P-384 key"));
        }
        let point = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| bad(label, "the public key is not whole bytes"))?;
        let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(point).map_err(|e| bad(label, e))?;
        key.verify(message, signature)
            .map_err(|_| Error::BadReportSignature)
    }
}

/// What a certificate is, from its subject CN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Vcek,
    Vlek,
    Ask,
    Asvk,
    Ark,
}

fn role_of(cert: &Cert) -> Result<Role, Error> {
    let cn = cert
        .common_name()
        .ok_or_else(|| bad("chain", "a certificate has no common name"))?;
    // "Insecure-Emulated" names the emulated TEE's ASK and ARK; they only
    // verify against a root added with `TrustedRoots::add_insecure_root`.
    let product = |name: &str| ["Milan", "Genoa", "Turin", "Insecure-Emulated"].contains(&name);
    Ok(match cn.as_str() {
        "SEV-VCEK" => Role::Vcek,
        "SEV-VLEK" => Role::Vlek,
        cn if cn.strip_prefix("SEV-VLEK-").is_some_and(product) => Role::Asvk,
        cn if cn.strip_prefix("SEV-").is_some_and(product) => Role::Ask,
        cn if cn.strip_prefix("ARK-").is_some_and(product) => Role::Ark,
        other => return Err(bad("chain", format!("unknown certificate {other:?}"))),
    })
}

/// The certificates that endorse a report: the VCEK or VLEK, and
/// optionally the ASK (or ASVK for a VLEK) and the ARK. A missing ASK or
/// ARK is taken from the verifier's trusted roots.
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
            let (slot, vlek, name) = match role_of(&cert)? {
                Role::Vcek => (&mut vek, false, "VCEK"),
                Role::Vlek => (&mut vek, true, "VLEK"),
                Role::Ask => (&mut ask, false, "ASK"),
                Role::Asvk => (&mut ask, true, "ASVK"),
                Role::Ark => (&mut ark, false, "ARK"),
            };
            if slot.is_some() {
                return Err(bad("chain", format!("more than one {name} certificate")));
            }
            *slot = Some((cert, vlek));
        }
        let (vek, vek_is_vlek) = vek.ok_or(Error::MissingCert("VCEK or VLEK"))?;
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
    pub fn from_pem(pem: &[u8]) -> Result<CertChain, Error> {
        CertChain::from_certs(Cert::from_pem_bundle(pem)?)
    }

    /// Reads DER certificates (the VCEK or VLEK and optionally the ASK or
    /// ASVK and the ARK), in any order.
    pub fn from_der<'a>(ders: impl IntoIterator<Item = &'a [u8]>) -> Result<CertChain, Error> {
        let certs = ders
            .into_iter()
            .map(|der| Cert::from_der(der, "chain"))
            .collect::<Result<Vec<_>, _>>()?;
        CertChain::from_certs(certs)
    }

    /// Reads the JSON that Azure's THIM endpoint (and the ACI sidecar's
    /// `UVM_HOST_AMD_CERTIFICATE`) serves: `{"vcekCert": PEM,
    /// "certificateChain": PEM of ASK and ARK, "tcbm": hex}`.
    pub fn from_thim_json(json: &[u8]) -> Result<CertChain, Error> {
        let thim: ThimJson = serde_json::from_slice(json).map_err(|e| bad("chain", e))?;
        let mut pem = thim.vcek_cert.into_bytes();
        pem.push(b'\n');
        pem.extend_from_slice(thim.certificate_chain.as_bytes());
        let mut chain = CertChain::from_pem(&pem)?;
        if chain.vek_is_vlek {
            return Err(bad("VCEK", "vcekCert holds a VLEK"));
        }
        chain.tcbm = match thim.tcbm {
            Some(hex) => Some(
                u64::from_str_radix(&hex, 16).map_err(|e| bad("chain", format!("tcbm: {e}")))?,
            ),
            None => None,
        };
        Ok(chain)
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

    pub(crate) fn vek_label(&self) -> &'static str {
        if self.vek_is_vlek { "VLEK" } else { "VCEK" }
    }

    pub(crate) fn ask_label(&self) -> &'static str {
        if self.vek_is_vlek { "ASVK" } else { "ASK" }
    }
}

/// Gets the certificates for a chip and TCB from somewhere (AMD's key
/// distribution service, Azure THIM, a cache). This crate has no network
/// implementation: callers inject one.
pub trait CertificateFetcher {
    /// The chain for `chip_id` at `reported_tcb` on `product`.
    fn fetch(
        &self,
        product: Product,
        chip_id: &[u8; 64],
        reported_tcb: &TcbVersion,
    ) -> Result<CertChain, Error>;
}
