//! SEV-SNP attestation evidence and attestation tokens.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;

pub use crate::error::Error;
