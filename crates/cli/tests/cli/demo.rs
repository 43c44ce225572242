//! `confsum demo` end to end, as a subprocess, with the tiny model built
//! into the binary: the positive path with two replicas (summaries shown,
//! the key released once per workload, the audit log verified), the
//! negative path (the broker's 403 naming the claim, expected and actual),
//! `--json`, and that nothing is left behind: no temporary file (TMPDIR
//! points at a folder the test owns and checks empty) and no process
//! (every process the demo could start inherits a marker variable, and no
//! process in /proc carries it afterwards), after Ctrl-C too.
//!
//! Short documents (`--documents`) keep it fast; the built-in ones are
//! checked against examples/documents by the binary's unit tests.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::common::{BIN, confsum};

const MARK: &str = "CONFSUM_DEMO_TEST_MARK";
const NOT_REAL: &str = "not a real summary (tiny random test model)";

struct Setup {
    dir: tempfile::TempDir,
    mark: String,
}

impl Setup {
    fn new(name: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let docs = dir.path().join("docs");
        std::fs::create_dir(&docs).unwrap();
        std::fs::write(
            docs.join("fable.txt"),
            "A crow dropped pebbles into a pitcher until the water rose and it could drink.",
        )
        .unwrap();
        std::fs::write(
            docs.join("notice.txt"),
            "The council met on Tuesday and approved the new bridge.",
        )
        .unwrap();
        std::fs::write(docs.join("ignored.md"), "not a .txt file").unwrap();
        let mark = format!("{name}-{}-{}", std::process::id(), dir.path().display());
        Setup { dir, mark }
    }

    fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    fn docs(&self) -> PathBuf {
        self.dir.path().join("docs")
    }

    fn demo(&self) -> confsum_testkit::Cmd {
        confsum()
            .arg("demo")
            .arg("--documents")
            .arg(self.docs())
            .env("TMPDIR", self.tmp())
            .env(MARK, &self.mark)
    }

    /// Nothing in TMPDIR, and no process carrying the marker.
    fn assert_nothing_left(&self) {
        let left: Vec<_> = std::fs::read_dir(self.tmp())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert!(left.is_empty(), "left in TMPDIR: {left:?}");
        let marked = processes_marked(&self.mark);
        assert!(marked.is_empty(), "processes left: {marked:?}");
    }
}

/// Processes whose environment holds `MARK=mark`.
fn processes_marked(mark: &str) -> Vec<u32> {
    let needle = format!("{MARK}={mark}");
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| var == needle.as_bytes())
        {
            out.push(pid);
        }
    }
    out
}

/// The value after `prefix` on the line that has it.
fn after<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in:\n{out}"))
        .trim()
}

#[test]
fn demo_releases_once_per_workload_and_refuses_the_changed_one() {
    let setup = Setup::new("positive");
    let run = setup.demo().args(["--replicas", "2"]).run().success();
    let out = run.stdout_str();
    let err = run.stderr_str();
    assert!(err.contains("EMULATED TEE"), "{err}");

    // Every party speaks, in order.
    let order = [
        "[attestation service] listening on http://127.0.0.1:",
        "[key broker] listening on http://127.0.0.1:",
        "[owner] seals 2 documents",
        "[operator] generates the CCE policy",
        "[owner] PUT http://127.0.0.1:",
        "[workload 1] made an ephemeral RSA-2048 key-release key",
        "[key broker] verified workload 1's token",
        "[workload 2] opened the sealed image in userspace: 2 documents",
        "[consumer] GET /v1/documents",
        "[key broker] refused: HTTP 403",
        "[owner] verifies the broker's audit log",
    ];
    let mut at = 0;
    for step in order {
        let found = out[at..]
            .find(step)
            .unwrap_or_else(|| panic!("{step:?} missing or out of order in:\n{out}"));
        at += found + step.len();
    }
    assert!(!out.contains("ignored.md"), "{out}");

    // The consumer verified both workloads, then read one summary from
    // each, every one labelled.
    assert_eq!(out.matches("ok   host_data: ").count(), 2, "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    for doc in ["fable.txt", "notice.txt"] {
        assert!(
            out.contains(&format!("summary of {doc} [{NOT_REAL}]:")),
            "{out}"
        );
    }
    assert!(out.contains("to workload 1; the answer's ES256 signature checks"));
    assert!(out.contains("to workload 2; the answer's ES256 signature checks"));

    // Released exactly once per workload; the audit log verified.
    assert_eq!(out.matches("): exactly once").count(), 2, "{out}");
    assert!(out.contains("released to workload 1 (token jti "), "{out}");
    assert!(out.contains("released to workload 2 (token jti "), "{out}");
    assert!(
        out.contains("hash chain, every MAC and the signed head intact"),
        "{out}"
    );

    // The changed workload: 403, the claim named, expected and actual.
    let published = after(&out, "host_data = SHA-256(policy) = ");
    let changed = after(&out, "new host_data");
    assert_eq!(published.len(), 64);
    assert_eq!(changed.len(), 64);
    assert_ne!(published, changed);
    let refusal = after(&out, "[key broker] refused: HTTP 403 Forbidden:");
    assert!(refusal.contains("x-ms-sevsnpvm-hostdata"), "{refusal}");
    assert!(refusal.contains(published), "{refusal}");
    assert!(refusal.contains(changed), "{refusal}");
    assert_eq!(after(&out, "failing claim:"), "x-ms-sevsnpvm-hostdata");
    assert_eq!(after(&out, "expected:"), published);
    assert_eq!(after(&out, "actual:"), changed);
    assert!(
        out.contains(&format!(
            "releases: 2 for 2 workloads; refusals: 1, logged with host_data {changed}"
        )),
        "{out}"
    );
    assert!(out.contains("every step went as expected"), "{out}");

    setup.assert_nothing_left();
}

#[test]
fn demo_json_is_one_object_per_line() {
    let setup = Setup::new("json");
    let run = setup.demo().arg("--json").run().success();
    let events: Vec<serde_json::Value> = run
        .stdout_str()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let of = |kind: &str| -> Vec<&serde_json::Value> {
        events.iter().filter(|e| e["event"] == kind).collect()
    };
    let summaries = of("summary");
    assert_eq!(summaries.len(), 2);
    assert!(summaries.iter().all(|s| s["note"] == NOT_REAL));
    let refused = of("refused");
    assert_eq!(refused[0]["status"], 403);
    assert_eq!(refused[0]["claim"], "x-ms-sevsnpvm-hostdata");
    assert_ne!(refused[0]["expected"], refused[0]["actual"]);
    let audit = of("audit");
    assert_eq!(audit[0]["releases"], 1);
    assert_eq!(audit[0]["refusals"], 1);
    let result = of("result");
    assert_eq!(result[0]["ok"], true);
    setup.assert_nothing_left();
}

#[test]
fn demo_fails_cleanly_on_bad_input() {
    let setup = Setup::new("bad");
    let empty = setup.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let run = confsum()
        .arg("demo")
        .arg("--documents")
        .arg(&empty)
        .env("TMPDIR", setup.tmp())
        .env(MARK, &setup.mark)
        .run()
        .code(1);
    assert!(run.stderr_str().contains("holds no .txt files"));
    setup.assert_nothing_left();
    confsum()
        .args(["demo", "--replicas", "0"])
        .env("TMPDIR", setup.tmp())
        .run()
        .code(2);
}

/// Ctrl-C while a workload starts: exit 130, nothing left behind.
#[test]
fn demo_interrupted_leaves_nothing() {
    let setup = Setup::new("sigint");
    let mut child = Command::new(BIN)
        .arg("demo")
        .arg("--documents")
        .arg(setup.docs())
        .env("TMPDIR", setup.tmp())
        .env(MARK, &setup.mark)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the demo ended before the workload started: {seen:?}"))
            .unwrap();
        let mid_run = line.starts_with("[workload 1] made an ephemeral");
        seen.push(line);
        if mid_run {
            break;
        }
    }
    // Mid-run, the state exists, and the demo runs no child process.
    assert_eq!(std::fs::read_dir(setup.tmp()).unwrap().count(), 1);
    assert_eq!(processes_marked(&setup.mark), vec![pid]);
    let kill = Command::new("/bin/kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // Read to the end, so that the demo never writes to a closed pipe.
    seen.extend(lines.map_while(Result::ok));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?} after {seen:?}");
    setup.assert_nothing_left();
}

#[test]
fn demo_help_explains_itself() {
    let run = confsum().args(["demo", "--help"]).run().success();
    let out = run.stdout_str();
    for needed in [
        "--replicas",
        "--model",
        "--json",
        "INSECURE",
        "Ctrl-C",
        "not a real summary",
        "Exit status",
    ] {
        assert!(out.contains(needed), "{needed}: {out}");
    }
}
