//! Serving measured: summaries per second and latency percentiles with C
//! concurrent clients over loopback HTTP (every answer signed by the
//! service and verified by the client), against the library's
//! `Summarizer::summarize` on the same inputs in the same process.
//!
//! ```text
//! cargo run -p confsum-workload --example serve_load -- [MODEL_DIR] [CLIENTS] [REQUESTS_PER_CLIENT]
//! ```
//!
//! Defaults: the tiny T5 of crates/summarize/testdata, 8 clients, 8
//! requests each. The attestation token is not part of what is measured
//! (a placeholder), so no attestation service is needed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use confsum_server::{Client, Server};
use confsum_summarize::{LoadOptions, Summarizer};
use confsum_workload::{
    AttestationDocument, ResponseVerifier, Service, ServiceConfig, SummariesRequest,
    WorkloadClient, WorkloadKeys, router,
};

const TEXTS: &[&str] = &[
    "The council approved the budget on Tuesday after a long debate about roads and schools.",
    "Rain is expected across the north for most of the week, with strong wind on the coast.",
    "The museum will reopen in spring with a new wing for maps and early photographs.",
    "Farmers said the late frost damaged apple blossoms in several valleys this year.",
];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let model = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../summarize/testdata/t5_v1_0")
    });
    let clients: usize = args.next().map_or(8, |a| a.parse().unwrap());
    let per_client: usize = args.next().map_or(8, |a| a.parse().unwrap());
    let total = clients * per_client;

    // Baseline: the library, one text at a time, the same inputs.
    let mut library = Summarizer::load(&model, &LoadOptions::default()).unwrap();
    library.summarize(TEXTS[0]).unwrap(); // warm-up
    let start = Instant::now();
    for i in 0..total {
        library.summarize(TEXTS[i % TEXTS.len()]).unwrap();
    }
    let library_time = start.elapsed();

    let keys = WorkloadKeys::generate().unwrap();
    let runtime = keys.runtime_json().unwrap();
    let verifier = ResponseVerifier::from_runtime_json(&runtime).unwrap();
    let doc = AttestationDocument {
        token: String::new(),
        evidence: String::new(),
        runtime_data: runtime,
    };
    let service = Service::new(
        doc,
        keys.into_signer(),
        Vec::new(),
        Summarizer::load(&model, &LoadOptions::default()).unwrap(),
        ServiceConfig::new("bench").max_batch(clients.max(1)),
    );
    let server = Server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = server.url();
    std::thread::spawn(move || server.serve_blocking(router(service), std::future::pending()));
    let client = WorkloadClient::new(Client::new(), &url);
    let ask = |i: usize| SummariesRequest {
        documents: vec![],
        texts: vec![TEXTS[i % TEXTS.len()].to_owned()],
    };
    client.summarize(&verifier, &ask(0)).unwrap(); // warm-up

    // Serve, one client: the overhead of HTTP, JSON and signatures.
    let start = Instant::now();
    for i in 0..total {
        client.summarize(&verifier, &ask(i)).unwrap();
    }
    let serial_time = start.elapsed();

    // Serve, C concurrent clients: batching across requests.
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let client = client.clone();
            let verifier = verifier.clone();
            std::thread::spawn(move || {
                (0..per_client)
                    .map(|j| {
                        let t = Instant::now();
                        client.summarize(&verifier, &ask(c + j)).unwrap();
                        t.elapsed()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    let concurrent_time = start.elapsed();
    latencies.sort();

    let per_s = |d: Duration| total as f64 / d.as_secs_f64();
    println!("model {}", model.display());
    println!("{total} summaries each way");
    println!(
        "library summarize, sequential:   {:8.1} summaries/s ({:.1} ms each)",
        per_s(library_time),
        library_time.as_secs_f64() * 1e3 / total as f64
    );
    println!(
        "serve, 1 client:                 {:8.1} summaries/s ({:.1} ms each), overhead {:+.1}%",
        per_s(serial_time),
        serial_time.as_secs_f64() * 1e3 / total as f64,
        (serial_time.as_secs_f64() / library_time.as_secs_f64() - 1.0) * 100.0
    );
    println!(
        "serve, {clients} clients:               {:8.1} summaries/s, p50 {:.1} ms, p99 {:.1} ms, vs library {:+.1}%",
        per_s(concurrent_time),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        (concurrent_time.as_secs_f64() / library_time.as_secs_f64() - 1.0) * 100.0
    );
}
