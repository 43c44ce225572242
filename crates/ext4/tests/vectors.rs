//! Every layer vector from the reference converter hashes to its recorded root.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;

#[test]
fn every_layer_vector_matches_the_reference_root_hash() {
    let roots = common::expected_roots();
    assert!(roots.len() >= 7, "roothashes.txt lists the vectors");
    let mut failures = Vec::new();
    for (want, file) in roots {
        let tar = std::fs::read(common::vectors_dir().join(&file)).unwrap();
        let image = common::image_of(&tar).unwrap_or_else(|e| panic!("{file}: {e}: {e:?}"));
        let got = common::naive_verity_root(&image);
        if got != want {
            failures.push(format!("{file}: got {got}, want {want}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
