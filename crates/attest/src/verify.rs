//! Checking a report's signature and its certificate chain.

use std::{ops::Deref, time::SystemTime};

use der::{
    Decode,
    asn1::{Ia5StringRef, ObjectIdentifier, OctetStringRef},
};

use crate::{
    CertChain, CertRole, Error, ExtensionError,
    certs::Cert,
    report::{AttestationReport, REPORT_LEN, SIGNED_LEN, SigningKey, TcbLayout},
    roots::{Product, Root, TrustedRoots},
};

/// Length of the significant (P-384) part of each 72-byte R and S field.
const SCALAR_LEN: usize = 48;
const FIELD_LEN: usize = 72;

/// AMD's VCEK/VLEK extensions (KDS specification, AMD publication 57230).
const OID_PRODUCT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.2");
const OID_BL_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
const OID_TEE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
const OID_SNP_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
const OID_UCODE_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
const OID_FMC_SPL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.3.9");
const OID_HWID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1.4");
/// Length of the hwID of Milan and Genoa VCEKs (the report's CHIP_ID).
const HWID_LEN: usize = 64;
/// Length of the hwID of Turin VCEKs (the first 8 bytes of CHIP_ID).
const HWID_LEN_TURIN: usize = 8;

/// One TCB component of REPORTED_TCB and the extension that certifies it.
struct TcbComponent {
    ext: &'static str,
    oid: ObjectIdentifier,
    vcek_field: &'static str,
    vlek_field: &'static str,
    value: fn(&AttestationReport) -> Option<u8>,
}

const TCB_COMPONENTS: [TcbComponent; 5] = [
    TcbComponent {
        ext: "blSPL",
        oid: OID_BL_SPL,
        vcek_field: "VCEK TCB bootloader",
        vlek_field: "VLEK TCB bootloader",
        value: |r| Some(r.reported_tcb.bootloader),
    },
    TcbComponent {
        ext: "teeSPL",
        oid: OID_TEE_SPL,
        vcek_field: "VCEK TCB tee",
        vlek_field: "VLEK TCB tee",
        value: |r| Some(r.reported_tcb.tee),
    },
    TcbComponent {
        ext: "snpSPL",
        oid: OID_SNP_SPL,
        vcek_field: "VCEK TCB snp",
        vlek_field: "VLEK TCB snp",
        value: |r| Some(r.reported_tcb.snp),
    },
    TcbComponent {
        ext: "ucodeSPL",
        oid: OID_UCODE_SPL,
        vcek_field: "VCEK TCB microcode",
        vlek_field: "VLEK TCB microcode",
        value: |r| Some(r.reported_tcb.microcode),
    },
    TcbComponent {
        ext: "fmcSPL",
        oid: OID_FMC_SPL,
        vcek_field: "VCEK TCB fmc",
        vlek_field: "VLEK TCB fmc",
        value: |r| r.reported_tcb.fmc,
    },
];

/// Checks AMD's extensions of the VCEK (VLEK) against the report: the
/// TCB components (blSPL, teeSPL, snpSPL, ucodeSPL, and fmcSPL for a
/// Turin report) must equal REPORTED_TCB's; a VCEK's hwID must equal
/// CHIP_ID, unless CHIP_ID is all zero (the platform masks it,
/// MASK_CHIP_ID); the product name, when present, must name `product`.
/// A VLEK has no hwID.
fn check_vek_extensions(
    vek: &Cert,
    is_vlek: bool,
    report: &AttestationReport,
    product: Option<Product>,
) -> Result<(), Error> {
    let role = if is_vlek {
        CertRole::Vlek
    } else {
        CertRole::Vcek
    };
    let unusable = |extension: &'static str, error: ExtensionError| Error::VcekExtension {
        role,
        extension,
        error,
    };
    let extension = |name: &'static str, oid: ObjectIdentifier| {
        vek.extension(oid).map_err(|error| unusable(name, error))
    };

    for c in &TCB_COMPONENTS {
        let reported = (c.value)(report);
        let Some(value) = extension(c.ext, c.oid)? else {
            if reported.is_some() {
                return Err(unusable(c.ext, ExtensionError::Missing));
            }
            continue;
        };
        let certified =
            u8::from_der(value).map_err(|e| unusable(c.ext, ExtensionError::NotInteger(e)))?;
        let field = if is_vlek { c.vlek_field } else { c.vcek_field };
        let actual = match reported {
            Some(v) if v == certified => continue,
            Some(v) => v.to_string(),
            None => "none (not a Turin report)".to_owned(),
        };
        return Err(Error::Mismatch {
            field,
            expected: certified.to_string(),
            actual,
        });
    }

    if !is_vlek {
        let value = extension("hwID", OID_HWID)?
            .ok_or_else(|| unusable("hwID", ExtensionError::Missing))?;
        // AMD's KDS puts the raw bytes in the extension, without an
        // OCTET STRING header; accept both.
        let hwid = if matches!(value.len(), HWID_LEN | HWID_LEN_TURIN) {
            value
        } else {
            OctetStringRef::from_der(value)
                .map_err(|e| unusable("hwID", ExtensionError::NotOctetString(e)))?
                .as_bytes()
        };
        let turin = report.tcb_layout() == TcbLayout::Turin;
        if hwid.len() != HWID_LEN && !(turin && hwid.len() == HWID_LEN_TURIN) {
            return Err(unusable(
                "hwID",
                ExtensionError::Length {
                    len: hwid.len(),
                    expected: HWID_LEN,
                },
            ));
        }
        let masked = report.chip_id.iter().all(|&b| b == 0);
        if !masked && report.chip_id.get(..hwid.len()) != Some(hwid) {
            return Err(Error::Mismatch {
                field: "VCEK hwID",
                expected: hex::encode(hwid),
                actual: hex::encode(report.chip_id),
            });
        }
    }

    if let (Some(value), Some(product)) = (extension("productName", OID_PRODUCT_NAME)?, product) {
        let name = Ia5StringRef::from_der(value)
            .map_err(|e| unusable("productName", ExtensionError::NotIa5String(e)))?;
        let line = name.as_str().split('-').next().unwrap_or_default();
        if line != product.name() {
            return Err(Error::Mismatch {
                field: if is_vlek {
                    "VLEK productName"
                } else {
                    "VCEK productName"
                },
                expected: product.name().to_owned(),
                actual: name.as_str().to_owned(),
            });
        }
    }
    Ok(())
}

/// Verifies reports against a set of trusted roots.
#[derive(Debug, Clone)]
pub struct Verifier {
    roots: TrustedRoots,
}

/// A report whose signature and chain verified. It dereferences to the
/// [`AttestationReport`].
#[derive(Debug, Clone)]
pub struct VerifiedReport {
    report: AttestationReport,
    product: Option<Product>,
    signing_key: SigningKey,
    insecure_root: bool,
}

impl VerifiedReport {
    /// The report.
    pub fn report(&self) -> &AttestationReport {
        &self.report
    }

    /// The product line whose ARK the chain ends in (`None` for an
    /// insecure root).
    pub fn product(&self) -> Option<Product> {
        self.product
    }

    /// The kind of key that signed the report (VCEK or VLEK).
    pub fn signing_key(&self) -> SigningKey {
        self.signing_key
    }

    /// Whether the chain ends in a root added with
    /// [`TrustedRoots::add_insecure_root`]: such a report proves nothing
    /// about real hardware.
    pub fn insecure_root(&self) -> bool {
        self.insecure_root
    }

    /// The report, taken out.
    pub fn into_report(self) -> AttestationReport {
        self.report
    }
}

impl Deref for VerifiedReport {
    type Target = AttestationReport;
    fn deref(&self) -> &AttestationReport {
        &self.report
    }
}

/// Turns a 72-byte little-endian R or S field into a big-endian P-384
/// scalar; the 24 bytes past the first 48 must be zero.
fn scalar(field: &[u8; FIELD_LEN]) -> Result<[u8; SCALAR_LEN], Error> {
    let (low, high) = field.split_at(SCALAR_LEN);
    if high.iter().any(|&b| b != 0) {
        return Err(Error::BadReportSignature);
    }
    let mut be: [u8; SCALAR_LEN] = low.try_into().map_err(|_| Error::BadReportSignature)?;
    be.reverse();
    Ok(be)
}

impl Verifier {
    /// A verifier that trusts `roots`.
    pub fn new(roots: TrustedRoots) -> Verifier {
        Verifier { roots }
    }

    /// The roots trusted.
    pub fn roots(&self) -> &TrustedRoots {
        &self.roots
    }

    /// The ASK (or ASVK) that the chain brings or, if it brings none, the
    /// trusted one that issued the VCEK (VLEK).
    fn find_ask<'a>(&'a self, chain: &'a CertChain) -> Result<&'a Cert, Error> {
        if let Some(ask) = &chain.ask {
            return Ok(ask);
        }
        self.roots
            .roots
            .iter()
            .flat_map(|r| r.intermediates.iter())
            .find(|ask| chain.vek.is_issued_by(ask))
            .ok_or(Error::MissingCert(chain.ask_role()))
    }

    /// The trusted root that `ark` (the chain's) is, or that issued
    /// `ask` when the chain brings no ARK.
    fn find_root(&self, chain: &CertChain, ask: &Cert) -> Result<&Root, Error> {
        match &chain.ark {
            Some(ark) => self.roots.roots.iter().find(|r| r.ark.same_key(ark)),
            None => self.roots.roots.iter().find(|r| ask.is_issued_by(&r.ark)),
        }
        .ok_or(Error::UnknownRoot)
    }

    /// Checks the chain (signatures, issuers, validity at `now`), that it
    /// ends in a trusted ARK, and the report's signature with the VCEK or
    /// VLEK. Nonzero reserved bytes in the signature area are an error,
    /// so that no byte of the report is unchecked. Then AMD's extensions of
    /// the VCEK (VLEK) must agree with the report: its TCB components with
    /// REPORTED_TCB, a VCEK's hwID with CHIP_ID (unless CHIP_ID is all
    /// zero, masked), and its product name, when present, with the root's
    /// product ([`Error::Mismatch`], or [`Error::VcekExtension`] when one is
    /// missing or malformed).
    pub fn verify(
        &self,
        report_bytes: &[u8],
        chain: &CertChain,
        now: SystemTime,
    ) -> Result<VerifiedReport, Error> {
        let report = AttestationReport::parse(report_bytes)?;
        let vek_role = chain.vek_role();
        let ask_role = chain.ask_role();
        let expected = if chain.vek_is_vlek {
            SigningKey::Vlek
        } else {
            SigningKey::Vcek
        };
        if report.signing_key != expected {
            return Err(Error::SigningKeyMismatch {
                report: report.signing_key,
                cert: vek_role,
            });
        }

        // The chain, from the root down.
        let ask = self.find_ask(chain)?;
        let root = self.find_root(chain, ask)?;
        let ark = chain.ark.as_ref().unwrap_or(&root.ark);
        ark.verify_signed_by(ark, CertRole::Ark, CertRole::Ark)?;
        ark.check_validity(now, CertRole::Ark)?;
        if !ask.is_issued_by(ark) {
            return Err(Error::CertWrongIssuer {
                role: ask_role,
                issuer: CertRole::Ark,
            });
        }
        ask.verify_signed_by(ark, ask_role, CertRole::Ark)?;
        ask.check_validity(now, ask_role)?;
        if !chain.vek.is_issued_by(ask) {
            return Err(Error::CertWrongIssuer {
                role: vek_role,
                issuer: ask_role,
            });
        }
        chain.vek.verify_signed_by(ask, vek_role, ask_role)?;
        chain.vek.check_validity(now, vek_role)?;

        // The report.
        if report.signature_algo != 1 {
            return Err(Error::BadReportSignature);
        }
        let bytes = report.as_bytes();
        let reserved = bytes
            .get(SIGNED_LEN + 2 * FIELD_LEN..REPORT_LEN)
            .ok_or(Error::BadReportSignature)?;
        if reserved.iter().any(|&b| b != 0) {
            return Err(Error::BadReportSignature);
        }
        let r = scalar(&report.signature_r())?;
        let s = scalar(&report.signature_s())?;
        let signature =
            p384::ecdsa::Signature::from_scalars(r, s).map_err(|_| Error::BadReportSignature)?;
        chain
            .vek
            .verify_p384(vek_role, report.signed_bytes(), &signature)?;
        check_vek_extensions(&chain.vek, chain.vek_is_vlek, &report, root.product)?;

        if let (Some(signed_by), Some(claimed)) =
            (root.product, report.cpuid.and_then(|c| c.product()))
        {
            if signed_by != claimed {
                return Err(Error::Mismatch {
                    field: "product",
                    expected: signed_by.to_string(),
                    actual: claimed.to_string(),
                });
            }
        }
        Ok(VerifiedReport {
            report,
            product: root.product,
            signing_key: expected,
            insecure_root: root.insecure,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::report::TcbVersion;

    struct Pair {
        name: &'static str,
        vek: Cert,
        vlek: bool,
        report: AttestationReport,
        product: Product,
    }

    fn vek_of_pem(pem: &[u8]) -> Cert {
        Cert::from_pem_bundle(pem)
            .unwrap()
            .into_iter()
            .find(|c| c.common_name().as_deref() == Some("SEV-VCEK"))
            .unwrap()
    }

    fn pairs() -> Vec<Pair> {
        let der = |bytes: &[u8]| Cert::from_der(bytes, CertRole::Vcek).unwrap();
        let parse = |bytes: &[u8]| AttestationReport::parse(bytes).unwrap();
        let virtee =
            hex::decode(include_str!("../testdata/virtee_report_milan.hex").trim()).unwrap();
        vec![
            Pair {
                name: "ACI",
                vek: vek_of_pem(include_bytes!("../testdata/uvm_host_amd_certificate.pem")),
                vlek: false,
                report: parse(include_bytes!("../testdata/snp_report.bin")),
                product: Product::Milan,
            },
            Pair {
                name: "go-sev-guest",
                vek: der(include_bytes!("../testdata/gosevguest_vcek.der")),
                vlek: false,
                report: parse(include_bytes!("../testdata/gosevguest_attestation.bin")),
                product: Product::Milan,
            },
            Pair {
                name: "virtee",
                vek: der(include_bytes!("../testdata/virtee_vcek_milan.der")),
                vlek: false,
                report: parse(&virtee),
                product: Product::Milan,
            },
            Pair {
                name: "trustee Milan",
                vek: der(include_bytes!("../testdata/trustee_vcek.der")),
                vlek: false,
                report: parse(include_bytes!("../testdata/trustee_report.bin")),
                product: Product::Milan,
            },
            Pair {
                name: "trustee Genoa",
                vek: vek_of_pem(include_bytes!("../testdata/trustee_vcek_genoa.pem")),
                vlek: false,
                report: parse(include_bytes!("../testdata/trustee_genoa_report.bin")),
                product: Product::Genoa,
            },
            Pair {
                name: "trustee VLEK",
                vek: der(include_bytes!("../testdata/trustee_vlek.der")),
                vlek: true,
                report: parse(include_bytes!("../testdata/trustee_vlek_report.bin")),
                product: Product::Milan,
            },
        ]
    }

    fn check(p: &Pair, report: &AttestationReport) -> Result<(), Error> {
        check_vek_extensions(&p.vek, p.vlek, report, Some(p.product))
    }

    fn mismatch_field(result: Result<(), Error>) -> &'static str {
        match result {
            Err(Error::Mismatch { field, .. }) => field,
            other => panic!("not a Mismatch: {other:?}"),
        }
    }

    #[test]
    fn real_pairs_pass() {
        for p in pairs() {
            check(&p, &p.report).unwrap_or_else(|e| panic!("{}: {e}", p.name));
            // Without a known product (an insecure root) too.
            check_vek_extensions(&p.vek, p.vlek, &p.report, None).unwrap();
        }
    }

    #[test]
    fn chip_id_changed_is_a_hwid_mismatch() {
        for p in pairs().into_iter().filter(|p| !p.vlek) {
            assert!(p.report.chip_id.iter().any(|&b| b != 0), "{}", p.name);
            for i in [0, 31, 63] {
                let mut r = p.report.clone();
                r.chip_id[i] ^= 1;
                let err = check(&p, &r).unwrap_err();
                assert!(
                    matches!(&err, Error::Mismatch { field: "VCEK hwID", expected, actual }
                        if *expected == hex::encode(p.report.chip_id)
                            && *actual == hex::encode(r.chip_id)),
                    "{}: {err:?}",
                    p.name
                );
            }
        }
    }

    #[test]
    fn masked_chip_id_skips_hwid() {
        for p in pairs() {
            let mut r = p.report.clone();
            r.chip_id = [0; 64];
            check(&p, &r).unwrap_or_else(|e| panic!("{}: {e}", p.name));
        }
    }

    #[test]
    fn vlek_has_no_hwid_to_check() {
        let p = pairs().into_iter().find(|p| p.vlek).unwrap();
        let mut r = p.report.clone();
        r.chip_id = [7; 64];
        check(&p, &r).unwrap();
    }

    #[test]
    fn reported_tcb_changed_is_a_tcb_mismatch() {
        type Edit = fn(&mut TcbVersion);
        let edits: [(Edit, &str); 4] = [
            (|t| t.bootloader ^= 1, "TCB bootloader"),
            (|t| t.tee ^= 1, "TCB tee"),
            (|t| t.snp ^= 1, "TCB snp"),
            (|t| t.microcode ^= 1, "TCB microcode"),
        ];
        for p in pairs() {
            let prefix = if p.vlek { "VLEK" } else { "VCEK" };
            for (edit, component) in edits {
                let mut r = p.report.clone();
                edit(&mut r.reported_tcb);
                let field = mismatch_field(check(&p, &r));
                assert_eq!(field, format!("{prefix} {component}"), "{}", p.name);
            }
            // Only a Turin report has an FMC component; these VCEKs have
            // no fmcSPL.
            let mut r = p.report.clone();
            r.reported_tcb.fmc = Some(0);
            let err = check(&p, &r).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::VcekExtension {
                        extension: "fmcSPL",
                        error: ExtensionError::Missing,
                        ..
                    }
                ),
                "{}: {err:?}",
                p.name
            );
        }
    }

    #[test]
    fn snp_mismatch_names_both_values() {
        let p = pairs().into_iter().next().unwrap();
        let mut r = p.report.clone();
        r.reported_tcb.snp = 0xff;
        let err = check(&p, &r).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "VCEK TCB snp mismatch: expected {}, got 255",
                p.report.reported_tcb.snp
            )
        );
    }

    #[test]
    fn product_name_must_match_the_root() {
        for p in pairs() {
            let other = if p.product == Product::Genoa {
                Product::Milan
            } else {
                Product::Genoa
            };
            let field =
                mismatch_field(check_vek_extensions(&p.vek, p.vlek, &p.report, Some(other)));
            let prefix = if p.vlek { "VLEK" } else { "VCEK" };
            assert_eq!(field, format!("{prefix} productName"), "{}", p.name);
        }
    }

    #[test]
    fn missing_extensions_are_an_error() {
        // An ARK has none of the VCEK extensions.
        let ark = Cert::from_pem_bundle(include_bytes!("../testdata/uvm_host_amd_certificate.pem"))
            .unwrap()
            .into_iter()
            .find(|c| c.common_name().is_some_and(|cn| cn.starts_with("ARK-")))
            .unwrap();
        let p = pairs().into_iter().next().unwrap();
        let err = check_vek_extensions(&ark, false, &p.report, Some(p.product)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::VcekExtension {
                    role: CertRole::Vcek,
                    extension: "blSPL",
                    error: ExtensionError::Missing,
                }
            ),
            "{err:?}"
        );
    }

    /// The go-sev-guest VCEK with its snpSPL INTEGER retagged as an
    /// OCTET STRING, its hwID OID changed, or its teeSPL OID made a second
    /// blSPL; the signature is not checked here.
    #[test]
    fn malformed_extensions_are_an_error() {
        let p = &pairs()[1];
        let der = include_bytes!("../testdata/gosevguest_vcek.der").to_vec();
        let find = |needle: &[u8]| {
            der.windows(needle.len()).position(|w| w == needle).unwrap() + needle.len()
        };
        // OID 1.3.6.1.4.1.3704.1.3.3 (…9c 78 01 03 03), then the
        // extnValue OCTET STRING (04 03) holding INTEGER (02 01 n).
        let mut bad_int = der.clone();
        let at = find(&[0x9c, 0x78, 0x01, 0x03, 0x03, 0x04, 0x03]);
        assert_eq!(bad_int[at], 0x02);
        bad_int[at] = 0x04;
        let vek = Cert::from_der(&bad_int, CertRole::Vcek).unwrap();
        let err = check_vek_extensions(&vek, false, &p.report, Some(p.product)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::VcekExtension {
                    extension: "snpSPL",
                    error: ExtensionError::NotInteger(_),
                    ..
                }
            ),
            "{err:?}"
        );

        // OID 1.3.6.1.4.1.3704.1.4 (…9c 78 01 04), extnValue of 64 raw
        // bytes (04 40): make it 1.3.6.1.4.1.3704.1.6.
        let mut no_hwid = der.clone();
        let at = find(&[0x9c, 0x78, 0x01, 0x04, 0x04, 0x40]);
        no_hwid[at - 3] = 0x06;
        let vek = Cert::from_der(&no_hwid, CertRole::Vcek).unwrap();
        let err = check_vek_extensions(&vek, false, &p.report, Some(p.product)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::VcekExtension {
                    extension: "hwID",
                    error: ExtensionError::Missing,
                    ..
                }
            ),
            "{err:?}"
        );

        let mut twice = der.clone();
        let at = find(&[0x9c, 0x78, 0x01, 0x03, 0x02]);
        twice[at - 1] = 0x01;
        let vek = Cert::from_der(&twice, CertRole::Vcek).unwrap();
        let err = check_vek_extensions(&vek, false, &p.report, Some(p.product)).unwrap_err();
        assert!(
            matches!(
                &err,
                Error::VcekExtension {
                    extension: "blSPL",
                    error: ExtensionError::Repeated,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    /// No byte change of a VCEK makes the check panic.
    #[test]
    fn every_vcek_byte_flip_is_handled() {
        for p in pairs() {
            let der = p.vek.to_der();
            for i in 0..der.len() {
                let mut flipped = der.clone();
                flipped[i] ^= 0xff;
                if let Ok(vek) = Cert::from_der(&flipped, CertRole::Vcek) {
                    let _ = check_vek_extensions(&vek, p.vlek, &p.report, Some(p.product));
                }
            }
        }
    }
}
