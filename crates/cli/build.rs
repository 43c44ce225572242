//! Puts the git revision into `confsum --version`: `0.1.0 (git abc1234)`,
//! with `-dirty` when tracked files differ from that commit. Without git or
//! outside a checkout (a crates.io package, a source tarball) the version
//! is the package version alone; `CONFSUM_GIT_REV` overrides the revision
//! for builds that know it otherwise.
//!
//! The script reruns when HEAD, the branch it points to or the index
//! changes. Edits to the working tree alone do not rerun it, so `-dirty`
//! can lag behind until the next commit or `git add`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_owned())
}

fn rerun_if_changed(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn revision(dir: &Path) -> Option<String> {
    let rev = git(dir, &["rev-parse", "--short", "HEAD"])?;
    if rev.is_empty() {
        return None;
    }
    // Worktrees keep HEAD and the index in their own git dir, refs in the
    // common one.
    let git_dir = PathBuf::from(git(dir, &["rev-parse", "--absolute-git-dir"])?);
    rerun_if_changed(&git_dir.join("HEAD"));
    rerun_if_changed(&git_dir.join("index"));
    if let Some(common) = git(dir, &["rev-parse", "--git-common-dir"]) {
        let common = dir.join(common);
        rerun_if_changed(&common.join("packed-refs"));
        if let Some(head_ref) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
            rerun_if_changed(&common.join(head_ref));
        }
    }
    let dirty =
        git(dir, &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}

fn main() {
    println!("cargo:rerun-if-env-changed=CONFSUM_GIT_REV");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let rev = std::env::var("CONFSUM_GIT_REV")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(|| revision(&dir));
    let package = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let version = match rev {
        Some(rev) => format!("{package} (git {rev})"),
        None => package,
    };
    println!("cargo:rustc-env=CONFSUM_VERSION={version}");
}
