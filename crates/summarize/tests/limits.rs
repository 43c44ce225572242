//! Limits checked before work (issue 10): contradictory or absurd
//! generation settings, inputs far over the window, and a tokenizer that
//! does not belong to the model are refused with typed errors before any
//! tokenizing or generating; chunked summarization reports progress.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};

use confsum_summarize::{
    ChunkProgress, Error, LoadOptions, SettingError, Summarizer, TokenizerMismatch,
};
use tokenizers::Tokenizer;

fn fixture(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(model)
}

fn load(model: &str) -> Summarizer {
    Summarizer::load(&fixture(model), &LoadOptions::default()).unwrap()
}

fn setting_error(result: Result<impl std::fmt::Debug, Error>) -> SettingError {
    match result {
        Err(Error::Setting(e)) => e,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_nan_or_infinite_length_penalty_is_refused() {
    let mut s = load("bart");
    for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        s.generation_config_mut().length_penalty = value;
        match setting_error(s.summarize("The council met.")) {
            SettingError::NotFinite { setting, .. } => assert_eq!(setting, "length_penalty"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.check_generation_config(),
            Err(Error::Setting(SettingError::NotFinite { .. }))
        ));
    }
}

#[test]
fn min_new_tokens_above_max_new_tokens_is_refused() {
    // The repro: --min-new-tokens 50 --max-new-tokens 5.
    let mut s = load("t5_v1_0");
    let g = s.generation_config_mut();
    g.min_new_tokens = Some(50);
    g.max_new_tokens = Some(5);
    assert_eq!(
        setting_error(s.summarize("The council met.")),
        SettingError::MinAboveMax {
            min_setting: "min_new_tokens",
            min: 50,
            max_setting: "max_new_tokens",
            max: 5
        }
    );
    // Equal is fine.
    s.generation_config_mut().min_new_tokens = Some(5);
    s.check_generation_config().unwrap();
}

#[test]
fn min_length_above_max_length_is_refused() {
    let mut s = load("bart");
    let g = s.generation_config_mut();
    g.min_length = 20;
    g.max_length = Some(10);
    g.max_new_tokens = None;
    assert!(matches!(
        setting_error(s.generate_ids(&[vec![0, 100, 2]])),
        SettingError::MinAboveMax {
            min_setting: "min_length",
            ..
        }
    ));
    // max_new_tokens wins over max_length, as in transformers: then
    // max_length is not in force and cannot contradict.
    s.generation_config_mut().max_new_tokens = Some(12);
    s.check_generation_config().unwrap();
}

#[test]
fn max_new_tokens_beyond_the_models_limit_is_refused_before_work() {
    // The repro: --max-new-tokens 4294967295 ran on with no output.
    for (model, limit) in [("bart", 64), ("t5_v1_0", 512)] {
        let mut s = load(model);
        s.generation_config_mut().max_new_tokens = Some(u32::MAX as usize);
        assert_eq!(
            setting_error(s.summarize("The council met.")),
            SettingError::TooManyNewTokens {
                requested: u32::MAX as usize,
                limit
            },
            "{model}"
        );
        s.generation_config_mut().max_new_tokens = Some(limit + 1);
        assert!(s.check_generation_config().is_err(), "{model}");
        s.generation_config_mut().max_new_tokens = Some(limit);
        s.check_generation_config().unwrap();
    }
}

#[test]
fn bart_generates_exactly_up_to_its_limit() {
    // The limit is not off by one: BART's decoder positions 0..64 hold 64
    // new tokens (the start token at position 0, the last input at 63).
    let mut s = load("bart");
    let g = s.generation_config_mut();
    g.max_new_tokens = Some(64);
    // No end before the limit: every position is used.
    g.min_new_tokens = Some(64);
    g.num_beams = 1;
    g.forced_eos_token_ids.clear();
    let rows = s.generate_ids(&[vec![0, 100, 200, 2]]).unwrap();
    assert_eq!(rows[0].len(), 64);
}

/// A copy of checkpoint `model` with `tokenizer.json` from `other`.
fn with_tokenizer_of(model: &str, other: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for file in ["config.json", "generation_config.json", "model.safetensors"] {
        fs::copy(fixture(model).join(file), tmp.path().join(file)).unwrap();
    }
    fs::copy(
        fixture(other).join("tokenizer.json"),
        tmp.path().join("tokenizer.json"),
    )
    .unwrap();
    tmp
}

#[test]
fn a_t5_checkpoint_with_a_bart_tokenizer_is_refused_at_load() {
    // The repro gave an empty summary and exit 0.
    let dir = with_tokenizer_of("t5_v1_0", "bart");
    match Summarizer::load(dir.path(), &LoadOptions::default()) {
        Err(Error::TokenizerMismatch(TokenizerMismatch::EndToken { tokenizer, model })) => {
            assert_eq!((tokenizer, model), (2, vec![1]));
        }
        other => panic!("{other:?}"),
    }
    let dir = with_tokenizer_of("bart", "t5_v1_0");
    match Summarizer::load(dir.path(), &LoadOptions::default()) {
        Err(Error::TokenizerMismatch(TokenizerMismatch::VocabTooLarge { tokenizer, model })) => {
            assert_eq!((tokenizer, model), (32100, 1000));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn special_ids_outside_the_vocabulary_are_refused_at_load() {
    let tmp = tempfile::tempdir().unwrap();
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        fs::copy(fixture("bart").join(file), tmp.path().join(file)).unwrap();
    }
    let mut g: serde_json::Value =
        serde_json::from_slice(&fs::read(fixture("bart").join("generation_config.json")).unwrap())
            .unwrap();
    g["pad_token_id"] = 1000.into();
    fs::write(tmp.path().join("generation_config.json"), g.to_string()).unwrap();
    assert!(matches!(
        Summarizer::load(tmp.path(), &LoadOptions::default()),
        Err(Error::TokenizerMismatch(
            TokenizerMismatch::IdOutsideVocab {
                name: "pad_token_id",
                id: 1000,
                vocab: 1000
            }
        ))
    ));
}

fn long_text(sentences: usize) -> String {
    (0..sentences)
        .map(|i| format!("On day {i} the committee met again to discuss the harbour and budget."))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_huge_input_is_refused_from_a_prefix_without_tokenizing_it_all() {
    let mut s = load("bart");
    let window = s.checkpoint().window();
    let text = long_text(200_000); // about 14 MB
    match s.summarize(&text) {
        Err(Error::InputTooLongPrefix {
            bytes,
            prefix_bytes,
            prefix_tokens,
            window: w,
        }) => {
            assert_eq!((bytes, w), (text.len(), window));
            assert!(prefix_bytes <= 64 * window, "{prefix_bytes}");
            assert!(prefix_tokens > window);
        }
        other => panic!("{other:?}"),
    }
    // The batch API refuses it the same way.
    assert!(matches!(
        s.summarize_batch(&["short", &text]),
        Err(Error::InputTooLongPrefix { .. })
    ));
}

/// A tiny deterministic generator.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn a_prefix_cut_where_ascii_whitespace_ends_a_word_tokenizes_as_the_start_of_the_whole() {
    // Why the prefix check never refuses a text that fits: for both
    // families' tokenizers, the tokens of such a prefix are the first
    // tokens of the whole text.
    const WORDS: &[&str] = &[
        "the",
        "Council",
        "café",
        "naïve",
        "中文",
        "e.g.",
        "don't",
        "--",
        "42",
        "3.14",
        "\u{a0}x",
        "👍",
        "(a)",
        "x\u{200b}y",
        "über",
        "\u{3000}",
        "https://a.b/c",
    ];
    const SPACES: &[&str] = &[" ", "  ", "\n", " \n ", "\t", "\r\n"];
    for model in ["t5_v1_0", "bart"] {
        let tok = Tokenizer::from_file(fixture(model).join("tokenizer.json")).unwrap();
        let ids = |text: &str| tok.encode(text, false).unwrap().get_ids().to_vec();
        let mut rng = Rng(7);
        for _ in 0..300 {
            let mut text = String::new();
            let mut cuts = Vec::new();
            for _ in 0..rng.below(30) + 2 {
                text.push_str(WORDS[rng.below(WORDS.len())]);
                let ends_word = !text.ends_with(char::is_whitespace);
                let space = SPACES[rng.below(SPACES.len())];
                if ends_word {
                    cuts.push(text.len());
                }
                text.push_str(space);
            }
            let whole = ids(&text);
            for cut in cuts {
                let part = ids(&text[..cut]);
                assert!(
                    whole.starts_with(&part),
                    "{model}: {:?} cut at {cut}: {part:?} is not the start of {whole:?}",
                    text
                );
            }
        }
    }
}

#[test]
fn chunked_summarization_reports_its_progress() {
    let options = LoadOptions::default().chunking(true);
    let mut s = Summarizer::load(&fixture("bart"), &options).unwrap();
    s.generation_config_mut().max_new_tokens = Some(8);
    let text = long_text(40);
    let mut seen: Vec<ChunkProgress> = Vec::new();
    let summary = s
        .summarize_with_progress(&text, &mut |p| seen.push(p))
        .unwrap();
    assert!(!summary.ids.is_empty());
    let first = seen.first().unwrap();
    assert_eq!((first.round, first.done), (1, 0));
    assert!(first.chunks > 1, "{seen:?}");
    for pair in seen.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(
            (b.round == a.round && b.done == a.done + 1 && b.chunks == a.chunks)
                || (b.round == a.round + 1 && b.done == 0),
            "{seen:?}"
        );
    }
    assert!(seen.iter().all(|p| p.done <= p.chunks));
    // A text that fits is one generation: no progress calls.
    let mut calls = 0;
    s.summarize_with_progress("The council met.", &mut |_| calls += 1)
        .unwrap();
    assert_eq!(calls, 0);
}
