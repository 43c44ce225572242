//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

use std::io::Cursor;
use std::path::PathBuf;

use confsum_ext4::{ImageSink, Options, convert_tar};
use sha2::{Digest, Sha256};

/// `../shared/vectors/layers` relative to the workspace.
pub fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/layers")
}

/// Converts a tar held in memory into an image held in memory.
pub fn image_of(tar: &[u8]) -> Result<Vec<u8>, confsum_ext4::Error> {
    let sink = convert_tar(
        tar,
        ImageSink::new(Cursor::new(Vec::new())),
        &Options::default(),
    )?;
    Ok(sink.into_inner().into_inner())
}

/// A deliberately plain dm-verity root (salted SHA-256, 4 KiB blocks), written
/// from the specification so that it shares no code with the crates under test.
pub fn naive_verity_root(data: &[u8]) -> String {
    let salt = [0u8; 32];
    let hash = |block: &[u8]| -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(salt);
        h.update(block);
        h.finalize().into()
    };
    let mut level: Vec<u8> = data.to_vec();
    loop {
        let mut next = Vec::new();
        for block in level.chunks(4096) {
            next.extend_from_slice(&hash(block));
        }
        next.resize(next.len().div_ceil(4096) * 4096, 0);
        if next.len() == 4096 {
            return hex::encode(hash(&next));
        }
        level = next;
    }
}

/// `(hash, file)` pairs from `roothashes.txt`.
pub fn expected_roots() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(vectors_dir().join("roothashes.txt"))
        .expect("the shared vectors are checked out beside the repository");
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(h, f)| (h.to_owned(), f.trim().to_owned()))
        .collect()
}
