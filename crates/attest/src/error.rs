//! The crate's one error type.

use std::time::SystemTime;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading input failed.
    #[error("i/o error")]
    Io(#[from] std::io::Error),

    /// An attestation report is not 1184 bytes long.
    #[error("an SEV-SNP attestation report is 1184 bytes, not {0}")]
    ReportLength(usize),

    /// An attestation report has a version whose layout this crate does
    /// not know (2, 3 and 5 are known).
    #[error("unsupported SEV-SNP attestation report version {0}")]
    UnsupportedReportVersion(u32),

    /// The report's ECDSA P-384 signature does not verify with the VCEK
    /// or VLEK, or its reserved bytes are not zero.
    #[error("the attestation report's signature does not verify")]
    BadReportSignature,

    /// The report says it was signed by one kind of key (VCEK, VLEK or
    /// none) and the certificate given is of another kind.
    #[error("the report is signed by {report}, but the certificate given is a {cert}")]
    SigningKeyMismatch {
        /// The key the report's KEY_INFO names.
        report: &'static str,
        /// The kind of the certificate given.
        cert: &'static str,
    },

    /// Bytes that should hold a certificate (PEM, DER or THIM JSON) do not.
    #[error("cannot parse the {cert} certificate: {reason}")]
    BadCert {
        /// Which certificate: "VCEK", "VLEK", "ASK", "ASVK", "ARK" or
        /// "chain" when the role is not known yet.
        cert: &'static str,
        /// What was wrong.
        reason: String,
    },

    /// A certificate chain lacks a certificate that is needed.
    #[error("the certificate chain has no {0} certificate")]
    MissingCert(&'static str),

    /// A certificate's signature does not verify with its issuer's key.
    #[error("the {cert} certificate's signature does not verify")]
    BadCertSignature {
        /// Which certificate.
        cert: &'static str,
    },

    /// A certificate's validity period ended before the time of checking.
    #[error("the {cert} certificate expired at {not_after:?}")]
    CertExpired {
        /// Which certificate.
        cert: &'static str,
        /// The end of its validity period.
        not_after: SystemTime,
    },

    /// A certificate's validity period starts after the time of checking.
    #[error("the {cert} certificate is not valid before {not_before:?}")]
    CertNotYetValid {
        /// Which certificate.
        cert: &'static str,
        /// The start of its validity period.
        not_before: SystemTime,
    },

    /// A certificate's issuer is not the next certificate in the chain.
    #[error("the {cert} certificate is not issued by the {issuer} certificate")]
    CertWrongIssuer {
        /// Which certificate.
        cert: &'static str,
        /// The certificate that should have issued it.
        issuer: &'static str,
    },

    /// The chain ends in a root key that is not among the trusted roots.
    #[error("the ARK is not a trusted root")]
    UnknownRoot,

    /// A validated field of the report does not have the expected value.
    #[error("{field} mismatch: expected {expected}, got {actual}")]
    Mismatch {
        /// The report field.
        field: &'static str,
        /// The expected value (hex for byte strings).
        expected: String,
        /// The value in the report (hex for byte strings).
        actual: String,
    },

    /// An AMD extension of the VCEK or VLEK certificate (hwID, TCB
    /// components, product name) is missing, repeated or malformed.
    #[error("the {cert} certificate's {name} extension is unusable: {reason}")]
    VcekExtension {
        /// Which certificate: "VCEK" or "VLEK".
        cert: &'static str,
        /// The extension: "hwID", "blSPL", "teeSPL", "snpSPL", "ucodeSPL",
        /// "fmcSPL" or "productName".
        name: &'static str,
        /// What was wrong.
        reason: String,
    },

    // ---- attestation tokens (token.rs) ----
    /// A token is not a well-formed JWS compact serialization: not three
    /// base64url parts, bad base64url, bad JSON, or a claim of the wrong type.
    #[error("malformed attestation token: {0}")]
    MalformedToken(String),

    /// A token is longer than the verifier accepts.
    #[error("attestation token of {len} bytes is longer than the {max}-byte limit")]
    TokenTooLarge {
        /// Length of the token in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// The token's `alg` is not `RS256`; `none`, `HS256` and all others are
    /// refused before any key is looked at.
    #[error("attestation token algorithm {0:?} is not RS256")]
    UnsupportedAlgorithm(String),

    /// The token names no key, or a key that the JWKS does not hold.
    #[error("no signing key with kid {0:?}")]
    UnknownKey(String),

    /// The token's signature does not verify with the key its `kid` names.
    #[error("attestation token signature does not verify")]
    BadSignature,

    /// The token was issued by another attestation service.
    #[error("attestation token issuer {found:?} is not the expected {expected:?}")]
    WrongIssuer {
        /// The issuer the verifier trusts.
        expected: String,
        /// The token's `iss`.
        found: String,
    },

    /// The token expired (its `exp` plus the leeway is before now).
    #[error("attestation token expired at {exp} (now {now}, Unix seconds)")]
    TokenExpired {
        /// The token's `exp`.
        exp: u64,
        /// The time of the check.
        now: u64,
    },

    /// The token is not valid yet (its `nbf` minus the leeway is after now).
    #[error("attestation token is not valid before {nbf} (now {now}, Unix seconds)")]
    TokenNotYetValid {
        /// The token's `nbf`.
        nbf: u64,
        /// The time of the check.
        now: u64,
    },

    /// A JWK or JWKS is unusable: bad JSON, not an RSA key, bad modulus or
    /// exponent, a key too small, or a key meant for something else.
    #[error("bad JWK: {0}")]
    BadKey(String),

    /// Claims that must not go together: a token for emulated (insecure)
    /// evidence that also says it is Azure-compliant.
    #[error("conflicting attestation claims: {0}")]
    ClaimConflict(&'static str),

    /// A time or lifetime cannot be expressed as a JWT NumericDate.
    #[error("time out of range for an attestation token: {0}")]
    BadTime(&'static str),

    /// The token carries no `x-ms-runtime` claim, or its runtime data is not
    /// a JSON object.
    #[error("attestation token has no usable x-ms-runtime claim: {0}")]
    BadRuntimeData(String),

    /// SHA-256 of the token's runtime data (the TEE's JWKS) is not what the
    /// SNP report's report_data holds, so the keys are not the TEE's.
    #[error("the token's runtime keys do not match the report_data")]
    RuntimeKeysMismatch,

    /// An attestation service request or its evidence does not decode
    /// (bad base64url or JSON).
    #[error("bad attestation request: {0}")]
    BadRequest(String),
}
