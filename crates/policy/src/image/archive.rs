//! Local images: `docker save` archives (the legacy layout and Docker 25's
//! OCI layout with `manifest.json`) and OCI image layouts (a directory or a
//! tar of one).
//!
//! Nothing is extracted. A tar is indexed once (names to byte ranges) and
//! layers are read in place, so a multi-gigabyte archive costs one pass
//! over its headers. Names that climb out of the archive (`..`, absolute
//! paths, or links that do) are refused, and every blob's bytes are checked
//! against its digest: manifests and configs here, layers while hashing.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Image, ImageConfig, LayerRef, Location, digest_hex, normalize_reference};
use crate::error::{Error, ImageError};

/// Manifests and configs larger than this are refused rather than read.
const MAX_METADATA: u64 = 64 << 20;

/// Opens the image `reference` in the archive or layout at `path`.
pub(crate) fn open_local(path: &Path, reference: &str) -> Result<Image, Error> {
    let err = |kind| Error::Image {
        reference: format!("{reference} ({})", path.display()),
        kind,
    };
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let store = if meta.is_dir() {
        Store::Dir(path.to_owned())
    } else {
        Store::Tar(TarIndex::open(path).map_err(err)?)
    };
    open_store(&store, reference).map_err(err)
}

fn open_store(store: &Store, reference: &str) -> Result<Image, ImageError> {
    if store.exists("manifest.json") {
        docker_archive(store, reference)
    } else if store.exists("index.json") {
        oci_layout(store, reference)
    } else {
        Err(ImageError::UnknownFormat)
    }
}

fn bad(reason: impl Into<String>) -> ImageError {
    ImageError::BadManifest {
        reason: reason.into(),
    }
}

fn json(bytes: &[u8], what: &str) -> Result<Value, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| bad(format!("{what}: {e}")))
}

/// `docker save`: `manifest.json` lists Config and Layers as paths.
fn docker_archive(store: &Store, reference: &str) -> Result<Image, ImageError> {
    let manifest = json(&store.read("manifest.json")?, "manifest.json")?;
    let entries = manifest
        .as_array()
        .ok_or_else(|| bad("manifest.json is not a list"))?;
    let tags_of = |e: &Value| -> Vec<String> {
        e.get("RepoTags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    let wanted = normalize_reference(reference);
    let entry = match entries.as_slice() {
        [only] => only,
        _ => entries
            .iter()
            .find(|e| tags_of(e).iter().any(|t| normalize_reference(t) == wanted))
            .ok_or_else(|| ImageError::NotInArchive {
                wanted: reference.to_owned(),
                available: entries.iter().flat_map(tags_of).collect(),
            })?,
    };
    let config_path = entry
        .get("Config")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("manifest.json entry has no Config"))?;
    let config_bytes = store.read(config_path)?;
    // The config's name is its digest (`<hex>.json` or `blobs/sha256/<hex>`).
    let stem = config_path
        .rsplit('/')
        .next()
        .unwrap_or("")
        .trim_end_matches(".json");
    if let Some(expected) = digest_hex(&format!("sha256:{stem}")) {
        check_digest(&config_bytes, expected, usize::MAX)?;
    }
    let config = parse_config(&config_bytes)?;
    let layer_paths: Vec<&str> = entry
        .get("Layers")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("manifest.json entry has no Layers"))?
        .iter()
        .map(|l| {
            l.as_str()
                .ok_or_else(|| bad("a layer path is not a string"))
        })
        .collect::<Result<_, _>>()?;
    if layer_paths.len() != config.diff_ids.len() {
        return Err(ImageError::LayerCount {
            layers: layer_paths.len(),
            diff_ids: config.diff_ids.len(),
        });
    }
    let mut layers = Vec::with_capacity(layer_paths.len());
    for (path, diff_id) in layer_paths.iter().zip(&config.diff_ids) {
        // Docker 25 stores blobs under their digest; the legacy layout
        // stores `<id>/layer.tar` uncompressed, whose digest is the diff_id.
        let digest = match path.strip_prefix("blobs/sha256/") {
            Some(hex) if digest_hex(&format!("sha256:{hex}")).is_some() => format!("sha256:{hex}"),
            _ => diff_id.clone(),
        };
        if digest_hex(&digest).is_none() {
            return Err(ImageError::BadDigest { digest });
        }
        let (location, size) = store.location(path)?;
        layers.push(LayerRef {
            digest,
            size: Some(size),
            location,
        });
    }
    Ok(Image {
        reference: reference.to_owned(),
        config,
        layers,
    })
}

fn parse_config(bytes: &[u8]) -> Result<ImageConfig, ImageError> {
    ImageConfig::parse(bytes).map_err(|e| match e {
        Error::Image { kind, .. } => kind,
        Error::Json { source, .. } => bad(format!("image config: {source}")),
        other => bad(other.to_string()),
    })
}

fn check_digest(bytes: &[u8], expected_hex: &str, index: usize) -> Result<(), ImageError> {
    let actual = hex::encode(Sha256::digest(bytes));
    if actual == expected_hex {
        Ok(())
    } else {
        Err(ImageError::DigestMismatch {
            index,
            expected: format!("sha256:{expected_hex}"),
            actual: format!("sha256:{actual}"),
        })
    }
}

/// Reads the blob `digest` and checks its bytes.
fn read_blob(store: &Store, digest: &str) -> Result<Vec<u8>, ImageError> {
    let hex = digest_hex(digest).ok_or_else(|| ImageError::BadDigest {
        digest: digest.to_owned(),
    })?;
    let bytes = store.read(&format!("blobs/sha256/{hex}"))?;
    check_digest(&bytes, hex, usize::MAX)?;
    Ok(bytes)
}

fn is_index(media_type: &str) -> bool {
    media_type.contains("image.index") || media_type.contains("manifest.list")
}

/// An OCI image layout: `index.json` → manifest → config and layers, all
/// content-addressed under `blobs/sha256/`.
fn oci_layout(store: &Store, reference: &str) -> Result<Image, ImageError> {
    let index = json(&store.read("index.json")?, "index.json")?;
    let manifests = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("index.json has no manifests"))?;
    let wanted = normalize_reference(reference);
    let tag = wanted.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
    let names_of = |m: &Value| -> Vec<String> {
        let ann = m.get("annotations");
        [
            "io.containerd.image.name",
            "org.opencontainers.image.ref.name",
        ]
        .iter()
        .filter_map(|k| ann.and_then(|a| a.get(*k)).and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
    };
    let chosen = match manifests.as_slice() {
        [only] => only,
        _ => manifests
            .iter()
            .find(|m| {
                names_of(m)
                    .iter()
                    .any(|n| normalize_reference(n) == wanted || n == tag)
            })
            .ok_or_else(|| ImageError::NotInArchive {
                wanted: reference.to_owned(),
                available: manifests.iter().flat_map(names_of).collect(),
            })?,
    };
    let mut descriptor = chosen.clone();
    // Follow image indexes down to the linux/amd64 manifest.
    for _ in 0..4 {
        let media_type = descriptor
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or("");
        let digest = descriptor
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("descriptor has no digest"))?;
        let blob = read_blob(store, digest)?;
        let doc = json(&blob, "manifest")?;
        let doc_type = doc
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or(media_type);
        if is_index(doc_type) || (doc.get("manifests").is_some() && doc.get("layers").is_none()) {
            let list = doc
                .get("manifests")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("image index has no manifests"))?;
            descriptor = list
                .iter()
                .find(|m| {
                    let p = m.get("platform");
                    p.and_then(|p| p.get("os")).and_then(Value::as_str) == Some("linux")
                        && p.and_then(|p| p.get("architecture"))
                            .and_then(Value::as_str)
                            == Some("amd64")
                })
                .cloned()
                .ok_or_else(|| ImageError::Architecture {
                    architecture: "none of the index's platforms is linux/amd64".into(),
                })?;
            continue;
        }
        return image_from_manifest(store, reference, &doc);
    }
    Err(bad("image indexes nest too deep"))
}

fn image_from_manifest(store: &Store, reference: &str, doc: &Value) -> Result<Image, ImageError> {
    let config_digest = doc
        .get("config")
        .and_then(|c| c.get("digest"))
        .and_then(Value::as_str)
        .ok_or_else(|| bad("manifest has no config digest"))?;
    let config = parse_config(&read_blob(store, config_digest)?)?;
    let descriptors = doc
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("manifest has no layers"))?;
    let mut layers = Vec::with_capacity(descriptors.len());
    for d in descriptors {
        let digest = d
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("layer has no digest"))?;
        let hex = digest_hex(digest).ok_or_else(|| ImageError::BadDigest {
            digest: digest.to_owned(),
        })?;
        let (location, size) = store.location(&format!("blobs/sha256/{hex}"))?;
        layers.push(LayerRef {
            digest: digest.to_owned(),
            size: Some(size),
            location,
        });
    }
    Ok(Image {
        reference: reference.to_owned(),
        config,
        layers,
    })
}

/// A directory or an indexed tar.
enum Store {
    Dir(PathBuf),
    Tar(TarIndex),
}

impl Store {
    fn exists(&self, name: &str) -> bool {
        match self {
            Store::Dir(root) => clean(name).is_ok_and(|n| root.join(n).is_file()),
            Store::Tar(t) => t.resolve(name).is_ok(),
        }
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        let (location, size) = self.location(name)?;
        if size > MAX_METADATA {
            return Err(bad(format!("{name} is too large ({size} bytes)")));
        }
        let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        open_location(&location)
            .and_then(|mut r| r.read_to_end(&mut out))
            .map_err(ImageError::Read)?;
        Ok(out)
    }

    fn location(&self, name: &str) -> Result<(Location, u64), ImageError> {
        match self {
            Store::Dir(root) => {
                let rel = clean(name)?;
                let path = root.join(&rel);
                // A symlink inside the layout must not lead out of it.
                let real = path.canonicalize().map_err(|_| ImageError::Missing {
                    path: name.to_owned(),
                })?;
                let real_root = root.canonicalize().map_err(ImageError::Read)?;
                if !real.starts_with(&real_root) {
                    return Err(ImageError::PathTraversal {
                        path: name.to_owned(),
                    });
                }
                let meta = std::fs::metadata(&real).map_err(ImageError::Read)?;
                if !meta.is_file() {
                    return Err(ImageError::Missing {
                        path: name.to_owned(),
                    });
                }
                Ok((Location::File(real), meta.len()))
            }
            Store::Tar(t) => {
                let e = t.resolve(name)?;
                Ok((
                    Location::Range {
                        path: Arc::clone(&t.path),
                        offset: e.offset,
                        len: e.size,
                    },
                    e.size,
                ))
            }
        }
    }
}

/// Opens the stored bytes of a local location.
pub(crate) fn open_location(location: &Location) -> io::Result<Box<dyn Read + Send>> {
    open_location_at(location, 0)
}

/// Opens the stored bytes of a local location, `skip` bytes in.
pub(crate) fn open_location_at(location: &Location, skip: u64) -> io::Result<Box<dyn Read + Send>> {
    match location {
        Location::Range { path, offset, len } => {
            let mut f = File::open(path.as_path())?;
            f.seek(SeekFrom::Start(offset.saturating_add(skip)))?;
            Ok(Box::new(f.take(len.saturating_sub(skip))))
        }
        Location::File(path) => {
            let mut f = File::open(path)?;
            f.seek(SeekFrom::Start(skip))?;
            Ok(Box::new(f))
        }
        #[cfg(feature = "registry")]
        Location::Registry(_) => Err(io::Error::other("a registry layer is not a local file")),
    }
}

/// A relative name without `.`, `..` or leading `/`; `..` and absolute
/// names are refused.
fn clean(name: &str) -> Result<String, ImageError> {
    if name.starts_with('/') {
        return Err(ImageError::PathTraversal {
            path: name.to_owned(),
        });
    }
    let mut parts = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(ImageError::PathTraversal {
                    path: name.to_owned(),
                });
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

#[derive(Debug, Clone)]
struct TarEntry {
    offset: u64,
    size: u64,
    /// Target of a symbolic or hard link, already made relative to the root.
    link: Option<String>,
}

struct TarIndex {
    path: Arc<PathBuf>,
    entries: HashMap<String, TarEntry>,
}

impl TarIndex {
    fn open(path: &Path) -> Result<TarIndex, ImageError> {
        let file = File::open(path).map_err(ImageError::Read)?;
        let mut archive = tar::Archive::new(file);
        let mut entries = HashMap::new();
        let iter = archive.entries_with_seek().map_err(ImageError::Read)?;
        for entry in iter {
            let entry = entry.map_err(ImageError::Read)?;
            let raw = entry.path().map_err(ImageError::Read)?;
            let raw = raw.to_string_lossy().into_owned();
            let name = clean(&raw)?;
            let kind = entry.header().entry_type();
            let link = if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name()
                    .map_err(ImageError::Read)?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let joined = if kind.is_hard_link() || target.starts_with('/') {
                    // Hard links name a path from the archive root; absolute
                    // symlinks would leave the archive.
                    if target.starts_with('/') {
                        return Err(ImageError::PathTraversal { path: target });
                    }
                    target
                } else {
                    match name.rsplit_once('/') {
                        Some((dir, _)) => format!("{dir}/{target}"),
                        None => target,
                    }
                };
                Some(clean(&joined)?)
            } else if kind.is_file() || kind == tar::EntryType::Continuous {
                None
            } else {
                continue;
            };
            let size = entry.header().entry_size().map_err(ImageError::Read)?;
            entries.insert(
                name,
                TarEntry {
                    offset: entry.raw_file_position(),
                    size,
                    link,
                },
            );
        }
        Ok(TarIndex {
            path: Arc::new(path.to_owned()),
            entries,
        })
    }

    fn resolve(&self, name: &str) -> Result<TarEntry, ImageError> {
        let mut current = clean(name)?;
        for _ in 0..16 {
            let e = self
                .entries
                .get(&current)
                .ok_or_else(|| ImageError::Missing {
                    path: name.to_owned(),
                })?;
            match &e.link {
                None => return Ok(e.clone()),
                Some(target) => current = target.clone(),
            }
        }
        Err(ImageError::LinkLoop {
            path: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_refuses_escapes() {
        assert_eq!(clean("./a//b/./c").unwrap(), "a/b/c");
        assert!(matches!(
            clean("a/../../b"),
            Err(ImageError::PathTraversal { .. })
        ));
        assert!(matches!(
            clean("/etc/passwd"),
            Err(ImageError::PathTraversal { .. })
        ));
    }
}
