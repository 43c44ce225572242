//! Secure Key Release (SKR) for confidential containers.
//!
//! The data owner's key leaves the key broker (Azure Managed HSM, or
//! confsum's own) only wrapped to a key that an attested workload holds,
//! and only when the workload's attestation token satisfies the key's
//! release policy.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;

pub use crate::error::Error;
