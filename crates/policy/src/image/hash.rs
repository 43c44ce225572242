//! Layer root hashes: in parallel, checked against their digests, cached.

use std::io::{self, Read};
use std::sync::{Arc, mpsc};
use std::thread;

use confsum_ext4::SharedChunk;

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

/// Sorts confsum_verity's errors into what this crate reports.
fn sort_error(e: confsum_verity::Error) -> LayerHashError {
    match e {
        confsum_verity::Error::Compression(e) | confsum_verity::Error::Io(e) => {
            LayerHashError::Read(e)
        }
        confsum_verity::Error::Ext4(e) => LayerHashError::Ext4(e),
        e => LayerHashError::Verity(e),
    }
}

/// The SHA-256 of a layer's stored bytes, as far as they were read;
/// `len` is `None` when the digest thread died.
struct LayerDigest {
    sha: Sha256,
    len: Option<u64>,
}

impl LayerDigest {
    fn new() -> Self {
        LayerDigest {
            sha: Sha256::new(),
            len: Some(0),
        }
    }

    /// The digest of a thread that died: no length, so it fails the check.
    fn lost() -> Self {
        LayerDigest {
            sha: Sha256::new(),
            len: None,
        }
    }

    fn update(&mut self, chunk: &[u8]) {
        self.sha.update(chunk);
        self.len = self.len.map(|l| l + chunk.len() as u64);
    }
}

/// Where a layer's digest is computed.
enum Digester<'scope> {
    /// On a thread of its own, fed through the channel.
    Thread(
        mpsc::SyncSender<SharedChunk>,
        thread::ScopedJoinHandle<'scope, LayerDigest>,
    ),
    /// On the converter's thread, when no thread could be started.
    Inline(LayerDigest),
}

/// Pieces of the read buffers in flight to the digest thread; bounds the
/// memory they pin when the digest falls behind.
const DIGEST_QUEUE: usize = 8;

/// The dm-verity root hash of one layer (a tar, plain, gzip or zstd), as
/// hcsshim computes it, and the SHA-256 of the stored bytes the converter
/// read, from the same buffers.
///
/// The digest runs on a thread of its own, fed pieces of the converter's
/// read buffers (no second read, no copy), so it overlaps with the ext4
/// build and the dm-verity hashing instead of lengthening the converter's
/// thread.
fn root_and_digest(
    input: impl Read,
    progress: Option<&Progress>,
) -> (Result<[u8; 32], LayerHashError>, LayerDigest) {
    let options = confsum_ext4::Options::default();
    thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<SharedChunk>(DIGEST_QUEUE);
        let spawned = thread::Builder::new()
            .name("confsum-digest".into())
            .spawn_scoped(scope, move || {
                let mut d = LayerDigest::new();
                for chunk in rx {
                    d.update(&chunk);
                }
                d
            });
        // No thread to be had: digest inline, still correct.
        let mut digester = match spawned {
            Ok(handle) => Digester::Thread(tx, handle),
            Err(_) => Digester::Inline(LayerDigest::new()),
        };
        let watch = |chunk: &SharedChunk| {
            emit(progress, ProgressEvent::Bytes(chunk.len() as u64));
            match &mut digester {
                // A failed send means the thread died; the join says so.
                Digester::Thread(tx, _) => {
                    let _ = tx.send(chunk.clone());
                }
                Digester::Inline(d) => d.update(chunk),
            }
        };
        let result = confsum_verity::hash_layer_watched(input, &options, watch)
            .map(|h| *h.root.as_bytes())
            .map_err(sort_error);
        let digest = match digester {
            Digester::Thread(tx, handle) => {
                drop(tx);
                handle.join().unwrap_or_else(|_| LayerDigest::lost())
            }
            Digester::Inline(d) => d,
        };
        (result, digest)
    })
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
    let input = open_location(&layer.location).map_err(|e| err(ImageError::Read(e)))?;
    let (result, digest) = root_and_digest(input, progress);
    // The converter may stop at the tar's end marker: digest the rest too.
    let actual = finish_digest(&layer.location, digest).map_err(|e| err(ImageError::Read(e)))?;
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

fn finish_digest(location: &Location, mut s: LayerDigest) -> io::Result<String> {
    let Some(len) = s.len else {
        return Err(io::Error::other("the layer digest thread stopped"));
    };
    let mut rest = open_location_at(location, len)?;
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = rest.read(&mut buf)?;
        if n == 0 {
            break;
        }
        s.sha.update(buf.get(..n).unwrap_or(&[]));
    }
    Ok(format!("sha256:{}", hex::encode(s.sha.finalize())))
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
