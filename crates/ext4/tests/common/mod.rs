//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

pub mod debugfs;
pub mod model;
pub mod tarball;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Cursor, Read};
use std::path::{Path, PathBuf};

use confsum_ext4::{ImageSink, Options, convert_tar};
use sha2::{Digest, Sha256};

/// `../shared/vectors/layers` relative to the workspace.
pub fn vectors_dir() -> PathBuf {
    confsum_testkit::shared_vectors().join("layers")
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

/// Converts a tar stream into an image in a temporary file.
pub fn image_file<R: Read>(tar: R) -> Result<tempfile::NamedTempFile, confsum_ext4::Error> {
    let image = tempfile::NamedTempFile::new().expect("a temporary image file");
    let file = image.reopen().expect("reopening the image file");
    convert_tar(
        BufReader::with_capacity(1 << 20, tar),
        ImageSink::new(file),
        &Options::default(),
    )?;
    Ok(image)
}

/// An image read back through debugfs.
#[derive(Debug)]
pub struct Readback {
    pub tree: model::Tree,
    pub stats: BTreeMap<u64, debugfs::Stat>,
    pub debugfs: debugfs::Debugfs,
    /// Keeps a temporary image alive while `debugfs` may still read it.
    pub image: Option<tempfile::NamedTempFile>,
}

impl Readback {
    /// The `stat` of the inode at `path`.
    pub fn stat(&self, path: &str) -> &debugfs::Stat {
        &self.stats[&self.tree.get(path).id]
    }
}

/// Checks an image against the tree its tar predicts: e2fsck must find
/// nothing but the reference's known quirks, and debugfs must read back
/// every path with its type, data, link target, device, mode, owner, times
/// and xattrs, hard links as shared inodes, and nothing else.
pub fn verify(
    tools: &debugfs::Tools,
    expected: &model::Tree,
    image: &Path,
) -> Result<Readback, String> {
    let dbg = tools.debugfs(image);
    let (tree, stats) = dbg.tree();
    let pre_1970: BTreeSet<u64> = expected
        .paths
        .iter()
        .filter(|(_, n)| n.times.look_pre_1970())
        .filter_map(|(p, _)| tree.paths.get(p).map(|n| n.id))
        .collect();
    tools
        .fsck(image, &pre_1970)
        .map_err(|e| format!("e2fsck rejects the image: {e}"))?;
    let d = model::diff(expected, &tree);
    if !d.is_empty() {
        let shown: Vec<&str> = d.iter().take(60).map(String::as_str).collect();
        return Err(format!(
            "the image differs from the tar in {} ways:\n{}",
            d.len(),
            shown.join("\n")
        ));
    }
    Ok(Readback {
        tree,
        stats,
        debugfs: dbg,
        image: None,
    })
}

/// Converts `tar`, then [`verify`]s the image against the tar. Panics, naming
/// `label`, on any difference.
pub fn check_tar(tools: &debugfs::Tools, label: &str, tar: &[u8]) -> Readback {
    let expected = model::expected_tree(tar);
    let image =
        image_file(tar).unwrap_or_else(|e| panic!("{label}: conversion failed: {e}: {e:?}"));
    let mut rb = verify(tools, &expected, image.path()).unwrap_or_else(|e| panic!("{label}: {e}"));
    rb.image = Some(image);
    rb
}
