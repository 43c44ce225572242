//! Arbitrary bytes as one file of a checkpoint folder -> `Summarizer::load`
//! and, when it loads, one short generation. Any panic is a bug; errors
//! are the expected outcome for almost every input.
//!
//! The other files come from the tiny BART fixture (its tokenizer parses in
//! about a millisecond). The first byte picks the file the rest replaces:
//! 0 model.safetensors, 1 config.json, 2 generation_config.json,
//! 3 tokenizer.json; for the safetensors file, an odd second byte keeps
//! the fixture's own bytes after the fuzzed prefix, so mutations of the
//! header still meet real data.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use confsum_summarize::{LoadOptions, Summarizer};
use libfuzzer_sys::fuzz_target;

const FILES: [&str; 4] = [
    "model.safetensors",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
];

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/summarize/testdata/bart")
}

/// A private copy of the fixture, made once per process.
fn workdir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("confsum-fuzz-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in FILES {
            std::fs::copy(fixture().join(f), dir.join(f)).unwrap();
        }
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let dir = workdir();
    let file = FILES[usize::from(which) % FILES.len()];
    let original = std::fs::read(fixture().join(file)).unwrap();
    let bytes = match rest.split_first() {
        Some((&mode, prefix)) if file == FILES[0] && mode % 2 == 1 => {
            let mut b = original.clone();
            let n = prefix.len().min(b.len());
            b[..n].copy_from_slice(&prefix[..n]);
            b
        }
        _ => rest.to_vec(),
    };
    std::fs::write(dir.join(file), &bytes).unwrap();
    if let Ok(mut s) = Summarizer::load(dir, &LoadOptions::default()) {
        s.generation_config_mut().max_new_tokens = Some(3);
        let _ = s.summarize("The council met on Tuesday.");
    }
    std::fs::write(dir.join(file), &original).unwrap();
});
