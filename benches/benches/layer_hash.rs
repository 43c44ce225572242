//! Layer hashing throughput against a plain one-core SHA-256 of the same bytes.
//!
//! Both run in the same process on the same in-memory tar, so their ratio is
//! meaningful on a noisy machine. `CONFSUM_BENCH_MIB` sets the layer size
//! (default 256 MiB). `verity_leaves` compares the leaf hash, salted 4 KiB
//! blocks, one at a time with `sha2` and two at a time with
//! `confsum_sha256x2`, on one core.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use confsum_ext4::Options;
use confsum_verity::layer_root_hash;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sha2::{Digest, Sha256};

/// Incompressible, deterministic bytes (xorshift), like real binaries.
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

/// A layer of `total` bytes split into files of `file_size` bytes.
fn layer(total: usize, file_size: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::with_capacity(total + total / 8));
    let data = noise(file_size, 7);
    for i in 0..total / file_size {
        let mut h = tar::Header::new_gnu();
        h.set_size(file_size as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, format!("usr/lib/d{}/f{i}", i % 64), &data[..])
            .unwrap();
    }
    b.into_inner().unwrap()
}

fn leaves(c: &mut Criterion) {
    const SALT: [u8; 32] = [0; 32];
    let data = noise(1024 * 4096, 3);
    let blocks: Vec<&[u8]> = data.chunks_exact(4096).collect();
    let mut g = c.benchmark_group("verity_leaves");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("sha2_one_at_a_time", |b| {
        b.iter(|| {
            for block in &blocks {
                black_box(
                    Sha256::new()
                        .chain_update(SALT)
                        .chain_update(block)
                        .finalize(),
                );
            }
        });
    });
    g.bench_function("sha256x2_pairs", |b| {
        b.iter(|| {
            for pair in blocks.chunks_exact(2) {
                black_box(confsum_sha256x2::digest_pair(&SALT, [pair[0], pair[1]]));
            }
        });
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let mib: usize = std::env::var("CONFSUM_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    for (label, file_size) in [("large_files", 8 << 20), ("small_files", 6000)] {
        let tar = layer(mib << 20, file_size);
        let mut g = c.benchmark_group(format!("layer_hash/{label}"));
        g.throughput(Throughput::Bytes(tar.len() as u64));
        g.sample_size(10);
        g.bench_function("confsum", |b| {
            b.iter(|| black_box(layer_root_hash(&tar[..], &Options::default()).unwrap()));
        });
        g.bench_function("sha256_one_core", |b| {
            b.iter(|| black_box(Sha256::digest(&tar)));
        });
        g.finish();
    }
}

criterion_group!(benches, leaves, bench);
criterion_main!(benches);
