//! Broken checkpoints and unusable text give a specific error, never a
//! panic; long input is refused, or summarized in chunks when asked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};

use confsum_summarize::{Checkpoint, Error, LoadOptions, Summarizer};
use serde_json::Value;
use tempfile::TempDir;

const FILES: [&str; 4] = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
];

fn fixture(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(model)
}

/// A copy of a fixture checkpoint to break.
fn copy(model: &str) -> TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for file in FILES {
        fs::copy(fixture(model).join(file), tmp.path().join(file)).unwrap();
    }
    tmp
}

fn load(dir: &Path) -> Result<Summarizer, Error> {
    Summarizer::load(dir, &LoadOptions::default())
}

/// The error of loading, which must fail.
fn load_err(dir: &Path) -> Error {
    match load(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn missing_required_files_are_named() {
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        let tmp = copy("t5_v1_0");
        fs::remove_file(tmp.path().join(file)).unwrap();
        match load_err(tmp.path()) {
            Error::MissingFile { path } => assert!(path.ends_with(file), "{file}: {path:?}"),
            e => panic!("{file}: {e:?}"),
        }
        // The checkpoint alone fails the same way.
        assert!(matches!(
            Checkpoint::load(tmp.path()),
            Err(Error::MissingFile { .. })
        ));
    }
}

#[test]
fn generation_config_is_optional() {
    let tmp = copy("t5_v1_0");
    fs::remove_file(tmp.path().join("generation_config.json")).unwrap();
    let checkpoint = Checkpoint::load(tmp.path()).unwrap();
    // T5's settings then come from config.json.
    assert_eq!(checkpoint.generation_config().eos_token_ids, vec![1]);
}

#[test]
fn bad_configs_are_config_errors() {
    let cases: [(&str, &[u8]); 5] = [
        ("not JSON", b"{\"model_type\": \"t5\","),
        ("binary", &[0xff, 0xfe, 0x00, 0x01]),
        ("array", b"[1, 2, 3]"),
        ("no model_type", b"{\"d_model\": 32}"),
        ("model_type not a string", b"{\"model_type\": 5}"),
    ];
    for (name, bytes) in cases {
        let tmp = copy("t5_v1_0");
        fs::write(tmp.path().join("config.json"), bytes).unwrap();
        match load_err(tmp.path()) {
            Error::Config { file, .. } => assert_eq!(file, "config.json", "{name}"),
            e => panic!("{name}: {e:?}"),
        }
    }
    let tmp = copy("t5_v1_0");
    fs::write(tmp.path().join("generation_config.json"), "not json").unwrap();
    match load_err(tmp.path()) {
        Error::Config { file, .. } => assert_eq!(file, "generation_config.json"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn config_with_wrong_field_types_is_refused() {
    for (key, value) in [
        ("d_model", Value::from("wide")),
        ("num_layers", Value::from(-1)),
        ("vocab_size", Value::Null),
    ] {
        let tmp = copy("t5_v1_0");
        let path = tmp.path().join("config.json");
        let mut config: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        config[key] = value.clone();
        fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
        match load(tmp.path()) {
            Err(Error::Config { .. } | Error::Shape { .. }) => {}
            Err(e) => panic!("{key}={value}: {e:?}"),
            Ok(_) => panic!("{key}={value}: loaded"),
        }
    }
}

#[test]
fn unknown_model_type_is_unsupported() {
    let tmp = copy("t5_v1_0");
    let path = tmp.path().join("config.json");
    let mut config: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    config["model_type"] = "pegasus".into();
    fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    match load_err(tmp.path()) {
        Error::UnsupportedModel(t) => assert_eq!(t, "pegasus"),
        e => panic!("{e:?}"),
    }
}

/// Splits a safetensors file into its header and its data.
fn read_safetensors(path: &Path) -> (serde_json::Map<String, Value>, Vec<u8>) {
    let bytes = fs::read(path).unwrap();
    let n = usize::try_from(u64::from_le_bytes(bytes[..8].try_into().unwrap())).unwrap();
    let header = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

fn write_safetensors(path: &Path, header: &serde_json::Map<String, Value>, data: &[u8]) {
    let header = serde_json::to_vec(header).unwrap();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend_from_slice(data);
    fs::write(path, bytes).unwrap();
}

/// A 2-D tensor of the fixture whose two dimensions differ.
fn non_square(header: &serde_json::Map<String, Value>) -> String {
    header
        .iter()
        .find(|(name, info)| {
            let shape = info["shape"].as_array();
            *name != "__metadata__" && shape.is_some_and(|s| s.len() == 2 && s[0] != s[1])
        })
        .map(|(name, _)| name.clone())
        .unwrap()
}

#[test]
fn missing_tensor_is_named() {
    let tmp = copy("t5_v1_0");
    let path = tmp.path().join("model.safetensors");
    let (mut header, data) = read_safetensors(&path);
    let name = non_square(&header);
    let info = header.remove(&name).unwrap();
    header.insert(format!("{name}.renamed"), info);
    write_safetensors(&path, &header, &data);
    match load_err(tmp.path()) {
        Error::MissingTensor(t) => assert_eq!(t, name),
        e => panic!("{e:?}"),
    }
}

#[test]
fn wrong_tensor_shape_is_named() {
    let tmp = copy("t5_v1_0");
    let path = tmp.path().join("model.safetensors");
    let (mut header, data) = read_safetensors(&path);
    let name = non_square(&header);
    // Same bytes, transposed shape: only the configuration can tell.
    let shape = header[&name]["shape"].as_array().unwrap().clone();
    header.get_mut(&name).unwrap()["shape"] =
        Value::Array(vec![shape[1].clone(), shape[0].clone()]);
    write_safetensors(&path, &header, &data);
    match load_err(tmp.path()) {
        Error::Shape {
            name: t,
            expected,
            actual,
        } => {
            assert_eq!(t, name);
            assert_eq!(expected.iter().rev().copied().collect::<Vec<_>>(), actual);
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn truncated_weights_are_refused() {
    let full = fs::read(fixture("t5_v1_0").join("model.safetensors")).unwrap();
    let header_len = usize::try_from(u64::from_le_bytes(full[..8].try_into().unwrap())).unwrap();
    let cuts = [
        0,
        3,
        8,
        8 + header_len / 2,
        8 + header_len - 1,
        8 + header_len,
        8 + header_len + 1,
        full.len() / 2,
        full.len() - 1,
    ];
    for cut in cuts {
        let tmp = copy("t5_v1_0");
        fs::write(tmp.path().join("model.safetensors"), &full[..cut]).unwrap();
        match load_err(tmp.path()) {
            Error::Safetensors(_) => {}
            e => panic!("cut at {cut}: {e:?}"),
        }
    }
}

#[test]
fn garbage_weights_are_refused() {
    let tmp = copy("t5_v1_0");
    let mut bytes = 20u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"this is not json....and some more");
    fs::write(tmp.path().join("model.safetensors"), bytes).unwrap();
    assert!(matches!(load_err(tmp.path()), Error::Safetensors(_)));
}

#[test]
fn garbage_tokenizer_is_a_tokenizer_error() {
    for (name, bytes) in [
        ("not JSON", &b"\x00\x01garbage"[..]),
        ("empty object", b"{}"),
        ("wrong model", b"{\"model\": {\"type\": \"Nope\"}}"),
    ] {
        let tmp = copy("t5_v1_0");
        fs::write(tmp.path().join("tokenizer.json"), bytes).unwrap();
        match load_err(tmp.path()) {
            Error::Tokenizer(_) => {}
            e => panic!("{name}: {e:?}"),
        }
    }
}

#[test]
fn empty_text_is_refused() {
    let mut summarizer = load(&fixture("t5_v1_0")).unwrap();
    for text in ["", " ", "\n\t  \r\n"] {
        assert!(
            matches!(summarizer.summarize(text), Err(Error::EmptyInput)),
            "{text:?}"
        );
        assert!(matches!(
            summarizer.encode_text(text),
            Err(Error::EmptyInput)
        ));
        assert!(matches!(
            summarizer.summarize_batch(&["A fine sentence.", text]),
            Err(Error::EmptyInput)
        ));
    }
    assert!(matches!(
        summarizer.generate_ids(&[vec![]]),
        Err(Error::EmptyInput)
    ));
    assert!(summarizer.generate_ids(&[]).unwrap().is_empty());
}

fn long_text(sentences: usize) -> String {
    (0..sentences)
        .map(|i| {
            format!(
                "On day {i} the committee met again to discuss the harbour, the budget and the \
                 new school, and the members agreed to meet once more."
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn too_long_input_is_refused_without_chunking() {
    let mut summarizer = load(&fixture("bart")).unwrap();
    let window = summarizer.checkpoint().window();
    let text = long_text(20);
    let tokens = summarizer.encode_text(&text).unwrap().len();
    assert!(tokens > window);
    match summarizer.summarize(&text) {
        Err(Error::InputTooLong {
            tokens: t,
            window: w,
        }) => {
            assert_eq!((t, w), (tokens, window));
        }
        other => panic!("{other:?}"),
    }
    // The model itself refuses ids beyond BART's positions, too.
    let ids = summarizer.encode_text(&text).unwrap();
    assert!(matches!(
        summarizer.generate_ids(&[ids]),
        Err(Error::InputTooLong { .. })
    ));
}

#[test]
fn chunking_summarizes_long_input() {
    let dir = fixture("bart");
    let options = LoadOptions::default().chunking(true);
    let mut summarizer = Summarizer::load(&dir, &options).unwrap();
    summarizer.generation_config_mut().max_new_tokens = Some(12);
    let window = summarizer.checkpoint().window();
    let text = long_text(30);
    assert!(summarizer.encode_text(&text).unwrap().len() > 4 * window);
    let summary = summarizer.summarize(&text).unwrap();
    assert!(!summary.text.trim().is_empty(), "{summary:?}");
    assert!(!summary.ids.is_empty() && summary.ids.len() <= 12);
    // Short texts in the same batch are unaffected by chunking.
    let short = "The council met on Tuesday.";
    let alone = summarizer.summarize(short).unwrap();
    let both = summarizer.summarize_batch(&[&text, short]).unwrap();
    assert_eq!(both[1], alone);
    assert_eq!(both[0], summary);
}

#[test]
fn thread_count_is_read_from_the_environment() {
    use confsum_summarize::{THREAD_ENV_VARS, thread_env, threads_configured};

    assert_eq!(
        thread_env(3),
        [
            (THREAD_ENV_VARS[0], "3".into()),
            (THREAD_ENV_VARS[1], "3".into())
        ]
    );
    assert!(!threads_configured(0));
    let read = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
    };
    let [rayon, candle] = THREAD_ENV_VARS.map(read);
    match (rayon, candle) {
        (Some(k), Some(c)) if k > 0 => {
            assert_eq!(threads_configured(k), c == k);
            assert!(!threads_configured(k + 1));
        }
        // Unset variables: no count can be promised.
        _ => assert!(!threads_configured(1)),
    }
}

/// Header fields rewritten to hostile values: offsets past the data,
/// overlapping or reversed ranges, shapes whose size overflows, odd
/// dtypes, wrong JSON types. Each must be refused (or, for a harmless
/// rewrite, load), never panic or allocate absurd amounts.
#[test]
fn hostile_safetensors_headers_are_refused() {
    let tmp = copy("bart");
    let path = tmp.path().join("model.safetensors");
    let (header, data) = read_safetensors(&path);
    let name = header
        .keys()
        .find(|k| k.as_str() != "__metadata__")
        .unwrap()
        .clone();
    let huge = usize::MAX / 2;
    let rewrites: Vec<(&str, Value)> = vec![
        ("data_offsets", serde_json::json!([0, data.len() + 4])),
        ("data_offsets", serde_json::json!([8, 4])),
        ("data_offsets", serde_json::json!([u64::MAX - 1, u64::MAX])),
        ("data_offsets", serde_json::json!([-1, 4])),
        ("data_offsets", serde_json::json!([0])),
        ("data_offsets", serde_json::json!("0-4")),
        ("shape", serde_json::json!([huge, huge])),
        ("shape", serde_json::json!([huge, 0, huge])),
        ("shape", serde_json::json!([-3])),
        ("shape", serde_json::json!(null)),
        ("dtype", serde_json::json!("F64")),
        ("dtype", serde_json::json!("I64")),
        ("dtype", serde_json::json!(7)),
    ];
    for (field, value) in rewrites {
        let mut h = header.clone();
        h.get_mut(&name)
            .and_then(Value::as_object_mut)
            .unwrap()
            .insert(field.to_owned(), value.clone());
        write_safetensors(&path, &h, &data);
        let result = std::panic::catch_unwind(|| load(tmp.path()));
        match result {
            Err(_) => panic!("{name}.{field} = {value}: panicked"),
            Ok(Ok(_)) => panic!("{name}.{field} = {value}: loaded"),
            Ok(Err(e)) => assert!(
                matches!(
                    e,
                    Error::Safetensors(_) | Error::DType { .. } | Error::Shape { .. }
                ),
                "{name}.{field} = {value}: {e:?}"
            ),
        }
    }
    // A header length that claims more than the file holds.
    let mut bytes = fs::read(&path).unwrap();
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(load_err(tmp.path()), Error::Safetensors(_)));
}

/// Every single-byte flip in the first part of the file (the JSON header)
/// gives a result, never a panic.
#[test]
fn flipped_header_bytes_never_panic() {
    let tmp = copy("bart");
    let path = tmp.path().join("model.safetensors");
    let original = fs::read(&path).unwrap();
    let header_len =
        usize::try_from(u64::from_le_bytes(original[..8].try_into().unwrap())).unwrap();
    // Every 7th byte of the header keeps this quick while reaching every
    // field; the 8 length bytes are all flipped.
    let positions = (0..8).chain((8..8 + header_len).step_by(7));
    for pos in positions {
        let mut bytes = original.clone();
        bytes[pos] ^= 0x5a;
        fs::write(&path, &bytes).unwrap();
        let result = std::panic::catch_unwind(|| load(tmp.path()));
        assert!(result.is_ok(), "flip at byte {pos} panicked");
    }
}

#[test]
fn a_directory_as_model_safetensors_says_it_is_not_a_file() {
    let tmp = copy("bart");
    let path = tmp.path().join("model.safetensors");
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    let e = load_err(tmp.path());
    assert!(
        e.to_string().contains("not a regular file"),
        "{e}: should not speak of a short header"
    );
}
