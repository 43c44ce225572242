//! Test images built from the shared vectors.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

pub(crate) fn shared() -> PathBuf {
    confsum_testkit::shared_vectors().join("..")
}

pub(crate) fn vectors() -> PathBuf {
    shared().join("vectors/policy")
}

/// The image of `images.txt`: reference, runtime config, layer tars (base first).
pub(crate) fn oracle_image() -> (String, Vec<u8>, Vec<Vec<u8>>) {
    let images = std::fs::read_to_string(vectors().join("images.txt")).unwrap();
    let line = images
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .unwrap();
    let mut parts = line.split_whitespace();
    let reference = parts.next().unwrap().to_owned();
    let config = std::fs::read(vectors().join(parts.next().unwrap())).unwrap();
    let layers = parts
        .map(|l| std::fs::read(shared().join("vectors/layers").join(format!("{l}.tar"))).unwrap())
        .collect();
    (reference, config, layers)
}

/// All the archive formats of the oracle image, built once per test binary.
pub(crate) struct Formats {
    _dir: tempfile::TempDir,
    pub(crate) formats: Vec<(&'static str, PathBuf)>,
}

pub(crate) fn formats() -> &'static Formats {
    static F: OnceLock<Formats> = OnceLock::new();
    F.get_or_init(build_formats)
}

pub(crate) fn mkimage(
    out: &Path,
    format: &str,
    reference: &str,
    config: &[u8],
    layers: &[Vec<u8>],
) {
    let dir = out.parent().unwrap();
    let cfg = dir.join(format!(
        "{}.config.json",
        out.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&cfg, config).unwrap();
    let mut layer_paths = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let p = dir.join(format!("mk-layer{i}.tar"));
        std::fs::write(&p, l).unwrap();
        layer_paths.push(p);
    }
    let status = Command::new("python3")
        .arg(shared().join("tools/mkimage.py"))
        .arg(out)
        .arg(reference)
        .arg(&cfg)
        .args(&layer_paths)
        .args(["--format", format])
        .status()
        .expect("python3 runs mkimage.py");
    assert!(status.success(), "mkimage.py failed");
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// An image config as mkimage.py writes it (same fields; bytes need not match).
pub(crate) fn image_config(runtime: &[u8], layers: &[Vec<u8>]) -> Vec<u8> {
    let runtime: serde_json::Value = serde_json::from_slice(runtime).unwrap();
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", sha(l)))
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": runtime,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// Writes an OCI image layout directory (no `manifest.json`), storing the
/// layers as given (plain or compressed); `uncompressed` gives the diff_ids.
pub(crate) fn write_oci_layout(
    dir: &Path,
    reference: &str,
    runtime_config: &[u8],
    uncompressed: &[Vec<u8>],
    stored: &[(Vec<u8>, &str)],
) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let d = sha(data);
        std::fs::write(blobs.join(&d), data).unwrap();
        d
    };
    let config = image_config(runtime_config, uncompressed);
    let config_digest = put(&config);
    let layers: Vec<serde_json::Value> = stored
        .iter()
        .map(|(data, media_type)| {
            serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{}", put(data)), "size": data.len()})
        })
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config_digest}"), "size": config.len()},
        "layers": layers,
    }))
    .unwrap();
    let manifest_digest = put(&manifest);
    let tag = reference
        .rsplit_once(':')
        .map(|(_, t)| t)
        .unwrap_or("latest");
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// Tars a directory (as `tar -cf OUT -C DIR .` would).
pub(crate) fn tar_dir(dir: &Path, out: &Path) {
    let f = std::fs::File::create(out).unwrap();
    let mut b = tar::Builder::new(f);
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap().flush().unwrap();
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub(crate) fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

fn build_formats() -> Formats {
    let dir = tempfile::tempdir().unwrap();
    let (reference, config, layers) = oracle_image();
    let mut formats = Vec::new();

    let p = dir.path().join("docker25.tar");
    mkimage(&p, "oci", &reference, &config, &layers);
    formats.push(("docker-save (Docker >= 25 layout)", p));
    let p = dir.path().join("legacy.tar");
    mkimage(&p, "legacy", &reference, &config, &layers);
    formats.push(("docker-save (legacy layout)", p));

    let plain: Vec<(Vec<u8>, &str)> = layers
        .iter()
        .map(|l| (l.clone(), "application/vnd.oci.image.layer.v1.tar"))
        .collect();
    let oci = dir.path().join("oci-dir");
    write_oci_layout(&oci, &reference, &config, &layers, &plain);
    formats.push(("OCI layout directory", oci.clone()));
    let oci_tar = dir.path().join("oci.tar");
    tar_dir(&oci, &oci_tar);
    formats.push(("OCI layout tar", oci_tar));

    let gz: Vec<(Vec<u8>, &str)> = layers
        .iter()
        .map(|l| (gzip(l), "application/vnd.oci.image.layer.v1.tar+gzip"))
        .collect();
    let oci_gz = dir.path().join("oci-gzip");
    write_oci_layout(&oci_gz, &reference, &config, &layers, &gz);
    formats.push(("OCI layout, gzip layers", oci_gz));
    let zs: Vec<(Vec<u8>, &str)> = layers
        .iter()
        .map(|l| (zstd(l), "application/vnd.oci.image.layer.v1.tar+zstd"))
        .collect();
    let oci_zs = dir.path().join("oci-zstd");
    write_oci_layout(&oci_zs, &reference, &config, &layers, &zs);
    formats.push(("OCI layout, zstd layers", oci_zs));

    Formats { _dir: dir, formats }
}

/// The generator options of a case's `flags` file.
pub(crate) fn options_from_flags(flags: &str) -> confsum_policy::GenerateOptions {
    let mut o = confsum_policy::GenerateOptions::default();
    let mut it = flags.split_whitespace();
    while let Some(f) = it.next() {
        match f {
            "--debug-mode" => o.debug_mode = true,
            "--disable-stdio" => o.disable_stdio = true,
            "--omit-id" => o.omit_id = true,
            "--approve-wildcards" => o.approve_wildcards = true,
            "--infrastructure-svn" => o.infrastructure_svn = it.next().map(str::to_owned),
            other => panic!("unknown flag {other}"),
        }
    }
    o
}

pub(crate) fn cases() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(vectors())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.rego").exists())
        .collect();
    cases.sort();
    cases
}
