//! The crate's one error type.

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading input failed.
    #[error("i/o error")]
    Io(#[from] std::io::Error),
}
