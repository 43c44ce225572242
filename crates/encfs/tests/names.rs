//! Names are bytes (issue 10): names that are not UTF-8, and names of 255
//! bytes, go through seal → list → read → extract unchanged, and
//! `debugfs` (on the data segment decrypted by cryptsetup's volume key and
//! Python's `cryptography`) finds the same tree.
//!
//! Needs cryptsetup, e2fsprogs and python3 with `cryptography`; set
//! `CONFSUM_SKIP_REAL_TOOLS=1` to skip the real-tool half where they
//! cannot be installed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use confsum_encfs::{Error, FileKind, Filesystem, SealOptions, SealSource, Volume, seal};
use confsum_testkit::{python_with, real_tool, run_ok};

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

/// What a tree holds: path bytes → file bytes, or `-> target` for links,
/// or `/` for directories.
type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// Names that are not text, or are as long as ext4 allows.
fn odd_names() -> Vec<Vec<u8>> {
    vec![
        b"caf\xe9".to_vec(),  // Latin-1 "café"
        b"\xff\xfe".to_vec(), // two bytes that are never UTF-8
        vec![b'n'; 255],
        [&"é".repeat(127).into_bytes()[..], &b"x"[..]].concat(), // 255 bytes of UTF-8
        [&vec![b'\xe9'; 254][..], &b"!"[..]].concat(),           // 255 bytes, none UTF-8
        b"back\\slash\nnewline\x01".to_vec(),
        "ünïcödé 中文".as_bytes().to_vec(),
    ]
}

fn write_tree(root: &Path) -> Tree {
    let mut tree = Tree::new();
    fs::create_dir(root).unwrap();
    for (i, name) in odd_names().into_iter().enumerate() {
        let data = format!("file {i}\n").into_bytes();
        fs::write(root.join(os(&name)), &data).unwrap();
        tree.insert(name, data);
    }
    let dir = b"d\xe9j\xe0".to_vec();
    fs::create_dir(root.join(os(&dir))).unwrap();
    let inner = [&dir[..], &b"/"[..], &[b'z'; 255][..]].concat();
    fs::write(root.join(os(&inner)), b"deep").unwrap();
    tree.insert(dir.clone(), b"/".to_vec());
    tree.insert(inner, b"deep".to_vec());
    let link = b"link\x80".to_vec();
    let target = b"caf\xe9".to_vec();
    symlink(os(&target), root.join(os(&link))).unwrap();
    tree.insert(link, [&b"-> "[..], &target[..]].concat());
    tree
}

/// The tree on disk under `root`, names as bytes.
fn read_tree(root: &Path, prefix: &[u8], tree: &mut Tree) {
    for e in fs::read_dir(root).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().as_bytes().to_vec();
        let rel = if prefix.is_empty() {
            name
        } else {
            [prefix, &b"/"[..], &name[..]].concat()
        };
        if rel == b"lost+found" {
            continue;
        }
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            tree.insert(rel.clone(), b"/".to_vec());
            read_tree(&e.path(), &rel, tree);
        } else if ft.is_symlink() {
            let target = fs::read_link(e.path()).unwrap();
            tree.insert(rel, [&b"-> "[..], target.as_os_str().as_bytes()].concat());
        } else {
            tree.insert(rel, fs::read(e.path()).unwrap());
        }
    }
}

/// The tree inside the image, through `Filesystem`'s byte paths.
fn image_tree(fs: &Filesystem, dir: &[u8], tree: &mut Tree) {
    for e in fs.list(dir).unwrap() {
        let rel = e.path[1..].to_vec();
        if rel == b"lost+found" {
            continue;
        }
        // The name is the last component, and stat by path agrees.
        assert!(e.path.ends_with(e.name()));
        assert_eq!(fs.stat(&e.path).unwrap(), e);
        match e.kind {
            FileKind::Dir => {
                tree.insert(rel, b"/".to_vec());
                image_tree(fs, &e.path, tree);
            }
            FileKind::File => {
                let mut data = Vec::new();
                fs.copy_to(&e.path, &mut data).unwrap();
                tree.insert(rel, data);
            }
            FileKind::Symlink => {
                tree.insert(
                    rel,
                    [&b"-> "[..], &fs.read_link(&e.path).unwrap()[..]].concat(),
                );
            }
            _ => panic!("unexpected {e:?}"),
        }
    }
}

fn sealed(dir: &Path) -> (PathBuf, Tree) {
    let want = write_tree(&dir.join("docs"));
    let img = dir.join("names.img");
    seal(
        SealSource::Dir(&dir.join("docs")),
        &img,
        KEY,
        &SealOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    (img, want)
}

#[test]
fn names_that_are_not_utf8_or_255_bytes_long_round_trip_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let (img, want) = sealed(tmp.path());
    let fs = Volume::open(&img, KEY).unwrap().filesystem().unwrap();

    // Listing the root works, names and all (it failed for the whole
    // root before).
    let mut got = Tree::new();
    image_tree(&fs, b"/", &mut got);
    assert_eq!(got, want, "listed and read through Filesystem");

    // Shown escaped, never lossily.
    let root = fs.list("/").unwrap();
    let shown: Vec<String> = root.iter().map(|e| e.display_name().to_string()).collect();
    for name in [
        r"caf\xe9",
        r"\xff\xfe",
        r"back\\slash\x0anewline\x01",
        "ünïcödé 中文",
        r"link\x80",
    ] {
        assert!(shown.iter().any(|s| s == name), "{name} not in {shown:?}");
    }

    // Extraction writes the same bytes as names.
    let out = tmp.path().join("out");
    let count = fs.extract(&out, &mut |_| {}).unwrap();
    assert_eq!(count as usize, want.len());
    let mut extracted = Tree::new();
    read_tree(&out, b"", &mut extracted);
    assert_eq!(extracted, want, "extracted");
}

#[test]
fn paths_ext4_cannot_hold_are_an_error_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let (img, _) = sealed(tmp.path());
    let fs = Volume::open(&img, KEY).unwrap().filesystem().unwrap();
    let long = [&b"/"[..], &[b'x'; 256][..]].concat();
    match fs.stat(&long) {
        Err(e @ Error::BadPath { .. }) => assert!(e.to_string().contains("xxxx")),
        other => panic!("{other:?}"),
    }
    match fs.stat(b"/caf\xe9-missing") {
        Err(e @ Error::Filesystem { .. }) => {
            assert!(e.to_string().contains(r"caf\xe9-missing"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn debugfs_finds_the_same_names_and_bytes() {
    let (Some(cryptsetup), Some(debugfs), Some(python)) = (
        real_tool("cryptsetup", "cryptsetup-bin"),
        real_tool("debugfs", "e2fsprogs"),
        python_with(&["cryptography"], "cryptography"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (img, want) = sealed(dir);
    let key = dir.join("key");
    fs::write(&key, KEY).unwrap();
    let dump = run_ok(
        &cryptsetup,
        &[
            "luksDump",
            "--dump-volume-key",
            "--batch-mode",
            "--key-file",
            key.to_str().unwrap(),
            img.to_str().unwrap(),
        ],
    );
    let start = dump.find("MK dump:").expect("an MK dump section");
    let mk: String = dump[start + "MK dump:".len()..]
        .split_whitespace()
        .take_while(|w| w.len() == 2 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    let plain = dir.join("plain.img");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tools/xts_decrypt.py");
    run_ok(
        &python,
        &[
            script.to_str().unwrap(),
            img.to_str().unwrap(),
            "16777216",
            "4096",
            &mk,
            plain.to_str().unwrap(),
        ],
    );
    let out = dir.join("rdump");
    fs::create_dir(&out).unwrap();
    run_ok(
        &debugfs,
        &[
            "-R",
            &format!("rdump / {}", out.display()),
            plain.to_str().unwrap(),
        ],
    );
    let mut got = Tree::new();
    read_tree(&out, b"", &mut got);
    assert_eq!(got, want, "debugfs rdump of the decrypted image");
}

#[test]
fn sealing_into_the_directory_being_sealed_is_refused_naming_both() {
    // The issue: `cd DIR && encfs create --from . --out self.img` sealed
    // its own temporary file into the image.
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    fs::create_dir_all(docs.join("sub")).unwrap();
    fs::write(docs.join("a.txt"), b"a").unwrap();
    for out in [docs.join("self.img"), docs.join("sub/self.img")] {
        match seal(
            SealSource::Dir(&docs),
            &out,
            KEY,
            &SealOptions::default(),
            &mut |_| {},
        ) {
            Err(e @ Error::OutputInsideSource { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("self.img") && msg.contains("docs"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!out.exists());
    }
    let names: Vec<_> = fs::read_dir(&docs)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "left something behind: {names:?}");
}
