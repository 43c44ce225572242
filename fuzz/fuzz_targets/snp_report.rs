//! Arbitrary bytes -> the SEV-SNP report parser, the certificate readers
//! and the verifier of `confsum-attest`. Any panic is a bug.
//!
//! The first byte picks what the rest is:
//! - 0 mod 3: a report: `AttestationReport::parse`, then `describe` and
//!   `validate`; a parse must succeed exactly for 1184 bytes of version
//!   2, 3 or 5 and must keep the bytes;
//! - 1 mod 3: certificates: `CertChain::from_der`, `from_pem` and
//!   `from_thim_json`;
//! - 2 mod 3: a report verified against the real ACI chain at a fixed
//!   time: only the captured report itself may verify.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use confsum_attest::{
    AttestationReport, CertChain, TrustedRoots, ValidationOptions, Verifier, validate,
};
use libfuzzer_sys::fuzz_target;

const ACI_REPORT: &[u8] = include_bytes!("../../crates/attest/testdata/snp_report.bin");
const ACI_THIM: &[u8] =
    include_bytes!("../../crates/attest/testdata/uvm_host_amd_certificate.json");

fn setup() -> &'static (Verifier, CertChain) {
    static SETUP: OnceLock<(Verifier, CertChain)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let chain = CertChain::from_thim_json(ACI_THIM).expect("ACI chain");
        (Verifier::new(TrustedRoots::amd()), chain)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            let version = rest
                .get(..4)
                .map(|v| u32::from_le_bytes([v[0], v[1], v[2], v[3]]));
            let expect_ok = rest.len() == 1184 && matches!(version, Some(2 | 3 | 5));
            match AttestationReport::parse(rest) {
                Ok(report) => {
                    assert!(expect_ok);
                    assert_eq!(&report.as_bytes()[..], rest);
                    assert!(!report.describe().is_empty());
                    let _ = validate(&report, &ValidationOptions::new());
                }
                Err(_) => assert!(!expect_ok),
            }
        }
        1 => {
            let _ = CertChain::from_der([rest]);
            let _ = CertChain::from_pem(rest);
            let _ = CertChain::from_thim_json(rest);
        }
        _ => {
            let (verifier, chain) = setup();
            let now = UNIX_EPOCH + Duration::from_secs(1_748_736_000);
            if verifier.verify(rest, chain, now).is_ok() {
                assert_eq!(rest, ACI_REPORT);
            }
        }
    }
});
