#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Parsing real reports, and validating their contents.

use confsum_attest::{
    AttestationReport, Cpuid, Error, FirmwareVersion, Product, SigningKey, TcbLayout, TcbVersion,
    ValidationOptions, validate,
};

const ACI_REPORT: &[u8] = include_bytes!("../testdata/snp_report.bin");
const GENOA_REPORT: &[u8] = include_bytes!("../testdata/trustee_genoa_report.bin");
const VLEK_REPORT: &[u8] = include_bytes!("../testdata/trustee_vlek_report.bin");

#[test]
fn aci_report_fields() {
    let r = AttestationReport::parse(ACI_REPORT).unwrap();
    assert_eq!(r.version, 2);
    assert_eq!(r.guest_svn, 2);
    assert_eq!(r.policy.0, 0x3001f);
    assert_eq!((r.policy.abi_major(), r.policy.abi_minor()), (0, 0x1f));
    assert!(r.policy.smt());
    assert!(!r.policy.debug() && !r.policy.migrate_ma() && !r.policy.single_socket());
    assert_eq!(r.vmpl, 0);
    assert_eq!(r.signature_algo, 1);
    let tcb = TcbVersion {
        bootloader: 3,
        tee: 0,
        snp: 8,
        microcode: 115,
        fmc: None,
    };
    assert_eq!(r.current_tcb, tcb);
    assert_eq!(r.reported_tcb, tcb);
    assert_eq!(r.committed_tcb, tcb);
    assert_eq!(r.launch_tcb, tcb);
    assert_eq!(r.reported_tcb.to_raw(), 0x7308000000000003);
    assert_eq!(r.platform_info, 1);
    assert_eq!(r.signing_key, SigningKey::Vcek);
    assert!(!r.author_key_en && !r.mask_chip_key);
    assert_eq!(r.report_data, ACI_REPORT[0x50..0x90]);
    assert_eq!(
        hex::encode(&r.report_data[..32]),
        "ee986ff2bd7e3f22e29f6409186278 16cf8e23b9d9c312767168eab68c861c71".replace(' ', "")
    );
    assert_eq!(r.report_data[32..], [0; 32]);
    assert_eq!(r.measurement, ACI_REPORT[0x90..0xC0]);
    assert_eq!(r.host_data, ACI_REPORT[0xC0..0xE0]);
    assert_eq!(
        hex::encode(r.host_data),
        "cadd74f71ebb8fbf9782baab649612520f3c416bc5ce9ac768808ddc8d9b031c"
    );
    assert_eq!(r.chip_id, ACI_REPORT[0x1A0..0x1E0]);
    assert_eq!(r.cpuid, None);
    assert_eq!(
        r.current_version,
        FirmwareVersion {
            build: 4,
            minor: 52,
            major: 1
        }
    );
    assert_eq!(r.committed_version, r.current_version);
    assert_eq!(r.launch_mit_vector, None);
    assert_eq!(r.signature_r()[..], ACI_REPORT[0x2A0..0x2E8]);
    assert_eq!(r.signature_s()[..], ACI_REPORT[0x2E8..0x330]);
    assert_eq!(r.signed_bytes(), &ACI_REPORT[..0x2A0]);
    assert_eq!(&r.as_bytes()[..], ACI_REPORT);
}

#[test]
fn genoa_v3_report_has_cpuid() {
    let r = AttestationReport::parse(GENOA_REPORT).unwrap();
    assert_eq!(r.version, 3);
    let cpuid = r.cpuid.unwrap();
    assert_eq!(
        cpuid,
        Cpuid {
            family: 0x19,
            model: 0x11,
            stepping: 0x01
        }
    );
    assert_eq!(cpuid.product(), Some(Product::Genoa));
    assert_eq!(r.tcb_layout(), TcbLayout::MilanGenoa);
    assert_eq!(
        r.reported_tcb,
        TcbVersion {
            bootloader: 10,
            tee: 0,
            snp: 23,
            microcode: 84,
            fmc: None
        }
    );
    assert_eq!(r.current_version.to_string(), "1.55.40");
}

#[test]
fn vlek_report_names_its_key() {
    let r = AttestationReport::parse(VLEK_REPORT).unwrap();
    assert_eq!(r.signing_key, SigningKey::Vlek);
    assert_eq!(r.cpuid.unwrap().product(), Some(Product::Milan));
}

#[test]
fn turin_tcb_layout() {
    let raw = u64::from_le_bytes([1, 2, 3, 4, 0, 0, 0, 5]);
    let tcb = TcbVersion::from_raw(raw, TcbLayout::Turin);
    assert_eq!(
        tcb,
        TcbVersion {
            fmc: Some(1),
            bootloader: 2,
            tee: 3,
            snp: 4,
            microcode: 5
        }
    );
    assert_eq!(tcb.to_raw(), raw);
    assert_eq!(
        tcb.to_string(),
        "fmc 1, bootloader 2, tee 3, snp 4, microcode 5"
    );

    // A v3 report with family 0x1A is read with the Turin layout.
    let mut bytes = GENOA_REPORT.to_vec();
    bytes[0x188] = 0x1a;
    bytes[0x189] = 0x02;
    let r = AttestationReport::parse(&bytes).unwrap();
    assert_eq!(r.tcb_layout(), TcbLayout::Turin);
    assert_eq!(r.cpuid.unwrap().product(), Some(Product::Turin));
    assert_eq!(r.reported_tcb.fmc, Some(10));
}

#[test]
fn version_5_reads_mitigation_vectors() {
    let mut bytes = GENOA_REPORT.to_vec();
    bytes[0] = 5;
    bytes[0x1F8..0x200].copy_from_slice(&7u64.to_le_bytes());
    bytes[0x200..0x208].copy_from_slice(&9u64.to_le_bytes());
    let r = AttestationReport::parse(&bytes).unwrap();
    assert_eq!(
        (r.launch_mit_vector, r.current_mit_vector),
        (Some(7), Some(9))
    );
    assert!(r.describe().contains("current_mit_vector: 0x9"));
}

#[test]
fn bad_versions_and_lengths() {
    for v in [0u32, 1, 4, 6, 0xffff_ffff] {
        let mut bytes = ACI_REPORT.to_vec();
        bytes[..4].copy_from_slice(&v.to_le_bytes());
        let err = AttestationReport::parse(&bytes).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedReportVersion(x) if x == v),
            "{err:?}"
        );
    }
    for len in [0, 4, 1183, 1185, 4096] {
        let mut bytes = ACI_REPORT.to_vec();
        bytes.resize(len, 0);
        let err = AttestationReport::parse(&bytes).unwrap_err();
        assert!(matches!(err, Error::ReportLength(l) if l == len), "{err:?}");
    }
}

#[test]
fn describe_is_readable() {
    let r = AttestationReport::parse(ACI_REPORT).unwrap();
    let text = r.describe();
    assert!(text.starts_with("SEV-SNP attestation report\n"));
    for needle in [
        "version:            2",
        "host_data           cadd74f71ebb8fbf9782baab649612520f3c416bc5ce9ac768808ddc8d9b031c",
        "reported_tcb        0x7308000000000003 (bootloader 3, tee 0, snp 8, microcode 115)",
        "debug false",
        "signing_key VCEK",
        "current_version:    1.52.4",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    assert_eq!(text, r.to_string());
    // Debug is short and does not dump the signature.
    assert!(!format!("{r:?}").contains("signature"));
}

fn aci() -> AttestationReport {
    AttestationReport::parse(ACI_REPORT).unwrap()
}

#[test]
fn validation_passes_with_the_right_values() {
    let r = aci();
    let mut opts = ValidationOptions::new();
    validate(&r, &opts).unwrap();
    opts.host_data = Some(r.host_data);
    opts.report_data = Some(r.report_data);
    opts.vmpl = Some(0);
    opts.minimum_tcb = Some(r.reported_tcb);
    opts.measurements = Some(vec![[0; 48], r.measurement]);
    validate(&r, &opts).unwrap();
}

/// Each option alone fails, naming the field and both values.
#[test]
fn validation_failures_name_field_and_values() {
    let r = aci();
    let host = hex::encode(r.host_data);
    let rdata = hex::encode(r.report_data);
    let meas = hex::encode(r.measurement);
    type Case = (fn(&mut ValidationOptions), &'static str, String, String);
    let cases: Vec<Case> = vec![
        (
            |o| o.host_data = Some([0xaa; 32]),
            "host_data",
            "aa".repeat(32),
            host,
        ),
        (
            |o| o.report_data = Some([0xbb; 64]),
            "report_data",
            "bb".repeat(64),
            rdata,
        ),
        (|o| o.vmpl = Some(2), "vmpl", "2".into(), "0".into()),
        (
            |o| {
                o.minimum_tcb = Some(TcbVersion {
                    bootloader: 3,
                    tee: 0,
                    snp: 9,
                    microcode: 115,
                    fmc: None,
                })
            },
            "reported_tcb",
            "at least bootloader 3, tee 0, snp 9, microcode 115".into(),
            "bootloader 3, tee 0, snp 8, microcode 115".into(),
        ),
        (
            |o| o.measurements = Some(vec![[0xcc; 48]]),
            "measurement",
            format!("one of [{}]", "cc".repeat(48)),
            meas,
        ),
    ];
    for (set, field, expected, actual) in cases {
        let mut opts = ValidationOptions::new();
        set(&mut opts);
        let err = validate(&r, &opts).unwrap_err();
        let message = err.to_string();
        match err {
            Error::Mismatch {
                field: f,
                expected: e,
                actual: a,
            } => {
                assert_eq!((f, e.as_str(), a.as_str()), (field, &*expected, &*actual));
                assert!(message.contains(field) && message.contains(&expected));
                assert!(message.contains(&actual), "{message}");
            }
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn debug_is_forbidden_unless_allowed() {
    let mut bytes = ACI_REPORT.to_vec();
    bytes[0x0A] |= 0x08; // policy bit 19
    let r = AttestationReport::parse(&bytes).unwrap();
    assert!(r.policy.debug());
    let err = validate(&r, &ValidationOptions::new()).unwrap_err();
    assert!(
        matches!(&err, Error::Mismatch { field: "policy.debug", expected, actual }
            if expected == "false" && actual.starts_with("true")),
        "{err:?}"
    );
    let mut opts = ValidationOptions::new();
    opts.allow_debug = true;
    validate(&r, &opts).unwrap();
}

#[test]
fn minimum_tcb_is_component_wise() {
    let r = aci();
    let mut lower = r.reported_tcb;
    lower.microcode = 0;
    assert!(r.reported_tcb.meets(&lower));
    let mut higher = lower;
    higher.bootloader = 4;
    assert!(!r.reported_tcb.meets(&higher));
}

#[test]
fn parse_never_panics_on_mutations() {
    // Cheap stand-in for the fuzzer in every CI run.
    let mut bytes = ACI_REPORT.to_vec();
    for i in 0..bytes.len() {
        for v in [0u8, 1, 2, 3, 5, 0x19, 0x1a, 0xff] {
            let old = bytes[i];
            bytes[i] = v;
            if let Ok(r) = AttestationReport::parse(&bytes) {
                let _ = r.describe();
            }
            bytes[i] = old;
        }
    }
}
