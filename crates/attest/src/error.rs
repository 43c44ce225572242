//! The crate's one error type, and the typed payloads it nests.
//!
//! Each variant of [`Error`] names one failed check; where a caller (a key
//! broker mapping causes to 401 or 403, a CLI explaining a refusal) needs
//! the precise cause, it is a nested enum ([`TokenError`], [`KeyError`],
//! [`CertError`], ...) rather than text, the way rustls nests its
//! `CertificateError`. Messages are lowercase; the detail of a nested
//! payload is its [`source`](std::error::Error::source), not part of the
//! outer message, so that `{:#}`-style chains print each cause once.

use std::{fmt, io, path::PathBuf, time::SystemTime};

use crate::report::SigningKey;

/// A certificate's place in the chain VCEK (VLEK) → ASK (ASVK) → ARK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CertRole {
    /// The Versioned Chip Endorsement Key's certificate.
    Vcek,
    /// The Versioned Loaded Endorsement Key's certificate.
    Vlek,
    /// The AMD SEV Signing Key, which signs VCEKs.
    Ask,
    /// The AMD SEV VLEK Signing Key, which signs VLEKs.
    Asvk,
    /// The AMD Root Key.
    Ark,
    /// A certificate whose role is not known yet (while a bundle is read).
    Chain,
}

impl CertRole {
    /// The name AMD uses: `"VCEK"`, `"VLEK"`, `"ASK"`, `"ASVK"`, `"ARK"`,
    /// or `"chain"`.
    pub fn name(self) -> &'static str {
        match self {
            CertRole::Vcek => "VCEK",
            CertRole::Vlek => "VLEK",
            CertRole::Ask => "ASK",
            CertRole::Asvk => "ASVK",
            CertRole::Ark => "ARK",
            CertRole::Chain => "chain",
        }
    }
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a file failed.
    #[error("cannot read {}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

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
    #[error("the report is signed by {}, but the certificate given is a {cert}", .report.name())]
    SigningKeyMismatch {
        /// The key the report's KEY_INFO names.
        report: SigningKey,
        /// The kind of the certificate given ([`CertRole::Vcek`] or
        /// [`CertRole::Vlek`]).
        cert: CertRole,
    },

    /// Bytes that should hold a certificate (PEM, DER or THIM JSON) do
    /// not, or a certificate is not what its role needs.
    #[error("unusable {role} certificate")]
    BadCert {
        /// Which certificate ([`CertRole::Chain`] while reading a bundle).
        role: CertRole,
        /// What was wrong.
        #[source]
        error: CertError,
    },

    /// A certificate chain lacks a certificate that is needed. A chain
    /// without an endorsement key reports [`CertRole::Vcek`].
    #[error("the certificate chain has no {} certificate", missing_name(.0))]
    MissingCert(CertRole),

    /// A certificate's signature does not verify with its issuer's key.
    #[error("the {role} certificate's signature does not verify")]
    BadCertSignature {
        /// Which certificate.
        role: CertRole,
    },

    /// A certificate's validity period ended before the time of checking.
    #[error("the {role} certificate expired at {not_after:?}")]
    CertExpired {
        /// Which certificate.
        role: CertRole,
        /// The end of its validity period.
        not_after: SystemTime,
    },

    /// A certificate's validity period starts after the time of checking.
    #[error("the {role} certificate is not valid before {not_before:?}")]
    CertNotYetValid {
        /// Which certificate.
        role: CertRole,
        /// The start of its validity period.
        not_before: SystemTime,
    },

    /// A certificate's issuer is not the next certificate in the chain.
    #[error("the {role} certificate is not issued by the {issuer} certificate")]
    CertWrongIssuer {
        /// Which certificate.
        role: CertRole,
        /// The certificate that should have issued it.
        issuer: CertRole,
    },

    /// The chain ends in a root key that is not among the trusted roots.
    #[error("the ARK is not a trusted root")]
    UnknownRoot,

    /// A validated field of the report does not have the expected value.
    #[error("{field} mismatch: expected {expected}, got {actual}")]
    Mismatch {
        /// The report field (for example `"host_data"`, `"VCEK hwID"`).
        field: &'static str,
        /// The expected value (hex for byte strings).
        expected: String,
        /// The value in the report (hex for byte strings).
        actual: String,
    },

    /// An AMD extension of the VCEK or VLEK certificate (hwID, TCB
    /// components, product name) is missing, repeated or malformed.
    #[error("the {role} certificate's {extension} extension is unusable")]
    VcekExtension {
        /// Which certificate: [`CertRole::Vcek`] or [`CertRole::Vlek`].
        role: CertRole,
        /// The extension: `"hwID"`, `"blSPL"`, `"teeSPL"`, `"snpSPL"`,
        /// `"ucodeSPL"`, `"fmcSPL"` or `"productName"`.
        extension: &'static str,
        /// What was wrong.
        #[source]
        error: ExtensionError,
    },

    /// A certificate fetcher (a [`crate::CertificateFetcher`]) failed.
    #[error("cannot fetch the certificates")]
    Fetch(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),

    /// An attestation token is refused; the [`TokenError`] says why.
    #[error("attestation token refused")]
    Token(#[source] TokenError),

    /// A key (JWK, JWKS, PKCS#8 private key) is unusable, or an operation
    /// with it failed.
    #[error("unusable key")]
    BadKey(#[source] KeyError),

    /// Claims that must not go together.
    #[error("conflicting attestation claims")]
    ClaimConflict(#[source] ClaimConflict),

    /// A time or lifetime cannot be expressed as a JWT NumericDate.
    #[error("time out of range for an attestation token")]
    BadTime(#[source] TimeError),

    /// Runtime data (the TEE's JWKS in a request, or a token's
    /// `x-ms-runtime` claim) is missing or unusable.
    #[error("unusable runtime data")]
    BadRuntimeData(#[source] RuntimeDataError),

    /// SHA-256 of the token's runtime data (the TEE's JWKS) is not what the
    /// SNP report's report_data holds, so the keys are not the TEE's.
    #[error("the token's runtime keys do not match the report_data")]
    RuntimeKeysMismatch,

    /// An attestation service request is malformed or not supported.
    #[error("bad attestation request")]
    BadRequest(#[source] RequestError),
}

fn missing_name(role: &CertRole) -> &'static str {
    match role {
        CertRole::Vcek => "VCEK or VLEK",
        other => other.name(),
    }
}

/// What is wrong with a certificate or a bundle of them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// Not the DER encoding of an X.509 certificate (or of a PEM block).
    #[error("not a DER X.509 certificate")]
    Der(#[source] der::Error),
    /// No `CERTIFICATE` PEM block was found.
    #[error("no PEM certificate found")]
    NoPem,
    /// A PEM block has no END line.
    #[error("a PEM certificate has no END line")]
    UnterminatedPem,
    /// The outer signature algorithm differs from the one in the signed part.
    #[error("the signature algorithm differs from the one in the signed part")]
    AlgorithmMismatch,
    /// The certificate's subject has no common name.
    #[error("the certificate has no common name")]
    NoCommonName,
    /// The subject common name is none of AMD's.
    #[error("unknown certificate {0:?}")]
    UnknownName(String),
    /// A bundle holds two certificates of one role.
    #[error("more than one {0} certificate")]
    Duplicate(CertRole),
    /// THIM's `vcekCert` holds a VLEK.
    #[error("vcekCert holds a VLEK")]
    VlekAsVcek,
    /// The bytes are not THIM JSON.
    #[error("not THIM JSON (vcekCert, certificateChain)")]
    Thim(#[source] serde_json::Error),
    /// THIM's `tcbm` is not hexadecimal.
    #[error("tcbm is not a hexadecimal number")]
    Tcbm(#[source] std::num::ParseIntError),
    /// The public key is not an RSA key.
    #[error("the public key is not an RSA key")]
    NotRsa,
    /// The public key is not a P-384 key.
    #[error("the public key is not a P-384 key")]
    NotP384,
    /// The public key bit string is not whole bytes, or its key does not
    /// decode.
    #[error("the public key does not decode")]
    BadPublicKey,
    /// Not signed with RSA-PSS.
    #[error("not signed with RSA-PSS")]
    NotPss,
    /// RSA-PSS parameters are absent, malformed, or not SHA-384,
    /// MGF1-SHA-384 and a 48-byte salt (as all of AMD's are).
    #[error("RSA-PSS parameters are not SHA-384, MGF1-SHA-384, salt 48")]
    PssParameters,
    /// A certificate could not be built (the emulated TEE's).
    #[error("cannot build the certificate")]
    Build,
}

/// What is wrong with an AMD extension of a VCEK or VLEK.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtensionError {
    /// The certificate has no such extension.
    #[error("the certificate has no such extension")]
    Missing,
    /// The extension appears more than once.
    #[error("the extension appears more than once")]
    Repeated,
    /// A TCB component is not an INTEGER 0..=255.
    #[error("not an INTEGER 0..=255")]
    NotInteger(#[source] der::Error),
    /// The hwID is neither raw bytes nor an OCTET STRING.
    #[error("not an OCTET STRING")]
    NotOctetString(#[source] der::Error),
    /// The product name is not an IA5String.
    #[error("not an IA5String")]
    NotIa5String(#[source] der::Error),
    /// The hwID has the wrong length.
    #[error("{len} bytes long, not {expected}")]
    Length {
        /// Its length.
        len: usize,
        /// The length expected.
        expected: usize,
    },
}

/// One part of a JWS compact serialization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenPart {
    /// The JOSE header.
    Header,
    /// The claims.
    Payload,
    /// The signature.
    Signature,
}

impl fmt::Display for TokenPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenPart::Header => "header",
            TokenPart::Payload => "payload",
            TokenPart::Signature => "signature",
        })
    }
}

/// Why an attestation token is refused, for callers that map causes
/// (expired, wrong issuer, bad signature, ...) to answers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is longer than the verifier accepts.
    #[error("token of {len} bytes is longer than the {max}-byte limit")]
    TooLarge {
        /// Length of the token in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not three dot-separated parts.
    #[error("malformed token: not three dot-separated parts")]
    NotCompact,
    /// A part is not base64url without padding.
    #[error("malformed token: the {0} is not base64url without padding")]
    Base64(TokenPart),
    /// The header is not the JOSE header JSON.
    #[error("malformed token: bad header")]
    Header(#[source] serde_json::Error),
    /// The payload is not the claims JSON, or a claim has the wrong type.
    #[error("malformed token: bad claims")]
    Claims(#[source] serde_json::Error),
    /// The header lists critical extensions (`crit`), none of which is
    /// understood.
    #[error("malformed token: the header has critical extensions (crit)")]
    CriticalHeader,
    /// The header's `alg` is not `RS256`; `none`, `HS256` and all others
    /// are refused before any key is looked at.
    #[error("algorithm {0:?} is refused: only RS256 is accepted")]
    AlgorithmRefused(String),
    /// The token names no key, or a key that the JWKS does not hold
    /// exactly once.
    #[error("no signing key with kid {0:?}")]
    UnknownKey(String),
    /// The key the token names is unusable for RS256 signatures.
    #[error("the signing key {kid:?} is unusable")]
    KeyRefused {
        /// The key's id.
        kid: String,
        /// Why.
        #[source]
        error: KeyError,
    },
    /// The signature does not verify with the key the token names.
    #[error("signature does not verify")]
    BadSignature,
    /// The token was issued by another attestation service.
    #[error("issuer {found:?} is not the expected {expected:?}")]
    WrongIssuer {
        /// The issuer the verifier trusts.
        expected: String,
        /// The token's `iss`.
        found: String,
    },
    /// The token expired (its `exp` plus the leeway is before now).
    #[error("expired at {exp} (now {now}, Unix seconds)")]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The time of the check.
        now: u64,
    },
    /// The token is not valid yet (its `nbf` minus the leeway is after now).
    #[error("not valid before {nbf} (now {now}, Unix seconds)")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: u64,
        /// The time of the check.
        now: u64,
    },
}

/// A member of a JWK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwkMember {
    /// The RSA modulus `n`.
    N,
    /// The RSA public exponent `e`.
    E,
    /// The certificate chain `x5c`.
    X5c,
}

impl fmt::Display for JwkMember {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JwkMember::N => "n",
            JwkMember::E => "e",
            JwkMember::X5c => "x5c",
        })
    }
}

/// What is wrong with a key, or with an operation on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes are not a JWKS.
    #[error("not a JWKS")]
    Json(#[source] serde_json::Error),
    /// The key type is not RSA.
    #[error("key type {0:?} is not RSA")]
    NotRsa(String),
    /// An RSA JWK with neither `n` and `e` nor an `x5c` certificate.
    #[error("RSA key without n and e or x5c")]
    NoPublicKey,
    /// `n` or `e` is not base64url without padding, or an `x5c` entry is
    /// not standard base64.
    #[error("{0} is not in its base64 form")]
    Base64(JwkMember),
    /// `n` or `e` is empty, or `x5c` has no certificate.
    #[error("{0} is empty")]
    Empty(JwkMember),
    /// `n` or `e` has a leading zero byte.
    #[error("{0} has a leading zero byte")]
    LeadingZero(JwkMember),
    /// The RSA modulus is outside 2048 to 4096 bits.
    #[error("RSA modulus of {bits} bits is outside 2048..=4096")]
    Size {
        /// The modulus size.
        bits: usize,
    },
    /// `n` and `e` do not make a valid RSA public key.
    #[error("not a valid RSA public key")]
    InvalidRsa,
    /// `x5c[0]` is not a certificate with an RSA key.
    #[error("x5c[0] is not a certificate with an RSA key")]
    Certificate(#[source] CertError),
    /// `n` and `e` are given and differ from the key of `x5c[0]`.
    #[error("n and e differ from the key of x5c[0]")]
    X5cMismatch,
    /// The key's `use` is not `"sig"`.
    #[error("the key's use is {0:?}, not \"sig\"")]
    NotForSignatures(String),
    /// The key's `alg` is not `"RS256"`.
    #[error("the key's alg is {0:?}, not \"RS256\"")]
    NotForRs256(String),
    /// Not a PKCS#8 PEM RSA private key (`-----BEGIN PRIVATE KEY-----`).
    #[error("not a PKCS#8 PEM RSA private key")]
    NotPkcs8,
    /// The RSA private key was refused (malformed, inconsistent, or of an
    /// unsupported size).
    #[error("RSA private key refused")]
    Rejected,
    /// A fresh key could not be made (no randomness).
    #[error("cannot generate a key")]
    Generation,
    /// A key could not be encoded.
    #[error("cannot encode a key")]
    Encoding,
    /// Signing failed.
    #[error("signing failed")]
    Signing,
}

/// Claims that must not go together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimConflict {
    /// Emulated (insecure) evidence that also claims
    /// `x-ms-compliance-status`.
    #[error("emulated evidence cannot carry x-ms-compliance-status")]
    EmulatedCompliant,
}

/// A time that a token cannot carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// A time before 1970.
    #[error("time before 1970")]
    BeforeEpoch,
    /// A lifetime that runs past the largest NumericDate.
    #[error("lifetime too long")]
    LifetimeTooLong,
}

/// What is wrong with runtime data.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeDataError {
    /// The token has no `x-ms-runtime` claim.
    #[error("no x-ms-runtime claim")]
    Missing,
    /// The bytes are not UTF-8.
    #[error("runtime data is not UTF-8")]
    NotUtf8,
    /// The bytes are not one JSON value.
    #[error("runtime data is not JSON")]
    NotJson(#[source] serde_json::Error),
    /// The JSON value is not an object.
    #[error("runtime data is not a JSON object")]
    NotObject,
    /// The object has no `keys` array of JWKs.
    #[error("runtime data is not a JWKS")]
    NotJwks(#[source] serde_json::Error),
    /// `keys` is empty.
    #[error("x-ms-runtime.keys is empty")]
    NoKeys,
}

/// A field of an attestation request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestField {
    /// `report`: the evidence JSON.
    Report,
    /// `runtimeData.data`.
    RuntimeData,
    /// `SnpReport` inside the evidence.
    SnpReport,
    /// `VcekCertChain` inside the evidence.
    VcekCertChain,
    /// `Endorsements` inside the evidence.
    Endorsements,
    /// One entry of `Endorsements.Uvm`.
    UvmEndorsement,
}

impl fmt::Display for RequestField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestField::Report => "report",
            RequestField::RuntimeData => "runtimeData.data",
            RequestField::SnpReport => "SnpReport",
            RequestField::VcekCertChain => "VcekCertChain",
            RequestField::Endorsements => "Endorsements",
            RequestField::UvmEndorsement => "Endorsements.Uvm[]",
        })
    }
}

/// What is wrong with an attestation request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The body is not an attestation request.
    #[error("the body is not an attestation request")]
    Body(#[source] serde_json::Error),
    /// A field is not base64url.
    #[error("{0} is not base64url")]
    Base64(RequestField),
    /// `report` does not decode to the evidence JSON.
    #[error("report is not SNP evidence JSON")]
    Evidence(#[source] serde_json::Error),
    /// `Endorsements` does not decode to `{"Uvm":[…]}`.
    #[error("Endorsements is not {{\"Uvm\":[…]}}")]
    Endorsements(#[source] serde_json::Error),
    /// `VcekCertChain` is not a PEM chain of AMD certificates.
    #[error("VcekCertChain is not a usable certificate chain")]
    CertChain(#[source] Box<Error>),
    /// The request has no `api-version`.
    #[error("the api-version query parameter is required ({v})", v = crate::ATTEST_API_VERSION)]
    MissingApiVersion,
    /// The request's `api-version` is not the one supported.
    #[error("api-version {0:?} is not supported: use {v}", v = crate::ATTEST_API_VERSION)]
    UnsupportedApiVersion(String),
    /// `runtimeData.dataType` is not `"JSON"`.
    #[error("runtimeData.dataType {0:?} is not supported: only \"JSON\"")]
    UnsupportedDataType(String),
    /// report_data is not SHA-256 of the runtime data bytes followed by 32
    /// zero bytes.
    #[error("report_data is not SHA-256 of runtimeData.data followed by 32 zero bytes")]
    RuntimeDataMismatch,
}

impl From<TokenError> for Error {
    fn from(error: TokenError) -> Self {
        Error::Token(error)
    }
}

impl From<KeyError> for Error {
    fn from(error: KeyError) -> Self {
        Error::BadKey(error)
    }
}

impl From<RuntimeDataError> for Error {
    fn from(error: RuntimeDataError) -> Self {
        Error::BadRuntimeData(error)
    }
}

impl From<RequestError> for Error {
    fn from(error: RequestError) -> Self {
        Error::BadRequest(error)
    }
}

impl From<TimeError> for Error {
    fn from(error: TimeError) -> Self {
        Error::BadTime(error)
    }
}

impl From<ClaimConflict> for Error {
    fn from(error: ClaimConflict) -> Self {
        Error::ClaimConflict(error)
    }
}
