//! Batch throughput: 16 documents summarized with one `summarize_batch`
//! call against 16 `summarize` calls, on the tiny checkpoints of
//! crates/summarize/testdata, greedy (the library default for T5) and with
//! each checkpoint's own beam settings, in f32 and int8.
//!
//! Criterion reports each as summaries per second (16 elements per
//! iteration), so the ratio of the two lines is the batching gain. The
//! documents are the fixtures' recorded texts cut to different lengths, so
//! the batch is padded as real ones are.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use confsum_summarize::{LoadOptions, Precision, Summarizer};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

const FIXTURES: [&str; 3] = ["t5_v1_0", "t5_v1_1", "bart"];
const DOCUMENTS: usize = 16;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/summarize/testdata")
        .join(name)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("summarize_batch");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(DOCUMENTS as u64));

    for name in FIXTURES {
        let docs = common::fixture_texts(&fixture(name), DOCUMENTS);
        let texts: Vec<&str> = docs.iter().map(String::as_str).collect();
        for (precision, label) in [(Precision::F32, "f32"), (Precision::Int8, "int8")] {
            let options = LoadOptions::default().precision(precision);
            for (search, kwargs) in [
                ("greedy", json!({"num_beams": 1, "max_new_tokens": 20})),
                ("config", json!({})),
            ] {
                let mut summarizer = Summarizer::load(&fixture(name), &options).unwrap();
                summarizer.generation_config_mut().update(&kwargs).unwrap();
                // Padding changes the sums' shapes, so near-tied logits of
                // these random models may break differently: say how often.
                let batched = summarizer.summarize_batch(&texts).unwrap();
                let differ = texts
                    .iter()
                    .zip(&batched)
                    .filter(|(t, s)| summarizer.summarize(t).unwrap().ids != s.ids)
                    .count();
                println!(
                    "{name}/{search}/{label}: {differ} of {DOCUMENTS} batched summaries differ"
                );
                g.bench_function(format!("{name}/{search}/{label}/batch"), |b| {
                    b.iter(|| black_box(summarizer.summarize_batch(black_box(&texts)).unwrap()));
                });
                g.bench_function(format!("{name}/{search}/{label}/one_by_one"), |b| {
                    b.iter(|| {
                        texts
                            .iter()
                            .map(|t| summarizer.summarize(black_box(t)).unwrap())
                            .collect::<Vec<_>>()
                    });
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
