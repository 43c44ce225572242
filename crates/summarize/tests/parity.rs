//! Token-for-token parity with transformers 5.24.
//!
//! Every fixture under `testdata/<model>/` holds a tiny random checkpoint
//! and `expected.json`, written by `tools/make-fixtures.py` with
//! transformers: the input ids of each case and the ids `generate`
//! returned for each set of keyword arguments, single and batched. Here
//! the same checkpoint goes through [`Summarizer`], with the checkpoint's
//! generation settings updated by the same keyword arguments, and every
//! id must match. The same runs are repeated with the configuration files
//! as transformers 4 saved them (`tf4/`), which must load to the same
//! settings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;
use std::path::Path;

use confsum_summarize::{Checkpoint, Family, LoadOptions, Summarizer};
use serde_json::Value;

use common::{configure, expected, fixture, ids, rows};

/// The rows of a padded batch with the padding dropped, by its mask.
fn unpad(input_ids: &Value, mask: &Value) -> Vec<Vec<u32>> {
    rows(input_ids)
        .into_iter()
        .zip(rows(mask))
        .map(|(row, mask)| {
            row.into_iter()
                .zip(mask)
                .filter(|&(_, m)| m == 1)
                .map(|(id, _)| id)
                .collect()
        })
        .collect()
}

/// Runs every case, run and batch of `expected.json` against the checkpoint
/// in `dir`; returns one line per mismatch.
fn check(label: &str, dir: &Path, expected: &Value) -> Vec<String> {
    let mut failures = Vec::new();
    let mut summarizer = Summarizer::load(dir, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("{label}: cannot load: {e}"));
    let cases = expected["cases"].as_array().unwrap();
    assert!(!cases.is_empty(), "{label}: no cases");
    let mut runs_checked = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let text = case["text"].as_str().unwrap();
        let prefix = case["prefix"].as_str().unwrap();
        let input_ids = ids(&case["input_ids"]);
        if summarizer.checkpoint().prefix() != prefix {
            failures.push(format!(
                "{label}/{name}: prefix {:?}, transformers used {prefix:?}",
                summarizer.checkpoint().prefix()
            ));
        }
        match summarizer.encode_text(text) {
            Ok(ours) if ours == input_ids => {}
            Ok(ours) => failures.push(format!(
                "{label}/{name}: input ids differ\n  ours   {ours:?}\n  theirs {input_ids:?}"
            )),
            Err(e) => failures.push(format!("{label}/{name}: encode_text failed: {e}")),
        }
        for run in case["runs"].as_array().unwrap() {
            let run_name = run["name"].as_str().unwrap();
            let want = ids(&run["ids"]);
            if let Err(e) = configure(&mut summarizer, &run["kwargs"]) {
                failures.push(format!("{label}/{name}/{run_name}: {e}"));
                continue;
            }
            runs_checked += 1;
            match summarizer.generate_ids(std::slice::from_ref(&input_ids)) {
                Ok(got) if got == [want.clone()] => {}
                Ok(got) => failures.push(format!(
                    "{label}/{name}/{run_name}: generated ids differ\n  ours   {got:?}\n  theirs [{want:?}]"
                )),
                Err(e) => failures.push(format!("{label}/{name}/{run_name}: generate failed: {e}")),
            }
        }
    }
    assert!(runs_checked > 0, "{label}: no runs");
    for key in ["batch", "batch_beam"] {
        let Some(batch) = expected.get(key) else {
            continue;
        };
        let texts: Vec<&str> = batch["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        let inputs = unpad(&batch["input_ids"], &batch["attention_mask"]);
        let want = rows(&batch["ids"]);
        for (i, (text, input)) in texts.iter().zip(&inputs).enumerate() {
            match summarizer.encode_text(text) {
                Ok(ours) if &ours == input => {}
                Ok(ours) => failures.push(format!(
                    "{label}/{key}[{i}]: input ids differ\n  ours   {ours:?}\n  theirs {input:?}"
                )),
                Err(e) => failures.push(format!("{label}/{key}[{i}]: encode_text failed: {e}")),
            }
        }
        if let Err(e) = configure(&mut summarizer, &batch["kwargs"]) {
            failures.push(format!("{label}/{key}: {e}"));
            continue;
        }
        match summarizer.generate_ids(&inputs) {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!(
                "{label}/{key}: generated ids differ\n  ours   {got:?}\n  theirs {want:?}"
            )),
            Err(e) => failures.push(format!("{label}/{key}: generate failed: {e}")),
        }
        // The text API: the same batch, each row cut after its end token.
        let eos = summarizer.generation_config().eos_token_ids.clone();
        match summarizer.summarize_batch(&texts) {
            Ok(summaries) => {
                for (i, (summary, row)) in summaries.iter().zip(&want).enumerate() {
                    let end = row
                        .iter()
                        .position(|id| eos.contains(id))
                        .map_or(row.len(), |p| p + 1);
                    if summary.ids != row[..end] {
                        failures.push(format!(
                            "{label}/{key}[{i}]: summary ids {:?}, transformers' row {row:?}",
                            summary.ids
                        ));
                    }
                }
                if summaries.len() != want.len() {
                    failures.push(format!("{label}/{key}: {} summaries", summaries.len()));
                }
            }
            Err(e) => failures.push(format!("{label}/{key}: summarize_batch failed: {e}")),
        }
    }
    failures
}

fn parity(model: &str, family: Family) {
    let dir = fixture(model);
    assert_eq!(Checkpoint::load(&dir).unwrap().family(), family);
    let failures = check(model, &dir, &expected(model));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The checkpoint with its configuration files replaced by the ones
/// transformers 4 wrote for the same model.
fn parity_tf4(model: &str) {
    let src = fixture(model);
    let tmp = tempfile::tempdir().unwrap();
    for file in ["model.safetensors", "tokenizer.json"] {
        fs::copy(src.join(file), tmp.path().join(file)).unwrap();
    }
    let tf4 = src.join("tf4");
    fs::copy(tf4.join("config.json"), tmp.path().join("config.json")).unwrap();
    if tf4.join("generation_config.json").exists() {
        fs::copy(
            tf4.join("generation_config.json"),
            tmp.path().join("generation_config.json"),
        )
        .unwrap();
    }
    let label = format!("{model} (transformers 4 configs)");
    let tf5 = Checkpoint::load(&src).unwrap();
    let old = Checkpoint::load(tmp.path()).unwrap();
    assert_eq!(old.family(), tf5.family(), "{label}");
    assert_eq!(old.window(), tf5.window(), "{label}");
    assert_eq!(old.prefix(), tf5.prefix(), "{label}");
    let failures = check(&label, tmp.path(), &expected(model));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn t5_v1_0_matches_transformers() {
    parity("t5_v1_0", Family::T5);
}

#[test]
fn t5_v1_1_matches_transformers() {
    parity("t5_v1_1", Family::T5);
}

#[test]
fn bart_matches_transformers() {
    parity("bart", Family::Bart);
}

#[test]
fn t5_v1_0_transformers_4_configs_match() {
    parity_tf4("t5_v1_0");
}

#[test]
fn t5_v1_1_transformers_4_configs_match() {
    parity_tf4("t5_v1_1");
}

#[test]
fn bart_transformers_4_configs_match() {
    parity_tf4("bart");
}

/// Int8 weights give other ids than transformers, but must load and
/// generate within the vocabulary on every family.
#[test]
fn int8_generates_on_every_fixture() {
    let options = LoadOptions::default().precision(confsum_summarize::Precision::Int8);
    for model in ["t5_v1_0", "t5_v1_1", "bart"] {
        let mut summarizer = Summarizer::load(&fixture(model), &options).unwrap();
        summarizer.generation_config_mut().max_new_tokens = Some(10);
        let summary = summarizer
            .summarize("The city council approved a new budget for public parks on Tuesday.")
            .unwrap();
        assert!(
            !summary.ids.is_empty() && summary.ids.len() <= 10,
            "{model}: {summary:?}"
        );
        let vocab = expected(model)["cases"][0]["first_step_logits"]
            .as_array()
            .unwrap()
            .len();
        assert!(
            summary.ids.iter().all(|&id| (id as usize) < vocab),
            "{model}: {summary:?}"
        );
    }
}
