#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Signature and chain verification against real captured evidence.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use confsum_attest::{
    AttestationReport, CertChain, CertError, CertRole, Error, Product, SigningKey, TrustedRoots,
    Verifier,
};
use sha2::{Digest, Sha256};

const ACI_REPORT: &[u8] = include_bytes!("../testdata/snp_report.bin");
const ACI_THIM: &[u8] = include_bytes!("../testdata/uvm_host_amd_certificate.json");
const ACI_PEM: &[u8] = include_bytes!("../testdata/uvm_host_amd_certificate.pem");
const ACI_POLICY_B64: &str = include_str!("../testdata/uvm_security_policy.base64");

/// 2025-06-01T00:00:00Z: inside the validity of every certificate in
/// testdata/ (the VLEK's is 2024-12-10 .. 2025-12-10).
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_748_736_000)
}

fn verifier() -> Verifier {
    Verifier::new(TrustedRoots::amd())
}

/// Splits a PEM bundle into the DER of each certificate.
fn pem_ders(pem: &[u8]) -> Vec<Vec<u8>> {
    let text = std::str::from_utf8(pem).unwrap();
    text.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|part| {
            let b64: String = part
                .split("-----END CERTIFICATE-----")
                .next()
                .unwrap()
                .split_whitespace()
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap()
        })
        .collect()
}

fn cn_of(der: &[u8]) -> CertRole {
    for (needle, name) in [
        (&b"SEV-VCEK"[..], CertRole::Vcek),
        (b"SEV-VLEK-", CertRole::Asvk),
        (b"SEV-VLEK", CertRole::Vlek),
        (b"ARK-", CertRole::Ark),
        (b"SEV-", CertRole::Ask),
    ] {
        // The subject comes after the issuer, so look at the last CN.
        let last = der
            .windows(needle.len())
            .rposition(|w| w == needle)
            .map(|p| (p, name));
        if let Some((_, name)) = last {
            if name == CertRole::Ask || name == CertRole::Ark {
                // An ASK names ARK as its issuer and itself as SEV-<p>;
                // decide by the last occurrence of either.
                let ark = der.windows(4).rposition(|w| w == b"ARK-");
                let sev = der.windows(4).rposition(|w| w == b"SEV-");
                return if ark > sev {
                    CertRole::Ark
                } else {
                    CertRole::Ask
                };
            }
            return name;
        }
    }
    panic!("no CN")
}

#[test]
fn aci_report_verifies_with_thim_json() {
    let chain = CertChain::from_thim_json(ACI_THIM).unwrap();
    assert!(chain.has_ask() && chain.has_ark() && !chain.is_vlek());
    assert_eq!(chain.tcbm(), Some(0x7308000000000003));
    let verified = verifier().verify(ACI_REPORT, &chain, now()).unwrap();
    assert_eq!(verified.product(), Some(Product::Milan));
    assert_eq!(verified.signing_key(), SigningKey::Vcek);
    assert!(!verified.insecure_root());
    // tcbm is the raw REPORTED_TCB, byte-reversed in hex.
    assert_eq!(
        u64::from_le_bytes(verified.as_bytes()[0x180..0x188].try_into().unwrap()),
        0x7308000000000003
    );
}

#[test]
fn aci_report_verifies_with_pem_bundle_in_any_order() {
    let chain = CertChain::from_pem(ACI_PEM).unwrap();
    verifier().verify(ACI_REPORT, &chain, now()).unwrap();

    let mut ders = pem_ders(ACI_PEM);
    assert_eq!(ders.len(), 3);
    ders.reverse();
    let chain = CertChain::from_der(ders.iter().map(Vec::as_slice)).unwrap();
    let v = verifier().verify(ACI_REPORT, &chain, now()).unwrap();
    assert_eq!(v.product(), Some(Product::Milan));

    // The VCEK alone: ASK and ARK come from the built-in roots.
    let vcek: Vec<&[u8]> = ders
        .iter()
        .filter(|d| cn_of(d) == CertRole::Vcek)
        .map(Vec::as_slice)
        .collect();
    let chain = CertChain::from_der(vcek).unwrap();
    assert!(!chain.has_ask() && !chain.has_ark());
    verifier().verify(ACI_REPORT, &chain, now()).unwrap();
}

#[test]
fn aci_host_data_is_the_policy_hash() {
    let policy = base64::engine::general_purpose::STANDARD
        .decode(ACI_POLICY_B64.trim())
        .unwrap();
    let report = AttestationReport::parse(ACI_REPORT).unwrap();
    assert_eq!(report.host_data, <[u8; 32]>::from(Sha256::digest(&policy)));
}

#[test]
fn clock_outside_validity_fails() {
    let chain = CertChain::from_thim_json(ACI_THIM).unwrap();
    // The VCEK is valid 2022-11-29 .. 2029-11-29; the ASK/ARK from 2020-10.
    let early = UNIX_EPOCH + Duration::from_secs(1_623_000_000); // 2021-06
    let err = verifier().verify(ACI_REPORT, &chain, early).unwrap_err();
    assert!(
        matches!(
            err,
            Error::CertNotYetValid {
                role: CertRole::Vcek,
                ..
            }
        ),
        "{err:?}"
    );
    let late = UNIX_EPOCH + Duration::from_secs(1_900_000_000); // 2030-03
    let err = verifier().verify(ACI_REPORT, &chain, late).unwrap_err();
    assert!(
        matches!(
            err,
            Error::CertExpired {
                role: CertRole::Vcek,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn empty_roots_trust_nothing() {
    let chain = CertChain::from_thim_json(ACI_THIM).unwrap();
    let err = Verifier::new(TrustedRoots::empty())
        .verify(ACI_REPORT, &chain, now())
        .unwrap_err();
    assert!(matches!(err, Error::UnknownRoot), "{err:?}");
}

#[test]
fn builtin_roots_cover_three_products() {
    let roots = TrustedRoots::amd();
    assert_eq!(
        roots.products(),
        [Product::Milan, Product::Genoa, Product::Turin]
    );
}

#[test]
fn wrong_product_root_is_unknown() {
    // A Milan VCEK handed a Genoa ARK in its chain.
    let genoa = pem_ders(include_bytes!("../src/roots/genoa_ask_ark_asvk.pem"));
    let genoa_ark = genoa.iter().find(|d| cn_of(d) == CertRole::Ark).unwrap();
    let mut ders: Vec<Vec<u8>> = pem_ders(ACI_PEM)
        .into_iter()
        .filter(|d| cn_of(d) != CertRole::Ark)
        .collect();
    ders.push(genoa_ark.clone());
    let chain = CertChain::from_der(ders.iter().map(Vec::as_slice)).unwrap();
    let err = verifier().verify(ACI_REPORT, &chain, now()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::CertWrongIssuer {
                role: CertRole::Ask,
                issuer: CertRole::Ark
            }
        ),
        "{err:?}"
    );
}

/// Every single-byte change of the report fails verification.
#[test]
fn every_report_byte_flip_fails() {
    let chain = CertChain::from_thim_json(ACI_THIM).unwrap();
    let v = verifier();
    let mut bytes = ACI_REPORT.to_vec();
    for i in 0..bytes.len() {
        {
            let mask = 0xffu8;
            bytes[i] ^= mask;
            let err = v.verify(&bytes, &chain, now()).unwrap_err();
            let ok = match err {
                Error::BadReportSignature => true,
                Error::UnsupportedReportVersion(_) => i < 4,
                Error::SigningKeyMismatch { .. } => (0x48..0x4c).contains(&i),
                Error::Mismatch {
                    field: "product", ..
                } => (0x188..0x18b).contains(&i),
                _ => false,
            };
            assert!(ok, "byte {i:#x} ^ {mask:#x}: unexpected {err:?}");
            bytes[i] ^= mask;
        }
    }
    v.verify(&bytes, &chain, now()).unwrap();
}

#[test]
fn wrong_lengths_fail() {
    let chain = CertChain::from_thim_json(ACI_THIM).unwrap();
    for len in [0, 1, 0x2A0, 1183] {
        let err = verifier()
            .verify(&ACI_REPORT[..len], &chain, now())
            .unwrap_err();
        assert!(matches!(err, Error::ReportLength(l) if l == len), "{err:?}");
    }
    let mut long = ACI_REPORT.to_vec();
    long.push(0);
    let err = verifier().verify(&long, &chain, now()).unwrap_err();
    assert!(matches!(err, Error::ReportLength(1185)), "{err:?}");
}

/// Every single-byte change of every certificate of the chain fails,
/// with an error about that certificate (or about the root).
#[test]
fn every_cert_byte_flip_fails() {
    let v = verifier();
    let ders = pem_ders(ACI_PEM);
    for (k, der) in ders.iter().enumerate() {
        let role = cn_of(der);
        let mut flipped = der.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            let mut set: Vec<&[u8]> = ders.iter().map(Vec::as_slice).collect();
            set[k] = &flipped;
            let result = CertChain::from_der(set.iter().copied())
                .and_then(|chain| v.verify(ACI_REPORT, &chain, now()));
            let err = result.expect_err(&format!("{role} byte {i} flipped verified"));
            let precise = match &err {
                Error::BadCert { .. } | Error::MissingCert(_) => true,
                Error::BadCertSignature { role: r } => *r == role || role == CertRole::Ark,
                Error::CertWrongIssuer { role: r, issuer } => *r == role || *issuer == role,
                Error::UnknownRoot => role == CertRole::Ark,
                Error::CertExpired { role: r, .. } | Error::CertNotYetValid { role: r, .. } => {
                    *r == role
                }
                Error::BadReportSignature => role == CertRole::Vcek,
                _ => false,
            };
            assert!(precise, "{role} byte {i}: imprecise {err:?}");
            flipped[i] ^= 0xff;
        }
    }
}

struct Case {
    name: &'static str,
    report: Vec<u8>,
    certs: Vec<Vec<u8>>,
    product: Product,
    key: SigningKey,
}

fn der_file(bytes: &[u8]) -> Vec<Vec<u8>> {
    vec![bytes.to_vec()]
}

fn cases() -> Vec<Case> {
    let virtee_report =
        hex::decode(include_str!("../testdata/virtee_report_milan.hex").trim()).unwrap();
    let mut virtee_certs = der_file(include_bytes!("../testdata/virtee_vcek_milan.der"));
    virtee_certs.extend(pem_ders(include_bytes!(
        "../testdata/virtee_cert_chain_milan.pem"
    )));
    vec![
        Case {
            name: "go-sev-guest attestation.bin (Milan, v2)",
            report: include_bytes!("../testdata/gosevguest_attestation.bin").to_vec(),
            certs: der_file(include_bytes!("../testdata/gosevguest_vcek.der")),
            product: Product::Milan,
            key: SigningKey::Vcek,
        },
        Case {
            name: "virtee report_milan (Milan, v2)",
            report: virtee_report,
            certs: virtee_certs,
            product: Product::Milan,
            key: SigningKey::Vcek,
        },
        Case {
            name: "trustee test-report.bin (Milan, v2)",
            report: include_bytes!("../testdata/trustee_report.bin").to_vec(),
            certs: der_file(include_bytes!("../testdata/trustee_vcek.der")),
            product: Product::Milan,
            key: SigningKey::Vcek,
        },
        Case {
            name: "trustee az-snp-vtpm evidence-genoa (Genoa, v3)",
            report: include_bytes!("../testdata/trustee_genoa_report.bin").to_vec(),
            certs: pem_ders(include_bytes!("../testdata/trustee_vcek_genoa.pem")),
            product: Product::Genoa,
            key: SigningKey::Vcek,
        },
        Case {
            name: "trustee test-vlek-report.bin (Milan VLEK, v3)",
            report: include_bytes!("../testdata/trustee_vlek_report.bin").to_vec(),
            certs: der_file(include_bytes!("../testdata/trustee_vlek.der")),
            product: Product::Milan,
            key: SigningKey::Vlek,
        },
    ]
}

#[test]
fn more_real_reports_verify_with_the_right_root() {
    for case in cases() {
        let chain = CertChain::from_der(case.certs.iter().map(Vec::as_slice)).unwrap();
        let v = verifier()
            .verify(&case.report, &chain, now())
            .unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
        assert_eq!(v.product(), Some(case.product), "{}", case.name);
        assert_eq!(v.signing_key(), case.key, "{}", case.name);
        assert_eq!(v.signing_key, case.key, "{}", case.name);

        // One flipped bit of report_data breaks it.
        let mut one_flip = case.report.clone();
        one_flip[0x50] ^= 1;
        let err = verifier().verify(&one_flip, &chain, now()).unwrap_err();
        assert!(matches!(err, Error::BadReportSignature), "{}", case.name);
    }
}

#[test]
fn vlek_report_with_a_vcek_is_a_key_mismatch() {
    let report = include_bytes!("../testdata/trustee_vlek_report.bin");
    let chain = CertChain::from_der([&include_bytes!("../testdata/trustee_vcek.der")[..]]).unwrap();
    let err = verifier().verify(report, &chain, now()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::SigningKeyMismatch {
                report: SigningKey::Vlek,
                cert: CertRole::Vcek
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_report_signed_by_another_vcek_fails() {
    let report = include_bytes!("../testdata/gosevguest_attestation.bin");
    let chain = CertChain::from_thim_json(ACI_THIM).unwrap();
    let err = verifier().verify(report, &chain, now()).unwrap_err();
    assert!(matches!(err, Error::BadReportSignature), "{err:?}");
}

/// Inputs found by the `snp_report` fuzz target, and their neighbours.
#[test]
fn malformed_pem_is_an_error() {
    let truncated = &ACI_PEM[..ACI_PEM.len() - 10];
    for input in [
        &b""[..],
        b"\n",
        b"\r\n\r\n",
        b"-----BEGIN CERTIFICATE-----",
        b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
        truncated,
    ] {
        let err = CertChain::from_pem(input).unwrap_err();
        assert!(
            matches!(
                err,
                Error::BadCert {
                    role: CertRole::Chain,
                    error: CertError::NoPem | CertError::UnterminatedPem | CertError::Der(_)
                }
            ),
            "{input:?}: {err:?}"
        );
    }
    let err = CertChain::from_thim_json(b"{}").unwrap_err();
    assert!(
        matches!(
            err,
            Error::BadCert {
                error: CertError::Thim(_),
                ..
            }
        ),
        "{err:?}"
    );
}

/// `from_bytes` and `load` tell THIM JSON, PEM and DER apart.
#[test]
fn any_form_of_certificates_loads() {
    let dir = tempfile::tempdir().unwrap();
    let vcek = pem_ders(ACI_PEM)
        .into_iter()
        .find(|d| cn_of(d) == CertRole::Vcek)
        .unwrap();
    for (name, bytes) in [
        ("thim.json", ACI_THIM),
        ("chain.pem", ACI_PEM),
        ("vcek.der", &vcek[..]),
    ] {
        let chain = CertChain::from_bytes(bytes).unwrap();
        verifier().verify(ACI_REPORT, &chain, now()).unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let chain = CertChain::load(&path).unwrap();
        verifier().verify(ACI_REPORT, &chain, now()).unwrap();
    }
    let missing = dir.path().join("missing.pem");
    let err = CertChain::load(&missing).unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if *path == missing),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("cannot read {}", missing.display())
    );
    assert!(std::error::Error::source(&err).is_some());
}
