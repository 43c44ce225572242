//! Writable images (for sealed documents, not layers): clean under
//! `e2fsck -fn`, writable through `debugfs -w`, and the free space is real.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::debugfs::{self, Tools};
use common::tarball::{self, Entry};
use confsum_ext4::{ImageSink, Options, Writable, convert_tar};

fn writable_image(tar: &[u8], min_size: u64) -> tempfile::NamedTempFile {
    let image = tempfile::NamedTempFile::new().unwrap();
    let mut options = Options::default();
    options.writable = Some(Writable::with_min_size(min_size));
    convert_tar(tar, ImageSink::new(image.reopen().unwrap()), &options).unwrap();
    image
}

fn e2fsck_clean(tools: &Tools, image: &std::path::Path, label: &str) -> String {
    let out = Command::new(&tools.e2fsck)
        .arg("-fn")
        .arg(image)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{label}: e2fsck -fn\n{text}");
    text
}

/// `(used, total)` blocks from e2fsck's summary, "..., 409/16384 blocks".
fn blocks(text: &str) -> (u64, u64) {
    let line = text
        .lines()
        .find(|l| l.ends_with(" blocks"))
        .unwrap_or_else(|| panic!("no summary in\n{text}"));
    let counts = line
        .rsplit(", ")
        .next()
        .unwrap()
        .trim_end_matches(" blocks");
    let (used, total) = counts.split_once('/').unwrap();
    (used.parse().unwrap(), total.parse().unwrap())
}

#[test]
fn writable_images_are_clean_and_hold_the_requested_free_space() {
    let Some(tools) = debugfs::tools() else {
        return;
    };
    let tar = tarball::tar_of(&[
        Entry::file("docs/a.txt", "confidential"),
        Entry::file("docs/b.bin", vec![7u8; 100_000]),
    ]);
    // Smaller than the content, one group, and several groups.
    for min_size in [0, 64 << 20, 300 << 20] {
        let image = writable_image(&tar, min_size);
        let len = image.as_file().metadata().unwrap().len();
        assert!(
            len >= min_size && len % 4096 == 0,
            "{min_size}: image of {len} bytes"
        );
        let text = e2fsck_clean(&tools, image.path(), &format!("min size {min_size}"));
        let (used, total) = blocks(&text);
        assert_eq!(total * 4096, len, "{text}");
        if min_size > 0 {
            assert!(used * 10 < total, "most of the image is free: {text}");
        }
    }
}

#[test]
fn free_space_is_kept_beyond_any_content() {
    let Some(tools) = debugfs::tools() else {
        return;
    };
    for content in [0usize, 5 << 20] {
        let tar = tarball::tar_of(&[Entry::file("docs/blob", vec![1u8; content])]);
        let image = tempfile::NamedTempFile::new().unwrap();
        let mut options = Options::default();
        options.writable = Some(Writable::with_free_space(40 << 20));
        convert_tar(&tar[..], ImageSink::new(image.reopen().unwrap()), &options).unwrap();
        let text = e2fsck_clean(&tools, image.path(), &format!("{content} bytes of content"));
        let (used, total) = blocks(&text);
        assert!((total - used) * 4096 >= 40 << 20, "{content}: {text}");
        assert!(
            (total - used) * 4096 < 41 << 20,
            "{content}: not much more: {text}"
        );
    }
}

#[test]
fn writable_images_accept_new_files() {
    let Some(tools) = debugfs::tools() else {
        return;
    };
    let tar = tarball::tar_of(&[Entry::file("docs/a.txt", "confidential")]);
    let image = writable_image(&tar, 16 << 20);
    let payload = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(payload.path(), vec![0x5a; 3 << 20]).unwrap();
    let out = Command::new(&tools.debugfs)
        .arg("-w")
        .arg("-R")
        .arg(format!("write {} docs/new.bin", payload.path().display()))
        .arg(image.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    e2fsck_clean(&tools, image.path(), "after a write");
    let dump = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(&tools.debugfs)
        .arg("-R")
        .arg(format!("dump docs/new.bin {}", dump.path().display()))
        .arg(image.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::read(dump.path()).unwrap(), vec![0x5a; 3 << 20]);
}

#[test]
fn writable_images_do_not_claim_read_only() {
    let tar = tarball::tar_of(&[Entry::file("a", "x")]);
    let image = std::fs::read(writable_image(&tar, 1 << 20).path()).unwrap();
    let ro_compat = u32::from_le_bytes(image[1024 + 100..1024 + 104].try_into().unwrap());
    assert_eq!(ro_compat & 0x1000, 0, "the read-only feature is off");
    let layer = common::image_of(&tar).unwrap();
    let ro_compat = u32::from_le_bytes(layer[1024 + 100..1024 + 104].try_into().unwrap());
    assert_eq!(
        ro_compat & 0x1000,
        0x1000,
        "layers stay read-only, like the reference"
    );
}
