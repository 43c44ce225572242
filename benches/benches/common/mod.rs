//! Inputs shared by the summarization benches.

use std::path::Path;

use serde_json::Value;

/// `n` texts of 4 to 40 words, cut from the words of the fixture's
/// recorded cases (`FIXTURE/expected.json`), so every bench summarizes
/// the same inputs.
pub(crate) fn fixture_texts(fixture: &Path, n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(fixture.join("expected.json")).unwrap();
    let expected: Value = serde_json::from_str(&text).unwrap();
    let words: Vec<String> = expected["cases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            c["text"]
                .as_str()
                .unwrap()
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    (0..n)
        .map(|i| {
            let len = 4 + (i * 7) % 37;
            words
                .iter()
                .cycle()
                .skip(i * 3)
                .take(len)
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}
