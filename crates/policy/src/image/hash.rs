//! Layer root hashes: in parallel, checked against their digests, cached.

use std::io::{self, Read};
use std::sync::{Arc, Mutex, PoisonError};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::archive::{open_location, open_location_at};
use super::cache::LayerCache;
use super::{Image, LayerRef, Location};
use crate::error::{Error, ImageError};

/// What the hashing is doing, for progress bars.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProgressEvent {
    /// A layer is about to be downloaded or read (`size` of the stored bytes).
    LayerStarted {
        /// The layer's digest.
        digest: String,
        /// Stored size, when known.
        size: Option<u64>,
    },
    /// More stored bytes were read (download or hashing).
    Bytes(u64),
    /// A layer's root hash is known.
    LayerDone {
        /// The layer's digest.
        digest: String,
        /// Whether it came from the cache.
        cached: bool,
    },
}

/// A callback for [`ProgressEvent`]s, called from several threads.
pub type Progress = Arc<dyn Fn(&ProgressEvent) + Send + Sync>;

pub(crate) fn emit(progress: Option<&Progress>, event: ProgressEvent) {
    if let Some(p) = progress {
        p(&event);
    }
}

/// The error of [`layer_root_hash`].
#[derive(Debug)]
pub(crate) enum LayerHashError {
    Read(io::Error),
    Ext4(confsum_ext4::Error),
    Verity(confsum_verity::Error),
}

/// The dm-verity root hash of one layer (a tar, plain, gzip or zstd), as
/// hcsshim computes it: confsum_verity's one call, with its errors sorted
/// into what this crate reports.
pub(crate) fn layer_root_hash(r: impl Read) -> Result<[u8; 32], LayerHashError> {
    match confsum_verity::layer_root_hash(r, &confsum_ext4::Options::default()) {
        Ok(root) => Ok(*root.as_bytes()),
        Err(confsum_verity::Error::Compression(e) | confsum_verity::Error::Io(e)) => {
            Err(LayerHashError::Read(e))
        }
        Err(confsum_verity::Error::Ext4(e)) => Err(LayerHashError::Ext4(e)),
        Err(e) => Err(LayerHashError::Verity(e)),
    }
}

#[derive(Default)]
struct DigestState {
    sha: Sha256,
    len: u64,
}

/// Hashes the stored bytes as the converter reads them.
struct DigestReader<R> {
    inner: R,
    state: Arc<Mutex<DigestState>>,
    progress: Option<Progress>,
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let chunk = buf.get(..n).unwrap_or(&[]);
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.sha.update(chunk);
        s.len += n as u64;
        drop(s);
        emit(self.progress.as_ref(), ProgressEvent::Bytes(n as u64));
        Ok(n)
    }
}

/// Root hashes of all layers of `image`, base first, as lowercase hex.
///
/// Layers are hashed in parallel (and each one on all cores). A layer whose
/// digest is cached is not read when it comes from a registry, nor when it
/// is an unchanged local file verified before; otherwise its bytes are
/// checked against the digest, and only then cached.
pub fn layer_hashes(
    image: &Image,
    cache: &LayerCache,
    progress: Option<&Progress>,
) -> Result<Vec<String>, Error> {
    let reference = image.reference.as_str();
    #[cfg(feature = "registry")]
    let fetched = super::registry::fetch_missing(image, cache, progress)?;
    #[cfg(feature = "registry")]
    let layers: Vec<LayerRef> = image
        .layers
        .iter()
        .zip(fetched.files.iter())
        .map(|(l, f)| match f {
            Some(path) => LayerRef {
                location: Location::File(path.clone()),
                ..l.clone()
            },
            None => l.clone(),
        })
        .collect();
    #[cfg(not(feature = "registry"))]
    let layers: Vec<LayerRef> = image.layers.clone();

    layers
        .par_iter()
        .enumerate()
        .map(|(index, layer)| hash_one(reference, index, layer, cache, progress))
        .collect()
}

fn hash_one(
    reference: &str,
    index: usize,
    layer: &LayerRef,
    cache: &LayerCache,
    progress: Option<&Progress>,
) -> Result<String, Error> {
    let err = |kind| Error::Image {
        reference: reference.to_owned(),
        kind,
    };
    let remote = is_remote(&layer.location);
    if let Some(root) = cache.root(&layer.digest) {
        // Content-addressed: a registry serves these bytes under this digest,
        // and a local file verified unchanged still holds them.
        if remote || cache.verified(&layer.location, &layer.digest) {
            emit(
                progress,
                ProgressEvent::LayerDone {
                    digest: layer.digest.clone(),
                    cached: true,
                },
            );
            return Ok(root);
        }
        // Cheap check: SHA-256 of the stored bytes, no conversion.
        let actual = sha256_of(&layer.location).map_err(|e| err(ImageError::Read(e)))?;
        if actual != layer.digest {
            return Err(err(ImageError::DigestMismatch {
                index,
                expected: layer.digest.clone(),
                actual,
            }));
        }
        cache.put_verified(&layer.location, &layer.digest);
        emit(
            progress,
            ProgressEvent::LayerDone {
                digest: layer.digest.clone(),
                cached: true,
            },
        );
        return Ok(root);
    }

    emit(
        progress,
        ProgressEvent::LayerStarted {
            digest: layer.digest.clone(),
            size: layer.size,
        },
    );
    let state = Arc::new(Mutex::new(DigestState::default()));
    let input = open_location(&layer.location).map_err(|e| err(ImageError::Read(e)))?;
    let reader = DigestReader {
        inner: input,
        state: Arc::clone(&state),
        progress: progress.cloned(),
    };
    let result = layer_root_hash(reader);
    // The converter may stop at the tar's end marker: digest the rest too.
    let actual = finish_digest(&layer.location, &state).map_err(|e| err(ImageError::Read(e)))?;
    if actual != layer.digest {
        return Err(err(ImageError::DigestMismatch {
            index,
            expected: layer.digest.clone(),
            actual,
        }));
    }
    let root = match result {
        Ok(root) => hex::encode(root),
        Err(LayerHashError::Read(e)) => return Err(err(ImageError::Read(e))),
        Err(LayerHashError::Ext4(source)) => {
            return Err(Error::Layer {
                digest: layer.digest.clone(),
                source,
            });
        }
        Err(LayerHashError::Verity(source)) => {
            return Err(Error::Verity {
                digest: layer.digest.clone(),
                source,
            });
        }
    };
    cache.put_root(&layer.digest, &root);
    cache.put_verified(&layer.location, &layer.digest);
    emit(
        progress,
        ProgressEvent::LayerDone {
            digest: layer.digest.clone(),
            cached: false,
        },
    );
    Ok(root)
}

fn is_remote(location: &Location) -> bool {
    #[cfg(feature = "registry")]
    if matches!(location, Location::Registry(_)) {
        return true;
    }
    let _ = location;
    false
}

fn finish_digest(location: &Location, state: &Mutex<DigestState>) -> io::Result<String> {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let mut rest = open_location_at(location, s.len)?;
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = rest.read(&mut buf)?;
        if n == 0 {
            break;
        }
        s.sha.update(buf.get(..n).unwrap_or(&[]));
        s.len += n as u64;
    }
    let sha = std::mem::take(&mut s.sha);
    Ok(format!("sha256:{}", hex::encode(sha.finalize())))
}

fn sha256_of(location: &Location) -> io::Result<String> {
    let mut r = open_location(location)?;
    let mut sha = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        sha.update(buf.get(..n).unwrap_or(&[]));
    }
    Ok(format!("sha256:{}", hex::encode(sha.finalize())))
}
