//! Test helpers shared by confsum's crates (`publish = false`).
//!
//! - [`real_tool`] and [`python_with`] find the real tools that tests
//!   compare against (`cryptsetup`, `veritysetup`, `e2fsck`, Python's
//!   `cryptography`, ...), with one meaning of [`SKIP_ENV`] everywhere.
//! - [`shared_vectors`] is the path to `../shared/vectors` beside the
//!   repository.
//! - [`det_bytes`] gives deterministic, incompressible bytes, and
//!   [`det_floats`] deterministic floats in [-1, 1).
//! - [`TarBuilder`] builds small tars in memory.
//! - [`Cmd`] runs a program (usually the `confsum` binary) with arguments,
//!   standard input and environment, and checks its outcome.
//!
//! ```
//! use confsum_testkit::{Cmd, det_bytes};
//!
//! let data = det_bytes(4096, 7);
//! assert_eq!(data, det_bytes(4096, 7));
//! let out = Cmd::new("cat").stdin(data.clone()).run().success();
//! assert_eq!(out.stdout, data);
//! ```
//!
//! # Real tools and `CONFSUM_SKIP_REAL_TOOLS`
//!
//! A comparison with a real tool runs whenever the tool is installed. When
//! it is missing, the test fails with the command that installs it, unless
//! `CONFSUM_SKIP_REAL_TOOLS=1`, which turns that failure into a skip with a
//! message on stderr. The variable never skips a comparison that could
//! run, and CI never sets it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

mod bytes;
mod cmd;
mod tar_builder;
mod tools;

use std::path::PathBuf;

pub use crate::{
    bytes::{det_bytes, det_floats},
    cmd::{Cmd, Run},
    tar_builder::TarBuilder,
    tools::{SKIP_ENV, python_with, real_tool, run, run_ok},
};

/// `../shared/vectors` beside the repository: the test vectors recorded
/// from real tools.
pub fn shared_vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors")
}
