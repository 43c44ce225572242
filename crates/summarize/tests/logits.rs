//! The T5 and BART networks against transformers, step by step.
//!
//! For each case of a fixture, `expected.json` records the logits of
//! transformers' first decoder step and the ids of each `generate` run.
//! Here [`Summarizer::logits`] must give the first step within 1e-4 (or
//! 1e-5 of the logits' scale, where that is larger), and a
//! greedy loop written here on top of it, with the logits processors that
//! transformers reports it ran (`effective`), must give the recorded ids.
//! That checks the models without this crate's own search
//! (`parity.rs` checks the two together, and runs the padded batch as one
//! batch; here its rows run one by one). The configuration files as
//! transformers 4 saved them must give the very same logits. Int8 weights
//! are held to looser bounds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;
use std::path::Path;

use confsum_summarize::{LoadOptions, Precision, Summarizer};
use serde_json::{Value, json};
use tempfile::TempDir;

use common::{expected, f32_logit_bound, fixture, floats, greedy_run, ids, read_json, rows};

fn load(dir: &Path, precision: Precision) -> Summarizer {
    Summarizer::load(dir, &LoadOptions::default().precision(precision))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

/// The fixture `model` with `config` as its `config.json` (and no
/// `generation_config.json`).
fn with_config(model: &str, config: &Value) -> (TempDir, Summarizer) {
    let tmp = tempfile::tempdir().unwrap();
    for file in ["model.safetensors", "tokenizer.json"] {
        fs::copy(fixture(model).join(file), tmp.path().join(file)).unwrap();
    }
    fs::write(
        tmp.path().join("config.json"),
        serde_json::to_vec(config).unwrap(),
    )
    .unwrap();
    let summarizer = load(tmp.path(), Precision::F32);
    (tmp, summarizer)
}

/// The config as transformers 4 writes it for a checkpoint that never
/// went through transformers 5: no `scale_decoder_outputs`, and
/// `tie_word_embeddings: false` on v1.1 (absent on v1.0).
fn pure_v4_config(model: &str) -> Value {
    let mut v = read_json(&fixture(model).join("tf4").join("config.json"));
    let scale = v["scale_decoder_outputs"].as_bool();
    let obj = v.as_object_mut().unwrap();
    obj.remove("scale_decoder_outputs");
    if scale == Some(false) {
        obj.insert("tie_word_embeddings".into(), json!(false));
    }
    v
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The first of equal maxima, as torch.argmax picks.
fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    u32::try_from(best).unwrap()
}

/// The logits processors transformers' greedy search runs for the
/// settings a run records as `effective`.
#[derive(Debug)]
struct Rules {
    max_new: usize,
    min_length: usize,
    no_repeat_ngram: usize,
    forced_bos: Option<u32>,
    forced_eos: Option<u32>,
    eos: u32,
    pad: u32,
    start: u32,
}

impl Rules {
    fn from_effective(e: &Value) -> Self {
        let num = |k: &str| e[k].as_u64().map(|n| usize::try_from(n).unwrap());
        let id = |k: &str| e[k].as_u64().map(|n| u32::try_from(n).unwrap());
        assert_eq!(num("num_beams"), Some(1));
        assert_ne!(e["do_sample"], Value::Bool(true));
        Self {
            // max_length counts the decoder start token.
            max_new: num("max_new_tokens").unwrap_or_else(|| num("max_length").unwrap() - 1),
            min_length: num("min_length").unwrap_or(0),
            no_repeat_ngram: num("no_repeat_ngram_size").unwrap_or(0),
            forced_bos: id("forced_bos_token_id"),
            forced_eos: id("forced_eos_token_id"),
            eos: id("eos_token_id").unwrap(),
            pad: id("pad_token_id").unwrap(),
            start: id("decoder_start_token_id").unwrap(),
        }
    }

    /// The next token of `seq` (start token included) from `logits`.
    fn pick(&self, seq: &[u32], logits: &[f32]) -> u32 {
        let len = seq.len();
        if len == 1
            && let Some(bos) = self.forced_bos
        {
            return bos;
        }
        if len == self.max_new
            && let Some(eos) = self.forced_eos
        {
            return eos;
        }
        let mut logits = logits.to_vec();
        if len < self.min_length {
            logits[self.eos as usize] = f32::NEG_INFINITY;
        }
        let n = self.no_repeat_ngram;
        if n > 0 && len + 1 >= n {
            let tail = &seq[len + 1 - n..];
            for gram in seq.windows(n) {
                if gram[..n - 1] == *tail {
                    logits[gram[n - 1] as usize] = f32::NEG_INFINITY;
                }
            }
        }
        argmax(&logits)
    }

    /// Greedy search on one input, the row `generate` returns minus the
    /// start token.
    fn greedy(&self, model: &mut Summarizer, input: &[u32]) -> Vec<u32> {
        let mut seq = vec![self.start];
        while seq.len() <= self.max_new {
            let rows = model.logits(input, &seq).unwrap();
            let token = self.pick(&seq, rows.last().unwrap());
            seq.push(token);
            if token == self.eos {
                break;
            }
        }
        seq.split_off(1)
    }

    /// The rows of a padded batch as transformers returns them: each run
    /// alone, then filled with padding to the longest.
    fn greedy_batch(&self, model: &mut Summarizer, batch: &Value) -> Vec<Vec<u32>> {
        let mut out: Vec<Vec<u32>> = rows(&batch["input_ids"])
            .into_iter()
            .zip(rows(&batch["attention_mask"]))
            .map(|(row, mask)| {
                let input: Vec<u32> = row
                    .into_iter()
                    .zip(mask)
                    .filter(|&(_, m)| m == 1)
                    .map(|(id, _)| id)
                    .collect();
                self.greedy(model, &input)
            })
            .collect();
        let width = out.iter().map(Vec::len).max().unwrap();
        for row in &mut out {
            row.resize(width, self.pad);
        }
        out
    }
}

fn first_logits(model: &mut Summarizer, input: &[u32], start: u32) -> Vec<f32> {
    model.logits(input, &[start]).unwrap().remove(0)
}

/// The greedy runs of a case (transformers' `num_beams` 1).
fn greedy_runs(case: &Value) -> impl Iterator<Item = &Value> {
    case["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|run| run["effective"]["num_beams"] == 1)
}

/// First-step logits and the "greedy" run against transformers, for the
/// v5 config, the transformers 4 one and the one transformers 4 writes
/// for a checkpoint it made itself.
fn check_t5(name: &str) {
    let expected = expected(name);
    let mut v5 = load(&fixture(name), Precision::F32);
    let (_tf4, mut v4) = with_config(
        name,
        &read_json(&fixture(name).join("tf4").join("config.json")),
    );
    let (_pure, mut pure_v4) = with_config(name, &pure_v4_config(name));
    let cases = expected["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let input = ids(&case["input_ids"]);
        let run = greedy_run(case);
        let rules = Rules::from_effective(&run["effective"]);
        let want = floats(&case["first_step_logits"]);
        let got = first_logits(&mut v5, &input, rules.start);
        let err = max_abs_diff(&got, &want);
        println!("{name} {}: max |logit error| {err:.3e}", case["name"]);
        let bound = f32_logit_bound(&want);
        assert!(
            err < bound,
            "{name} {}: logits off by {err} (bound {bound})",
            case["name"]
        );
        assert_eq!(
            first_logits(&mut v4, &input, rules.start),
            got,
            "tf4 config differs"
        );
        assert_eq!(
            first_logits(&mut pure_v4, &input, rules.start),
            got,
            "v4-style config differs"
        );

        let got = rules.greedy(&mut v5, &input);
        assert_eq!(got, ids(&run["ids"]), "{name} {} greedy", case["name"]);
        assert_eq!(rules.greedy(&mut v4, &input), got);
    }

    // Each row of the padded batch must come out as transformers gave it.
    let batch = &expected["batch"];
    assert!(
        rows(&batch["attention_mask"])
            .iter()
            .flatten()
            .any(|&m| m == 0),
        "batch has no padding"
    );
    let rules = Rules::from_effective(&batch["effective"]);
    assert_eq!(
        rules.greedy_batch(&mut v5, batch),
        rows(&batch["ids"]),
        "{name} batch"
    );
}

#[test]
fn t5_v1_0_matches_transformers() {
    check_t5("t5_v1_0");
}

#[test]
fn t5_v1_1_matches_transformers() {
    check_t5("t5_v1_1");
}

/// Int8: finite logits, and teacher-forced greedy choices that mostly
/// agree with transformers' f32 ones.
fn check_t5_int8(name: &str) -> (usize, usize) {
    let expected = expected(name);
    let mut q = load(&fixture(name), Precision::Int8);
    let (mut agree, mut total) = (0, 0);
    let mut worst = 0f32;
    for case in expected["cases"].as_array().unwrap() {
        let input = ids(&case["input_ids"]);
        let run = greedy_run(case);
        let start = Rules::from_effective(&run["effective"]).start;
        let got = first_logits(&mut q, &input, start);
        assert!(got.iter().all(|x| x.is_finite()));
        worst = worst.max(max_abs_diff(&got, &floats(&case["first_step_logits"])));
        // Feed transformers' tokens; score each step's choice.
        let target = ids(&run["ids"]);
        let mut feed = vec![start];
        feed.extend_from_slice(&target[..target.len() - 1]);
        let steps = q.logits(&input, &feed).unwrap();
        assert_eq!(steps.len(), target.len());
        for (logits, &next) in steps.iter().zip(&target) {
            assert!(logits.iter().all(|x| x.is_finite()));
            agree += usize::from(argmax(logits) == next);
            total += 1;
        }
    }
    println!(
        "{name} int8: {agree}/{total} greedy steps agree ({:.1}%), first-step max |logit error| {worst:.3e}",
        100.0 * agree as f64 / total as f64
    );
    (agree, total)
}

#[test]
fn t5_int8_mostly_agrees_with_f32() {
    for name in ["t5_v1_0", "t5_v1_1"] {
        let (agree, total) = check_t5_int8(name);
        assert!(
            total > 0 && agree * 10 >= total * 8,
            "{name}: {agree}/{total}"
        );
    }
}

/// First-step logits and every greedy run of the recorded fixture, for
/// the transformers 5 and the transformers 4 config.
#[test]
fn bart_matches_transformers() {
    let expected = expected("bart");
    let (_tf4_dir, tf4) = with_config(
        "bart",
        &read_json(&fixture("bart").join("tf4").join("config.json")),
    );
    let models = [
        ("config.json", load(&fixture("bart"), Precision::F32)),
        ("tf4/config.json", tf4),
    ];
    for (config, mut model) in models {
        let mut greedy_runs_checked = 0;
        for case in expected["cases"].as_array().unwrap() {
            let ids_in = ids(&case["input_ids"]);
            let logits = first_logits(&mut model, &ids_in, 2);
            let want = floats(&case["first_step_logits"]);
            let err = max_abs_diff(&logits, &want);
            println!(
                "{config} {}: max first-step logit error {err:e}",
                case["name"]
            );
            assert!(err < f32_logit_bound(&want), "{err}");
            for run in greedy_runs(case) {
                let rules = Rules::from_effective(&run["effective"]);
                let got = rules.greedy(&mut model, &ids_in);
                assert_eq!(got, ids(&run["ids"]), "{} {}", case["name"], run["name"]);
                greedy_runs_checked += 1;
            }
        }
        assert!(greedy_runs_checked >= 3);
        let batch = &expected["batch"];
        let rules = Rules::from_effective(&batch["effective"]);
        assert_eq!(
            rules.greedy_batch(&mut model, batch),
            rows(&batch["ids"]),
            "{config} batch"
        );
    }
}

/// Int8 must stay usable: finite logits near f32's (this random model
/// has large weights, so quantization moves it more than a trained
/// one), and greedy agreement is reported.
#[test]
fn bart_int8_stays_close() {
    let expected = expected("bart");
    let mut model = load(&fixture("bart"), Precision::Int8);
    let (mut same, mut total) = (0, 0);
    for case in expected["cases"].as_array().unwrap() {
        let ids_in = ids(&case["input_ids"]);
        let logits = first_logits(&mut model, &ids_in, 2);
        let want = floats(&case["first_step_logits"]);
        assert!(logits.iter().all(|x| x.is_finite()));
        let err = max_abs_diff(&logits, &want);
        let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        println!(
            "int8 {}: max first-step logit error {err:e} (largest logit {scale})",
            case["name"]
        );
        // Quantized for real, yet not far off.
        assert!(err > 1e-4 && err < 0.5 * scale, "{err}");
        for run in greedy_runs(case) {
            let got = Rules::from_effective(&run["effective"]).greedy(&mut model, &ids_in);
            let want = ids(&run["ids"]);
            same += got.iter().zip(&want).filter(|(a, b)| a == b).count();
            total += want.len().max(got.len());
        }
    }
    println!("int8: greedy tokens agreeing with transformers f32: {same}/{total}");
    assert!(total > 0);
}
