//! Arbitrary bytes -> the key broker's release body
//! (`POST /keys/{name}/release`): `ReleaseRequest::decode`, the `enc`
//! name, the token's unverified issuer, and the wrapping key the broker
//! would take from a token's claims (`WrappingPublicKey::from_claims`).
//! Any panic is a bug.
#![no_main]

use confsum_skr::{ReleaseRequest, WrapAlgorithm, WrappingPublicKey, unverified_issuer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = ReleaseRequest::decode(data) {
        if let Some(enc) = &request.enc {
            if let Ok(alg) = WrapAlgorithm::from_name(enc) {
                assert_eq!(alg.name(), enc);
            }
        }
        let _ = unverified_issuer(&request.target);
    }
    // The same bytes as token claims: choosing the wrapping key.
    if let Ok(serde_json::Value::Object(claims)) = serde_json::from_slice(data) {
        if let Ok(key) = WrappingPublicKey::from_claims(&claims) {
            assert!((2048..=4096).contains(&key.bits()));
        }
    }
});
