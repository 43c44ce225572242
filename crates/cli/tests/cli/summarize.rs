//! `confsum summarize` end to end, against the ids transformers recorded
//! for the tiny checkpoints in crates/summarize/testdata.

use confsum_testkit::Run;
use std::path::{Path, PathBuf};

use crate::common;

use serde_json::Value;

const FIXTURES: [&str; 3] = ["t5_v1_0", "t5_v1_1", "bart"];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../summarize/testdata")
        .join(name)
}

fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn cases(name: &str) -> Vec<Value> {
    expected(name)["cases"].as_array().unwrap().clone()
}

fn run<'a>(case: &'a Value, run: &str) -> &'a Value {
    case["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == run)
        .unwrap_or_else(|| panic!("case {} has no run {run}", case["name"]))
}

fn ids_of(run: &Value) -> Vec<u32> {
    run["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| u32::try_from(v.as_u64().unwrap()).unwrap())
        .collect()
}

/// The checkpoint's end-of-sequence ids, from generation_config.json.
fn eos_ids(name: &str) -> Vec<u32> {
    let text = std::fs::read_to_string(fixture(name).join("generation_config.json")).unwrap();
    let config: Value = serde_json::from_str(&text).unwrap();
    match &config["eos_token_id"] {
        Value::Array(ids) => ids.iter().map(|v| v.as_u64().unwrap() as u32).collect(),
        v => vec![v.as_u64().unwrap() as u32],
    }
}

/// A recorded row as the CLI prints it: cut after the first end token
/// (the recorded rows are single rows, so this only guards the comparison).
fn as_printed(name: &str, mut ids: Vec<u32>) -> Vec<u32> {
    let eos = eos_ids(name);
    if let Some(end) = ids.iter().position(|id| eos.contains(id)) {
        ids.truncate(end + 1);
    }
    ids
}

fn confsum(args: &[&str], stdin: Option<&[u8]>) -> Run {
    confsum_env(args, stdin, &[])
}

fn confsum_env(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Run {
    let mut cmd = common::confsum()
        .args(args)
        .stdin(stdin.unwrap_or_default());
    for (key, value) in env {
        cmd = cmd.env(key, value);
    }
    let out = cmd.run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    out
}

fn stdout(out: &Run) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Run) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The `ids: …` line of a successful run, after exactly one summary line.
fn printed_ids(out: &Run, what: &str) -> Vec<u32> {
    assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(out));
    let text = stdout(out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "{what}: want summary and ids lines: {text:?}"
    );
    let ids = lines[1]
        .strip_prefix("ids: ")
        .unwrap_or_else(|| panic!("{what}: no ids line: {text:?}"));
    ids.split(' ').map(|s| s.parse().unwrap()).collect()
}

/// The case's text in a file of a temporary folder (kept alive by the
/// returned guard).
fn text_file(text: &[u8]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input.txt");
    std::fs::write(&path, text).unwrap();
    (dir, path.display().to_string())
}

fn model_arg(name: &str) -> String {
    fixture(name).display().to_string()
}

#[test]
fn defaults_give_transformers_ids_from_a_file_and_from_stdin() {
    for name in FIXTURES {
        let model = model_arg(name);
        for case in cases(name) {
            let what = format!("{name}/{}", case["name"]);
            let text = case["text"].as_str().unwrap();
            let want = as_printed(name, ids_of(run(&case, "defaults")));
            let (_dir, file) = text_file(text.as_bytes());

            let from_file = confsum(&["summarize", "--model", &model, "--ids", &file], None);
            assert_eq!(printed_ids(&from_file, &what), want, "{what} from a file");

            for args in [
                &["summarize", "--model", &model, "--ids", "-"][..],
                &["summarize", "--model", &model, "--ids"][..],
            ] {
                let from_stdin = confsum(args, Some(text.as_bytes()));
                assert_eq!(
                    stdout(&from_stdin),
                    stdout(&from_file),
                    "{what}: {args:?} on stdin"
                );
                assert_eq!(from_stdin.status.code(), Some(0), "{what}");
            }

            // Without --ids, only the summary line.
            let plain = confsum(&["summarize", "--model", &model, &file], None);
            assert_eq!(plain.status.code(), Some(0), "{what}: {}", stderr(&plain));
            let with_ids = stdout(&from_file);
            assert_eq!(
                stdout(&plain),
                format!("{}\n", with_ids.lines().next().unwrap()),
                "{what} without --ids"
            );
        }
    }
}

/// The flags that ask for a recorded run's kwargs. transformers' min_length
/// counts the decoder start token, --min-new-tokens does not.
fn flags_for(run: &Value) -> Vec<String> {
    let kwargs = &run["kwargs"];
    let mut flags = Vec::new();
    for (key, flag) in [
        ("num_beams", "--beams"),
        ("max_new_tokens", "--max-new-tokens"),
        ("no_repeat_ngram_size", "--no-repeat-ngram-size"),
    ] {
        if let Some(n) = kwargs[key].as_u64() {
            flags.extend([flag.to_owned(), n.to_string()]);
        }
    }
    if let Some(p) = kwargs["length_penalty"].as_f64() {
        flags.extend(["--length-penalty".to_owned(), format!("{p:?}")]);
    }
    if let Some(n) = kwargs["min_length"].as_u64() {
        flags.extend(["--min-new-tokens".to_owned(), (n - 1).to_string()]);
    }
    match &kwargs["early_stopping"] {
        Value::Null => {}
        Value::Bool(b) => flags.extend(["--early-stopping".to_owned(), b.to_string()]),
        Value::String(s) => flags.extend(["--early-stopping".to_owned(), s.clone()]),
        other => panic!("early_stopping {other}"),
    }
    for (key, value) in kwargs.as_object().unwrap() {
        let known = [
            "num_beams",
            "max_new_tokens",
            "no_repeat_ngram_size",
            "length_penalty",
            "min_length",
            "do_sample",
            "early_stopping",
        ];
        assert!(known.contains(&key.as_str()), "no flag for {key}={value}");
    }
    assert_ne!(kwargs["do_sample"], Value::Bool(true));
    flags
}

#[test]
fn flags_give_the_recorded_runs_with_those_settings() {
    let beams: &[&str] = &["greedy", "greedy_ngram", "beam", "beam_heuristic"];
    for name in FIXTURES {
        let model = model_arg(name);
        for case in cases(name) {
            let (_dir, file) = text_file(case["text"].as_str().unwrap().as_bytes());
            for &run_name in beams {
                let recorded = run(&case, run_name);
                let flags = flags_for(recorded);
                let mut args = vec!["summarize", "--model", &model, "--ids"];
                args.extend(flags.iter().map(String::as_str));
                args.push(&file);
                let what = format!("{name}/{}/{run_name} {flags:?}", case["name"]);
                let out = confsum(&args, None);
                assert_eq!(
                    printed_ids(&out, &what),
                    as_printed(name, ids_of(recorded)),
                    "{what}"
                );
            }
        }
    }
}

#[test]
fn int8_runs_and_prints_ids() {
    for name in FIXTURES {
        let model = model_arg(name);
        let case = &cases(name)[1];
        let (_dir, file) = text_file(case["text"].as_str().unwrap().as_bytes());
        let what = format!("{name} --int8");
        let out = confsum(
            &["summarize", "--model", &model, "--ids", "--int8", &file],
            None,
        );
        let ids = printed_ids(&out, &what);
        assert!(!ids.is_empty() && ids.len() <= 30, "{what}: {ids:?}");
        if name == "bart" {
            // forced_bos_token_id and, at the length limit, forced EOS hold
            // whatever the weights' precision.
            assert_eq!(ids.first(), Some(&0), "{what}: {ids:?}");
            assert_eq!(ids.last(), Some(&2), "{what}: {ids:?}");
        }
    }
}

#[test]
fn threads_flag_gives_the_same_ids() {
    for name in FIXTURES {
        let model = model_arg(name);
        let case = &cases(name)[2];
        let (_dir, file) = text_file(case["text"].as_str().unwrap().as_bytes());
        let want = as_printed(name, ids_of(run(case, "defaults")));
        let args = [
            "summarize",
            "--model",
            &model,
            "--ids",
            "--threads",
            "1",
            &file,
        ];
        // Restarts itself with the variables set …
        let out = confsum_env(&args, None, &[("RAYON_NUM_THREADS", "2")]);
        assert_eq!(printed_ids(&out, name), want, "{name} --threads 1");
        // … or finds them set already.
        let env = [("RAYON_NUM_THREADS", "1"), ("CANDLE_NUM_THREADS", "1")];
        let out = confsum_env(&args, None, &env);
        assert_eq!(printed_ids(&out, name), want, "{name} --threads 1, env set");
        let out = confsum(
            &[
                "summarize",
                "--model",
                &model,
                "--ids",
                "--threads",
                "2",
                &file,
            ],
            None,
        );
        assert_eq!(printed_ids(&out, name), want, "{name} --threads 2");
    }
}

/// Exit status 1 and a message containing `needle`.
fn assert_fails(out: &Run, needle: &str, what: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    assert!(err.contains(needle), "{what}: want {needle:?} in {err:?}");
    assert!(stdout(out).is_empty(), "{what}: printed {:?}", stdout(out));
}

#[test]
fn missing_or_wrong_model_says_to_pass_a_folder() {
    let (_dir, file) = text_file(b"The council approved the budget.");
    let missing = tempfile::tempdir().unwrap();
    let missing = missing.path().join("no-such-model").display().to_string();
    #[cfg(not(feature = "hub"))]
    for model in [missing.as_str(), "t5-small", "facebook/bart-large-cnn"] {
        let out = confsum(&["summarize", "--model", model, &file], None);
        assert_fails(&out, "pass a folder", model);
    }
    let config = fixture("bart").join("config.json").display().to_string();
    let out = confsum(&["summarize", "--model", &config, &file], None);
    assert_fails(&out, "not a folder", "a file as --model");
}

#[test]
fn incomplete_checkpoint_names_the_missing_file() {
    let (_input, file) = text_file(b"The council approved the budget.");
    for missing in ["config.json", "model.safetensors", "tokenizer.json"] {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(fixture("bart")).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() && entry.file_name() != missing {
                std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
            }
        }
        let model = dir.path().display().to_string();
        let out = confsum(&["summarize", "--model", &model, &file], None);
        assert_fails(&out, missing, &format!("no {missing}"));
    }
}

#[test]
fn empty_or_non_utf8_input_fails() {
    let model = model_arg("bart");
    let (_dir, empty) = text_file(b"");
    let out = confsum(&["summarize", "--model", &model, &empty], None);
    assert_fails(&out, "input text is empty", "empty file");
    for stdin in [&b""[..], b"  \n\t \n"] {
        let out = confsum(&["summarize", "--model", &model, "-"], Some(stdin));
        assert_fails(&out, "input text is empty", &format!("stdin {stdin:?}"));
    }
    let (_dir2, latin1) = text_file(b"caf\xe9 au lait");
    let out = confsum(&["summarize", "--model", &model, &latin1], None);
    assert_fails(&out, "UTF-8", "latin-1 file");
    let out = confsum(&["summarize", "--model", &model], Some(b"\xff\xfe"));
    assert_fails(&out, "UTF-8", "non-UTF-8 stdin");
    let gone = Path::new(&empty).with_file_name("gone.txt");
    let out = confsum(
        &["summarize", "--model", &model, gone.to_str().unwrap()],
        None,
    );
    assert_fails(&out, "gone.txt", "missing input file");
}

#[test]
fn bad_flag_values_are_usage_errors() {
    let model = model_arg("bart");
    let (_dir, file) = text_file(b"The council approved the budget.");
    for flags in [
        &["--beams", "0"][..],
        &["--beams", "65"],
        &["--max-new-tokens", "abc"],
        &["--max-new-tokens", "0"],
        &["--min-new-tokens", "-1"],
        &["--length-penalty", "x"],
        &["--threads", "0"],
        &["--no-such-flag"],
    ] {
        let mut args = vec!["summarize", "--model", &model];
        args.extend_from_slice(flags);
        args.push(&file);
        let out = confsum(&args, None);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{flags:?}");
    }
    let out = confsum(&["summarize", &file], None);
    assert_eq!(out.status.code(), Some(2), "no --model: {}", stderr(&out));
}

#[test]
fn input_beyond_the_window_needs_chunk() {
    let model = model_arg("bart");
    let case = &cases("bart")[2];
    let text = case["text"].as_str().unwrap();
    // Two copies of the 48-token case: well over BART's 64 positions.
    assert!(2 * case["input_ids"].as_array().unwrap().len() > 64 + 8);
    let long = format!("{text} {text}");
    let (_dir, file) = text_file(long.as_bytes());

    let out = confsum(&["summarize", "--model", &model, &file], None);
    assert_fails(&out, "window of 64", "long input without --chunk");

    let out = confsum(
        &["summarize", "--model", &model, "--ids", "--chunk", &file],
        None,
    );
    let ids = printed_ids(&out, "--chunk");
    assert!(!ids.is_empty());
    let summary = stdout(&out);
    assert!(
        !summary.lines().next().unwrap().trim().is_empty(),
        "{summary:?}"
    );

    // --chunk leaves inputs that fit alone.
    let (_dir2, short) = text_file(text.as_bytes());
    let out = confsum(
        &["summarize", "--model", &model, "--ids", "--chunk", &short],
        None,
    );
    assert_eq!(
        printed_ids(&out, "--chunk, short input"),
        as_printed("bart", ids_of(run(case, "defaults")))
    );
}

#[test]
fn min_new_tokens_holds_back_the_end_token() {
    // No recorded run stops before its min_length, so this checks the flag
    // against the recorded greedy run that ends soonest: masking EOS leaves
    // the tokens before it as they were and lets none come before 10.
    let name = "t5_v1_0";
    let model = model_arg(name);
    let case = &cases(name)[0];
    let recorded = as_printed(name, ids_of(run(case, "greedy_ngram")));
    assert!(recorded.len() < 10, "{recorded:?}");
    let (_dir, file) = text_file(case["text"].as_str().unwrap().as_bytes());
    let mut args = vec!["summarize", "--model", &model, "--ids"];
    let flags = flags_for(run(case, "greedy_ngram"));
    args.extend(flags.iter().map(String::as_str));
    args.extend(["--min-new-tokens", "10", &file]);
    let ids = printed_ids(&confsum(&args, None), "--min-new-tokens 10");
    let eos = eos_ids(name);
    assert!(ids.len() >= 11, "{ids:?}");
    assert!(!ids[..10].iter().any(|id| eos.contains(id)), "{ids:?}");
    assert_eq!(ids[..recorded.len() - 1], recorded[..recorded.len() - 1]);
}
