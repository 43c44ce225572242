//! Summarization on the tiny checkpoints of crates/summarize/testdata:
//! greedy and beam `generate_ids` on a recorded case's input ids, in f32
//! and int8, and the time to load a checkpoint.
//!
//! The models are tiny and random, so this measures the per-step overhead
//! of generation (tensor dispatch, caches, beam bookkeeping) more than
//! arithmetic; real checkpoints are benchmarked by tools/bench-summarize.py.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use confsum_summarize::{LoadOptions, Precision, Summarizer};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Value;

const FIXTURES: [&str; 3] = ["t5_v1_0", "t5_v1_1", "bart"];

/// The case whose input ids are benchmarked (35 ids for T5, 32 for BART).
const CASE: &str = "paragraph";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/summarize/testdata")
        .join(name)
}

fn case(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).unwrap();
    let expected: Value = serde_json::from_str(&text).unwrap();
    expected["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == CASE)
        .unwrap()
        .clone()
}

fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| u32::try_from(v.as_u64().unwrap()).unwrap())
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("summarize");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(2));

    for name in FIXTURES {
        let case = case(name);
        let input = vec![ids(&case["input_ids"])];
        for (precision, label) in [(Precision::F32, "f32"), (Precision::Int8, "int8")] {
            let options = LoadOptions::default().precision(precision);
            for run in ["greedy", "beam"] {
                let recorded = case["runs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["name"] == run)
                    .unwrap();
                let mut summarizer = Summarizer::load(&fixture(name), &options).unwrap();
                summarizer
                    .generation_config_mut()
                    .update(&recorded["kwargs"])
                    .unwrap();
                let out = summarizer.generate_ids(&input).unwrap();
                // Timing the wrong computation is no use: f32 must match
                // transformers.
                if precision == Precision::F32 {
                    assert_eq!(out, vec![ids(&recorded["ids"])], "{name} {run}");
                }
                g.bench_function(format!("{name}/{run}/{label}"), |b| {
                    b.iter(|| black_box(summarizer.generate_ids(black_box(&input)).unwrap()));
                });
            }
        }
    }

    let dir = fixture("t5_v1_0");
    g.bench_function("t5_v1_0/load/f32", |b| {
        b.iter(|| black_box(Summarizer::load(&dir, &LoadOptions::default()).unwrap()));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
