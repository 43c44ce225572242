//! One policy for outputs, checked on every subcommand (issue 10): a
//! closed pipe or a full disk on standard output, an existing output, an
//! output directory that cannot be written, SIGINT, and SIGKILL then a
//! rerun. No case may panic or leave a file behind.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use confsum_attest::{TokenClaims, TokenIssuer};
use confsum_testkit::{Cmd, Run, TarBuilder, det_bytes};

use crate::common::{self, confsum, vectors};

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn no_panic(run: &Run, what: &str) {
    let stderr = run.stderr_str();
    assert!(!stderr.contains("panicked"), "{what} panicked: {stderr}");
    assert_ne!(run.status.code(), Some(101), "{what}: {stderr}");
}

/// Fixtures for every command that prints: an image, a report, a token.
struct Printing {
    dir: tempfile::TempDir,
    token: String,
}

impl Printing {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::create_dir(d.join("docs")).unwrap();
        fs::write(d.join("docs/a.txt"), det_bytes(70_000, 1)).unwrap();
        confsum()
            .current_dir(d)
            .args([
                "encfs", "create", "--from", "docs", "--out", "x.img", "-k", "x.key",
            ])
            .run()
            .success();
        let issuer = TokenIssuer::generate("https://attest.example").unwrap();
        let claims = TokenClaims::builder().host_data([7; 32]).build().unwrap();
        let token = issuer
            .issue(&claims, SystemTime::now(), Duration::from_secs(600))
            .unwrap();
        fs::write(
            d.join("jwks.json"),
            serde_json::to_vec(&issuer.jwks()).unwrap(),
        )
        .unwrap();
        fs::write(d.join("article.txt"), "The council met on Tuesday.").unwrap();
        Self { dir, token }
    }

    /// Every subcommand that writes to standard output, ready to run.
    fn commands(&self) -> Vec<(&'static str, Cmd)> {
        let d = self.dir.path();
        let at = |cmd: Cmd| cmd.current_dir(d);
        let aci = vectors("aci");
        let model = common::summarize_fixture("t5_v1_0");
        vec![
            (
                "layer-hash",
                at(confsum()
                    .args(["layer-hash", "--no-progress"])
                    .arg(vectors("layers/sizes.tar"))),
            ),
            (
                "attest show",
                at(confsum()
                    .args(["attest", "show"])
                    .arg(aci.join("snp_report.bin"))),
            ),
            (
                "attest verify",
                at(confsum()
                    .args(["attest", "verify", "--report"])
                    .arg(aci.join("snp_report.bin"))
                    .arg("--certs")
                    .arg(aci.join("uvm_host_amd_certificate.json"))),
            ),
            (
                "attest token verify",
                at(confsum().args([
                    "attest",
                    "token",
                    "verify",
                    &self.token,
                    "--jwks",
                    "jwks.json",
                    "--issuer",
                    "https://attest.example",
                ])),
            ),
            (
                "summarize",
                at(confsum().args(["summarize", "--model"]).arg(model).args([
                    "--max-new-tokens",
                    "4",
                    "article.txt",
                ])),
            ),
            (
                "encfs ls",
                at(confsum().args(["encfs", "ls", "x.img", "-k", "x.key"])),
            ),
            (
                "encfs cat",
                at(confsum().args(["encfs", "cat", "x.img", "/a.txt", "-k", "x.key"])),
            ),
            ("encfs dump", at(confsum().args(["encfs", "dump", "x.img"]))),
            (
                "policy hash",
                at(confsum()
                    .args(["policy", "hash"])
                    .arg(vectors("policy/extras/expected.rego"))),
            ),
            (
                "policy show",
                at(confsum()
                    .args(["policy", "show"])
                    .arg(vectors("policy/extras/expected.rego"))),
            ),
            (
                "skr policy",
                at(confsum().args([
                    "skr",
                    "policy",
                    "--host-data",
                    &"ab".repeat(32),
                    "--authority",
                    "attest.example",
                ])),
            ),
        ]
    }
}

#[test]
fn every_printing_command_succeeds_on_a_pipe_first() {
    // The table below means something only if each command works at all.
    let fixtures = Printing::new();
    for (what, cmd) in fixtures.commands() {
        let run = cmd.run();
        no_panic(&run, what);
        assert!(run.status.success(), "{what}: {}", run.stderr_str());
        assert!(!run.stdout.is_empty(), "{what} printed nothing");
    }
}

#[test]
fn a_closed_pipe_ends_every_command_quietly_with_141() {
    let fixtures = Printing::new();
    for (what, cmd) in fixtures.commands() {
        let run = cmd.stdout_closed().run();
        no_panic(&run, what);
        assert_eq!(run.status.code(), Some(141), "{what}: {}", run.stderr_str());
        assert_eq!(run.stderr_str(), "", "{what} should say nothing");
    }
}

#[test]
fn a_full_disk_on_standard_output_is_one_line_and_exit_1() {
    let fixtures = Printing::new();
    for (what, cmd) in fixtures.commands() {
        let full = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let run = cmd.stdout_to(full).run();
        no_panic(&run, what);
        assert_eq!(run.status.code(), Some(1), "{what}: {}", run.stderr_str());
        let stderr = run.stderr_str();
        assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
        assert!(
            stderr.contains("cannot write to standard output") && stderr.contains("No space"),
            "{what}: {stderr}"
        );
    }
}

/// A command that writes OUT (a file or directory name) in a directory.
struct Writer {
    what: &'static str,
    /// The command, given the directory it runs in and the output's name.
    make: fn(&Path, &str) -> Cmd,
    /// Files the command needs beside its output.
    setup: fn(&Path),
    /// The output's name, and whether it is a directory.
    out: (&'static str, bool),
}

fn sealed(d: &Path) {
    fs::create_dir_all(d.join("docs")).unwrap();
    fs::write(d.join("docs/a.txt"), b"alpha").unwrap();
    if !d.join("x.img").exists() {
        confsum()
            .current_dir(d)
            .args([
                "encfs", "create", "--from", "docs", "--out", "x.img", "-k", "x.key",
            ])
            .run()
            .success();
    }
}

fn writers() -> Vec<Writer> {
    vec![
        Writer {
            what: "layer-hash --image-out",
            make: |d, out| {
                confsum()
                    .current_dir(d)
                    .args(["layer-hash", "--image-out", out])
                    .arg(vectors("layers/sizes.tar"))
            },
            setup: |_| {},
            out: ("layer.img", false),
        },
        Writer {
            what: "encfs create --out",
            make: |d, out| {
                confsum().current_dir(d).args([
                    "encfs", "create", "--from", "docs", "--out", out, "-k", "new.key",
                ])
            },
            setup: |d| sealed(d),
            out: ("y.img", false),
        },
        Writer {
            what: "encfs create --key-file",
            make: |d, out| {
                confsum().current_dir(d).args([
                    "encfs", "create", "--from", "docs", "--out", "z.img", "-k", out,
                ])
            },
            setup: |d| sealed(d),
            out: ("z.key", false),
        },
        Writer {
            what: "encfs extract --to",
            make: |d, out| {
                confsum()
                    .current_dir(d)
                    .args(["encfs", "extract", "x.img", "-k", "x.key", "--to", out])
            },
            setup: |d| sealed(d),
            out: ("plain", true),
        },
        Writer {
            what: "encfs add-key --new-key-file",
            make: |d, out| {
                confsum().current_dir(d).args([
                    "encfs",
                    "add-key",
                    "x.img",
                    "-k",
                    "x.key",
                    "--new-key-file",
                    out,
                ])
            },
            setup: |d| sealed(d),
            out: ("second.key", false),
        },
        Writer {
            what: "attest emulate --out-report",
            make: |d, out| {
                confsum().current_dir(d).args([
                    "attest",
                    "emulate",
                    "--state",
                    "tee.pem",
                    "--report-data",
                    &"00".repeat(64),
                    "--host-data",
                    &"11".repeat(32),
                    "--out-report",
                    out,
                    "--out-certs",
                    "certs.pem",
                ])
            },
            setup: |_| {},
            out: ("report.bin", false),
        },
        Writer {
            what: "skr policy --out",
            make: |d, out| {
                confsum().current_dir(d).args([
                    "skr",
                    "policy",
                    "--host-data",
                    &"ab".repeat(32),
                    "--authority",
                    "attest.example",
                    "--out",
                    out,
                ])
            },
            setup: |_| {},
            out: ("release-policy.json", false),
        },
        Writer {
            what: "policy generate --out",
            make: |d, out| {
                confsum()
                    .current_dir(d)
                    .env("XDG_CACHE_HOME", d.join("cache"))
                    .args(["policy", "generate", "--template", "template.json"])
                    .args(["--image", "confsum/oracle:v1=oracle.tar", "--offline"])
                    .args(["--out", out])
            },
            setup: |d| {
                fs::copy(
                    vectors("policy/basic/template.json"),
                    d.join("template.json"),
                )
                .unwrap();
                common::docker_archive(
                    d,
                    "oracle.tar",
                    "confsum/oracle:v1",
                    &["single-file", "links", "whiteouts"],
                );
                fs::create_dir(d.join("cache")).unwrap();
            },
            out: ("deploy.json", false),
        },
    ]
}

#[test]
fn an_existing_output_is_refused_and_left_as_it_was() {
    // An existing --key-file is an input for create: it is used, not replaced.
    for w in writers()
        .into_iter()
        .filter(|w| w.what != "encfs create --key-file")
    {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        (w.setup)(d);
        let (name, is_dir) = w.out;
        if is_dir {
            fs::create_dir(d.join(name)).unwrap();
            fs::write(d.join(name).join("mine"), b"keep me").unwrap();
        } else {
            fs::write(d.join(name), b"keep me").unwrap();
        }
        let before = names(d);
        let run = (w.make)(d, name).run();
        no_panic(&run, w.what);
        assert_eq!(
            run.status.code(),
            Some(1),
            "{}: {}",
            w.what,
            run.stderr_str()
        );
        let stderr = run.stderr_str();
        assert!(
            stderr.contains("already exists") || stderr.contains("not empty"),
            "{}: {stderr}",
            w.what
        );
        assert_eq!(names(d), before, "{} left or removed files", w.what);
        let kept = if is_dir {
            d.join(name).join("mine")
        } else {
            d.join(name)
        };
        assert_eq!(fs::read(kept).unwrap(), b"keep me", "{}", w.what);
    }
}

#[test]
fn an_unwritable_output_directory_fails_cleanly() {
    // /proc refuses new files even to root, where a chmod would not.
    for w in writers() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        (w.setup)(d);
        let before = names(d);
        let out = format!("/proc/{}", w.out.0);
        let run = (w.make)(d, &out).run();
        no_panic(&run, w.what);
        assert_eq!(
            run.status.code(),
            Some(1),
            "{}: {}",
            w.what,
            run.stderr_str()
        );
        let stderr = run.stderr_str();
        let errors = stderr
            .lines()
            .filter(|l| l.starts_with("confsum:") && !l.starts_with("confsum: warning:"))
            .count();
        assert_eq!(errors, 1, "{}: {stderr}", w.what);
        assert!(
            stderr.contains(&out),
            "{}: name the output: {stderr}",
            w.what
        );
        assert_eq!(names(d), before, "{} left files behind", w.what);
    }
}

/// A layer that arrives slowly on standard input, so a signal finds the
/// command mid-way, with its temporary image open.
fn stalled_layer_hash(d: &Path) -> std::process::Child {
    let mut child = Command::new(common::BIN)
        .current_dir(d)
        .args(["layer-hash", "--image-out", "layer.img", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let tar = TarBuilder::new()
        .file("big", &det_bytes(64 << 20, 3))
        .finish();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&tar[..32 << 20]).unwrap();
    std::mem::forget(stdin); // keep the pipe open: the command waits for more
    let started = Instant::now();
    while !names(d)
        .iter()
        .any(|n| n.starts_with(".layer.img.confsum-"))
    {
        assert!(started.elapsed() < Duration::from_secs(30), "never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn signal(child: &std::process::Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn sigint_removes_what_the_run_created() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let child = stalled_layer_hash(d);
    signal(&child, "-INT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    assert_eq!(names(d), Vec::<String>::new());

    // add-key with a slow KDF: the new key file must not survive.
    sealed(d);
    let before = names(d);
    let child = Command::new(common::BIN)
        .current_dir(d)
        .args([
            "encfs",
            "add-key",
            "x.img",
            "-k",
            "x.key",
            "--new-key-file",
            "slow.key",
            "--kdf",
            "argon2id",
            "--pbkdf-iterations",
            "40",
            "--pbkdf-memory",
            "262144",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !d.join("slow.key").exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, "-INT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(names(d), before);
    confsum()
        .current_dir(d)
        .args(["encfs", "ls", "x.img", "-k", "x.key"])
        .run()
        .success();
}

#[test]
fn sigkill_leaves_a_temporary_file_that_the_next_run_removes_and_names() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut child = stalled_layer_hash(d);
    signal(&child, "-KILL");
    child.wait().unwrap();
    let left: Vec<PathBuf> = names(d).iter().map(|n| d.join(n)).collect();
    assert_eq!(left.len(), 1, "{left:?}");

    let run = confsum()
        .current_dir(d)
        .args(["layer-hash", "--image-out", "layer.img"])
        .arg(vectors("layers/sizes.tar"))
        .run()
        .success();
    let stderr = run.stderr_str();
    assert!(
        stderr.contains("left behind by an interrupted run")
            && stderr.contains(&*left[0].file_name().unwrap().to_string_lossy()),
        "{stderr}"
    );
    assert_eq!(names(d), ["layer.img"]);
}
