//! Arbitrary bytes -> the release policy parser and evaluator of
//! `confsum-skr`. Any panic is a bug; errors are the expected outcome for
//! almost every input.
//!
//! The first byte picks what the rest is (modulo 3):
//! - 0: policy JSON, given to `ReleasePolicy::decode`;
//! - 1: base64url policy (Key Vault's `release_policy.data`);
//! - 2: an `importkeyconfig.json`, then its policy.
//!
//! Invariants: a policy that parses encodes to JSON that parses back to the
//! same policy, and evaluates (against claims that satisfy or fail every
//! kind of condition) without panicking, deterministically.
#![no_main]

use confsum_skr::{ImportKeyConfig, ReleasePolicy};
use libfuzzer_sys::fuzz_target;

fn check(policy: &ReleasePolicy) {
    let again = ReleasePolicy::decode(&policy.encode()).expect("encoded policy parses");
    assert_eq!(&again, policy);
    let claims = serde_json::json!({
        "iss": "https://sharedeus.eus.attest.azure.net",
        "x-ms-sevsnpvm-hostdata": "00",
        "x-ms-sevsnpvm-is-debuggable": false,
        "x-ms-sevsnpvm-vmpl": 0,
        "x-ms-runtime": {"keys": [{"kty": "RSA"}]},
        "n": 1.5,
        "l": [1],
    });
    let claims = claims.as_object().expect("object");
    for issuer in ["https://sharedeus.eus.attest.azure.net", "http://x", ""] {
        let first = policy.evaluate(issuer, claims);
        assert_eq!(first, policy.evaluate(issuer, claims));
        if let confsum_skr::Decision::Denied(denial) = first {
            assert_eq!(denial.branches.len(), policy.any_of.len());
            let _ = denial.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            if let Ok(policy) = ReleasePolicy::decode(rest) {
                check(&policy);
            }
        }
        1 => {
            if let Ok(policy) = ReleasePolicy::decode_base64url(&String::from_utf8_lossy(rest)) {
                check(&policy);
            }
        }
        _ => {
            if let Ok(config) = ImportKeyConfig::decode(rest) {
                let _ = config.placeholders();
                let again = ImportKeyConfig::decode(config.encode().as_bytes())
                    .expect("encoded config parses");
                assert_eq!(again, config);
                if let Ok(policy) = config.release_policy() {
                    check(&policy);
                }
            }
        }
    }
});
