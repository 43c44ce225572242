//! Confidential container (CCE) policies for Azure Confidential Container
//! Instances.
//!
//! A container group starts only if its CCE policy allows every layer,
//! command, environment variable and mount; the policy's SHA-256 becomes
//! the SEV-SNP `host_data` that key-release policies pin. This crate
//! generates that policy from an ARM template and container images,
//! byte-identical to `az confcom acipolicygen`, and checks container
//! start-ups against it with regorus.
//!
//! [`check`] puts the guest agent's requests (mount a layer, create a
//! container, exec a process...) to a policy as the utility VM would, and
//! says what it allows and why not.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;

// --- check (policy-check branch) ---
pub mod check;
// --- end check ---

pub use crate::error::Error;
