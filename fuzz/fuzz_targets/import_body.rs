//! Arbitrary bytes -> the key broker's import body (`PUT /keys/{name}`):
//! `ImportKeyRequest::decode`, the private JWK it carries
//! (`KeyMaterial::from_jwk`: oct, RSA and EC keys) and its release policy.
//! Any panic is a bug.
//!
//! Invariants: key material that parses reads back from its released form
//! (raw bytes or PKCS#8) with the same public members.
#![no_main]

use confsum_skr::{ImportKeyRequest, KeyMaterial, ReleasePolicy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = ImportKeyRequest::decode(data) else {
        return;
    };
    if let Ok(material) = KeyMaterial::from_jwk(&request.key) {
        let again = KeyMaterial::from_bytes(
            material.kty(),
            zeroize::Zeroizing::new(material.bytes().to_vec()),
        )
        .expect("released form reads back");
        assert_eq!(again.public_jwk(), material.public_jwk());
    }
    if let Some(policy) = &request.release_policy {
        let _ = ReleasePolicy::decode_base64url(&policy.data);
    }
});
