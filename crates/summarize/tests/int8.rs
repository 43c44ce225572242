//! How closely `Precision::Int8` follows f32 on the fixtures.
//!
//! For every case of every fixture, greedy generation (the "greedy" run's
//! keyword arguments from `expected.json`) runs once in f32, whose ids
//! must be transformers' (so the reference is transformers, not our own
//! f32), and once in int8. Agreement is the share of f32's tokens that
//! int8 reproduces before the two first differ: a token after the first
//! difference continues another text and is not counted, even where it
//! happens to match. Teacher-forced int8 logits, which do not part, are
//! compared with transformers' in `logits.rs`.
//!
//! The fixtures are poor ground for int8: their random output layers put
//! the best two logits close (on average 0.2 to 0.4 standard deviations
//! of the logits apart), and 8-bit weights move the logits by about as
//! much (the largest change per step averages 0.2 to 0.8), so greedy
//! search flips between near-ties, and once it has, the texts part.
//! Measured here (x86_64): 71 of 134 tokens (0.53), short of the 95%
//! asked of `--int8`; the bar below is that level less a few tokens. It
//! catches a broken int8 path, which parts from f32 at the first token;
//! what int8 keeps of a trained checkpoint's output is not measured here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use confsum_summarize::{LoadOptions, Precision, Summarizer};
use serde_json::Value;

use common::{FIXTURES, expected, fixture, greedy_run, ids, read_json};

/// The least overall agreement accepted (measured: 71/134 = 0.53).
const MIN_AGREEMENT: f64 = 0.50;

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

/// Per fixture: (tokens int8 reproduced, f32 tokens).
fn measure(model: &str) -> (usize, usize) {
    let dir = fixture(model);
    let expected = expected(model);
    let vocab = read_json(&dir.join("config.json"))["vocab_size"]
        .as_u64()
        .unwrap();
    let mut f32 = Summarizer::load(&dir, &LoadOptions::default()).unwrap();
    let mut int8 =
        Summarizer::load(&dir, &LoadOptions::default().precision(Precision::Int8)).unwrap();
    let (mut agreed, mut total) = (0, 0);
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

        // Whatever int8 picks must still be a well-formed generation.
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

        let same = common_prefix(&reference, &got);
        eprintln!(
            "{model}/{name}: {same}/{} before the first difference\n  f32  {reference:?}\n  int8 {got:?}",
            reference.len()
        );
        agreed += same;
        total += reference.len();
    }
    (agreed, total)
}

#[test]
fn int8_greedy_agrees_with_f32() {
    let (mut agreed, mut total) = (0, 0);
    for model in FIXTURES {
        let (a, t) = measure(model);
        eprintln!("{model}: {a}/{t} = {:.3}", a as f64 / t as f64);
        agreed += a;
        total += t;
    }
    let share = agreed as f64 / total as f64;
    eprintln!("overall: {agreed}/{total} = {share:.3}");
    assert!(
        share >= MIN_AGREEMENT,
        "int8 reproduced {agreed} of {total} greedy tokens ({share:.3}), below {MIN_AGREEMENT}"
    );
}
