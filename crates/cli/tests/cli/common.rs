//! What every module here shares: the binary, the vectors, the real tools.

use std::path::{Path, PathBuf};

use confsum_testkit::Cmd;

/// The `confsum` binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_confsum");

/// `confsum`, ready for arguments.
pub(crate) fn confsum() -> Cmd {
    Cmd::new(BIN)
}

/// A folder of `../shared/vectors`.
pub(crate) fn vectors(folder: &str) -> PathBuf {
    confsum_testkit::shared_vectors().join(folder)
}

/// The real cryptsetup, or `None` when it is missing and
/// `CONFSUM_SKIP_REAL_TOOLS=1`.
pub(crate) fn cryptsetup() -> Option<PathBuf> {
    confsum_testkit::real_tool("cryptsetup", "cryptsetup-bin")
}

/// A tiny checkpoint of crates/summarize/testdata.
pub(crate) fn summarize_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../summarize/testdata")
        .join(name)
}

/// A `docker save` archive (Docker >= 25 layout) named `name` in `dir`, of
/// `reference` with the policy vectors' config and the given layer vectors,
/// made by the shared mkimage.py.
pub(crate) fn docker_archive(dir: &Path, name: &str, reference: &str, layers: &[&str]) -> PathBuf {
    let out = dir.join(name);
    Cmd::new("python3")
        .arg(vectors("../tools/mkimage.py"))
        .arg(&out)
        .arg(reference)
        .arg(vectors("policy/image-config.json"))
        .args(layers.iter().map(|l| vectors(&format!("layers/{l}.tar"))))
        .args(["--format", "oci"])
        .run()
        .success();
    out
}
