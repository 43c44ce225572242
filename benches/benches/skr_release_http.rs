//! One key release over loopback HTTP, as a client sees it: the request
//! (ureq), the broker's router (token signature check against a cached
//! JWKS, policy, wrap, RS256 JWS, audit record fsync'd to redb), the
//! answer, and the client's JWS and chain check. Against the same release
//! in process (`Broker::release_token`, no HTTP), in the same run.
//!
//! After criterion, it prints the latency percentiles of 2000 sequential
//! releases and the throughput of 8 client threads, because the targets
//! are a p99 and a rate, which criterion does not report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use confsum_attest::{RuntimeClaims, TokenClaims, TokenIssuer};
use confsum_server::skr::TrustedAuthorities;
use confsum_server::{Client, HsmClient, Server};
use confsum_skr::{
    Broker, BrokerConfig, ClaimCondition, ImportAttributes, ImportKeyRequest, KeyMaterial, KeyType,
    MasterKey, POLICY_CONTENT_TYPE, ReleasePolicy, ReleasePolicyBody, ReleaseRequest,
    SigningIdentity, TokenCheck, WrappingPrivateKey,
};
use criterion::{Criterion, criterion_group, criterion_main};

const ISSUER: &str = "https://attest.local";
const ADMIN: &str = "bench-admin-token-0123";

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = server.url();
    let endpoint = server.local_addr().to_string();
    let (signer, ca) =
        SigningIdentity::generate_with_local_ca(&[&endpoint], SystemTime::now()).unwrap();
    let broker = Arc::new(
        Broker::open(
            &dir.path().join("broker.redb"),
            &MasterKey::generate().unwrap(),
            signer,
            BrokerConfig::new(&url),
        )
        .unwrap(),
    );
    broker.set_admin_token(ADMIN).unwrap();
    let attestation = TokenIssuer::generate(ISSUER).unwrap();
    let trusted: Arc<dyn TokenCheck> =
        Arc::new(TrustedAuthorities::new(Client::new()).trust_jwks(ISSUER, attestation.jwks()));
    let router = confsum_server::skr::router(Arc::clone(&broker), Arc::clone(&trusted));
    std::thread::spawn(move || server.serve_blocking(router, std::future::pending()));

    let host_data = [0x73; 32];
    let policy = ReleasePolicy::all_of(
        ISSUER,
        vec![vec![
            ClaimCondition::equals("x-ms-sevsnpvm-hostdata", hex::encode(host_data)),
            ClaimCondition::equals("x-ms-sevsnpvm-is-debuggable", "false"),
            ClaimCondition::equals("x-ms-sevsnpvm-vmpl", "0"),
        ]],
    );
    let hsm = HsmClient::with_ca_pem(&url, ca.cert_pem().as_bytes())
        .unwrap()
        .bearer(Some(zeroize::Zeroizing::new(ADMIN.to_owned())));
    hsm.import(
        "docs",
        &ImportKeyRequest {
            key: KeyMaterial::from_key_file(KeyType::Oct, &[7u8; 32])
                .unwrap()
                .to_import_jwk()
                .unwrap(),
            hsm: Some(true),
            attributes: Some(ImportAttributes {
                enabled: Some(true),
                exportable: Some(true),
            }),
            release_policy: Some(ReleasePolicyBody {
                content_type: Some(POLICY_CONTENT_TYPE.to_owned()),
                data: policy.encode_base64url(),
                immutable: Some(false),
            }),
            tags: None,
        },
    )
    .unwrap();
    let workload = WrappingPrivateKey::generate(2048).unwrap();
    let runtime = RuntimeClaims::from_json(workload.runtime_jwks().as_bytes()).unwrap();
    let claims = TokenClaims::builder()
        .host_data(host_data)
        .report_data(runtime.report_data())
        .runtime(runtime)
        .insecure_emulated(true)
        .build()
        .unwrap();
    let token = attestation
        .issue(&claims, SystemTime::now(), Duration::from_secs(3600))
        .unwrap();
    let request = ReleaseRequest {
        target: token.clone(),
        enc: None,
        nonce: None,
    };
    assert_eq!(
        hsm.release("docs", &token)
            .unwrap()
            .unwrap(&workload)
            .unwrap()
            .as_slice(),
        [7u8; 32]
    );

    let mut g = c.benchmark_group("skr_release_http");
    g.bench_function("in_process_release_token", |b| {
        b.iter(|| {
            black_box(
                broker
                    .release_token("docs", &request, trusted.as_ref(), SystemTime::now())
                    .unwrap(),
            )
        })
    });
    g.bench_function("loopback_http_release_verified", |b| {
        b.iter(|| black_box(hsm.release("docs", &token).unwrap()))
    });
    g.finish();

    // Sequential latency percentiles.
    let mut latencies: Vec<Duration> = (0..2000)
        .map(|_| {
            let start = Instant::now();
            black_box(hsm.release("docs", &token).unwrap());
            start.elapsed()
        })
        .collect();
    latencies.sort();
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    println!(
        "skr_release_http sequential: n={} p50={:?} p90={:?} p99={:?} max={:?}",
        latencies.len(),
        pct(50),
        pct(90),
        pct(99),
        latencies[latencies.len() - 1]
    );

    // Throughput with 8 client threads.
    let threads = 8;
    let per_thread = 250;
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let hsm = hsm.clone();
            let token = token.clone();
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    black_box(hsm.release("docs", &token).unwrap());
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let elapsed = start.elapsed();
    println!(
        "skr_release_http concurrent: {threads} threads x {per_thread} releases in {elapsed:?} = {:.0} releases/s",
        f64::from(threads * per_thread) / elapsed.as_secs_f64()
    );
    assert!(broker.verify_audit().is_ok());
}

criterion_group!(benches, bench);
criterion_main!(benches);
