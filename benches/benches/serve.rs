//! Serving against the library, in one process, on the same inputs:
//! 32 texts summarized by the tiny T5 of crates/summarize/testdata
//!
//! - `library/summarize_batch_8`: `Summarizer::summarize_batch` on 4
//!   batches of 8 (what the service aims to do with 8 clients);
//! - `library/summarize_1`: `Summarizer::summarize`, one text at a time;
//! - `serve/8_clients`: 8 client threads, 4 requests each of one text,
//!   through `confsum serve`'s router on loopback HTTP (JSON, batching
//!   across requests, ES256 signing; each client verifies every answer
//!   and its request_sha256, as `confsum client summarize` does).
//!
//! Criterion reports summaries per second (32 per iteration); the ratio
//! of `serve/8_clients` to `library/summarize_batch_8` is serve's
//! overhead. After the group, 12 interleaved rounds (library, serve,
//! alternating order) print the median per-round ratio, which holds up
//! better than separate criterion runs on a shared machine, and the p50
//! and p99 latency of every served request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use confsum_server::{Client, Server};
use confsum_summarize::{LoadOptions, Summarizer};
use confsum_workload::{
    AttestationDocument, ResponseVerifier, Service, ServiceConfig, SummariesRequest,
    WorkloadClient, WorkloadKeys, router,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const CLIENTS: usize = 8;
const PER_CLIENT: usize = 4;
const TEXTS: usize = CLIENTS * PER_CLIENT;

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/summarize/testdata/t5_v1_0")
}

/// The service on a free loopback port (until the process ends), and a
/// verifier of its answers.
fn serve() -> (WorkloadClient, ResponseVerifier) {
    let keys = WorkloadKeys::generate().unwrap();
    let runtime = keys.runtime_json().unwrap();
    let verifier = ResponseVerifier::from_runtime_json(&runtime).unwrap();
    // The attestation is not on the measured path.
    let doc = AttestationDocument {
        token: String::new(),
        evidence: String::new(),
        runtime_data: runtime,
    };
    let service = Service::new(
        doc,
        keys.into_signer(),
        Vec::new(),
        Summarizer::load(&model(), &LoadOptions::default()).unwrap(),
        ServiceConfig::new("t5-tiny").max_batch(CLIENTS),
    );
    let server = Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = server.url();
    std::thread::spawn(move || server.serve_blocking(router(service), std::future::pending()));
    (WorkloadClient::new(Client::new(), &url), verifier)
}

/// `per_client` requests from each of 8 client threads, one text each;
/// the latency of every request.
fn clients(
    client: &WorkloadClient,
    verifier: &ResponseVerifier,
    texts: &[String],
    per_client: usize,
) -> Vec<Duration> {
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..CLIENTS)
            .map(|c| {
                s.spawn(move || {
                    (0..per_client)
                        .map(|j| {
                            let request = SummariesRequest {
                                documents: Vec::new(),
                                texts: vec![texts[(c * per_client + j) % texts.len()].clone()],
                            };
                            let t = Instant::now();
                            let answer = client.summarize(verifier, &request).unwrap();
                            black_box(answer);
                            t.elapsed()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn bench(c: &mut Criterion) {
    let texts = common::fixture_texts(&model(), TEXTS);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut library = Summarizer::load(&model(), &LoadOptions::default()).unwrap();
    let (client, verifier) = serve();

    let mut g = c.benchmark_group("serve");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(TEXTS as u64));
    g.bench_function("library/summarize_batch_8", |b| {
        b.iter(|| {
            for chunk in refs.chunks(CLIENTS) {
                black_box(library.summarize_batch(chunk).unwrap());
            }
        });
    });
    g.bench_function("library/summarize_1", |b| {
        b.iter(|| {
            for text in &refs {
                black_box(library.summarize(text).unwrap());
            }
        });
    });
    g.bench_function("serve/8_clients", |b| {
        b.iter(|| clients(&client, &verifier, &texts, PER_CLIENT));
    });
    g.finish();

    // Interleaved rounds of the same 32 texts, library then serve or the
    // other way round, so that load from other processes on a shared
    // machine hits both alike; the median of the per-round ratios is the
    // overhead. Also the latency of every request, which criterion does
    // not report.
    let rounds = 12;
    let (mut library_total, mut serve_total) = (Duration::ZERO, Duration::ZERO);
    let mut ratios = Vec::with_capacity(rounds);
    let mut latencies = Vec::with_capacity(rounds * TEXTS);
    for round in 0..rounds {
        let mut library_round = || {
            let t = Instant::now();
            for chunk in refs.chunks(CLIENTS) {
                black_box(library.summarize_batch(chunk).unwrap());
            }
            t.elapsed()
        };
        let serve_round = |latencies: &mut Vec<Duration>| {
            let t = Instant::now();
            latencies.extend(clients(&client, &verifier, &texts, PER_CLIENT));
            t.elapsed()
        };
        let (l, s) = if round % 2 == 0 {
            let l = library_round();
            (l, serve_round(&mut latencies))
        } else {
            let s = serve_round(&mut latencies);
            (library_round(), s)
        };
        library_total += l;
        serve_total += s;
        ratios.push(s.as_secs_f64() / l.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    latencies.sort();
    let per_s = |d: Duration| (rounds * TEXTS) as f64 / d.as_secs_f64();
    println!(
        "interleaved, {rounds} rounds of {TEXTS}: library summarize_batch_8 {:.1} summaries/s, \
         serve 8 clients {:.1} summaries/s, serve/library median {:+.1}% (min {:+.1}%, max {:+.1}%)",
        per_s(library_total),
        per_s(serve_total),
        (ratios[rounds / 2] - 1.0) * 100.0,
        (ratios[0] - 1.0) * 100.0,
        (ratios[rounds - 1] - 1.0) * 100.0,
    );
    println!(
        "serve 8 clients latency: {} requests, p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
