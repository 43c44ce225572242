//! Container images: their config and layers, from a `docker save`
//! archive (both layouts), an OCI image layout (directory or tar), or a
//! registry, all giving the same [`Image`].

pub(crate) mod archive;
pub(crate) mod cache;
pub(crate) mod hash;
#[cfg(feature = "registry")]
pub(crate) mod registry;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{Document, Error, ImageError};

/// The parts of an image config that a policy uses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ImageConfig {
    /// `architecture` (confcom refuses anything but `amd64`).
    pub architecture: Option<String>,
    /// `config.Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `config.Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `config.Env`, `NAME=value` each.
    pub env: Vec<String>,
    /// `config.WorkingDir`.
    pub working_dir: Option<String>,
    /// `config.User`.
    pub user: Option<String>,
    /// `config.StopSignal`.
    pub stop_signal: Option<String>,
    /// `rootfs.diff_ids`: SHA-256 of each uncompressed layer, base first.
    pub diff_ids: Vec<String>,
}

impl ImageConfig {
    /// Parses an image config (the JSON blob a manifest's `config` points to).
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, Error> {
        let v: Value = serde_json::from_slice(bytes).map_err(|source| Error::Json {
            what: Document::ImageConfig,
            source,
        })?;
        let bad = |reason: &str| Error::Image {
            reference: "config".into(),
            kind: ImageError::BadManifest {
                reason: format!("image config: {reason}"),
            },
        };
        if !v.is_object() {
            return Err(bad("not an object"));
        }
        let cfg = v.get("config").or_else(|| v.get("Config")).cloned();
        let cfg = cfg.unwrap_or(Value::Null);
        let strings = |key: &str| -> Result<Option<Vec<String>>, Error> {
            match cfg.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|s| {
                        s.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| bad(&format!("{key} holds a non-string")))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(_) => Err(bad(&format!("{key} is not a list"))),
            }
        };
        let string = |key: &str| -> Result<Option<String>, Error> {
            match cfg.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(bad(&format!("{key} is not a string"))),
            }
        };
        let diff_ids = match v.get("rootfs").and_then(|r| r.get("diff_ids")) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|d| {
                    d.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| bad("diff_ids holds a non-string"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(bad("rootfs.diff_ids is not a list")),
        };
        Ok(ImageConfig {
            architecture: v
                .get("architecture")
                .and_then(Value::as_str)
                .map(str::to_owned),
            entrypoint: strings("Entrypoint")?,
            cmd: strings("Cmd")?,
            env: strings("Env")?.unwrap_or_default(),
            working_dir: string("WorkingDir")?,
            user: string("User")?,
            stop_signal: string("StopSignal")?,
            diff_ids,
        })
    }
}

/// An image whose config is read and whose layers are located, not yet hashed.
#[derive(Debug, Clone)]
pub struct Image {
    /// The reference it was looked up by.
    pub reference: String,
    /// Its config.
    pub config: ImageConfig,
    /// Its layers, base first.
    pub(crate) layers: Vec<LayerRef>,
}

impl Image {
    /// Digests of the stored layer blobs, base first (as the manifest gives them).
    pub fn layer_digests(&self) -> Vec<&str> {
        self.layers.iter().map(|l| l.digest.as_str()).collect()
    }
}

/// Where a layer's stored bytes are, and the digest they must have.
#[derive(Debug, Clone)]
pub(crate) struct LayerRef {
    /// `sha256:<hex>` of the stored (possibly compressed) bytes.
    pub(crate) digest: String,
    /// Stored size, when known.
    pub(crate) size: Option<u64>,
    pub(crate) location: Location,
}

#[derive(Debug, Clone)]
pub(crate) enum Location {
    /// A byte range of a tar file.
    Range {
        path: Arc<PathBuf>,
        offset: u64,
        len: u64,
    },
    /// A whole file.
    File(PathBuf),
    /// A registry blob.
    #[cfg(feature = "registry")]
    Registry(Arc<registry::Remote>),
}

/// Where to find one image.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageSource {
    /// A `docker save` archive, or an OCI image layout as a directory or a tar.
    Local(PathBuf),
    /// A registry (the reference names it).
    Registry,
}

/// Checks `sha256:<64 lowercase hex>` and returns the hex part.
pub(crate) fn digest_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(hex)
}

/// The forms of one image name that docker and containerd write in archives:
/// `x` is `x:latest`, `docker.io/library/x` is `x`.
pub(crate) fn normalize_reference(reference: &str) -> String {
    let mut r = reference.to_owned();
    for prefix in [
        "docker.io/library/",
        "docker.io/",
        "index.docker.io/library/",
    ] {
        if let Some(rest) = r.strip_prefix(prefix) {
            r = rest.to_owned();
            break;
        }
    }
    if let Some(rest) = r.strip_prefix("library/") {
        r = rest.to_owned();
    }
    let last = r.rsplit('/').next().unwrap_or("");
    if !last.contains(':') && !r.contains('@') {
        r.push_str(":latest");
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalize() {
        for (a, b) in [
            ("nginx", "nginx:latest"),
            ("docker.io/library/nginx:1", "nginx:1"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            ("confsum/oracle:v1", "confsum/oracle:v1"),
        ] {
            assert_eq!(normalize_reference(a), b);
        }
    }

    #[test]
    fn config_parse_rejects_wrong_types() {
        assert!(ImageConfig::parse(br#"{"config":{"Cmd":"x"}}"#).is_err());
        assert!(ImageConfig::parse(b"[]").is_err());
        assert!(ImageConfig::parse(b"{").is_err());
        let c = ImageConfig::parse(br#"{"architecture":"amd64","config":{"Cmd":null,"Env":["A=1"]},"rootfs":{"diff_ids":["sha256:00"]}}"#).unwrap();
        assert_eq!(c.env, vec!["A=1"]);
        assert_eq!(c.cmd, None);
    }

    #[test]
    fn digests_are_checked() {
        assert!(digest_hex(&format!("sha256:{}", "a".repeat(64))).is_some());
        assert!(digest_hex("sha256:../../etc/passwd").is_none());
        assert!(digest_hex(&format!("sha512:{}", "a".repeat(64))).is_none());
        assert!(digest_hex(&format!("sha256:{}", "A".repeat(64))).is_none());
    }
}
