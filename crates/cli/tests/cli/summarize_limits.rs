//! `confsum summarize` refuses what cannot work before working (issue 10):
//! each repro from the issue, as a command, exits 1 with a message that
//! names the setting or file.

use std::fs;
use std::path::PathBuf;

use confsum_testkit::Cmd;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../summarize/testdata")
        .join(name)
}

fn summarize(model: &std::path::Path, args: &[&str], text: &str) -> String {
    Cmd::new(crate::common::BIN)
        .arg("summarize")
        .arg("--model")
        .arg(model)
        .args(args)
        .stdin(text)
        .run()
        .code(1)
        .stderr_str()
}

#[test]
fn a_nan_length_penalty_is_refused() {
    let err = summarize(
        &fixture("bart"),
        &["--length-penalty", "NaN"],
        "The council met.",
    );
    assert!(err.contains("length_penalty is NaN"), "{err}");
}

#[test]
fn min_new_tokens_above_max_new_tokens_is_refused() {
    let args = ["--min-new-tokens", "50", "--max-new-tokens", "5"];
    let err = summarize(&fixture("t5_v1_0"), &args, "The council met.");
    assert!(
        err.contains("min_new_tokens (50) is greater than max_new_tokens (5)"),
        "{err}"
    );
}

#[test]
fn max_new_tokens_beyond_the_model_is_refused_at_once() {
    let args = ["--max-new-tokens", "4294967295"];
    let err = summarize(&fixture("t5_v1_0"), &args, "The council met.");
    assert!(err.contains("generates at most 512"), "{err}");
}

#[test]
fn a_t5_checkpoint_with_a_bart_tokenizer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for file in ["config.json", "generation_config.json", "model.safetensors"] {
        fs::copy(fixture("t5_v1_0").join(file), tmp.path().join(file)).unwrap();
    }
    fs::copy(
        fixture("bart").join("tokenizer.json"),
        tmp.path().join("tokenizer.json"),
    )
    .unwrap();
    let err = summarize(tmp.path(), &[], "The council met.");
    assert!(
        err.contains("tokenizer.json does not fit the model"),
        "{err}"
    );
}

#[test]
fn a_huge_input_without_chunking_is_refused_from_its_start() {
    // 8 MB here (the was 100 MB and ran 4.5 minutes).
    let text = "The committee met again to discuss the harbour. ".repeat(170_000);
    let err = summarize(&fixture("bart"), &[], &text);
    assert!(
        err.contains("is too long") && err.contains("pass --chunk"),
        "{err}"
    );
}
