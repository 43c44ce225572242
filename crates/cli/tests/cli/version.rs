//! `confsum --version` names the git revision it was built from.

use std::process::Command;

use crate::common::confsum;

#[test]
fn version_names_the_git_revision() {
    let version = confsum().arg("--version").run().success().stdout_str();
    let expected = format!("confsum {}", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with(&expected), "{version}");
    // Subcommands report the same version.
    let sub = confsum()
        .args(["policy", "--version"])
        .run()
        .success()
        .stdout_str();
    assert!(
        sub.contains(version.trim().trim_start_matches("confsum ")),
        "{sub}"
    );

    // In a git checkout (CI clones the repository) the revision is there.
    let head = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short",
            "HEAD",
        ])
        .output();
    match head {
        Ok(out) if out.status.success() => {
            let rev = String::from_utf8(out.stdout).unwrap();
            let rev = rev.trim();
            let shown = version
                .trim()
                .strip_prefix(&expected)
                .unwrap_or_default()
                .trim();
            assert!(
                shown == format!("(git {rev})") || shown == format!("(git {rev}-dirty)"),
                "{version:?} does not name HEAD {rev}"
            );
        }
        // No git, or not a checkout: the package version alone.
        _ => assert_eq!(version.trim(), expected),
    }
}
