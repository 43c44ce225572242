//! How closely `Precision::Int8` follows f32.
//!
//! The measurement that counts runs on the trained fixtures
//! (`common::TRAINED`, built by tools/make-trained-fixtures.py): tiny T5
//! and BART checkpoints trained to copy their input, so their top logit
//! stands well clear of the next (transformers' margins are recorded in
//! `expected.json`). On each case:
//!
//! - f32 greedy must give transformers' ids exactly, and its first-step
//!   logits within the f32 bound of `logits.rs` (recorded for the first
//!   cases only, to keep `expected.json` small);
//! - greedy agreement: the share of f32's tokens that int8 reproduces
//!   before the two first differ (a token after the first difference
//!   continues another text and is not counted, even where it matches);
//!   at least [`MIN_GREEDY`];
//! - teacher-forced agreement: with f32's greedy output fed to both, the
//!   share of steps whose top-1 is the same; at least
//!   [`MIN_TEACHER_FORCED`].
//!
//! These are deterministic measurements over fixed fixtures, not timings.
//!
//! The random fixtures (`common::FIXTURES`) are poor ground for int8:
//! their best two logits are close (0.2 to 0.4 standard deviations of the
//! logits apart) and 8-bit weights move logits by about as much, so
//! greedy search flips between near-ties. On them only a floor is kept
//! that catches a broken int8 path, which parts from f32 at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use confsum_summarize::{LoadOptions, Precision, Summarizer};
use serde_json::Value;

use common::{
    FIXTURES, TRAINED, expected, f32_logit_bound, fixture, floats, greedy_run, ids, read_json,
};

/// Greedy tokens int8 must reproduce before the first difference, on the
/// trained fixtures (issue 14's target).
const MIN_GREEDY: f64 = 0.95;
/// Teacher-forced steps whose top-1 int8 must share with f32, on the
/// trained fixtures (issue 14's target).
const MIN_TEACHER_FORCED: f64 = 0.99;
/// The least greedy agreement on the random fixtures (measured: 71/134 =
/// 0.53 on x86_64).
const MIN_RANDOM_AGREEMENT: f64 = 0.50;

fn load(model: &str, precision: Precision) -> Summarizer {
    Summarizer::load(
        &fixture(model),
        &LoadOptions::default().precision(precision),
    )
    .unwrap_or_else(|e| panic!("{model}: {e}"))
}

fn generate(summarizer: &mut Summarizer, kwargs: &Value, input: &[u32]) -> Vec<u32> {
    common::configure(summarizer, kwargs).unwrap_or_else(|e| panic!("{e}"));
    let mut rows = summarizer.generate_ids(&[input.to_vec()]).unwrap();
    assert_eq!(rows.len(), 1);
    rows.pop().unwrap()
}

/// Tokens at the start of `a` and `b` that are equal.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The first of equal maxima, as torch.argmax picks.
fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Checks that int8 output is a well-formed generation.
fn check_well_formed(model: &str, name: &str, int8: &Summarizer, got: &[u32], max_new: usize) {
    let vocab = read_json(&fixture(model).join("config.json"))["vocab_size"]
        .as_u64()
        .unwrap();
    assert!(
        !got.is_empty() && got.len() <= max_new,
        "{model}/{name}: int8 gave {} tokens (at most {max_new})",
        got.len()
    );
    assert!(
        got.iter().all(|&t| u64::from(t) < vocab),
        "{model}/{name}: int8 id beyond the vocabulary: {got:?}"
    );
    let eos = &int8.generation_config().eos_token_ids;
    if let Some(end) = got.iter().position(|t| eos.contains(t)) {
        assert_eq!(
            end + 1,
            got.len(),
            "{model}/{name}: tokens after the end: {got:?}"
        );
    }
}

/// What one fixture measured.
#[derive(Debug, Default, Clone, Copy)]
struct Agreement {
    /// f32 greedy tokens int8 reproduced before the first difference.
    greedy_same: usize,
    /// f32 greedy tokens.
    greedy_total: usize,
    /// Teacher-forced steps with the same top-1.
    forced_same: usize,
    /// Teacher-forced steps.
    forced_total: usize,
    /// The largest |int8 - f32| logit seen, teacher-forced.
    max_logit_diff: f32,
    /// Cases whose f32 first-step logits were checked against transformers'.
    logits_checked: usize,
}

impl Agreement {
    fn add(&mut self, other: Self) {
        self.greedy_same += other.greedy_same;
        self.greedy_total += other.greedy_total;
        self.forced_same += other.forced_same;
        self.forced_total += other.forced_total;
        self.max_logit_diff = self.max_logit_diff.max(other.max_logit_diff);
        self.logits_checked += other.logits_checked;
    }

    fn greedy(&self) -> f64 {
        self.greedy_same as f64 / self.greedy_total as f64
    }

    fn forced(&self) -> f64 {
        self.forced_same as f64 / self.forced_total as f64
    }
}

/// Greedy (and, where `teacher_forced`, teacher-forced) agreement of int8
/// with f32 on every case of `model`, after checking f32 against
/// transformers.
fn measure(model: &str, teacher_forced: bool) -> Agreement {
    let expected = expected(model);
    let mut f32 = load(model, Precision::F32);
    let mut int8 = load(model, Precision::Int8);
    let mut out = Agreement::default();
    let cases = expected["cases"].as_array().unwrap();
    assert!(!cases.is_empty(), "{model}: no cases");
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let input = ids(&case["input_ids"]);
        let run = greedy_run(case);
        let kwargs = &run["kwargs"];
        let max_new = kwargs["max_new_tokens"].as_u64().unwrap() as usize;

        let reference = generate(&mut f32, kwargs, &input);
        assert_eq!(
            reference,
            ids(&run["ids"]),
            "{model}/{name}: f32 is not transformers' greedy output"
        );
        let got = generate(&mut int8, kwargs, &input);
        check_well_formed(model, name, &int8, &got, max_new);
        let same = common_prefix(&reference, &got);
        if same < reference.len() {
            eprintln!(
                "{model}/{name}: int8 parts at token {same} of {}\n  f32  {reference:?}\n  int8 {got:?}",
                reference.len()
            );
        }
        out.greedy_same += same;
        out.greedy_total += reference.len();

        if teacher_forced {
            let start = f32.generation_config().decoder_start_token_id.unwrap();
            let mut feed = vec![start];
            feed.extend_from_slice(&reference[..reference.len() - 1]);
            let want = f32.logits(&input, &feed).unwrap();
            let have = int8.logits(&input, &feed).unwrap();
            assert_eq!(want.len(), reference.len());
            assert_eq!(have.len(), reference.len());
            if let Some(recorded) = case.get("first_step_logits") {
                let recorded = floats(recorded);
                let err = max_abs_diff(&want[0], &recorded);
                assert!(
                    err < f32_logit_bound(&recorded),
                    "{model}/{name}: f32 first-step logits off by {err}"
                );
                out.logits_checked += 1;
            }
            for (w, h) in want.iter().zip(&have) {
                assert!(h.iter().all(|x| x.is_finite()), "{model}/{name}");
                out.forced_same += usize::from(argmax(w) == argmax(h));
                out.forced_total += 1;
                out.max_logit_diff = out.max_logit_diff.max(max_abs_diff(w, h));
            }
        }
    }
    out
}

/// Issue 14's int8 quality targets, on checkpoints whose top logits are
/// well separated.
#[test]
fn int8_meets_targets_on_trained_fixtures() {
    let mut all = Agreement::default();
    for model in TRAINED {
        let m = measure(model, true);
        eprintln!(
            "{model}: greedy {}/{} = {:.4}, teacher-forced {}/{} = {:.4}, max |int8 - f32| logit {:.3}",
            m.greedy_same,
            m.greedy_total,
            m.greedy(),
            m.forced_same,
            m.forced_total,
            m.forced(),
            m.max_logit_diff
        );
        assert!(
            m.logits_checked > 0,
            "{model}: no first-step logits recorded"
        );
        // Each fixture must really be quantized, or this proves nothing.
        assert!(m.max_logit_diff > 1e-4, "{model}: int8 equals f32");
        assert!(
            m.greedy() >= MIN_GREEDY,
            "{model}: int8 reproduced {}/{} greedy tokens ({:.4}), below {MIN_GREEDY}",
            m.greedy_same,
            m.greedy_total,
            m.greedy()
        );
        assert!(
            m.forced() >= MIN_TEACHER_FORCED,
            "{model}: int8 top-1 agreed on {}/{} teacher-forced steps ({:.4}), below {MIN_TEACHER_FORCED}",
            m.forced_same,
            m.forced_total,
            m.forced()
        );
        all.add(m);
    }
    eprintln!(
        "overall: greedy {}/{} = {:.4}, teacher-forced {}/{} = {:.4}",
        all.greedy_same,
        all.greedy_total,
        all.greedy(),
        all.forced_same,
        all.forced_total,
        all.forced()
    );
}

/// On the random fixtures, only a floor that a broken int8 path misses.
#[test]
fn int8_greedy_floor_on_random_fixtures() {
    let mut all = Agreement::default();
    for model in FIXTURES {
        let m = measure(model, false);
        eprintln!(
            "{model}: {}/{} = {:.3}",
            m.greedy_same,
            m.greedy_total,
            m.greedy()
        );
        all.add(m);
    }
    eprintln!(
        "overall: {}/{} = {:.3}",
        all.greedy_same,
        all.greedy_total,
        all.greedy()
    );
    assert!(
        all.greedy() >= MIN_RANDOM_AGREEMENT,
        "int8 reproduced {} of {} greedy tokens ({:.3}), below {MIN_RANDOM_AGREEMENT}",
        all.greedy_same,
        all.greedy_total,
        all.greedy()
    );
}
