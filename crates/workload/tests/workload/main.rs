//! The workload crate's tests, one binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod serve;
mod verify;
