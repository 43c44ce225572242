//! `confsum policy` end to end on the shared confcom vectors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

fn shared() -> PathBuf {
    confsum_testkit::shared_vectors().join("..")
}

fn case(name: &str, file: &str) -> PathBuf {
    shared().join("vectors/policy").join(name).join(file)
}

fn confsum(args: &[&str]) -> Output {
    Command::new(crate::common::BIN)
        .args(args)
        .env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join("confsum-cli-test-cache"),
        )
        .output()
        .unwrap()
}

/// The vector image as a Docker >= 25 `docker save` archive (mkimage.py).
fn archive(dir: &Path) -> PathBuf {
    crate::common::docker_archive(
        dir,
        "oracle.tar",
        "confsum/oracle:v1",
        &["single-file", "links", "whiteouts"],
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn generate_print_policy_matches_confcom() {
    let dir = tempfile::tempdir().unwrap();
    let tar = archive(dir.path());
    let image = format!("confsum/oracle:v1={}", s(&tar));
    for (name, flags) in [
        ("basic", vec![]),
        ("basic-debug-mode", vec!["--debug-mode"]),
        ("basic-svn99", vec!["--infrastructure-svn", "99"]),
        ("secure-wildcard", vec!["--approve-wildcards"]),
    ] {
        let template = case(name, "template.json");
        let mut args = vec![
            "policy",
            "generate",
            "--template",
            s(&template),
            "--image",
            &image,
            "--offline",
            "--no-cache",
            "--print-policy",
            "--raw",
        ];
        args.extend(flags);
        let out = confsum(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = std::fs::read_to_string(case(name, "expected.rego")).unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("{expected}\n")
        );
        let stderr = String::from_utf8(out.stderr).unwrap();
        let want = hex::encode(Sha256::digest(expected.as_bytes()));
        assert!(stderr.contains(&format!("host_data: {want}")), "{stderr}");
    }
    // Without --approve-wildcards an unset parameter is refused, not prompted for.
    let out = confsum(&[
        "policy",
        "generate",
        "--template",
        s(&case("secure-wildcard", "template.json")),
        "--image",
        &image,
        "--offline",
        "--print-policy",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--approve-wildcards"));
}

#[test]
fn generate_out_then_hash_verify_show_diff() {
    let dir = tempfile::tempdir().unwrap();
    let tar = archive(dir.path());
    let image = format!("confsum/oracle:v1={}", s(&tar));
    let cache = dir.path().join("cache");
    let out_t = dir.path().join("out.json");
    let template = case("extras", "template.json");
    let out = confsum(&[
        "policy",
        "generate",
        "--template",
        s(&template),
        "--image",
        &image,
        "--offline",
        "--cache-dir",
        s(&cache),
        "--out",
        s(&out_t),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // confcom's clear-text secureValue is kept, with a warning.
    assert!(String::from_utf8_lossy(&out.stderr).contains("clear text"));
    let expected = std::fs::read_to_string(case("extras", "expected.rego")).unwrap();
    let want = hex::encode(Sha256::digest(expected.as_bytes()));

    let out = confsum(&["policy", "hash", s(&out_t)]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("{want}  container group 0\n")
    );
    let out = confsum(&["policy", "hash", s(&case("extras", "expected.rego"))]);
    assert!(String::from_utf8(out.stdout).unwrap().starts_with(&want));

    // verify: 0 when the template's policy is what we generate, 2 when not.
    let verify = |t: &Path, extra: &[&str]| {
        let mut a = vec![
            "policy",
            "verify",
            "--template",
            s(t),
            "--image",
            &image,
            "--offline",
            "--cache-dir",
            s(&cache),
        ];
        a.extend_from_slice(extra);
        confsum(&a)
    };
    let out = verify(&out_t, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = verify(&out_t, &["--debug-mode"]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("allow_dump_stacks: false -> true"),
        "{stdout}"
    );
    assert!(
        stdout.contains("containers[summarizer].exec_processes[1]"),
        "{stdout}"
    );
    let out = verify(&template, &[]);
    assert_eq!(out.status.code(), Some(2));

    // show
    let out = confsum(&["policy", "show", s(&out_t)]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains(&format!("host_data: {want}")));
    assert!(stdout.contains("container 1: pause-container"));
    assert!(stdout.contains("\"working_dir\": \"/app\""));

    // diff: names the container and field; 0 for identical inputs.
    let out = confsum(&[
        "policy",
        "diff",
        s(&case("basic", "expected.rego")),
        s(&case("basic-disable-stdio", "expected.rego")),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("containers[summarizer].allow_stdio_access: true -> false"));
    assert!(stdout.contains("containers[pause-container].allow_stdio_access: true -> false"));
    let out = confsum(&[
        "policy",
        "diff",
        s(&out_t),
        s(&case("extras", "expected.rego")),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn errors_exit_one_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{ nope").unwrap();
    for args in [
        vec!["policy", "hash", s(&bad)],
        vec!["policy", "show", "/nonexistent/policy.rego"],
        vec![
            "policy",
            "generate",
            "--template",
            s(&bad),
            "--print-policy",
            "--offline",
        ],
        vec![
            "policy",
            "generate",
            "--template",
            s(&case("basic", "template.json")),
            "--print-policy",
            "--offline",
        ],
    ] {
        let out = confsum(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("confsum: "));
    }
}
