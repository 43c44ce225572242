//! `layer_root_hash` against the root hashes the reference recorded for the
//! shared layer vectors (`../shared/vectors/layers/roothashes.txt`, written
//! by hcsshim's tar2ext4 + dmverity), plain and compressed.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

use std::error::Error as _;
use std::io::{self, Cursor, Read, Write};
use std::path::PathBuf;

use confsum_ext4::{ImageSink, Options, PathPolicy, Refusal};
use confsum_verity::{Error, RootHash, layer_root_hash, layer_root_hash_with_image, root_hash};

fn vectors() -> PathBuf {
    confsum_testkit::shared_vectors().join("layers")
}

/// (file name, tar bytes, the reference's root hash) for every vector.
fn layers() -> Vec<(String, Vec<u8>, RootHash)> {
    let dir = vectors();
    let listing = std::fs::read_to_string(dir.join("roothashes.txt")).unwrap();
    let layers: Vec<_> = listing
        .lines()
        .map(|line| {
            let (hash, name) = line.split_once(' ').unwrap();
            let name = name.trim().to_owned();
            let tar = std::fs::read(dir.join(&name)).unwrap();
            (name, tar, hash.parse().unwrap())
        })
        .collect();
    assert!(layers.len() >= 7, "too few vectors in {}", dir.display());
    layers
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// A tar with the same regular file twice, which the reference refuses.
fn written_twice() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for _ in 0..2 {
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "etc/passwd", &b"abc"[..]).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn every_vector_matches_the_reference_plain_gzip_and_zstd() {
    let options = Options::default();
    for (name, tar, want) in layers() {
        for (how, input) in [
            ("plain", tar.clone()),
            ("gzip", gzip(&tar)),
            ("zstd", zstd(&tar)),
        ] {
            assert_eq!(
                layer_root_hash(&input[..], &options).unwrap(),
                want,
                "{name}, {how}"
            );
        }
    }
}

/// The image written beside the hash is the image that was hashed, and the
/// same whatever the compression.
#[test]
fn with_image_returns_the_hashed_image() {
    let options = Options::default();
    for (name, tar, want) in layers() {
        let mut images = Vec::new();
        for input in [tar.clone(), gzip(&tar), zstd(&tar)] {
            let sink = ImageSink::new(Cursor::new(Vec::new()));
            let (root, sink) = layer_root_hash_with_image(&input[..], &options, sink).unwrap();
            let image = sink.into_inner().into_inner();
            assert_eq!(root, want, "{name}");
            assert_eq!(root_hash(&image[..]).unwrap(), want, "{name}: image bytes");
            images.push(image);
        }
        assert!(images.windows(2).all(|w| w[0] == w[1]), "{name}");
    }
}

/// The policy crate hashes many layers at once; every thread gets the
/// reference's answer.
#[test]
fn concurrent_calls_agree_with_the_reference() {
    let layers = layers();
    std::thread::scope(|s| {
        let handles: Vec<_> = layers
            .iter()
            .flat_map(|layer| [layer, layer])
            .map(|(name, tar, want)| {
                s.spawn(move || {
                    let got = layer_root_hash(&gzip(tar)[..], &Options::default()).unwrap();
                    assert_eq!(&got, want, "{name}");
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

#[test]
fn a_refused_layer_is_a_typed_ext4_error_with_its_source() {
    for input in [written_twice(), gzip(&written_twice())] {
        let err = layer_root_hash(&input[..], &Options::default()).unwrap_err();
        match &err {
            Error::Ext4(confsum_ext4::Error::Refused { entry, reason }) => {
                assert_eq!(entry, "etc/passwd");
                assert_eq!(reason, &Refusal::OverwriteNonInline);
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert!(err.source().unwrap().to_string().contains("etc/passwd"));
    }
}

#[test]
fn unsafe_paths_follow_the_path_policy() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(1);
    h.set_mode(0o644);
    // The tar crate refuses to write `..`, so set the name by hand.
    h.as_old_mut().name[..9].copy_from_slice(b"../escape");
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let tar = b.into_inner().unwrap();

    assert!(matches!(
        layer_root_hash(&tar[..], &Options::default()),
        Err(Error::Ext4(confsum_ext4::Error::UnsafePath { .. }))
    ));
    let mut clean = Options::default();
    clean.path_policy = PathPolicy::Clean;
    assert!(layer_root_hash(&tar[..], &clean).is_ok());
}

#[test]
fn broken_compressed_streams_are_errors() {
    let (_, tar, _) = layers()
        .into_iter()
        .find(|(name, ..)| name == "sizes.tar")
        .unwrap();
    for (how, mut input) in [("gzip", gzip(&tar)), ("zstd", zstd(&tar))] {
        input.truncate(input.len() / 2);
        match layer_root_hash(&input[..], &Options::default()) {
            Err(Error::Ext4(_)) => {}
            other => panic!("truncated {how}: {other:?}"),
        }
    }
    // Magic bytes followed by garbage.
    for magic in [&[0x1f, 0x8b][..], &[0x28, 0xb5, 0x2f, 0xfd]] {
        let mut input = magic.to_vec();
        input.extend_from_slice(&[0x55; 1000]);
        assert!(matches!(
            layer_root_hash(&input[..], &Options::default()),
            Err(Error::Ext4(_))
        ));
    }
}

/// A reader that fails at once, as a broken pipe or a vanished file would.
struct Failing;

impl Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other("disk on fire"))
    }
}

#[test]
fn a_failing_reader_is_a_compression_error() {
    let err = layer_root_hash(Failing, &Options::default()).unwrap_err();
    assert!(matches!(err, Error::Compression(_)), "{err:?}");
    assert_eq!(err.source().unwrap().to_string(), "disk on fire");
}
