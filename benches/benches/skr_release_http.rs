//! One key release over loopback HTTP, as a client sees it: the request
//! (ureq), the broker's router (token signature check against a cached
//! JWKS, policy, wrap, RS256 JWS, audit record fsync'd to redb), the
//! answer, and the client's JWS and chain check. Against the same release
//! in process (`Broker::release_token`, no HTTP), in the same run.
//!
//! Every measurement runs twice in one process, on two brokers that differ
//! only in how they commit audit records: `per_record` (one redb write
//! transaction and fsync per release, `BrokerConfig::group_commit` off)
//! and `group` (concurrent releases share one; the default).
//!
//! After criterion, it prints the latency percentiles of sequential
//! releases and the throughput (and latency) of 8 and 32 client threads,
//! because the targets are a p99 and a rate, which criterion does not
//! report. `SKR_BENCH_RELEASES` sets how many releases each of those runs
//! makes (default 2000).
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

/// A broker behind its own loopback server, with a key to release and a
/// client and token that get it.
struct Env {
    name: &'static str,
    broker: Arc<Broker>,
    trusted: Arc<dyn TokenCheck>,
    hsm: HsmClient,
    token: String,
    _dir: tempfile::TempDir,
}

fn env(name: &'static str, group_commit: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = server.url();
    let endpoint = server.local_addr().to_string();
    let (signer, ca) =
        SigningIdentity::generate_with_local_ca(&[&endpoint], SystemTime::now()).unwrap();
    let mut config = BrokerConfig::new(&url);
    config.group_commit = group_commit;
    let broker = Arc::new(
        Broker::open(
            &dir.path().join("broker.redb"),
            &MasterKey::generate().unwrap(),
            signer,
            config,
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
    assert_eq!(
        hsm.release("docs", &token)
            .unwrap()
            .unwrap(&workload)
            .unwrap()
            .as_slice(),
        [7u8; 32]
    );
    Env {
        name,
        broker,
        trusted,
        hsm,
        token,
        _dir: dir,
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// `releases` releases from `clients` threads at once: the rate, and the
/// latency percentiles of the releases.
fn load(env: &Env, clients: usize, releases: usize) -> (f64, Vec<Duration>) {
    let per_client = releases.div_ceil(clients);
    let start = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let hsm = env.hsm.clone();
            let token = env.token.clone();
            std::thread::spawn(move || {
                (0..per_client)
                    .map(|_| {
                        let t = Instant::now();
                        black_box(hsm.release("docs", &token).unwrap());
                        t.elapsed()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let elapsed = start.elapsed();
    latencies.sort();
    (latencies.len() as f64 / elapsed.as_secs_f64(), latencies)
}

fn bench(c: &mut Criterion) {
    let envs = [env("per_record", false), env("group", true)];
    let releases: usize = std::env::var("SKR_BENCH_RELEASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);

    let mut g = c.benchmark_group("skr_release_http");
    for e in &envs {
        let request = ReleaseRequest {
            target: e.token.clone(),
            enc: None,
            nonce: None,
        };
        g.bench_function(format!("in_process_release_token/{}", e.name), |b| {
            b.iter(|| {
                black_box(
                    e.broker
                        .release_token("docs", &request, e.trusted.as_ref(), SystemTime::now())
                        .unwrap(),
                )
            })
        });
        g.bench_function(format!("loopback_http_release_verified/{}", e.name), |b| {
            b.iter(|| black_box(e.hsm.release("docs", &e.token).unwrap()))
        });
    }
    g.finish();

    // Sequential latency percentiles, the two brokers alternating in
    // blocks so that both see the same background load.
    let mut sequential = [Vec::new(), Vec::new()];
    for _ in 0..10 {
        for (e, latencies) in envs.iter().zip(&mut sequential) {
            latencies.extend((0..releases / 10).map(|_| {
                let start = Instant::now();
                black_box(e.hsm.release("docs", &e.token).unwrap());
                start.elapsed()
            }));
        }
    }
    for (e, latencies) in envs.iter().zip(&mut sequential) {
        latencies.sort();
        println!(
            "skr_release_http sequential {:<10}: n={} p50={:.2?} p90={:.2?} p99={:.2?} max={:.2?} = {:.0} releases/s",
            e.name,
            latencies.len(),
            percentile(latencies, 50),
            percentile(latencies, 90),
            percentile(latencies, 99),
            latencies[latencies.len() - 1],
            latencies.len() as f64 / latencies.iter().sum::<Duration>().as_secs_f64(),
        );
    }

    // Throughput (and latency under load) with concurrent clients.
    for clients in [8, 32] {
        for e in &envs {
            let (rate, latencies) = load(e, clients, releases);
            println!(
                "skr_release_http concurrent {:<10}: {clients:>2} clients, n={} p50={:.2?} p99={:.2?} = {rate:.0} releases/s",
                e.name,
                latencies.len(),
                percentile(&latencies, 50),
                percentile(&latencies, 99),
            );
        }
    }

    for e in &envs {
        let report = e.broker.verify_audit().unwrap();
        println!(
            "skr_release_http audit log {:<10}: {} records verify",
            e.name, report.records
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
