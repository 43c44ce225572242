//! Finding and running the real tools the tests compare against.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Set to `1` to turn "tool missing" from a failure into a skip; see the
/// crate documentation.
pub const SKIP_ENV: &str = "CONFSUM_SKIP_REAL_TOOLS";

fn missing(what: &str, install: &str) -> Option<PathBuf> {
    if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
        eprintln!("skipped: {what} not found and {SKIP_ENV}=1");
        return None;
    }
    panic!("{what} not found: install it ({install}), or set {SKIP_ENV}=1 to skip what needs it")
}

/// The program `name` from Debian package `package`: its path when
/// installed (searching `PATH`, then `/usr/sbin` and `/sbin`, which a
/// non-root `PATH` often lacks), `None` when missing and [`SKIP_ENV`] is
/// set. A missing tool fails the test otherwise.
pub fn real_tool(name: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .or_else(|| missing(name, &format!("apt-get install {package}")))
}

/// `python3`, when it can import every module in `modules` (for example
/// `["cryptography", "jwt"]`); `pip` names the packages to install. Same
/// rules as [`real_tool`].
pub fn python_with(modules: &[&str], pip: &str) -> Option<PathBuf> {
    let script = modules
        .iter()
        .map(|m| format!("import {m}"))
        .collect::<Vec<_>>()
        .join("; ");
    let ok = Command::new("python3")
        .args(["-c", &script])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(PathBuf::from("python3"))
    } else {
        missing(
            &format!("python3 with {}", modules.join(", ")),
            &format!("pip install {pip}"),
        )
    }
}

/// Runs `tool` with `args` and returns its output, whatever its status.
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
    String::from_utf8(out.stdout).expect("tool output is not UTF-8")
}
