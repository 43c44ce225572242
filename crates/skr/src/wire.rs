//! The JSON bodies of the Managed HSM REST subset the broker speaks, named
//! and shaped as Key Vault (API 7.4) and the confidential sidecar's client
//! (`pkg/common/akv.go`) have them.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Error;

/// `PUT /keys/{name}`: import a key with a release policy.
#[derive(Clone, Serialize, Deserialize)]
pub struct ImportKeyRequest {
    /// The private JWK (`oct-HSM`: `k`; `RSA-HSM`: `n`, `e`, `d`, `p`,
    /// `q`, …; `EC-HSM`: `crv`, `x`, `y`, `d`), with optional `key_ops`.
    pub key: Value,
    /// Whether the key is HSM-protected (always, here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsm: Option<bool>,
    /// `exportable` must be true for a key with a release policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<ImportAttributes>,
    /// The release policy (required here: the broker only holds keys it
    /// may release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_policy: Option<ReleasePolicyBody>,
    /// Free-form tags, kept and returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Map<String, Value>>,
}

impl std::fmt::Debug for ImportKeyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportKeyRequest")
            .field("key", &"<redacted>")
            .field("hsm", &self.hsm)
            .field("attributes", &self.attributes)
            .field("release_policy", &self.release_policy)
            .finish_non_exhaustive()
    }
}

impl ImportKeyRequest {
    /// Reads an import body.
    ///
    /// # Errors
    ///
    /// [`Error::Json`] (HTTP 400).
    pub fn decode(body: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(body).map_err(Error::json("import request"))
    }
}

/// Attributes given on import or update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportAttributes {
    /// Whether the key may be used (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Whether the key may be released (must be true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exportable: Option<bool>,
}

/// A release policy as Key Vault carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasePolicyBody {
    /// `application/json; charset=utf-8`.
    #[serde(
        rename = "contentType",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub content_type: Option<String>,
    /// The policy JSON, base64url without padding.
    pub data: String,
    /// Once true, the policy can never change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

/// `PATCH /keys/{name}`: update a key's release policy (or enable it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpdateKeyRequest {
    /// The new release policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_policy: Option<ReleasePolicyBody>,
    /// New attributes (`enabled`; `exportable` cannot be turned off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<ImportAttributes>,
}

impl UpdateKeyRequest {
    /// Reads an update body.
    ///
    /// # Errors
    ///
    /// [`Error::Json`] (HTTP 400).
    pub fn decode(body: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(body).map_err(Error::json("update request"))
    }
}

/// A key as `GET /keys/{name}` and import answer: public parts only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyBundle {
    /// The public JWK with `kid`, `kty` and `key_ops`.
    pub key: PublicJwk,
    /// The key's attributes.
    pub attributes: KeyAttributes,
    /// The release policy.
    pub release_policy: ReleasePolicyBody,
    /// Tags given on import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Map<String, Value>>,
}

/// A public JWK.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicJwk {
    /// `https://<vault>/keys/<name>/<version>`.
    pub kid: String,
    /// `oct-HSM`, `RSA-HSM` or `EC-HSM`.
    pub kty: String,
    /// Permitted operations.
    pub key_ops: Vec<String>,
    /// `n`, `e` (RSA) or `crv`, `x`, `y` (EC); nothing for `oct`.
    #[serde(flatten)]
    pub public: Map<String, Value>,
}

/// A key's attributes, as Key Vault reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyAttributes {
    /// Whether the key may be used.
    pub enabled: bool,
    /// Whether the key may be released.
    pub exportable: bool,
    /// Creation time (Unix seconds).
    pub created: u64,
    /// Last update (Unix seconds).
    pub updated: u64,
    /// Key Vault's recovery level; this broker does not soft-delete.
    #[serde(rename = "recoveryLevel")]
    pub recovery_level: String,
}

/// `POST /keys/{name}/release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The attestation token.
    pub target: String,
    /// The wrapping algorithm (default `CKM_RSA_AES_KEY_WRAP`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enc: Option<String>,
    /// A nonce echoed in the signed response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

impl ReleaseRequest {
    /// Reads a release body.
    ///
    /// # Errors
    ///
    /// [`Error::Json`] (HTTP 400).
    pub fn decode(body: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(body).map_err(Error::json("release request"))
    }
}

/// The answer to a release: `{"value": <compact JWS>}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseResponse {
    /// The signed release (see [`ReleasePayload`]).
    pub value: String,
}

/// The payload of the release JWS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleasePayload {
    /// What was asked.
    pub request: PayloadRequest,
    /// What is released.
    pub response: PayloadResponse,
}

/// `request` in the release payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadRequest {
    /// The API version (`7.4`).
    #[serde(rename = "api-version")]
    pub api_version: String,
    /// The wrapping algorithm the ciphertext uses.
    pub enc: String,
    /// The released key's id.
    pub kid: String,
    /// The request's nonce, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// `response` in the release payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PayloadResponse {
    /// The released key.
    pub key: ReleasedKeyBundle,
}

/// `response.key` in the release payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleasedKeyBundle {
    /// The key's attributes.
    pub attributes: KeyAttributes,
    /// The wrapped key.
    pub key: WrappedJwk,
    /// The policy it was released under.
    pub release_policy: ReleasePolicyBody,
}

/// `response.key.key` in the release payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedJwk {
    /// base64url (unpadded) of the [`KeyHsm`] JSON.
    pub key_hsm: String,
    /// The key's id.
    pub kid: String,
    /// `oct-HSM`, `RSA-HSM` or `EC-HSM`.
    pub kty: String,
    /// Permitted operations.
    pub key_ops: Vec<String>,
}

/// The decoded `key_hsm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHsm {
    /// `1.0.0`.
    pub schema_version: String,
    /// How the ciphertext was made.
    pub header: KeyHsmHeader,
    /// base64url (unpadded) of RSA-OAEP(KEK) ‖ RFC 5649 wrap(key).
    pub ciphertext: String,
}

/// `key_hsm.header`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyHsmHeader {
    /// Always `dir`.
    pub alg: String,
    /// The wrapping algorithm.
    pub enc: String,
    /// The wrapping key's `kid` from the token, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
}

/// Key Vault's error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorBody,
}

/// `error` in [`ErrorResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `BadParameter`, `Unauthorized`, `Forbidden`, `KeyNotFound`,
    /// `Conflict` or `InternalError`.
    pub code: String,
    /// What went wrong.
    pub message: String,
}
