//! Sealed images against the real tools, both ways.
//!
//! - Ours → theirs: `cryptsetup` reads our header and our key opens it; the
//!   volume key it dumps decrypts our data segment with Python's
//!   `cryptography` into an ext4 image that `e2fsck -fn` accepts and whose
//!   files `debugfs` reads back byte for byte.
//! - Theirs → ours: `mkfs.ext4 -d` plus `cryptsetup reencrypt --encrypt`
//!   images open in `Volume` with every file equal.
//!
//! Needs cryptsetup, e2fsprogs and python3 with `cryptography`; set
//! `CONFSUM_SKIP_REAL_TOOLS=1` to skip where they cannot be installed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use confsum_encfs::{
    Error, FileKind, Filesystem, SealOptions, SealReport, SealSource, Volume, seal,
};

/// The real tools, or `None` when they are missing and skipping is allowed.
fn tools() -> Option<()> {
    for (name, package) in [
        ("cryptsetup", "cryptsetup-bin"),
        ("e2fsck", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
        ("mkfs.ext4", "e2fsprogs"),
    ] {
        confsum_testkit::real_tool(name, package)?;
    }
    confsum_testkit::python_with(&["cryptography.hazmat.primitives.ciphers"], "cryptography")
        .map(drop)
}

/// Runs a tool (already checked by [`tools`]) and fails the test unless it succeeds.
fn run(program: &str, args: &[&str]) -> String {
    let path = match program {
        "python3" => PathBuf::from("python3"),
        name => {
            confsum_testkit::real_tool(name, "its package").unwrap_or_else(|| PathBuf::from(name))
        }
    };
    confsum_testkit::run_ok(&path, args)
}

/// Files of every shape a document folder has.
fn documents(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut add = |path: &str, data: Vec<u8>| {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, &data).unwrap();
        files.insert(path.to_owned(), data);
    };
    add("report.txt", b"quarterly numbers, confidential\n".to_vec());
    add("empty", Vec::new());
    add("deep/er/still/notes.md", vec![b'n'; 4097]);
    add("unicode-é中文.txt", "héllo".as_bytes().to_vec());
    add(
        "big.bin",
        (0..3_000_000u32).map(|i| (i * 7 % 253) as u8).collect(),
    );
    symlink("report.txt", root.join("link-to-report")).unwrap();
    files
}

fn key_file(dir: &Path) -> (PathBuf, Vec<u8>) {
    let key: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0x5c).collect();
    let path = dir.join("key");
    fs::write(&path, &key).unwrap();
    (path, key)
}

/// Seals the documents folder (default options) into `dir/encfs.img`.
fn seal_documents(dir: &Path, key: &[u8]) -> (PathBuf, SealReport) {
    let docs = dir.join("docs");
    if !docs.exists() {
        documents(&docs);
    }
    let img = dir.join("encfs.img");
    let report = seal(
        SealSource::Dir(&docs),
        &img,
        key,
        &SealOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    (img, report)
}

/// Every regular file and symlink under `dir` of a sealed file system.
fn walk(fs: &Filesystem, dir: &str, out: &mut BTreeMap<String, Vec<u8>>) {
    for e in fs.list(dir).unwrap() {
        let path = String::from_utf8(e.path.clone()).unwrap();
        let rel = path.trim_start_matches('/').to_owned();
        match e.kind {
            FileKind::Dir if rel != "lost+found" => walk(fs, &path, out),
            FileKind::File => {
                let mut data = Vec::new();
                fs.copy_to(&e.path, &mut data).unwrap();
                assert_eq!(data.len() as u64, e.size, "{rel}");
                out.insert(rel, data);
            }
            FileKind::Symlink => {
                out.insert(
                    rel,
                    [&b"-> "[..], &fs.read_link(&e.path).unwrap()[..]].concat(),
                );
            }
            _ => {}
        }
    }
}

fn with_link(mut files: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    files.insert("link-to-report".into(), b"-> report.txt".to_vec());
    files
}

fn volume_key(img: &Path, key: &Path) -> String {
    let out = run(
        "cryptsetup",
        &[
            "luksDump",
            "--dump-volume-key",
            "--batch-mode",
            "--key-file",
            key.to_str().unwrap(),
            img.to_str().unwrap(),
        ],
    );
    let text = out;
    let start = text.find("MK dump:").expect("an MK dump section");
    text[start + "MK dump:".len()..]
        .split_whitespace()
        .take_while(|w| w.len() == 2 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .collect()
}

#[test]
fn sealed_images_open_in_cryptsetup_and_decrypt_independently() {
    let Some(()) = tools() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    let files = documents(&docs);
    let (key_path, key) = key_file(tmp.path());
    let (img, report) = seal_documents(tmp.path(), &key);
    assert_eq!(fs::metadata(&img).unwrap().len(), report.image_size);

    let dump = run("cryptsetup", &["luksDump", img.to_str().unwrap()]);
    for fact in [
        "Version:       \t2",
        "aes-xts-plain64",
        "sector: 4096 [bytes]",
        "pbkdf2",
        "Iterations: 1000",
        "offset: 16777216 [bytes]",
    ] {
        assert!(dump.contains(fact), "luksDump lacks {fact:?}:\n{dump}");
    }
    run(
        "cryptsetup",
        &[
            "open",
            "--test-passphrase",
            "--key-file",
            key_path.to_str().unwrap(),
            img.to_str().unwrap(),
        ],
    );

    let mk = volume_key(&img, &key_path);
    assert_eq!(mk.len(), 128, "a 512-bit volume key");
    let plain = tmp.path().join("plain.img");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tools/xts_decrypt.py");
    run(
        "python3",
        &[
            script.to_str().unwrap(),
            img.to_str().unwrap(),
            "16777216",
            "4096",
            &mk,
            plain.to_str().unwrap(),
        ],
    );
    assert_eq!(fs::metadata(&plain).unwrap().len(), report.filesystem_size);
    let fsck = Command::new(confsum_testkit::real_tool("e2fsck", "e2fsprogs").unwrap())
        .arg("-fn")
        .arg(&plain)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck -fn: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );

    let out = tmp.path().join("rdump");
    fs::create_dir(&out).unwrap();
    run(
        "debugfs",
        &[
            "-R",
            &format!("rdump / {}", out.display()),
            plain.to_str().unwrap(),
        ],
    );
    for (path, data) in &files {
        assert_eq!(
            &fs::read(out.join(path)).unwrap(),
            data,
            "{path} read back by debugfs"
        );
    }
    assert_eq!(
        fs::read_link(out.join("link-to-report")).unwrap(),
        Path::new("report.txt")
    );

    // And our own reader agrees.
    let volume = Volume::open(&img, &key).unwrap();
    assert_eq!(volume.slot(), 0);
    let mut got = BTreeMap::new();
    walk(&volume.filesystem().unwrap(), "/", &mut got);
    assert_eq!(got, with_link(files));
}

/// `mkfs.ext4 -d` then `cryptsetup reencrypt --encrypt`, as DESIGN.md describes.
fn cryptsetup_image(tmp: &Path, docs: &Path, key: &Path, extra: &[&str]) -> PathBuf {
    let img = tmp.join(format!("theirs{}.img", extra.len()));
    let f = fs::File::create(&img).unwrap();
    f.set_len(48 << 20).unwrap();
    drop(f);
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-b",
            "4096",
            "-d",
            docs.to_str().unwrap(),
            img.to_str().unwrap(),
            "32M",
        ],
    );
    let mut args = vec![
        "reencrypt",
        "--encrypt",
        "--type",
        "luks2",
        "--reduce-device-size",
        "16M",
        "--key-file",
        key.to_str().unwrap(),
        "--batch-mode",
    ];
    args.extend_from_slice(extra);
    args.push(img.to_str().unwrap());
    run("cryptsetup", &args);
    img
}

#[test]
fn images_cryptsetup_wrote_open_with_every_file_equal() {
    let Some(()) = tools() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    let files = with_link(documents(&docs));
    let (key_path, key) = key_file(tmp.path());
    let recipe = [
        "--sector-size",
        "4096",
        "--cipher",
        "aes-xts-plain64",
        "--key-size",
        "512",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
    ];
    // cryptsetup's defaults (Argon2id, its own sector size), with a cheap KDF.
    let defaults = [
        "--pbkdf-memory",
        "32768",
        "--pbkdf-parallel",
        "1",
        "--iter-time",
        "50",
    ];
    for extra in [&recipe[..], &defaults[..]] {
        let img = cryptsetup_image(tmp.path(), &docs, &key_path, extra);
        let volume = Volume::open(&img, &key).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
        let mut got = BTreeMap::new();
        walk(&volume.filesystem().unwrap(), "/", &mut got);
        assert_eq!(got, files, "{extra:?}");
    }
}

#[test]
fn a_wrong_key_gives_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, key) = key_file(tmp.path());
    let (img, _) = seal_documents(tmp.path(), &key);
    let err = Volume::open(&img, b"not the key").unwrap_err();
    assert!(matches!(err, Error::WrongKey), "{err:?}");
}

#[test]
fn a_failed_seal_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let img = out_dir.join("encfs.img");

    // A tar cut off in the middle of a file: the conversion fails half way.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(1 << 20);
    h.set_mode(0o644);
    b.append_data(&mut h, "doc", &vec![1u8; 1 << 20][..])
        .unwrap();
    let tar = b.into_inner().unwrap();
    let mut cut = &tar[..600_000];
    let err = seal(
        SealSource::Tar(&mut cut),
        &img,
        b"key",
        &SealOptions::default(),
        &mut |_| {},
    );
    assert!(err.is_err());
    assert_eq!(
        fs::read_dir(&out_dir).unwrap().count(),
        0,
        "no image and no temporary file"
    );

    // A forced size too small for the content.
    let mut options = SealOptions::default();
    options.size = Some(17 << 20);
    let mut whole = &tar[..];
    let mut big = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(4 << 20);
    h.set_mode(0o644);
    big.append_data(&mut h, "doc", &vec![2u8; 4 << 20][..])
        .unwrap();
    let big = big.into_inner().unwrap();
    let err = seal(
        SealSource::Tar(&mut &big[..]),
        &img,
        b"key",
        &options,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, Error::ImageTooSmall { .. }), "{err:?}");
    assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 0);

    // An existing image is never replaced unless asked.
    fs::write(&img, b"precious").unwrap();
    let err = seal(
        SealSource::Tar(&mut whole),
        &img,
        b"key",
        &SealOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, Error::Exists(_)), "{err:?}");
    assert_eq!(fs::read(&img).unwrap(), b"precious");
}

#[test]
fn a_forced_size_is_the_image_size() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    documents(&docs);
    let img = tmp.path().join("encfs.img");
    let mut options = SealOptions::default();
    options.size = Some(64 << 20);
    let report = seal(SealSource::Dir(&docs), &img, b"key", &options, &mut |_| {}).unwrap();
    assert_eq!(report.image_size, 64 << 20);
    assert_eq!(fs::metadata(&img).unwrap().len(), 64 << 20);
    assert_eq!(report.filesystem_size, 48 << 20);
}

#[test]
fn truncated_images_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let (img, _) = seal_documents(tmp.path(), b"key");
    let full = fs::read(&img).unwrap();
    for cut in [10 << 10, 20 << 20] {
        let short = tmp.path().join(format!("cut{cut}.img"));
        fs::write(&short, &full[..cut]).unwrap();
        let result = Volume::open(&short, b"key").and_then(Volume::filesystem);
        let err = result
            .err()
            .unwrap_or_else(|| panic!("a {cut}-byte image opened"));
        assert!(!err.to_string().is_empty());
    }
}
