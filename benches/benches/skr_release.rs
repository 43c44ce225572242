//! One key release through the broker core, in process (no HTTP): policy
//! evaluation, RSA-OAEP + AES key wrap to the token's key, the RS256 JWS
//! (ring) and the audit record committed to redb (fsync'd). Against its
//! parts, run in the same process: the policy evaluation, the wrap, the
//! signature, and a release whose audit append is the only write.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::SystemTime;

use base64::Engine as _;
use confsum_skr::{
    Broker, BrokerConfig, ClaimCondition, ImportKeyRequest, MasterKey, ReleasePolicy,
    ReleaseRequest, SigningIdentity, VerifiedClaims, WrapAlgorithm, WrappingPrivateKey, wrap_key,
};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

const ISSUER: &str = "https://attest.local";
const HOST_DATA: &str = "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20";

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate().unwrap();
    let (signer, _ca) =
        SigningIdentity::generate_with_local_ca(&["localhost"], SystemTime::now()).unwrap();
    let broker = Broker::open(
        &dir.path().join("broker.redb"),
        &master,
        signer,
        BrokerConfig::new("https://localhost:8443"),
    )
    .unwrap();
    broker.set_admin_token("bench-admin-token-0123").unwrap();
    let policy = ReleasePolicy::all_of(
        ISSUER,
        vec![vec![
            ClaimCondition::equals("x-ms-sevsnpvm-hostdata", HOST_DATA),
            ClaimCondition::equals("x-ms-compliance-status", "azure-compliant-uvm"),
            ClaimCondition::equals("x-ms-sevsnpvm-is-debuggable", "false"),
            ClaimCondition::equals("x-ms-sevsnpvm-vmpl", "0"),
        ]],
    );
    let import = ImportKeyRequest::decode(
        json!({"key": {"kty": "oct-HSM",
            "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32])},
            "attributes": {"exportable": true},
            "release_policy": {"data": policy.encode_base64url()}})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    broker
        .import(
            Some("Bearer bench-admin-token-0123"),
            "docs",
            &import,
            SystemTime::now(),
        )
        .unwrap();
    let workload = WrappingPrivateKey::generate(2048).unwrap();
    let runtime: serde_json::Value = serde_json::from_str(&workload.runtime_jwks()).unwrap();
    let claims = VerifiedClaims::from_value(json!({
        "iss": ISSUER,
        "jti": "bench",
        "iat": 1_760_000_000u64,
        "x-ms-attestation-type": "sevsnpvm",
        "x-ms-compliance-status": "azure-compliant-uvm",
        "x-ms-sevsnpvm-hostdata": HOST_DATA,
        "x-ms-sevsnpvm-is-debuggable": false,
        "x-ms-sevsnpvm-vmpl": 0,
        "x-ms-runtime": runtime,
    }))
    .unwrap();
    let request = ReleaseRequest {
        target: String::new(),
        enc: None,
        nonce: None,
    };
    let public = workload.public_key();
    let payload = vec![b'x'; 2400]; // about the size of a release payload

    let mut g = c.benchmark_group("skr_release");
    g.bench_function("policy_evaluate", |b| {
        b.iter(|| black_box(policy.evaluate(ISSUER, claims.claims())))
    });
    g.bench_function("wrap_key_oaep_sha1_kwp", |b| {
        b.iter(|| black_box(wrap_key(&public, WrapAlgorithm::RsaAesKeyWrap, &[7u8; 32]).unwrap()))
    });
    g.bench_function("jws_sign_rs256", |b| {
        b.iter(|| black_box(broker.signer().sign(&payload).unwrap()))
    });
    g.bench_function("release", |b| {
        b.iter(|| {
            black_box(
                broker
                    .release("docs", &request, &claims, SystemTime::now())
                    .unwrap(),
            )
        })
    });
    g.finish();
    assert!(broker.verify_audit().is_ok());
}

criterion_group!(benches, bench);
criterion_main!(benches);
