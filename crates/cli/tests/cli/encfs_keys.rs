//! `confsum encfs add-key` / `remove-key` racing each other as processes,
//! and killed mid-change (issue 10), checked with the real cryptsetup.
//!
//! Needs cryptsetup (Debian: cryptsetup-bin); set
//! `CONFSUM_SKIP_REAL_TOOLS=1` to skip where it cannot be installed.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant};

use confsum_encfs::{KeyFile, Luks2, Volume};
use confsum_testkit::{Cmd, real_tool, run};

const ROUNDS: usize = 200;

fn confsum(dir: &Path) -> Cmd {
    Cmd::new(crate::common::BIN).current_dir(dir)
}

fn start(dir: &Path, args: &[&str]) -> Child {
    confsum(dir).args(args).spawn()
}

/// A small xorshift, so a failing round can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `base.img` with slot 0 opened by `a.key` and slot 1 by `b.key`.
fn base(dir: &Path) -> PathBuf {
    fs::create_dir_all(dir.join("docs")).unwrap();
    fs::write(dir.join("docs/note.txt"), "secret\n").unwrap();
    confsum(dir)
        .args(["encfs", "create", "--from", "docs", "--out", "base.img"])
        .args(["--key-file", "a.key", "--size", "17M", "--no-progress"])
        .run()
        .success();
    confsum(dir)
        .args([
            "encfs",
            "add-key",
            "base.img",
            "-k",
            "a.key",
            "--new-key-file",
            "b.key",
        ])
        .run()
        .success();
    dir.join("base.img")
}

/// Whether `key` opens `img` here (the library `confsum` runs).
fn opens_here(img: &Path, key: &Path) -> bool {
    let Ok(key) = KeyFile::load(key) else {
        return false;
    };
    Volume::open(img, key.expose()).is_ok()
}

fn opens_in_cryptsetup(tool: &Path, img: &Path, key: &Path) -> bool {
    let args = ["open", "--test-passphrase", "--key-file"];
    let paths = [key.to_str().unwrap(), img.to_str().unwrap()];
    run(tool, &[&args[..], &paths[..]].concat())
        .status
        .success()
}

/// The slot a successful add-key reported ("added keyslot N, ...").
fn added_slot(out: &Output) -> Option<usize> {
    let err = String::from_utf8_lossy(&out.stderr);
    let rest = err.split("added keyslot ").nth(1)?;
    rest.split(',').next()?.trim().parse().ok()
}

fn describe(name: &str, out: &Output) -> String {
    format!(
        "{name}: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

#[test]
fn racing_key_changes_never_lose_a_reported_key_nor_all_keys() {
    let cryptsetup = real_tool("cryptsetup", "cryptsetup-bin");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let base = base(d);
    let key = |name: &str| d.join(name);
    let started = Instant::now();
    for round in 0..ROUNDS {
        let img = d.join("race.img");
        fs::copy(&base, &img).unwrap();
        for stale in ["n1.key", "n2.key"] {
            let _ = fs::remove_file(key(stale));
        }
        // Three races, in turn: the mutual removal, two add-keys,
        // and an add-key against a removal.
        let (one, two): (&[&str], &[&str]) = match round % 3 {
            0 => (
                &[
                    "encfs",
                    "remove-key",
                    "race.img",
                    "--slot",
                    "0",
                    "-k",
                    "b.key",
                ],
                &[
                    "encfs",
                    "remove-key",
                    "race.img",
                    "--slot",
                    "1",
                    "-k",
                    "a.key",
                ],
            ),
            1 => (
                &[
                    "encfs",
                    "add-key",
                    "race.img",
                    "-k",
                    "a.key",
                    "--new-key-file",
                    "n1.key",
                ],
                &[
                    "encfs",
                    "add-key",
                    "race.img",
                    "-k",
                    "b.key",
                    "--new-key-file",
                    "n2.key",
                ],
            ),
            _ => (
                &[
                    "encfs",
                    "add-key",
                    "race.img",
                    "-k",
                    "a.key",
                    "--new-key-file",
                    "n1.key",
                ],
                &[
                    "encfs",
                    "remove-key",
                    "race.img",
                    "--slot",
                    "1",
                    "-k",
                    "a.key",
                ],
            ),
        };
        let (p1, p2) = (start(d, one), start(d, two));
        let (o1, o2) = (
            p1.wait_with_output().unwrap(),
            p2.wait_with_output().unwrap(),
        );
        let why = format!(
            "round {round}: {}; {}",
            describe("first", &o1),
            describe("second", &o2)
        );
        let ok = (o1.status.success(), o2.status.success());

        // What must open afterwards, and what must not.
        let (must, must_not): (Vec<&str>, Vec<&str>) = match round % 3 {
            0 => {
                // Exactly one removal wins; the loser fails cleanly.
                assert!(ok == (true, false) || ok == (false, true), "{why}");
                if ok.0 {
                    (vec!["b.key"], vec!["a.key"])
                } else {
                    (vec!["a.key"], vec!["b.key"])
                }
            }
            1 => {
                assert_eq!(ok, (true, true), "{why}");
                let slots = (added_slot(&o1), added_slot(&o2));
                assert!(slots.0.is_some() && slots.0 != slots.1, "{why}");
                (vec!["a.key", "b.key", "n1.key", "n2.key"], vec![])
            }
            _ => {
                assert_eq!(ok, (true, true), "{why}");
                assert!(added_slot(&o1).is_some(), "{why}");
                (vec!["a.key", "n1.key"], vec!["b.key"])
            }
        };
        let mut working = BTreeSet::new();
        for k in &must {
            assert!(
                opens_here(&img, &key(k)),
                "{why}: {k} does not open the image"
            );
            working.insert(*k);
        }
        for k in &must_not {
            assert!(!opens_here(&img, &key(k)), "{why}: removed {k} still opens");
        }
        assert!(!working.is_empty(), "{why}: no key opens the image");
        let luks = Luks2::read(fs::File::open(&img).unwrap()).unwrap();
        assert_eq!(luks.keyslots().len(), must.len(), "{why}");
        if let Some(tool) = &cryptsetup {
            // The keys this round reported as added (or that survived a
            // removal) open in cryptsetup as well.
            let added: &[&str] = match round % 3 {
                0 => &must,
                1 => &["n1.key", "n2.key"],
                _ => &["n1.key"],
            };
            for k in added {
                assert!(
                    opens_in_cryptsetup(tool, &img, &key(k)),
                    "{why}: cryptsetup refuses {k}"
                );
            }
        }
    }
    eprintln!("{ROUNDS} rounds in {:?}", started.elapsed());
}

/// Which of `keys` open `img`.
fn opening(img: &Path, keys: &[PathBuf]) -> BTreeSet<PathBuf> {
    keys.iter()
        .filter(|k| opens_here(img, k))
        .cloned()
        .collect()
}

#[test]
fn a_key_change_killed_at_any_moment_leaves_the_old_or_the_new_key_set() {
    let cryptsetup = real_tool("cryptsetup", "cryptsetup-bin");
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let base = base(d);
    let (a, b, n) = (d.join("a.key"), d.join("b.key"), d.join("n.key"));
    let img = d.join("kill.img");

    // How long an undisturbed change takes, to spread the kills over it.
    fs::copy(&base, &img).unwrap();
    let t = Instant::now();
    confsum(d)
        .args([
            "encfs",
            "add-key",
            "kill.img",
            "-k",
            "a.key",
            "--new-key-file",
            "n.key",
        ])
        .run()
        .success();
    let span = t.elapsed().as_micros() as u64 + 1;

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut old_seen, mut new_seen) = (0, 0);
    for round in 0..40 {
        fs::copy(&base, &img).unwrap();
        let _ = fs::remove_file(&n);
        let add = round % 2 == 0;
        let args: &[&str] = if add {
            &[
                "encfs",
                "add-key",
                "kill.img",
                "-k",
                "a.key",
                "--new-key-file",
                "n.key",
            ]
        } else {
            &[
                "encfs",
                "remove-key",
                "kill.img",
                "--slot",
                "1",
                "-k",
                "a.key",
            ]
        };
        let mut child = start(d, args);
        std::thread::sleep(Duration::from_micros(rng.below(span)));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();

        let keys = [a.clone(), b.clone(), n.clone()];
        let got = opening(&img, &keys);
        let old: BTreeSet<PathBuf> = [a.clone(), b.clone()].into();
        let new: BTreeSet<PathBuf> = if add {
            [a.clone(), b.clone(), n.clone()].into()
        } else {
            [a.clone()].into()
        };
        assert!(
            got == old || got == new,
            "round {round} ({}): {got:?} open, neither the old nor the new key set",
            if add { "add-key" } else { "remove-key" }
        );
        if got == old {
            old_seen += 1
        } else {
            new_seen += 1
        }
        if let Some(tool) = &cryptsetup {
            for k in &keys {
                if k.exists() {
                    assert_eq!(
                        opens_in_cryptsetup(tool, &img, k),
                        got.contains(k),
                        "round {round}: cryptsetup disagrees about {}",
                        k.display()
                    );
                }
            }
        }
    }
    eprintln!("killed runs: {old_seen} left the old key set, {new_seen} the new one");
}

#[test]
fn a_key_file_over_cryptsetups_limit_is_refused_with_its_reason() {
    // Issue 10: a 9 MiB key file was accepted, and cryptsetup refuses it
    // ("Maximum keyfile size exceeded").
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    base(d);
    fs::write(d.join("big.key"), vec![7u8; 9 << 20]).unwrap();
    for args in [
        &["encfs", "ls", "base.img", "-k", "big.key"][..],
        &[
            "encfs",
            "add-key",
            "base.img",
            "-k",
            "big.key",
            "--new-key-file",
            "x.key",
        ],
        &[
            "encfs",
            "remove-key",
            "base.img",
            "--slot",
            "1",
            "-k",
            "big.key",
        ],
    ] {
        let out = confsum(d).args(args).run().code(1);
        let err = out.stderr_str();
        assert!(
            err.contains("big.key") && err.contains("over cryptsetup's maximum of 8388608 bytes"),
            "{args:?}: {err}"
        );
        assert!(!d.join("x.key").exists());
    }
}
