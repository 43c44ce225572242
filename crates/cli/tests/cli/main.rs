//! End-to-end tests of the `confsum` binary, one module per subcommand,
//! in one test binary so that the workspace links it once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod attest;
mod attest_serve;
mod client;
mod common;
mod demo;
mod deploy;
mod encfs;
mod encfs_keys;
mod layer_hash;
mod layer_hash_ends;
mod outputs;
mod policy;
mod policy_check;
mod skr;
mod skr_serve;
mod summarize;
mod summarize_limits;
mod version;
mod web;
