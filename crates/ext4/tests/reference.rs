//! Differential test against the reference converter itself.
//!
//! Azure's layer hash comes from hcsshim's Go `tar2ext4`. When the environment
//! variable `CONFSUM_TAR2EXT4_REF` names a program that, run as
//! `PROGRAM hash FILE`, prints the reference root hash of a plain tar as its
//! first word (a thin `main` around `tar2ext4.ConvertAndComputeRootDigest`),
//! this test generates a few hundred varied archives and requires identical
//! roots. Without the variable it only says so: the committed vectors in
//! `tests/vectors.rs` are the always-on check.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

/// A tiny deterministic generator, so failures are reproducible by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn name(rng: &mut Rng) -> String {
    const PARTS: &[&str] = &[
        "a", "bin", "etc", "usr", "lib", "é", "中文", "x.txt", "data",
    ];
    let mut s = PARTS[rng.below(PARTS.len() as u64) as usize].to_owned();
    if rng.chance(10) {
        s.push_str(&"n".repeat(rng.below(200) as usize + 40));
    }
    s.push_str(&rng.below(40).to_string());
    s
}

fn header(rng: &mut Rng, kind: tar::EntryType) -> tar::Header {
    let mut h = if rng.chance(30) {
        tar::Header::new_gnu()
    } else {
        tar::Header::new_ustar()
    };
    h.set_entry_type(kind);
    h.set_mode(rng.below(0o10000) as u32);
    h.set_uid(rng.below(70_000));
    h.set_gid(rng.below(70_000));
    h.set_mtime(match rng.below(4) {
        0 => 0,
        1 => 1_700_000_000,
        2 => 4_102_444_800,
        _ => rng.below(1 << 33),
    });
    h.set_size(0);
    h
}

/// One archive exercising the corners the layout depends on.
fn archive(seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut b = tar::Builder::new(Vec::new());
    let mut files: Vec<String> = Vec::new();
    let mut dirs: Vec<String> = vec![String::new()];
    for _ in 0..rng.below(60) + 1 {
        let parent = dirs[rng.below(dirs.len() as u64) as usize].clone();
        let path = if parent.is_empty() {
            name(&mut rng)
        } else {
            format!("{parent}/{}", name(&mut rng))
        };
        // Overwriting a non-empty file is refused by the reference too.
        if files.contains(&path) {
            continue;
        }
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if rng.chance(15) {
            for i in 0..rng.below(4) + 1 {
                let len = [1, 7, 40, 120, 300][rng.below(5) as usize];
                pax.push((format!("SCHILY.xattr.user.k{i}"), vec![b'v'; len]));
            }
        }
        if rng.chance(10) {
            pax.push((
                "mtime".into(),
                format!("{}.{}", rng.below(1 << 34), rng.below(1_000_000_000)).into_bytes(),
            ));
        }
        if rng.chance(5) {
            pax.push(("atime".into(), b"-5.25".to_vec()));
        }
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .unwrap();
        }
        match rng.below(10) {
            0 | 1 => {
                let mut h = header(&mut rng, tar::EntryType::Directory);
                b.append_data(&mut h, format!("{path}/"), &[][..]).unwrap();
                dirs.push(path);
            }
            2 if !files.is_empty() => {
                let target = files[rng.below(files.len() as u64) as usize].clone();
                let mut h = header(&mut rng, tar::EntryType::Link);
                b.append_link(&mut h, &path, &target).unwrap();
            }
            3 => {
                let len = if rng.chance(50) { 10 } else { 100 };
                let target = "t".repeat(len);
                let mut h = header(&mut rng, tar::EntryType::Symlink);
                b.append_link(&mut h, &path, &target).unwrap();
            }
            4 => {
                let kind = [
                    tar::EntryType::Char,
                    tar::EntryType::Block,
                    tar::EntryType::Fifo,
                ][rng.below(3) as usize];
                let mut h = header(&mut rng, kind);
                h.set_device_major(rng.below(400) as u32).unwrap();
                h.set_device_minor(rng.below(80_000) as u32).unwrap();
                b.append_data(&mut h, &path, &[][..]).unwrap();
            }
            5 => {
                let wh = if rng.chance(50) {
                    format!("{parent}/.wh..wh..opq")
                } else {
                    format!("{parent}/.wh.{}", name(&mut rng))
                };
                let mut h = header(&mut rng, tar::EntryType::Regular);
                b.append_data(&mut h, wh.trim_start_matches('/'), &[][..])
                    .unwrap();
            }
            _ => {
                let size = [0, 1, 59, 60, 4095, 4096, 4097, 70_000][rng.below(8) as usize];
                let data: Vec<u8> = (0..size).map(|i| (i as u64 ^ seed) as u8).collect();
                let mut h = header(&mut rng, tar::EntryType::Regular);
                h.set_size(size as u64);
                b.append_data(&mut h, &path, &data[..]).unwrap();
                files.push(path);
            }
        }
    }
    b.into_inner().unwrap()
}

#[test]
fn generated_archives_match_the_reference_converter() {
    let Ok(reference) = std::env::var("CONFSUM_TAR2EXT4_REF") else {
        eprintln!("CONFSUM_TAR2EXT4_REF is not set: differential test not run");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cases: u64 = std::env::var("CONFSUM_REF_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(200);
    let mut mismatches = Vec::new();
    let mut agreed_images = 0;
    for seed in 1..=cases {
        let tar = archive(seed);
        let path = dir.path().join(format!("case{seed}.tar"));
        std::fs::write(&path, &tar).unwrap();
        let out = Command::new(&reference)
            .arg("hash")
            .arg(&path)
            .output()
            .unwrap();
        let ours = common::image_of(&tar).map(|img| common::naive_verity_root(&img));
        let theirs = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .map(str::to_owned);
        match (ours, out.status.success(), theirs) {
            (Ok(a), true, Some(b)) if a == b => agreed_images += 1,
            (Err(e), false, _) => eprintln!("seed {seed}: both refuse ({e})"),
            (ours, _, theirs) => {
                let keep = std::env::temp_dir().join(format!("confsum-ref-mismatch-{seed}.tar"));
                std::fs::write(&keep, &tar).unwrap();
                mismatches.push(format!(
                    "seed {seed} ({}): ours {ours:?}, reference {theirs:?} {}",
                    keep.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    // Refusals agree too, but most cases must produce an image to mean much.
    assert!(
        agreed_images * 4 >= cases * 3,
        "only {agreed_images} of {cases} produced images"
    );
}
