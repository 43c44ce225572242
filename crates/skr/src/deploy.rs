//! The files an Azure deployment of the encrypted-filesystem recipe needs,
//! made from the owner's and operator's settings, and checked against each
//! other before anything is deployed.
//!
//! The recipe (microsoft/confidential-sidecar-containers, `examples/encfs`)
//! has the user fill in about a dozen `<placeholders>` across an ARM
//! template, `importkeyconfig.json` and `encfs-sidecar-args.json`, and copy
//! base64 between them. [`AzureDeployment`] writes all three from one set of
//! [`DeploySettings`] and refuses to write any with a value missing;
//! [`check_deployment`] finds what makes Managed HSM answer 403 at start-up
//! (a policy that changed after the key was imported, a sidecar pointed at
//! another key or vault).
//!
//! The template is written with an empty `ccePolicy`: the policy depends on
//! the images, which this crate does not read. `confsum-policy` fills it in,
//! and its SHA-256 then goes into [`AzureDeployment::import_key_config`].

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::SidecarArgs;
use crate::config::{Akv, Authority, AzureFilesystem, ImportKeyConfig, KeyBlob, KeyDerivation};
use crate::error::Error;
use crate::policy::{ClaimCondition, ClaimValue, Operator};

/// The sidecar image of the recipe.
pub const DEFAULT_SIDECAR_IMAGE: &str = "mcr.microsoft.com/aci/encfs:2.12";
/// The name of the sidecar's container, as in the recipe.
pub const SIDECAR_CONTAINER_NAME: &str = "encrypted-filesystem-sidecar-container";
/// The environment variable that carries the sidecar's arguments (base64).
pub const SIDECAR_ARGS_ENV: &str = "EncfsSideCarArgs";
/// The claim that pins a workload's policy.
pub const HOST_DATA_CLAIM: &str = "x-ms-sevsnpvm-hostdata";

const DEFAULT_GROUP_NAME: &str = "confsum";
const DEFAULT_APP_NAME: &str = "app";
const DEFAULT_MOUNT_POINT: &str = "/mnt/remote/share";
const VOLUME_NAME: &str = "remotemounts";
const KEY_VAULT_API_VERSION: &str = "api-version=7.4";
const CONTAINER_GROUPS: &str = "Microsoft.ContainerInstance/containerGroups";

/// What a deployment is made of. Every field is optional here so that
/// settings can come from a file and from flags ([`DeploySettings::or`]);
/// [`AzureDeployment::new`] says which required ones are missing.
///
/// As a settings file (JSON), the keys are the field names:
///
/// ```
/// use confsum_skr::DeploySettings;
///
/// let settings = DeploySettings::decode(br#"{
///     "app_image": "myregistry.azurecr.io/summarizer:1.0",
///     "blob_url": "https://myaccount.blob.core.windows.net/private/encfs.img",
///     "key_name": "doc-key",
///     "hsm": "myhsm.managedhsm.azure.net",
///     "maa": "sharedeus.eus.attest.azure.net",
///     "identity": "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id"
/// }"#)?;
/// assert_eq!(settings.key_name.as_deref(), Some("doc-key"));
/// # Ok::<(), confsum_skr::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DeploySettings {
    /// The container group's name (default `confsum`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    /// The workload's image reference. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_image: Option<String>,
    /// The workload container's name (default `app`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    /// The workload's command (default: the image's entry point and cmd).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_command: Vec<String>,
    /// The workload's environment, `NAME=VALUE`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_env: Vec<String>,
    /// TCP ports of the workload to expose on a public IP address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_ports: Vec<u16>,
    /// CPUs for the workload (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_cpu: Option<f64>,
    /// Memory for the workload in GB (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_memory_gb: Option<f64>,
    /// The encfs sidecar's image (default [`DEFAULT_SIDECAR_IMAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_image: Option<String>,
    /// The blob URL of the owner's encrypted image. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_url: Option<String>,
    /// Whether reading the blob needs the managed identity (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_private: Option<bool>,
    /// Mount the image read-write (needs a page blob; default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_write: Option<bool>,
    /// Where the plaintext file system appears in both containers (default
    /// `/mnt/remote/share`; the shared volume is its parent directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_point: Option<String>,
    /// The key's name in the Managed HSM. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// `oct-HSM` (default) or `RSA-HSM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_type: Option<String>,
    /// HKDF salt, hex (`RSA-HSM` keys only, and then required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_derivation_salt: Option<String>,
    /// HKDF label (`RSA-HSM` keys only; default `Symmetric Encryption Key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_derivation_label: Option<String>,
    /// The Managed HSM (or key vault) host name. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsm: Option<String>,
    /// The attestation service's host name. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maa: Option<String>,
    /// Resource id of the user-assigned managed identity that may read the
    /// blob and release the key. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// A registry server to pull the images from with that identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
}

impl DeploySettings {
    /// Reads a settings file (JSON).
    ///
    /// # Errors
    ///
    /// [`Error::Json`] naming the bad or unknown key.
    pub fn decode(json: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(json).map_err(Error::json("deployment settings"))
    }

    /// These settings, with each one that is unset taken from `fallback`
    /// (flags over a settings file).
    #[must_use]
    pub fn or(self, fallback: DeploySettings) -> DeploySettings {
        fn list<T>(a: Vec<T>, b: Vec<T>) -> Vec<T> {
            if a.is_empty() { b } else { a }
        }
        DeploySettings {
            group_name: self.group_name.or(fallback.group_name),
            app_image: self.app_image.or(fallback.app_image),
            app_name: self.app_name.or(fallback.app_name),
            app_command: list(self.app_command, fallback.app_command),
            app_env: list(self.app_env, fallback.app_env),
            app_ports: list(self.app_ports, fallback.app_ports),
            app_cpu: self.app_cpu.or(fallback.app_cpu),
            app_memory_gb: self.app_memory_gb.or(fallback.app_memory_gb),
            sidecar_image: self.sidecar_image.or(fallback.sidecar_image),
            blob_url: self.blob_url.or(fallback.blob_url),
            blob_private: self.blob_private.or(fallback.blob_private),
            read_write: self.read_write.or(fallback.read_write),
            mount_point: self.mount_point.or(fallback.mount_point),
            key_name: self.key_name.or(fallback.key_name),
            key_type: self.key_type.or(fallback.key_type),
            key_derivation_salt: self.key_derivation_salt.or(fallback.key_derivation_salt),
            key_derivation_label: self.key_derivation_label.or(fallback.key_derivation_label),
            hsm: self.hsm.or(fallback.hsm),
            maa: self.maa.or(fallback.maa),
            identity: self.identity.or(fallback.identity),
            registry: self.registry.or(fallback.registry),
        }
    }
}

/// What is wrong with a deployment's settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeployProblem {
    /// Required settings that have no value (their field names).
    #[error("missing settings: {}", .0.join(", "))]
    Missing(Vec<&'static str>),
    /// Settings that still hold a `<placeholder>` (their field names).
    #[error("settings still holding a <placeholder>: {}", .0.join(", "))]
    Placeholder(Vec<&'static str>),
    /// A setting's value cannot be used.
    #[error("setting {setting}: {reason}")]
    Invalid {
        /// The field name.
        setting: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A file made from the settings still has a `<placeholder>` at these
    /// JSON paths.
    #[error("{file} still has placeholders at {}", .paths.join(", "))]
    PlaceholdersLeft {
        /// Which file.
        file: &'static str,
        /// Where.
        paths: Vec<String>,
    },
    /// A template to check is not an ARM template with one container group.
    #[error("the template must have exactly one container group, found {found}")]
    ContainerGroups {
        /// How many there are.
        found: usize,
    },
}

impl From<DeployProblem> for Error {
    fn from(p: DeployProblem) -> Self {
        Error::Deploy(p)
    }
}

/// Complete, checked settings: what [`AzureDeployment`] writes from.
///
/// ```
/// use confsum_skr::{AzureDeployment, DeploySettings, check_deployment};
///
/// let mut settings = DeploySettings::default();
/// settings.app_image = Some("myregistry.azurecr.io/summarizer:1.0".into());
/// settings.blob_url = Some("https://acct.blob.core.windows.net/c/encfs.img".into());
/// settings.key_name = Some("doc-key".into());
/// settings.hsm = Some("myhsm.managedhsm.azure.net".into());
/// settings.maa = Some("sharedeus.eus.attest.azure.net".into());
/// settings.identity = Some("/subscriptions/0/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id".into());
/// let deployment = AzureDeployment::new(&settings)?;
/// let template = deployment.template(); // ccePolicy is still empty here
/// let host_data = "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20";
/// let import = deployment.import_key_config(host_data)?;
/// let findings = check_deployment(
///     &template,
///     Some(host_data),
///     &import,
///     &deployment.sidecar_args(),
///     &settings,
/// )?;
/// assert!(findings.is_empty(), "{findings:?}");
/// # Ok::<(), confsum_skr::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AzureDeployment {
    group_name: String,
    app_image: String,
    app_name: String,
    app_command: Vec<String>,
    app_env: Vec<(String, String)>,
    app_ports: Vec<u16>,
    app_cpu: f64,
    app_memory_gb: f64,
    sidecar_image: String,
    blob_url: String,
    blob_private: bool,
    read_write: bool,
    mount_point: String,
    volume_path: String,
    key_name: String,
    key_type: String,
    key_derivation: Option<KeyDerivation>,
    hsm: String,
    maa: String,
    identity: String,
    registry: Option<String>,
}

fn invalid(setting: &'static str, reason: &'static str) -> Error {
    DeployProblem::Invalid { setting, reason }.into()
}

fn is_placeholder(s: &str) -> bool {
    let t = s.trim();
    t.len() >= 2 && t.starts_with('<') && t.ends_with('>')
}

/// A host name given with or without `https://` and a final `/`.
fn host(setting: &'static str, value: &str) -> Result<String, Error> {
    let v = value.trim();
    let v = v.strip_prefix("https://").unwrap_or(v);
    let v = v.strip_suffix('/').unwrap_or(v);
    if v.is_empty()
        || v.contains("://")
        || v.contains('/')
        || v.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            setting,
            "expected a host name such as myhsm.managedhsm.azure.net (https:// is optional)",
        ));
    }
    Ok(v.to_owned())
}

impl AzureDeployment {
    /// Checks `settings` and fills in the defaults.
    ///
    /// # Errors
    ///
    /// [`Error::Deploy`]: [`DeployProblem::Missing`] lists every required
    /// setting without a value at once; [`DeployProblem::Placeholder`] every
    /// one still holding a `<placeholder>`; [`DeployProblem::Invalid`] the
    /// first value that cannot be used.
    pub fn new(settings: &DeploySettings) -> Result<Self, Error> {
        let s = settings;
        let required: [(&'static str, &Option<String>); 6] = [
            ("app_image", &s.app_image),
            ("blob_url", &s.blob_url),
            ("key_name", &s.key_name),
            ("hsm", &s.hsm),
            ("maa", &s.maa),
            ("identity", &s.identity),
        ];
        let missing: Vec<&'static str> = required
            .iter()
            .filter(|(_, v)| v.as_deref().is_none_or(|v| v.trim().is_empty()))
            .map(|(name, _)| *name)
            .collect();
        if !missing.is_empty() {
            return Err(DeployProblem::Missing(missing).into());
        }
        let optional: [(&'static str, &Option<String>); 8] = [
            ("group_name", &s.group_name),
            ("app_name", &s.app_name),
            ("sidecar_image", &s.sidecar_image),
            ("mount_point", &s.mount_point),
            ("key_type", &s.key_type),
            ("key_derivation_salt", &s.key_derivation_salt),
            ("key_derivation_label", &s.key_derivation_label),
            ("registry", &s.registry),
        ];
        let mut placeholders: Vec<&'static str> = required
            .iter()
            .chain(optional.iter())
            .filter(|(_, v)| v.as_deref().is_some_and(is_placeholder))
            .map(|(name, _)| *name)
            .collect();
        if s.app_command.iter().any(|c| is_placeholder(c)) {
            placeholders.push("app_command");
        }
        if s.app_env.iter().any(|e| {
            e.split_once('=')
                .is_some_and(|(n, v)| is_placeholder(n) || is_placeholder(v))
        }) {
            placeholders.push("app_env");
        }
        if !placeholders.is_empty() {
            return Err(DeployProblem::Placeholder(placeholders).into());
        }
        let text = |v: &Option<String>| v.as_deref().unwrap_or_default().trim().to_owned();

        let blob_url = text(&s.blob_url);
        if !(blob_url.starts_with("https://") || blob_url.starts_with("http://")) {
            return Err(invalid("blob_url", "expected an https:// URL of a blob"));
        }
        let key_name = text(&s.key_name);
        // Key Vault object names: 1-127 letters, digits and dashes.
        if key_name.len() > 127
            || !key_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(invalid(
                "key_name",
                "a key name is 1-127 letters, digits and dashes",
            ));
        }
        let key_type = s.key_type.clone().unwrap_or_else(|| "oct-HSM".to_owned());
        let key_derivation = match key_type.as_str() {
            "oct-HSM" => {
                if s.key_derivation_salt.is_some() || s.key_derivation_label.is_some() {
                    return Err(invalid(
                        "key_derivation_salt",
                        "key derivation applies to RSA-HSM keys only",
                    ));
                }
                None
            }
            "RSA-HSM" => {
                let salt = text(&s.key_derivation_salt);
                if salt.is_empty() {
                    return Err(DeployProblem::Missing(vec!["key_derivation_salt"]).into());
                }
                if hex::decode(&salt).is_err() {
                    return Err(invalid("key_derivation_salt", "expected hex"));
                }
                Some(KeyDerivation {
                    salt,
                    label: s.key_derivation_label.clone().unwrap_or_default(),
                })
            }
            _ => return Err(invalid("key_type", "expected oct-HSM or RSA-HSM")),
        };
        let identity = text(&s.identity);
        if !(identity.starts_with("/subscriptions/") || identity.starts_with('[')) {
            return Err(invalid(
                "identity",
                "expected the resource id of a user-assigned managed identity (/subscriptions/...)",
            ));
        }
        let mount_point = s
            .mount_point
            .clone()
            .unwrap_or_else(|| DEFAULT_MOUNT_POINT.to_owned());
        let volume_path = match mount_point.rsplit_once('/') {
            Some((parent, name))
                if parent.starts_with('/') && parent.len() > 1 && !name.is_empty() =>
            {
                parent.to_owned()
            }
            _ => {
                return Err(invalid(
                    "mount_point",
                    "expected an absolute path two levels deep or more, such as /mnt/remote/share",
                ));
            }
        };
        let app_env = s
            .app_env
            .iter()
            .map(|e| match e.split_once('=') {
                Some((n, v)) if !n.is_empty() => Ok((n.to_owned(), v.to_owned())),
                _ => Err(invalid("app_env", "expected NAME=VALUE")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if app_env.iter().any(|(n, _)| n == SIDECAR_ARGS_ENV) {
            return Err(invalid(
                "app_env",
                "EncfsSideCarArgs belongs to the sidecar",
            ));
        }
        let positive = |setting: &'static str, v: Option<f64>, default: f64| match v {
            None => Ok(default),
            Some(x) if x.is_finite() && x > 0.0 => Ok(x),
            Some(_) => Err(invalid(setting, "expected a positive number")),
        };
        let app_name = s
            .app_name
            .clone()
            .unwrap_or_else(|| DEFAULT_APP_NAME.to_owned());
        if app_name == SIDECAR_CONTAINER_NAME {
            return Err(invalid("app_name", "that is the sidecar's name"));
        }
        Ok(AzureDeployment {
            group_name: s
                .group_name
                .clone()
                .unwrap_or_else(|| DEFAULT_GROUP_NAME.to_owned()),
            app_image: text(&s.app_image),
            app_name,
            app_command: s.app_command.clone(),
            app_env,
            app_ports: s.app_ports.clone(),
            app_cpu: positive("app_cpu", s.app_cpu, 1.0)?,
            app_memory_gb: positive("app_memory_gb", s.app_memory_gb, 2.0)?,
            sidecar_image: s
                .sidecar_image
                .clone()
                .unwrap_or_else(|| DEFAULT_SIDECAR_IMAGE.to_owned()),
            blob_url,
            blob_private: s.blob_private.unwrap_or(true),
            read_write: s.read_write.unwrap_or(false),
            mount_point,
            volume_path,
            key_name,
            key_type,
            key_derivation,
            hsm: host("hsm", &text(&s.hsm))?,
            maa: host("maa", &text(&s.maa))?,
            identity,
            registry: s.registry.as_deref().map(str::trim).map(str::to_owned),
        })
    }

    /// The image references the policy needs: the workload's, then the
    /// sidecar's.
    pub fn images(&self) -> [&str; 2] {
        [&self.app_image, &self.sidecar_image]
    }

    /// The key's name.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The HSM's host name.
    pub fn hsm(&self) -> &str {
        &self.hsm
    }

    fn key_blob(&self, with_api_version: bool) -> KeyBlob {
        KeyBlob {
            kid: self.key_name.clone(),
            kty: Some(self.key_type.clone()),
            key_ops: Vec::new(),
            authority: Authority {
                endpoint: self.maa.clone(),
                tee_type: None,
                api_version: None,
            },
            akv: Akv {
                endpoint: self.hsm.clone(),
                api_version: with_api_version.then(|| KEY_VAULT_API_VERSION.to_owned()),
                bearer_token: None,
            },
        }
    }

    /// `encfs-sidecar-args.json`: the owner's image, mounted at the mount
    /// point, opened with the key released from the HSM.
    pub fn sidecar_args(&self) -> SidecarArgs {
        SidecarArgs {
            azure_info: None,
            azure_filesystems: vec![AzureFilesystem {
                mount_point: self.mount_point.clone(),
                azure_url: self.blob_url.clone(),
                azure_url_private: self.blob_private,
                read_write: self.read_write,
                key: self.key_blob(false),
                key_derivation: self.key_derivation.clone(),
                raw_key: None,
            }],
        }
    }

    /// `importkeyconfig.json` for a workload whose policy hashes to
    /// `host_data`: the recipe's four claims, and no bearer token (the
    /// import tool needs one; confsum never writes it into a file).
    ///
    /// # Errors
    ///
    /// [`DeployProblem::Invalid`] unless `host_data` is 64 hex digits.
    pub fn import_key_config(&self, host_data: &str) -> Result<ImportKeyConfig, Error> {
        if host_data.len() != 64 || !host_data.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid("host_data", "expected 64 hex digits"));
        }
        Ok(ImportKeyConfig {
            key: self.key_blob(true),
            key_derivation: self.key_derivation.clone(),
            claims: vec![vec![
                ClaimCondition::equals(HOST_DATA_CLAIM, host_data.to_ascii_lowercase().as_str()),
                ClaimCondition::equals("x-ms-compliance-status", "azure-compliant-uvm"),
                ClaimCondition::equals("x-ms-sevsnpvm-is-debuggable", "false"),
                ClaimCondition::equals("x-ms-sevsnpvm-vmpl", "0"),
            ]],
            identity: None,
        })
    }

    /// The ARM template: one Confidential container group with the
    /// workload, the encfs sidecar (privileged, its arguments in base64)
    /// and an emptyDir volume both mount. `ccePolicy` is empty: fill it in
    /// with the policy generated from this very text.
    pub fn template(&self) -> String {
        let volume_mounts = json!([{"name": VOLUME_NAME, "mountPath": self.volume_path}]);
        let mut app = json!({
            "image": self.app_image,
            "resources": {"requests": {"cpu": self.app_cpu, "memoryInGb": self.app_memory_gb}},
            "volumeMounts": volume_mounts,
        });
        if !self.app_command.is_empty() {
            app["command"] = json!(self.app_command);
        }
        if !self.app_env.is_empty() {
            app["environmentVariables"] = self
                .app_env
                .iter()
                .map(|(n, v)| json!({"name": n, "value": v}))
                .collect();
        }
        if !self.app_ports.is_empty() {
            app["ports"] = self.app_ports.iter().map(|p| json!({"port": p})).collect();
        }
        let sidecar = json!({
            "image": self.sidecar_image,
            "command": ["/encfs.sh"],
            "environmentVariables": [
                {"name": SIDECAR_ARGS_ENV, "value": self.sidecar_args().to_base64()},
            ],
            "securityContext": {"privileged": true},
            "resources": {"requests": {"cpu": 1, "memoryInGb": 2}},
            "volumeMounts": volume_mounts,
        });
        let mut properties = json!({
            "containers": [
                {"name": self.app_name, "properties": app},
                {"name": SIDECAR_CONTAINER_NAME, "properties": sidecar},
            ],
            "osType": "Linux",
            "sku": "Confidential",
            "confidentialComputeProperties": {"ccePolicy": ""},
            "volumes": [{"name": VOLUME_NAME, "emptyDir": {}}],
        });
        if !self.app_ports.is_empty() {
            properties["ipAddress"] = json!({
                "type": "Public",
                "ports": self.app_ports.iter().map(|p| json!({"protocol": "TCP", "port": p})).collect::<Vec<_>>(),
            });
        }
        if let Some(server) = &self.registry {
            properties["imageRegistryCredentials"] =
                json!([{"server": server, "identity": self.identity}]);
        }
        let mut identities = serde_json::Map::new();
        identities.insert(self.identity.clone(), json!({}));
        let template = json!({
            "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
            "contentVersion": "1.0.0.0",
            "resources": [{
                "type": CONTAINER_GROUPS,
                "apiVersion": "2023-05-01",
                "name": self.group_name,
                "location": "[resourceGroup().location]",
                "identity": {"type": "UserAssigned", "userAssignedIdentities": identities},
                "properties": properties,
            }],
        });
        let mut text = serde_json::to_string_pretty(&template).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// The JSON paths of string values that look like `<placeholder>`.
pub fn find_placeholders(value: &Value) -> Vec<String> {
    fn walk(v: &Value, at: &str, out: &mut Vec<String>) {
        match v {
            Value::String(s) if is_placeholder(s) => out.push(at.to_owned()),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, &format!("{at}[{i}]"), out);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    if is_placeholder(k) {
                        out.push(format!("{at}.{k}"));
                    }
                    walk(item, &format!("{at}.{k}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, "$", &mut out);
    out
}

/// A field of the key that the sidecar and the import config must agree
/// on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyField {
    /// `kid`, the key's name.
    Name,
    /// `kty`.
    Type,
    /// `authority.endpoint`, the attestation service.
    Authority,
    /// `akv.endpoint`, the HSM.
    Vault,
}

impl fmt::Display for KeyField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyField::Name => "key name (kid)",
            KeyField::Type => "key type (kty)",
            KeyField::Authority => "attestation service (authority.endpoint)",
            KeyField::Vault => "HSM (akv.endpoint)",
        })
    }
}

/// One thing [`check_deployment`] found wrong. Each would make the
/// deployment fail at start-up, most of them with a 403 from the HSM.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Mismatch {
    /// The template has no `ccePolicy`.
    NoCcePolicy,
    /// The template's policy hashes to `template`, but the import config
    /// releases the key to other host_data.
    HostData {
        /// SHA-256 of the template's policy.
        template: String,
        /// The host_data values the import config pins (none if none).
        import_config: Vec<String>,
    },
    /// A branch of the import config's claims does not pin host_data: any
    /// workload on any policy satisfying it gets the key.
    HostDataNotPinned {
        /// The branch.
        branch: usize,
    },
    /// No container of the template sets `EncfsSideCarArgs`.
    NoSidecarArgs,
    /// The template's `EncfsSideCarArgs` do not decode.
    BadSidecarArgs,
    /// The template's `EncfsSideCarArgs` are not `encfs-sidecar-args.json`.
    SidecarArgsDiffer,
    /// A file system's key is not the imported key.
    Key {
        /// Which file system of the sidecar arguments.
        filesystem: usize,
        /// Which field.
        field: KeyField,
        /// The sidecar's value.
        sidecar: String,
        /// The import config's value.
        import_config: String,
    },
    /// A value is not what the owner gave.
    NotExpected {
        /// The setting (field name of [`DeploySettings`]).
        setting: &'static str,
        /// Which file has it.
        file: &'static str,
        /// What the owner gave.
        expected: String,
        /// What the file has.
        found: String,
    },
    /// The container group is not on the Confidential SKU.
    NotConfidential {
        /// Its `sku`, if any.
        sku: Option<String>,
    },
    /// A `<placeholder>` is left.
    Placeholders {
        /// Which file.
        file: &'static str,
        /// Where (JSON paths).
        paths: Vec<String>,
    },
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mismatch::NoCcePolicy => f.write_str(
                "the template has no ccePolicy: Azure would start the group with an allow-all \
                 policy, whose host_data the key's release policy does not pin",
            ),
            Mismatch::HostData {
                template,
                import_config,
            } => {
                let pinned = if import_config.is_empty() {
                    "none".to_owned()
                } else {
                    import_config.join(", ")
                };
                write!(
                    f,
                    "host_data differs: the template's ccePolicy hashes to {template}, but \
                     importkeyconfig.json releases the key to {pinned}; the HSM would answer 403 \
                     (re-import the key with this importkeyconfig.json, or regenerate both)"
                )
            }
            Mismatch::HostDataNotPinned { branch } => write!(
                f,
                "claims branch {branch} of importkeyconfig.json does not pin {HOST_DATA_CLAIM}: \
                 any workload would get the key"
            ),
            Mismatch::NoSidecarArgs => {
                write!(f, "no container of the template sets {SIDECAR_ARGS_ENV}")
            }
            Mismatch::BadSidecarArgs => write!(
                f,
                "the template's {SIDECAR_ARGS_ENV} is not base64 of valid sidecar arguments"
            ),
            Mismatch::SidecarArgsDiffer => write!(
                f,
                "the template's {SIDECAR_ARGS_ENV} differ from encfs-sidecar-args.json"
            ),
            Mismatch::Key {
                filesystem,
                field,
                sidecar,
                import_config,
            } => write!(
                f,
                "{field} differs: the sidecar's file system {filesystem} uses {sidecar:?}, \
                 importkeyconfig.json imports {import_config:?}"
            ),
            Mismatch::NotExpected {
                setting,
                file,
                expected,
                found,
            } => write!(f, "{file} has {setting} {found:?}, expected {expected:?}"),
            Mismatch::NotConfidential { sku } => write!(
                f,
                "the container group's sku is {}, not Confidential: there is no attestation \
                 and no key release",
                sku.as_deref().unwrap_or("unset")
            ),
            Mismatch::Placeholders { file, paths } => {
                write!(f, "{file} still has placeholders at {}", paths.join(", "))
            }
        }
    }
}

/// The `EncfsSideCarArgs` values of a template's container group, and its
/// `sku`.
fn group_facts(template: &Value) -> Result<(Vec<String>, Option<String>), Error> {
    let groups: Vec<&Value> = template
        .get("resources")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter(|g| g.get("type").and_then(Value::as_str) == Some(CONTAINER_GROUPS))
                .collect()
        })
        .unwrap_or_default();
    let [group] = groups.as_slice() else {
        return Err(DeployProblem::ContainerGroups {
            found: groups.len(),
        }
        .into());
    };
    let props = group.get("properties");
    let sku = props
        .and_then(|p| p.get("sku"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut args = Vec::new();
    let containers = props
        .and_then(|p| p.get("containers"))
        .and_then(Value::as_array);
    for c in containers.into_iter().flatten() {
        let env = c
            .get("properties")
            .and_then(|p| p.get("environmentVariables"))
            .and_then(Value::as_array);
        for e in env.into_iter().flatten() {
            if e.get("name").and_then(Value::as_str) == Some(SIDECAR_ARGS_ENV) {
                let value = e
                    .get("value")
                    .or_else(|| e.get("secureValue"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                args.push(value.to_owned());
            }
        }
    }
    Ok((args, sku))
}

/// Checks that three deployment files agree with each other and with what
/// the owner imported:
///
/// - the template's policy (its SHA-256 is `policy_host_data`, `None` when
///   it has no `ccePolicy`) is the one every claims branch of `import`
///   pins;
/// - the template's `EncfsSideCarArgs` are `sidecar`, and every file
///   system's key is the imported key, in the same HSM, released on the
///   same attestation service's tokens;
/// - the group is on the Confidential SKU, and no `<placeholder>` is left;
/// - `expected` (the owner's settings; unset ones are not checked): key
///   name and type, HSM, attestation service and blob URL.
///
/// Returns everything found; empty means all agree.
///
/// # Errors
///
/// [`Error::Json`] if the template is not JSON, and
/// [`DeployProblem::ContainerGroups`] unless it has one container group.
pub fn check_deployment(
    template: &str,
    policy_host_data: Option<&str>,
    import: &ImportKeyConfig,
    sidecar: &SidecarArgs,
    expected: &DeploySettings,
) -> Result<Vec<Mismatch>, Error> {
    let template: Value = serde_json::from_str(template).map_err(Error::json("ARM template"))?;
    let (args, sku) = group_facts(&template)?;
    let mut found = Vec::new();

    for (file, value) in [
        ("the template", template.clone()),
        (
            "importkeyconfig.json",
            serde_json::to_value(import).unwrap_or_default(),
        ),
        (
            "encfs-sidecar-args.json",
            serde_json::to_value(sidecar).unwrap_or_default(),
        ),
    ] {
        let paths = find_placeholders(&value);
        if !paths.is_empty() {
            found.push(Mismatch::Placeholders { file, paths });
        }
    }
    if !sku
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("confidential"))
    {
        found.push(Mismatch::NotConfidential { sku });
    }

    // host_data: every branch must pin the template's policy.
    let pinned: Vec<String> = import
        .claims
        .iter()
        .flatten()
        .filter(|c| c.claim == HOST_DATA_CLAIM && c.operator == Operator::Equals)
        .filter_map(|c| match &c.value {
            ClaimValue::String(s) => Some(s.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    for (branch, list) in import.claims.iter().enumerate() {
        let pins = list
            .iter()
            .any(|c| c.claim == HOST_DATA_CLAIM && c.operator == Operator::Equals);
        if !pins {
            found.push(Mismatch::HostDataNotPinned { branch });
        }
    }
    match policy_host_data {
        None => found.push(Mismatch::NoCcePolicy),
        Some(h) => {
            let h = h.to_ascii_lowercase();
            if !pinned.contains(&h) {
                found.push(Mismatch::HostData {
                    template: h,
                    import_config: pinned,
                });
            }
        }
    }

    // The sidecar's arguments, in the template and on disk.
    match args.as_slice() {
        [] => found.push(Mismatch::NoSidecarArgs),
        list => {
            for b64 in list {
                match SidecarArgs::from_base64(b64) {
                    Ok(a) if &a == sidecar => {}
                    Ok(_) => found.push(Mismatch::SidecarArgsDiffer),
                    Err(_) => found.push(Mismatch::BadSidecarArgs),
                }
            }
        }
    }
    let key = &import.key;
    for (i, fs) in sidecar.azure_filesystems.iter().enumerate() {
        let kty = |k: &KeyBlob| k.kty.clone().unwrap_or_else(|| "oct-HSM".to_owned());
        let pairs = [
            (KeyField::Name, fs.key.kid.clone(), key.kid.clone()),
            (KeyField::Type, kty(&fs.key), kty(key)),
            (
                KeyField::Authority,
                fs.key.authority.endpoint.clone(),
                key.authority.endpoint.clone(),
            ),
            (
                KeyField::Vault,
                fs.key.akv.endpoint.clone(),
                key.akv.endpoint.clone(),
            ),
        ];
        for (field, sidecar, import_config) in pairs {
            if sidecar != import_config {
                found.push(Mismatch::Key {
                    filesystem: i,
                    field,
                    sidecar,
                    import_config,
                });
            }
        }
    }

    // What the owner says they imported.
    let mut expect =
        |setting: &'static str, file: &'static str, want: Option<String>, have: &str| {
            if let Some(want) = want {
                if want != have {
                    found.push(Mismatch::NotExpected {
                        setting,
                        file,
                        expected: want,
                        found: have.to_owned(),
                    });
                }
            }
        };
    let norm = |setting: &'static str, v: &Option<String>| {
        v.as_deref()
            .map(|v| host(setting, v).unwrap_or_else(|_| v.to_owned()))
    };
    let ikc = "importkeyconfig.json";
    expect("key_name", ikc, expected.key_name.clone(), &key.kid);
    expect(
        "key_type",
        ikc,
        expected.key_type.clone(),
        key.kty.as_deref().unwrap_or("oct-HSM"),
    );
    expect("hsm", ikc, norm("hsm", &expected.hsm), &key.akv.endpoint);
    expect(
        "maa",
        ikc,
        norm("maa", &expected.maa),
        &key.authority.endpoint,
    );
    for fs in &sidecar.azure_filesystems {
        expect(
            "blob_url",
            "encfs-sidecar-args.json",
            expected.blob_url.clone(),
            &fs.azure_url,
        );
    }
    Ok(found)
}
