//! `confsum layer-hash` end to end, against the reference's recorded roots.

use confsum_testkit::Run;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::common;

fn vectors() -> PathBuf {
    common::vectors("layers")
}

fn confsum(args: &[&str], stdin: Option<&[u8]>) -> Run {
    common::confsum()
        .args(args)
        .stdin(stdin.unwrap_or_default())
        .run()
}

/// A tar with the same regular file twice, which the reference refuses.
fn written_twice() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for _ in 0..2 {
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "etc/passwd", &b"abc"[..]).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn prints_the_reference_root_of_every_vector_in_sha256sum_style() {
    let dir = vectors();
    let listing = std::fs::read_to_string(dir.join("roothashes.txt")).unwrap();
    let mut args = Vec::new();
    let mut want = String::new();
    for line in listing.lines() {
        let (hash, file) = line.split_once(' ').unwrap();
        let path = dir.join(file.trim()).display().to_string();
        want.push_str(&format!("{hash}  {path}\n"));
        args.push(path);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = confsum(
        &["layer-hash", "--no-progress"]
            .iter()
            .copied()
            .chain(args)
            .collect::<Vec<_>>(),
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
}

#[test]
fn reads_standard_input_plain_and_compressed() {
    let tar = std::fs::read(vectors().join("links.tar")).unwrap();
    let want = "a43f655da456326ed6310dcd1e7a1a08c902a7016f76c3d2ffcb9641c43de933  -\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    for input in [tar, gz] {
        let out = confsum(&["layer-hash", "-"], Some(&input));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
    }
}

#[test]
fn a_refused_layer_exits_nonzero_with_one_line_naming_the_entry() {
    let out = confsum(&["layer-hash", "-"], Some(&written_twice()));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("etc/passwd") && err.contains("cannot overwrite file with non-inline data"),
        "{err}"
    );
}

#[test]
fn keeps_hashing_after_a_failure_and_reports_it_in_the_exit_code() {
    let good = vectors().join("empty.tar").display().to_string();
    let out = confsum(&["layer-hash", "/nonexistent.tar", &good], None);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.starts_with("8b4842f06982817534a75bcf71865213b09dfa8313229c384e5201dadbd75e25  "),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.tar"));
}

#[test]
fn image_out_writes_the_image_and_nothing_on_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("layer.img");
    let tar = vectors().join("sizes.tar").display().to_string();
    let out = confsum(
        &["layer-hash", "--image-out", img.to_str().unwrap(), &tar],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = String::from_utf8(out.stdout).unwrap();
    assert!(
        root.starts_with("741a9a6acd1cd37aac4c88c5ab485dd581361a2052a91e54a5f3c23d452c9418"),
        "{root}"
    );
    // The image on disk is the one hashed: veritysetup-style root over its bytes.
    let image = std::fs::read(&img).unwrap();
    assert_eq!(
        confsum_verity::root_hash(&image[..]).unwrap().to_string(),
        root[..64]
    );

    let bad = tmp.path().join("bad.img");
    let out = confsum(
        &["layer-hash", "--image-out", bad.to_str().unwrap(), "-"],
        Some(&written_twice()),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_only_file(tmp.path(), "layer.img");
}

fn assert_only_file(dir: &Path, name: &str) {
    let names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        [name],
        "no partial image or temporary file is left behind"
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(confsum(&["layer-hash"], None).status.code(), Some(2));
    let out = confsum(
        &["layer-hash", "--image-out", "x.img", "a.tar", "b.tar"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--image-out takes exactly one input"));
}

#[test]
fn a_usage_error_found_after_parsing_shows_the_subcommands_usage() {
    for (args, usage) in [
        (
            &["layer-hash", "--image-out", "x.img", "a.tar", "b.tar"][..],
            "Usage: confsum layer-hash ",
        ),
        (
            &[
                "encfs",
                "create",
                "--out",
                "x.img",
                "-k",
                "x.key",
                "--sector-size",
                "7",
            ][..],
            "Usage: confsum encfs create ",
        ),
    ] {
        let run = common::confsum().args(args).run();
        assert_eq!(run.status.code(), Some(2), "{args:?}");
        assert!(
            run.stderr_str().contains(usage),
            "{args:?}: {}",
            run.stderr_str()
        );
    }
}
