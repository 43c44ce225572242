//! What the integration tests share: the fixture checkpoints under
//! `testdata/` and readers for the transformers outputs recorded there.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};

use confsum_summarize::Summarizer;
use serde_json::Value;

/// The fixture checkpoints, each with an `expected.json`.
pub(crate) const FIXTURES: [&str; 3] = ["t5_v1_0", "t5_v1_1", "bart"];

/// Checkpoints trained on a copy task (tools/make-trained-fixtures.py),
/// whose top logits are well apart: the ground for measuring int8. Their
/// `expected.json` holds greedy runs only.
pub(crate) const TRAINED: [&str; 2] = ["t5_copy", "bart_copy"];

pub(crate) fn fixture(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(model)
}

pub(crate) fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture's `expected.json`.
pub(crate) fn expected(model: &str) -> Value {
    read_json(&fixture(model).join("expected.json"))
}

pub(crate) fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an id list: {v}"))
        .iter()
        .map(|x| u32::try_from(x.as_u64().unwrap()).unwrap())
        .collect()
}

pub(crate) fn rows(v: &Value) -> Vec<Vec<u32>> {
    v.as_array().unwrap().iter().map(ids).collect()
}

pub(crate) fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// The case's run named "greedy" (transformers' `num_beams=1`).
pub(crate) fn greedy_run(case: &Value) -> &Value {
    case["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "greedy")
        .unwrap_or_else(|| panic!("{}: no greedy run", case["name"]))
}

/// Resets the generation settings to the checkpoint's, then applies
/// transformers-style keyword arguments.
pub(crate) fn configure(summarizer: &mut Summarizer, kwargs: &Value) -> Result<(), String> {
    *summarizer.generation_config_mut() = summarizer.checkpoint().generation_config().clone();
    summarizer
        .generation_config_mut()
        .update(kwargs)
        .map_err(|e| format!("update({kwargs}) failed: {e}"))
}

/// How far f32 logits may be from transformers' recorded ones: 1e-4, or
/// 1e-5 of the largest recorded logit where logits are large. Summing in
/// another order (gemm's AVX-512 kernels against torch's) moves a logit
/// by some units in the last place of its magnitude: 1.09e-4 on
/// t5_v1_1's "long" case, whose logits reach 28.
pub(crate) fn f32_logit_bound(want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    1e-4f32.max(1e-5 * scale)
}
