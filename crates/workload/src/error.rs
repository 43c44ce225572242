//! The one error type of the crate.

use std::path::PathBuf;

/// Why a signed response was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureProblem {
    /// The body is not a flattened JWS (`protected`, `payload`, `signature`).
    #[error("the response is not a signed response (flattened JWS)")]
    NotSigned,
    /// A part is not base64url or the header is not JSON.
    #[error("the signed response is malformed")]
    Malformed,
    /// The header names an algorithm other than ES256.
    #[error("signature algorithm {0:?} refused (only ES256)")]
    Algorithm(String),
    /// The header names another key than the attested one.
    #[error("signed with key {found:?}, not the attested key {expected:?}")]
    WrongKey {
        /// The attested signing key's id.
        expected: String,
        /// The key id in the header.
        found: String,
    },
    /// The signature does not verify with the attested key.
    #[error("the signature does not match the attested signing key")]
    BadSignature,
    /// The attestation's runtime data has no usable response-signing key.
    #[error("the attested runtime data has no ES256 response-signing key (key_ops [\"verify\"])")]
    NoSigningKey,
}

/// Errors of the workload and of its consumer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Key generation or signing failed (no detail: crypto errors are coarse).
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
    /// A signed response was refused.
    #[error("unverified response: {0}")]
    Signature(#[from] SignatureProblem),
    /// Evidence, token or attestation-service error.
    #[error("attestation failed")]
    Attest(#[source] confsum_attest::Error),
    /// The key broker refused, or its answer did not verify or unwrap.
    #[error("key release failed")]
    Release(#[source] confsum_skr::Error),
    /// The sealed image did not open or read.
    #[error("cannot read the sealed image")]
    Image(#[source] confsum_encfs::Error),
    /// The model did not load or did not summarize.
    #[error("summarization failed")]
    Model(#[source] confsum_summarize::Error),
    /// An HTTP call failed.
    #[error("HTTP request failed")]
    Http(#[source] confsum_server::Error),
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The sealed image holds more or larger documents than the limits.
    #[error("document {id:?} is larger than {max} bytes")]
    DocumentTooLarge {
        /// The document's id.
        id: String,
        /// The limit.
        max: u64,
    },
    /// The sealed image holds more documents than the limit.
    #[error("the image holds more than {max} documents")]
    TooManyDocuments {
        /// The limit.
        max: usize,
    },
    /// The released key cannot be used as the disk key.
    #[error("the released key is a {kty} key, which cannot unlock the image")]
    UnusableKey {
        /// The released key's type.
        kty: String,
    },
    /// The consumer's checks refused the workload's attestation.
    #[error("the workload is not trusted: {0}")]
    Untrusted(String),
    /// A signed answer is for another request than the one sent.
    #[error("the signed answer is not for this request (request hash differs)")]
    RequestMismatch,
    /// An answer did not have the documented shape.
    #[error("malformed {what}")]
    Malformed {
        /// What was being read.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The summarizing thread has stopped.
    #[error("the summarizer has stopped")]
    Stopped,
}
