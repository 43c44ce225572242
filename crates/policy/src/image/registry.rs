//! Registry input through `oci-client`: anonymous, basic or bearer auth,
//! credentials from Docker's `config.json`, plain HTTP only for hosts the
//! caller names as insecure.
//!
//! Only the manifest and config are fetched up front. Layer blobs are
//! downloaded (concurrently, to temporary files) only when their root hash
//! is not cached, and their bytes are checked against the manifest digest
//! while they are hashed, like local layers.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::cache::LayerCache;
use super::hash::{Progress, ProgressEvent, emit};
use super::{Image, ImageConfig, LayerRef, Location};
use crate::error::{CredentialsError, Error, ImageError};

/// How to reach registries.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct RegistryOptions {
    /// Hosts (`host` or `host:port`, as in the reference) reached over plain HTTP.
    pub insecure_hosts: Vec<String>,
    /// Credentials for every registry, instead of Docker's config file.
    pub credentials: Option<Credentials>,
    /// Docker's `config.json`; default `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`.
    pub docker_config: Option<PathBuf>,
}

impl fmt::Debug for RegistryOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryOptions")
            .field("insecure_hosts", &self.insecure_hosts)
            .field("credentials", &self.credentials)
            .field("docker_config", &self.docker_config)
            .finish()
    }
}

/// Registry credentials. `Debug` never shows secrets.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Credentials {
    /// No credentials.
    Anonymous,
    /// HTTP basic auth (also exchanged for a bearer token when the registry asks).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// A bearer token.
    Bearer(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

impl Credentials {
    fn to_auth(&self) -> RegistryAuth {
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::Bearer(t) => RegistryAuth::Bearer(t.clone()),
        }
    }
}

/// One layer blob in a registry.
pub(crate) struct Remote {
    shared: Arc<Shared>,
    descriptor: OciDescriptor,
}

struct Shared {
    client: Client,
    reference: Reference,
    runtime: tokio::runtime::Runtime,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Remote({}@{})",
            self.shared.reference, self.descriptor.digest
        )
    }
}

fn registry_error(reference: &str, e: oci_client::errors::OciDistributionError) -> Error {
    Error::Registry {
        reference: reference.to_owned(),
        source: Box::new(e),
    }
}

/// Reads the manifest and config of `reference` from its registry.
pub(crate) fn open_registry(reference: &str, options: &RegistryOptions) -> Result<Image, Error> {
    // reqwest is built without a crypto provider; ring is ours.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let img_err = |kind| Error::Image {
        reference: reference.to_owned(),
        kind,
    };
    let parsed: Reference = reference
        .parse()
        .map_err(|_| img_err(ImageError::BadReference))?;
    let host = parsed.resolve_registry().to_owned();
    let config = ClientConfig {
        protocol: ClientProtocol::HttpsExcept(options.insecure_hosts.clone()),
        platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
        ..ClientConfig::default()
    };
    let client = Client::new(config);
    let auth = match &options.credentials {
        Some(c) => c.to_auth(),
        None => docker_credentials(&host, options.docker_config.as_deref())?.to_auth(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| img_err(ImageError::Read(e)))?;
    let (manifest, _digest, config_json) = runtime
        .block_on(client.pull_manifest_and_config(&parsed, &auth))
        .map_err(|e| registry_error(reference, e))?;
    let config_hex = hex::encode(Sha256::digest(config_json.as_bytes()));
    if format!("sha256:{config_hex}") != manifest.config.digest {
        return Err(img_err(ImageError::DigestMismatch {
            index: usize::MAX,
            expected: manifest.config.digest.clone(),
            actual: format!("sha256:{config_hex}"),
        }));
    }
    let config = ImageConfig::parse(config_json.as_bytes())?;
    let shared = Arc::new(Shared {
        client,
        reference: parsed,
        runtime,
    });
    let layers = manifest
        .layers
        .iter()
        .map(|d| {
            if super::digest_hex(&d.digest).is_none() {
                return Err(img_err(ImageError::BadDigest {
                    digest: d.digest.clone(),
                }));
            }
            Ok(LayerRef {
                digest: d.digest.clone(),
                size: u64::try_from(d.size).ok(),
                location: Location::Registry(Arc::new(Remote {
                    shared: Arc::clone(&shared),
                    descriptor: d.clone(),
                })),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Image {
        reference: reference.to_owned(),
        config,
        layers,
    })
}

/// Layers downloaded for hashing; the files go when this is dropped.
pub(crate) struct Fetched {
    pub(crate) files: Vec<Option<PathBuf>>,
    _dir: Option<tempfile::TempDir>,
}

/// Downloads the registry layers of `image` whose root hash is not cached.
pub(crate) fn fetch_missing(
    image: &Image,
    cache: &LayerCache,
    progress: Option<&Progress>,
) -> Result<Fetched, Error> {
    let wanted: Vec<(usize, &Remote)> = image
        .layers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| match &l.location {
            Location::Registry(r) if cache.root(&l.digest).is_none() => Some((i, r.as_ref())),
            _ => None,
        })
        .collect();
    let mut files = vec![None; image.layers.len()];
    let Some((_, first)) = wanted.first() else {
        return Ok(Fetched { files, _dir: None });
    };
    let io_err = |e: std::io::Error| Error::Image {
        reference: image.reference.clone(),
        kind: ImageError::Read(e),
    };
    let dir = match cache.dir() {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(io_err)?;
            tempfile::Builder::new().prefix(".download").tempdir_in(d)
        }
        None => tempfile::tempdir(),
    }
    .map_err(io_err)?;
    let shared = Arc::clone(&first.shared);
    // Tasks are spawned onto this runtime, so it must be current.
    let _entered = shared.runtime.enter();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, remote) in &wanted {
        let path = dir.path().join(format!("layer{index}"));
        files[*index] = Some(path.clone());
        let client = remote.shared.client.clone();
        let reference = remote.shared.reference.clone();
        let descriptor = remote.descriptor.clone();
        let progress = progress.cloned();
        tasks.spawn(async move {
            let result = download(&client, &reference, &descriptor, &path, progress.as_ref()).await;
            (descriptor.digest, result)
        });
    }
    shared.runtime.block_on(async {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((_, Ok(()))) => {}
                Ok((_, Err(e))) => return Err(e),
                Err(e) => return Err(io_err(std::io::Error::other(e))),
            }
        }
        Ok(())
    })?;
    Ok(Fetched {
        files,
        _dir: Some(dir),
    })
}

async fn download(
    client: &Client,
    reference: &Reference,
    descriptor: &OciDescriptor,
    path: &Path,
    progress: Option<&Progress>,
) -> Result<(), Error> {
    let name = reference.to_string();
    emit(
        progress,
        ProgressEvent::LayerStarted {
            digest: descriptor.digest.clone(),
            size: u64::try_from(descriptor.size).ok(),
        },
    );
    let mut stream = client
        .pull_blob_stream(reference, descriptor)
        .await
        .map_err(|e| registry_error(&name, e))?;
    let io_err = |e: std::io::Error| Error::Io {
        path: path.to_owned(),
        source: e,
    };
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(io_err)?);
    while let Some(chunk) = stream.stream.next().await {
        let chunk = chunk.map_err(|e| Error::Image {
            reference: name.clone(),
            kind: ImageError::Read(e),
        })?;
        file.write_all(&chunk).map_err(io_err)?;
    }
    file.flush().map_err(io_err)?;
    Ok(())
}

/// Credentials for `host` from Docker's `config.json` (`auths` only;
/// credential helpers are not run). Anonymous when there is no entry.
fn docker_credentials(host: &str, explicit: Option<&Path>) -> Result<Credentials, Error> {
    let path = match explicit {
        Some(p) => p.to_owned(),
        None => match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir).join("config.json"),
            None => match std::env::var_os("HOME") {
                Some(home) => PathBuf::from(home).join(".docker").join("config.json"),
                None => return Ok(Credentials::Anonymous),
            },
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            return Ok(Credentials::Anonymous);
        }
        Err(source) => return Err(Error::Io { path, source }),
    };
    credentials_from_config(&text, host).map_err(|reason| Error::Credentials { path, reason })
}

/// The `auths` entry for `host` in a Docker config.
pub(crate) fn credentials_from_config(
    text: &str,
    host: &str,
) -> Result<Credentials, CredentialsError> {
    let v: Value = serde_json::from_str(text).map_err(|_| CredentialsError::NotJson)?;
    let Some(auths) = v.get("auths").and_then(Value::as_object) else {
        return Ok(Credentials::Anonymous);
    };
    let want = canonical_host(host);
    for (key, entry) in auths {
        if canonical_host(key) != want {
            continue;
        }
        if let Some(token) = entry.get("registrytoken").and_then(Value::as_str) {
            return Ok(Credentials::Bearer(token.to_owned()));
        }
        if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
            let bad = || CredentialsError::BadAuth { host: key.clone() };
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad())?;
            let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
            let (user, pass) = decoded.split_once(':').ok_or_else(bad)?;
            return Ok(Credentials::Basic {
                username: user.to_owned(),
                password: pass.to_owned(),
            });
        }
        if let (Some(u), Some(p)) = (
            entry.get("username").and_then(Value::as_str),
            entry.get("password").and_then(Value::as_str),
        ) {
            return Ok(Credentials::Basic {
                username: u.to_owned(),
                password: p.to_owned(),
            });
        }
    }
    Ok(Credentials::Anonymous)
}

/// `https://index.docker.io/v1/` and `docker.io` are the same registry.
fn canonical_host(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let k = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match k.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        _ => k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_auths() {
        let cfg = r#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"dXNlcjpwYXNz"},
            "127.0.0.1:5000":{"username":"u","password":"p:w"},
            "tok.example":{"registrytoken":"T"},
            "bad.example":{"auth":"***"}
        }}"#;
        assert_eq!(
            credentials_from_config(cfg, "index.docker.io").unwrap(),
            Credentials::Basic {
                username: "user".into(),
                password: "pass".into()
            }
        );
        assert_eq!(
            credentials_from_config(cfg, "127.0.0.1:5000").unwrap(),
            Credentials::Basic {
                username: "u".into(),
                password: "p:w".into()
            }
        );
        assert_eq!(
            credentials_from_config(cfg, "tok.example").unwrap(),
            Credentials::Bearer("T".into())
        );
        assert_eq!(
            credentials_from_config(cfg, "other.example").unwrap(),
            Credentials::Anonymous
        );
        assert!(credentials_from_config(cfg, "bad.example").is_err());
        assert!(credentials_from_config("nope", "x").is_err());
        let shown = format!(
            "{:?}",
            credentials_from_config(cfg, "127.0.0.1:5000").unwrap()
        );
        assert!(!shown.contains("p:w"));
    }
}
