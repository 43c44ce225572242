//! Finding and running the real tools the tests compare against.
//!
//! A copy of the part of `crates/encfs/tests/common` these tests need, with
//! the same rules, until the workspace has one test kit:
//! `CONFSUM_SKIP_REAL_TOOLS=1` skips the comparisons, and otherwise a
//! missing tool fails the test.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Set to `1` to skip the comparisons where a tool cannot be installed.
pub const SKIP_ENV: &str = "CONFSUM_SKIP_REAL_TOOLS";

fn skipping(what: &str) -> bool {
    let skip = std::env::var(SKIP_ENV).as_deref() == Ok("1");
    if skip {
        eprintln!("{SKIP_ENV}=1: skipping a test that needs {what}");
    }
    skip
}

/// The binary `name` (from Debian package `package`), or `None` when
/// real-tool tests are skipped. Looks in `/usr/sbin` and `/sbin` too, which
/// a non-root `PATH` often lacks. A missing tool fails the test.
pub fn real_tool(name: &str, package: &str) -> Option<PathBuf> {
    if skipping(name) {
        return None;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    match found {
        Some(p) => Some(p),
        None => panic!(
            "{name} not found: install it (Debian: apt-get install {package}) \
             or set {SKIP_ENV}=1 to skip the real-tool tests"
        ),
    }
}

/// Runs `tool` and returns its output, whatever its exit status.
pub fn run(tool: &Path, args: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()))
}

/// Runs `tool`, fails the test unless it succeeds, and returns its stdout.
pub fn run_ok(tool: &Path, args: &[&str]) -> String {
    let out = run(tool, args);
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}{}",
        tool.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
