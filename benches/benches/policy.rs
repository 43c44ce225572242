//! Policy generation: a tiny image (one of the shared vectors), a cached
//! rerun, and a large multi-layer image against `confsum layer-hash`'s way
//! of hashing the same layers (one after the other, as the CLI does), all
//! in the same process. `CONFSUM_BENCH_MIB` sets the large image's size
//! (default 256 MiB, split over 4 layers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::{Path, PathBuf};

use confsum_ext4::Options;
use confsum_policy::{GenerateOptions, ImageSources, LayerCache, Template, generate};
use confsum_verity::layer_root_hash;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sha2::{Digest, Sha256};

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors")
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn layer(total: usize, seed: u64) -> Vec<u8> {
    let file_size = 4 << 20;
    let mut b = tar::Builder::new(Vec::with_capacity(total + total / 8));
    let data = noise(file_size, seed);
    for i in 0..total / file_size {
        let mut h = tar::Header::new_gnu();
        h.set_size(file_size as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, format!("usr/lib/d{}/f{i}", i % 16), &data[..])
            .unwrap();
    }
    b.into_inner().unwrap()
}

/// An OCI image layout with these (plain) layers.
fn oci_layout(dir: &Path, layers: &[Vec<u8>]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let d = hex::encode(Sha256::digest(data));
        std::fs::write(blobs.join(&d), data).unwrap();
        d
    };
    let diff_ids: Vec<String> = layers
        .iter()
        .map(|l| format!("sha256:{}", hex::encode(Sha256::digest(l))))
        .collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/app"], "Env": ["PATH=/usr/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let c = put(&config);
    let descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{}", put(l)), "size": l.len()}))
        .collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{c}"), "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let m = put(&manifest);
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{m}"), "size": manifest.len()}]})).unwrap(),
    )
    .unwrap();
}

fn run(template: &Template, image: &Path, cache: &LayerCache) -> String {
    let mut sources = ImageSources::new();
    sources.set_default_archive(image);
    generate(template, &sources, &GenerateOptions::default(), cache, None)
        .unwrap()
        .groups[0]
        .host_data
        .clone()
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();

    // Tiny: the shared vector image (three small layers).
    let names = ["single-file", "links", "whiteouts"];
    let layers: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(shared().join(format!("layers/{n}.tar"))).unwrap())
        .collect();
    let tiny = tmp.path().join("tiny");
    oci_layout(&tiny, &layers);
    let basic = Template::parse(
        &std::fs::read_to_string(shared().join("policy/basic/template.json")).unwrap(),
    )
    .unwrap();
    let cache = LayerCache::new(tmp.path().join("cache"));
    let mut g = c.benchmark_group("policy/tiny");
    g.bench_function("generate_uncached", |b| {
        b.iter(|| black_box(run(&basic, &tiny, &LayerCache::disabled())))
    });
    run(&basic, &tiny, &cache);
    g.bench_function("generate_cached", |b| {
        b.iter(|| black_box(run(&basic, &tiny, &cache)))
    });
    g.finish();

    // Large: 4 layers of CONFSUM_BENCH_MIB/4 each.
    let mib: usize = std::env::var("CONFSUM_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let big_layers: Vec<Vec<u8>> = (0..4).map(|i| layer((mib << 20) / 4, i + 1)).collect();
    let total: usize = big_layers.iter().map(Vec::len).sum();
    let big = tmp.path().join("big");
    oci_layout(&big, &big_layers);
    let big_cache = LayerCache::new(tmp.path().join("big-cache"));
    let mut g = c.benchmark_group("policy/large");
    g.throughput(Throughput::Bytes(total as u64));
    g.sample_size(10);
    g.bench_function("generate_uncached", |b| {
        b.iter(|| black_box(run(&basic, &big, &LayerCache::disabled())))
    });
    g.bench_function("layer_hash_sequential", |b| {
        b.iter(|| {
            for l in &big_layers {
                black_box(layer_root_hash(&l[..], &Options::default()).unwrap());
            }
        })
    });
    run(&basic, &big, &big_cache);
    g.bench_function("generate_cached", |b| {
        b.iter(|| black_box(run(&basic, &big, &big_cache)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
