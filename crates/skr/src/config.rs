//! `importkeyconfig.json` (Azure's key import tool) and
//! `encfs-sidecar-args.json` (the encrypted-filesystem sidecar), with the
//! base64 form the ARM template carries.
//!
//! The field names, their optionality and the files' layout follow
//! microsoft/confidential-sidecar-containers (`tools/importkey`,
//! `pkg/common/keyblob.go`, `cmd/remotefs`): `decode` then `encode` gives
//! the recipe's example files back byte for byte. Unknown members are
//! refused so that a misspelt field is an error, not a silent default.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::policy::{ClaimCondition, Condition, ReleasePolicy};

/// A secret string (bearer token, raw key): zeroized on drop, redacted in
/// `Debug`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(Zeroizing::new(secret.into()))
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("Secret(empty)")
        } else {
            f.write_str("Secret(<redacted>)")
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret::new(String::deserialize(d)?))
    }
}

/// Which key, in which vault, released on tokens from which attestation
/// service (the sidecar's `KeyBlob`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBlob {
    /// The key's name in the vault.
    pub kid: String,
    /// `oct-HSM` (the default) or `RSA-HSM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kty: Option<String>,
    /// Key operations to import the key with (empty: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_ops: Vec<String>,
    /// The attestation service.
    pub authority: Authority,
    /// The key vault.
    pub akv: Akv,
}

/// An attestation service (the sidecar's `MAA`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authority {
    /// Host name, without scheme (`sharedeus.eus.attest.azure.net`).
    pub endpoint: String,
    /// TEE type; the sidecar sets `SevSnpVM` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tee_type: Option<String>,
    /// API version; the sidecar sets it itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
}

/// A key vault or Managed HSM (the sidecar's `AKV`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Akv {
    /// Host name, without scheme (`myhsm.managedhsm.azure.net`).
    pub endpoint: String,
    /// `api-version=7.4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// An AAD bearer token. confsum never writes one into a file; it is
    /// read only because Azure's tool allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Secret>,
}

/// HKDF parameters for `RSA-HSM` keys (see [`crate::derive_rsa_hsm_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyDerivation {
    /// Hex-encoded salt.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub salt: String,
    /// The HKDF info; empty means `Symmetric Encryption Key`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
}

/// A managed identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Its client id.
    pub client_id: String,
}

/// `importkeyconfig.json`: the key to import and its release policy's
/// claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportKeyConfig {
    /// The key and where it goes.
    pub key: KeyBlob,
    /// HKDF parameters (`RSA-HSM` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_derivation: Option<KeyDerivation>,
    /// Each inner list is one `allOf` branch under the policy's `anyOf`.
    #[serde(with = "claim_lists")]
    pub claims: Vec<Vec<ClaimCondition>>,
    /// Managed identity used inside Azure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
}

impl ImportKeyConfig {
    /// Reads `importkeyconfig.json`.
    ///
    /// # Errors
    ///
    /// [`Error::Json`] naming the bad or unknown field.
    pub fn decode(json: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(json).map_err(Error::json("importkeyconfig.json"))
    }

    /// Writes it as Azure's example is laid out (4-space indentation, a
    /// final newline).
    pub fn encode(&self) -> String {
        let mut text = pretty(self, b"    ");
        text.push('\n');
        text
    }

    /// The release policy that Azure's import tool makes of this file:
    /// version `1.0.0`, one `allOf` branch per inner claim list, each with
    /// authority `https://` + `key.authority.endpoint`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the endpoint already has a scheme (the tool
    /// would write `https://https://…`) or if there are no claims.
    pub fn release_policy(&self) -> Result<ReleasePolicy, Error> {
        let endpoint = &self.key.authority.endpoint;
        if endpoint.is_empty() || endpoint.contains("://") {
            return Err(Error::Config {
                what: "importkeyconfig.json",
                problem: format!(
                    "key.authority.endpoint must be a host name without scheme, found {endpoint:?}"
                ),
            });
        }
        if self.claims.is_empty() || self.claims.iter().any(Vec::is_empty) {
            return Err(Error::Config {
                what: "importkeyconfig.json",
                problem: "claims must hold at least one non-empty list".to_owned(),
            });
        }
        Ok(ReleasePolicy::all_of(
            &format!("https://{endpoint}"),
            self.claims.clone(),
        ))
    }

    /// The fields still holding a `<placeholder>`, as JSON paths.
    pub fn placeholders(&self) -> Vec<String> {
        let mut found = Vec::new();
        key_placeholders(&self.key, "key", &mut found);
        if let Some(kd) = &self.key_derivation {
            push_if_placeholder(&kd.salt, "key_derivation.salt", &mut found);
            push_if_placeholder(&kd.label, "key_derivation.label", &mut found);
        }
        for (i, list) in self.claims.iter().enumerate() {
            for (j, c) in list.iter().enumerate() {
                push_if_placeholder(&c.claim, &format!("claims[{i}][{j}].claim"), &mut found);
                if let crate::policy::ClaimValue::String(v) = &c.value {
                    push_if_placeholder(v, &format!("claims[{i}][{j}].{}", c.operator), &mut found);
                }
            }
        }
        found
    }
}

/// `encfs-sidecar-args.json`: the file systems the encfs sidecar mounts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarArgs {
    /// Certificate cache and identity settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_info: Option<AzureInfo>,
    /// The file systems.
    pub azure_filesystems: Vec<AzureFilesystem>,
}

/// The sidecar's `azure_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureInfo {
    /// Where the sidecar fetches AMD certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certcache: Option<CertCache>,
    /// Managed identity for the vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
}

/// The sidecar's `CertFetcher`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertCache {
    /// `AMD`, `AzCache` or `LocalTHIM`.
    pub endpoint_type: String,
    /// The endpoint.
    pub endpoint: String,
    /// TEE type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tee_type: Option<String>,
    /// API version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// One encrypted file system image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureFilesystem {
    /// Where the plaintext file system appears in the container.
    pub mount_point: String,
    /// The image's blob URL.
    pub azure_url: String,
    /// Whether the blob needs the identity to read.
    pub azure_url_private: bool,
    /// Read-write (needs a page blob) or read-only.
    #[serde(default)]
    pub read_write: bool,
    /// The key to release.
    pub key: KeyBlob,
    /// HKDF parameters (`RSA-HSM` keys only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_derivation: Option<KeyDerivation>,
    /// A hex key for testing that skips key release (only test images of
    /// the sidecar honour it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_key: Option<Secret>,
}

impl SidecarArgs {
    /// Reads `encfs-sidecar-args.json`.
    ///
    /// # Errors
    ///
    /// [`Error::Json`] naming the bad or unknown field.
    pub fn decode(json: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(json).map_err(Error::json("encfs sidecar arguments"))
    }

    /// Writes it as Azure's example is laid out (3-space indentation, no
    /// final newline).
    pub fn encode(&self) -> String {
        pretty(self, b"   ")
    }

    /// The value of the ARM template's `EncfsSideCarArgs`: standard base64
    /// (padded) of the compact JSON, which the sidecar decodes with Go's
    /// `base64.StdEncoding`.
    pub fn to_base64(&self) -> String {
        // Serializing these plain structs cannot fail.
        STANDARD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads the base64 form (surrounding whitespace tolerated).
    ///
    /// # Errors
    ///
    /// [`Error::Encoding`] if it is not standard base64, [`Error::Json`] as
    /// for [`SidecarArgs::decode`].
    pub fn from_base64(text: &str) -> Result<Self, Error> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| Error::Encoding {
            what: "EncfsSideCarArgs",
            encoding: "base64",
        })?;
        Self::decode(&bytes)
    }

    /// The fields still holding a `<placeholder>`, as JSON paths.
    pub fn placeholders(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (i, fs) in self.azure_filesystems.iter().enumerate() {
            let at = format!("azure_filesystems[{i}]");
            push_if_placeholder(&fs.mount_point, &format!("{at}.mount_point"), &mut found);
            push_if_placeholder(&fs.azure_url, &format!("{at}.azure_url"), &mut found);
            key_placeholders(&fs.key, &format!("{at}.key"), &mut found);
            if let Some(kd) = &fs.key_derivation {
                push_if_placeholder(&kd.salt, &format!("{at}.key_derivation.salt"), &mut found);
                push_if_placeholder(&kd.label, &format!("{at}.key_derivation.label"), &mut found);
            }
        }
        found
    }
}

fn key_placeholders(key: &KeyBlob, at: &str, found: &mut Vec<String>) {
    push_if_placeholder(&key.kid, &format!("{at}.kid"), found);
    if let Some(kty) = &key.kty {
        push_if_placeholder(kty, &format!("{at}.kty"), found);
    }
    push_if_placeholder(
        &key.authority.endpoint,
        &format!("{at}.authority.endpoint"),
        found,
    );
    push_if_placeholder(&key.akv.endpoint, &format!("{at}.akv.endpoint"), found);
    if let Some(token) = &key.akv.bearer_token {
        push_if_placeholder(token.expose(), &format!("{at}.akv.bearer_token"), found);
    }
}

fn push_if_placeholder(value: &str, path: &str, found: &mut Vec<String>) {
    if value.starts_with('<') && value.ends_with('>') {
        found.push(path.to_owned());
    }
}

fn pretty<T: Serialize>(value: &T, indent: &[u8]) -> String {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(indent);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    // Serializing these plain structs into memory cannot fail, and
    // serde_json writes UTF-8.
    if value.serialize(&mut ser).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

/// `claims` as a list of lists of claim conditions, in the policy grammar.
mod claim_lists {
    use serde::de::Error as _;
    use serde::ser::SerializeSeq as _;
    use serde::{Deserialize as _, Deserializer, Serializer};
    use serde_json::Value;

    use super::{ClaimCondition, Condition};

    pub(super) fn serialize<S: Serializer>(
        lists: &[Vec<ClaimCondition>],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(lists.len()))?;
        for list in lists {
            let values: Vec<Value> = list
                .iter()
                .map(|c| crate::policy::condition_json(&Condition::Claim(c.clone())))
                .collect();
            seq.serialize_element(&values)?;
        }
        seq.end()
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<Vec<ClaimCondition>>, D::Error> {
        let lists = Vec::<Vec<Value>>::deserialize(d)?;
        lists
            .iter()
            .enumerate()
            .map(|(i, list)| {
                list.iter()
                    .enumerate()
                    .map(|(j, v)| {
                        crate::policy::parse_claim_condition(v, &format!("claims[{i}][{j}]"))
                            .map_err(D::Error::custom)
                    })
                    .collect()
            })
            .collect()
    }
}
