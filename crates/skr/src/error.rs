//! The crate's one error type, and how the key broker maps it to HTTP.

use std::path::PathBuf;

use crate::policy::Denial;

/// Everything that can go wrong in this crate.
///
/// [`Error::status`] and [`Error::code`] give the HTTP status and Key Vault
/// error code a broker answers with; [`Error::to_response`] the whole
/// `{"error": {"code", "message"}}` body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("cannot access {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A JSON document is not valid JSON, or not of the expected shape.
    #[error("malformed {what}: {source}")]
    Json {
        /// Which document.
        what: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A base64 or base64url field does not decode.
    #[error("{what} is not valid {encoding}")]
    Encoding {
        /// Which field.
        what: &'static str,
        /// The expected encoding (`base64`, `base64url`, `hex`).
        encoding: &'static str,
    },
    /// A release policy does not follow the Managed HSM grammar.
    #[error("invalid release policy at {path}: {problem}")]
    Policy {
        /// Where in the policy, as a JSON path (`$.anyOf[0].allOf[2]`).
        path: String,
        /// What is wrong there.
        problem: PolicyProblem,
    },
    /// An `importkeyconfig.json` or sidecar argument file is incomplete or
    /// inconsistent.
    #[error("invalid {what}: {problem}")]
    Config {
        /// Which file.
        what: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A key (JWK, PEM, DER) is malformed or of an unsupported kind.
    #[error("bad key: {0}")]
    BadKey(KeyProblem),
    /// The `enc` algorithm is not one that Managed HSM releases with.
    #[error("unsupported key wrapping algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// Unwrapping a released key failed. Deliberately coarse: which step
    /// failed (OAEP, AES key wrap integrity, length) is not said.
    #[error("cannot unwrap the released key")]
    Unwrap,
    /// A cryptographic operation that should not fail did (RNG, signing).
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
    /// A key release response (JWS) is malformed or its signature or
    /// certificate chain does not verify.
    #[error("release response rejected: {0}")]
    Jws(JwsProblem),
    /// A request to the broker is malformed (bad key name, body, JWK or
    /// policy). HTTP 400.
    #[error("{0}")]
    BadRequest(String),
    /// The admin bearer token is missing or wrong. HTTP 401.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The attestation token was not accepted (bad signature, expired,
    /// untrusted issuer). HTTP 403.
    #[error("attestation token rejected: {0}")]
    TokenRejected(String),
    /// The attestation token does not satisfy the key's release policy.
    /// HTTP 403; the message names the failing claims.
    #[error("release policy not satisfied: {0}")]
    Denied(Box<Denial>),
    /// The key is disabled: it cannot be released. HTTP 403.
    #[error("key {name:?} is disabled")]
    KeyDisabled {
        /// The key's name.
        name: String,
    },
    /// No key of this name. HTTP 404.
    #[error("key {name:?} not found")]
    KeyNotFound {
        /// The key's name.
        name: String,
    },
    /// The key's release policy is immutable. HTTP 409.
    #[error("the release policy of key {name:?} is immutable")]
    PolicyImmutable {
        /// The key's name.
        name: String,
    },
    /// The embedded database failed. HTTP 500 (message not shown to clients).
    #[error("storage: {0}")]
    Storage(String),
    /// The master key does not open this database, or its file is unsafe.
    #[error("master key: {0}")]
    MasterKey(&'static str),
    /// Stored key material does not decrypt under the master key: the
    /// database was changed outside the broker.
    #[error("stored key {name:?} fails its integrity check")]
    Tampered {
        /// The key's name.
        name: String,
    },
    /// The audit log does not verify.
    #[error("audit log broken at record {seq}: {problem}")]
    AuditBroken {
        /// The first record that fails.
        seq: u64,
        /// Why.
        problem: AuditProblem,
    },
    /// Deployment settings or files are incomplete or do not agree.
    #[error("{0}")]
    Deploy(crate::deploy::DeployProblem),
}

/// What is wrong in a release policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyProblem {
    /// A JSON object was expected.
    #[error("expected an object")]
    NotObject,
    /// A JSON array was expected.
    #[error("expected an array")]
    NotArray,
    /// A required member is absent.
    #[error("missing {0:?}")]
    Missing(&'static str),
    /// A member this grammar does not have.
    #[error("unknown member {0:?}")]
    UnknownMember(String),
    /// Two members that may not stand together (two operators, `anyOf`
    /// and `allOf`), or one member spelled twice in different case.
    #[error("{0:?} and {1:?} cannot both be given")]
    Conflict(String, String),
    /// `version` is not `1.0.0` or `0.2`.
    #[error("unsupported version {0:?} (expected \"1.0.0\" or \"0.2\")")]
    Version(String),
    /// A value is not a string, number or boolean.
    #[error("value must be a string, number or boolean")]
    BadValue,
    /// `exists` takes `true` or `false`.
    #[error("exists takes true or false")]
    BadExists,
    /// A string was expected (claim name, authority).
    #[error("expected a non-empty string")]
    NotString,
    /// `anyOf`/`allOf` lists need at least one condition.
    #[error("empty condition list")]
    Empty,
    /// Nesting deeper than the evaluator allows.
    #[error("nested deeper than {0} levels")]
    TooDeep(usize),
}

/// What is wrong with a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyProblem {
    /// The key type is not one we handle.
    #[error("unsupported key type {0:?}")]
    UnsupportedType(String),
    /// The EC curve is not one we handle.
    #[error("unsupported curve {0:?}")]
    UnsupportedCurve(String),
    /// A JWK member is absent or does not decode.
    #[error("JWK member {0:?} is missing or not base64url")]
    Member(&'static str),
    /// A symmetric key of a size Managed HSM does not import.
    #[error("symmetric key of {0} bytes (expected 16, 24 or 32)")]
    OctSize(usize),
    /// An RSA modulus outside 2048 to 4096 bits.
    #[error("RSA modulus of {0} bits (expected 2048 to 4096)")]
    RsaSize(usize),
    /// The components do not form a consistent key.
    #[error("inconsistent {0} key components")]
    Inconsistent(&'static str),
    /// DER or PEM encoding is malformed.
    #[error("malformed {0} encoding")]
    Encoding(&'static str),
    /// No usable wrapping key: the token's `x-ms-runtime.keys` has no RSA
    /// key whose `key_ops` include `encrypt`.
    #[error("no RSA key with key_ops \"encrypt\" in x-ms-runtime.keys")]
    NoWrappingKey,
}

/// Why a release response was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwsProblem {
    /// Not three base64url parts, or a part is not the expected JSON.
    #[error("malformed JWS ({0})")]
    Malformed(&'static str),
    /// `alg` is not `RS256`.
    #[error("unsupported JWS algorithm {0:?}")]
    Algorithm(String),
    /// `x5c` is missing or a certificate does not parse.
    #[error("bad x5c certificate chain")]
    BadChain,
    /// The leaf certificate does not chain to a trusted CA, is expired, or
    /// is not for server authentication.
    #[error("certificate chain does not verify: {0}")]
    Untrusted(String),
    /// The leaf certificate is not valid for the key broker's endpoint.
    #[error("certificate is not valid for {0:?}")]
    WrongName(String),
    /// `x5t#S256` does not match `x5c[0]`.
    #[error("x5t#S256 does not match x5c[0]")]
    Thumbprint,
    /// The signature does not verify with `x5c[0]`'s key.
    #[error("bad signature")]
    Signature,
}

/// Why an audit log fails verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditProblem {
    /// A record is not the expected JSON.
    #[error("malformed record")]
    Malformed,
    /// Sequence numbers are not 0, 1, 2, …: a record was removed, added or
    /// moved.
    #[error("expected sequence number {expected}, found {found}")]
    Sequence {
        /// The number the record should have.
        expected: u64,
        /// The number it has.
        found: u64,
    },
    /// `prev` is not the hash of the record before: a record was changed,
    /// removed or moved.
    #[error("hash chain broken")]
    Chain,
    /// The record's MAC does not verify under the broker's audit key: the
    /// record was changed.
    #[error("MAC does not verify")]
    Mac,
    /// The log is shorter than its signed head says: records were cut off
    /// the end.
    #[error("log truncated: head says {expected} records, found {found}")]
    Truncated {
        /// Records the head commits to.
        expected: u64,
        /// Records present.
        found: u64,
    },
}

impl Error {
    /// The HTTP status a key broker answers with for this error: 400, 401,
    /// 403, 404, 409, or 500 for failures that are the broker's own.
    pub fn status(&self) -> u16 {
        match self {
            Error::Json { .. }
            | Error::Encoding { .. }
            | Error::Policy { .. }
            | Error::Config { .. }
            | Error::BadKey(_)
            | Error::UnsupportedAlgorithm(_)
            | Error::BadRequest(_)
            | Error::Deploy(_) => 400,
            Error::Unauthorized => 401,
            Error::TokenRejected(_) | Error::Denied(_) | Error::KeyDisabled { .. } => 403,
            Error::KeyNotFound { .. } => 404,
            Error::PolicyImmutable { .. } => 409,
            Error::Io { .. }
            | Error::Unwrap
            | Error::Crypto(_)
            | Error::Jws(_)
            | Error::Storage(_)
            | Error::MasterKey(_)
            | Error::Tampered { .. }
            | Error::AuditBroken { .. } => 500,
        }
    }

    /// The Key Vault error code for this error (`BadParameter`,
    /// `Unauthorized`, `Forbidden`, `KeyNotFound`, `Conflict`,
    /// `InternalError`).
    pub fn code(&self) -> &'static str {
        match self.status() {
            400 => "BadParameter",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "KeyNotFound",
            409 => "Conflict",
            _ => "InternalError",
        }
    }

    /// The Key Vault error body, `{"error": {"code", "message"}}`. Internal
    /// errors get a generic message, so that nothing about storage or keys
    /// leaks to clients; log the error itself on the server.
    pub fn to_response(&self) -> crate::wire::ErrorResponse {
        let message = if self.status() == 500 {
            "internal error".to_owned()
        } else {
            self.to_string()
        };
        crate::wire::ErrorResponse {
            error: crate::wire::ErrorBody {
                code: self.code().to_owned(),
                message,
            },
        }
    }

    pub(crate) fn storage(err: impl std::fmt::Display) -> Self {
        Error::Storage(err.to_string())
    }

    pub(crate) fn policy(path: &str, problem: PolicyProblem) -> Self {
        Error::Policy {
            path: path.to_owned(),
            problem,
        }
    }

    pub(crate) fn json(what: &'static str) -> impl FnOnce(serde_json::Error) -> Self {
        move |source| Error::Json { what, source }
    }
}
