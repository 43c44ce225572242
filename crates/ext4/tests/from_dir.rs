//! A directory converts to the same image as GNU tar's archive of it.
//!
//! GNU tar (`--format=posix`) records nanosecond atime, ctime and mtime, and
//! `--sort=name` visits entries in the order `convert_dir` does, so both roads
//! must give byte-identical images; the tar road is checked against the
//! reference converter and e2fsprogs elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;
use std::io::{Cursor, Read};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use confsum_ext4::{ImageSink, Options, convert_dir};

fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("usr/share/doc")).unwrap();
    fs::create_dir_all(root.join("etc/empty")).unwrap();
    for (name, len) in [
        ("etc/zero", 0),
        ("etc/small", 5),
        ("usr/mid", 5000),
        ("usr/share/big", 70_000),
    ] {
        let data: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
        fs::write(root.join(name), data).unwrap();
    }
    fs::hard_link(root.join("usr/mid"), root.join("usr/share/doc/mid-link")).unwrap();
    symlink("../small", root.join("etc/empty/short")).unwrap();
    symlink(
        "/".to_owned() + &"long/".repeat(20),
        root.join("usr/long-link"),
    )
    .unwrap();
    let fifo = Command::new("mkfifo")
        .arg(root.join("etc/fifo"))
        .status()
        .unwrap();
    assert!(fifo.success(), "mkfifo");
    // Not every file system takes user xattrs; the comparison holds either way.
    let _ = xattr::set(root.join("etc/small"), "user.confsum", b"value\n\x00bytes");
    for entry in walk(root) {
        let meta = fs::symlink_metadata(&entry).unwrap();
        // Settle atimes first: relatime updates them on the first read only.
        if meta.is_file() {
            fs::File::open(&entry)
                .unwrap()
                .read_to_end(&mut Vec::new())
                .unwrap();
        } else if meta.is_symlink() {
            fs::read_link(&entry).unwrap();
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if fs::symlink_metadata(dir).unwrap().is_dir() {
        for e in fs::read_dir(dir).unwrap() {
            out.extend(walk(&e.unwrap().path()));
        }
    }
    out
}

#[test]
fn directory_and_its_gnu_tar_give_the_same_image() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tree");
    build_tree(&root);

    let from_dir = convert_dir(
        &root,
        ImageSink::new(Cursor::new(Vec::new())),
        &Options::default(),
    )
    .unwrap()
    .into_inner()
    .into_inner();

    let tar = Command::new("tar")
        .args([
            "--sort=name",
            "--format=posix",
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
        ])
        .arg("-C")
        .arg(&root)
        .args(["-cf", "-", "."])
        .output()
        .expect("GNU tar is installed");
    assert!(
        tar.status.success(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    let from_tar = common::image_of(&tar.stdout).unwrap();

    if std::env::var_os("CONFSUM_KEEP_IMAGES").is_some() {
        fs::write("/tmp/from_dir.img", &from_dir).unwrap();
        fs::write("/tmp/from_tar.img", &from_tar).unwrap();
    }
    assert_eq!(from_dir.len(), from_tar.len(), "image sizes");
    let first_difference = from_dir.iter().zip(&from_tar).position(|(a, b)| a != b);
    assert_eq!(
        first_difference,
        None,
        "first differing byte (block {:?})",
        first_difference.map(|p| p / 4096)
    );
}

#[test]
fn unreadable_directory_names_the_path() {
    let err = convert_dir(
        Path::new("/nonexistent/confsum"),
        ImageSink::new(Cursor::new(Vec::new())),
        &Options::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/confsum"), "{err}");
}
