//! Arbitrary bytes -> the attestation token parsers of `confsum-attest`.
//! Any panic is a bug; errors are the expected outcome for almost every
//! input.
//!
//! The first byte picks what the rest is (modulo 5):
//! - 0: a token, given to `TokenVerifier::verify` with a fixed JWKS;
//! - 1: a token payload, given to `TokenClaims::from_json`;
//! - 2: a JWKS, given to `Jwks::from_json`, then every key's accessors;
//! - 3: an MAA attest request body, then every decoder;
//! - 4: a token payload that is signed here with the trusted key, so that
//!   `verify` gets past the signature and checks claims, issuer and times.
//!
//! Invariants: emulated evidence never verifies or parses with a compliance
//! status; claims that parse serialize and parse back to the same value;
//! runtime data that holds keys matches its own report_data; a token that
//! verifies has the trusted issuer and is inside its validity window.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use confsum_attest::{
    AttestRequest, Jwks, SnpEvidence, TokenClaims, TokenIssuer, TokenVerifier, runtime_keys_match,
};
use libfuzzer_sys::fuzz_target;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::signature::{SignatureEncoding as _, Signer as _};

const ISS: &str = "https://attest.fuzz";
/// 2024-01-01T00:00:00Z.
const NOW: u64 = 1_704_067_200;

struct Fixture {
    verifier: TokenVerifier,
    signer: SigningKey<sha2::Sha256>,
    header_b64: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let issuer = TokenIssuer::generate(ISS).expect("key generation");
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(&issuer.to_pkcs8_pem().expect("pem"))
            .expect("pem round trip");
        let header = format!(r#"{{"alg":"RS256","kid":"{}","typ":"JWT"}}"#, issuer.kid());
        Fixture {
            verifier: TokenVerifier::new(issuer.jwks(), ISS).leeway(Duration::from_secs(60)),
            signer: SigningKey::new(key),
            header_b64: URL_SAFE_NO_PAD.encode(header),
        }
    })
}

fn check_claims(claims: &TokenClaims) {
    assert!(!(claims.insecure_emulated && claims.compliance_status.is_some()));
    let json = serde_json::to_vec(claims).expect("claims serialize");
    let again = TokenClaims::from_json(&json).expect("claims parse back");
    assert_eq!(&again, claims);
    if let Some(runtime) = &claims.runtime {
        if runtime.keys().is_ok_and(|k| !k.keys.is_empty()) {
            runtime_keys_match(claims, &runtime.report_data()).expect("own report_data");
        }
    }
}

fn check_verified(token: &str) {
    let now = UNIX_EPOCH + Duration::from_secs(NOW);
    if let Ok(claims) = fixture().verifier.verify(token, now) {
        assert_eq!(claims.iss, ISS);
        assert!(claims.nbf <= NOW + 60);
        assert!(NOW <= claims.exp.saturating_add(60));
        check_claims(&claims);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 5 {
        0 => check_verified(&String::from_utf8_lossy(rest)),
        1 => {
            if let Ok(claims) = TokenClaims::from_json(rest) {
                check_claims(&claims);
            }
        }
        2 => {
            if let Ok(jwks) = Jwks::from_json(rest) {
                for key in &jwks.keys {
                    let _ = key.thumbprint();
                    let _ = key.rsa_public_key();
                    if let Some(kid) = &key.kid {
                        let _ = jwks.find(kid);
                    }
                }
                let json = serde_json::to_vec(&jwks).expect("jwks serialize");
                assert_eq!(Jwks::from_json(&json).expect("jwks parse back"), jwks);
            }
        }
        3 => {
            if let Ok(request) = serde_json::from_slice::<AttestRequest>(rest) {
                let _ = request.runtime_data.bytes();
                if let Ok(evidence) = request.evidence() {
                    let _ = evidence.report_bytes();
                    let _ = evidence.cert_chain_pem();
                    let _ = evidence.uvm_endorsements();
                }
            }
            let _ = SnpEvidence::decode(&String::from_utf8_lossy(rest));
        }
        _ => {
            let fixture = fixture();
            let input = format!("{}.{}", fixture.header_b64, URL_SAFE_NO_PAD.encode(rest));
            let signature = fixture.signer.sign(input.as_bytes());
            let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()));
            check_verified(&token);
        }
    }
});
