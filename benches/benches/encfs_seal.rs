//! Sealing rate against a raw AES-256-XTS pass over a buffer of the same size,
//! and against merely writing that many bytes to a new file.
//!
//! All run in the same process; the raw pass uses the same sector cipher on
//! all cores, so the ratios show what the tar → ext4 → encrypt → file
//! pipeline costs on top of the encryption, and how much of that is the
//! file write itself. `CONFSUM_BENCH_MIB` sets the content size
//! (default 1024 MiB).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use confsum_encfs::{SealOptions, SealSource, SectorCipher, VolumeKey, seal};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn layer(total: usize, file_size: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..file_size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut b = tar::Builder::new(Vec::with_capacity(total + total / 8));
    for i in 0..total / file_size {
        let mut h = tar::Header::new_gnu();
        h.set_size(file_size as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, format!("docs/d{}/f{i}", i % 32), &data[..])
            .unwrap();
    }
    b.into_inner().unwrap()
}

fn bench(c: &mut Criterion) {
    let mib: usize = std::env::var("CONFSUM_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let tar = layer(mib << 20, 4 << 20);
    let dir = tempfile::tempdir().unwrap();
    let mut options = SealOptions::default();
    options.free_space = 0;
    options.overwrite = true;

    let mut g = c.benchmark_group("encfs_seal");
    g.throughput(Throughput::Bytes((mib as u64) << 20));
    g.sample_size(10);
    let out = dir.path().join("encfs.img");
    g.bench_function("seal", |b| {
        // Deleting the previous image (freeing its pages) is not sealing.
        b.iter_batched(
            || {
                let _ = std::fs::remove_file(&out);
            },
            |()| {
                let mut input = &tar[..];
                let source = SealSource::Tar(&mut input);
                black_box(seal(source, &out, b"key", &options, &mut |_| {}).unwrap())
            },
            BatchSize::PerIteration,
        );
    });
    // What writing the same number of bytes to a new file costs, unencrypted.
    let plain = vec![0x5au8; mib << 20];
    g.bench_function("write_only", |b| {
        b.iter_batched(
            || {
                let _ = std::fs::remove_file(&out);
            },
            |()| {
                let f = std::fs::File::create(&out).unwrap();
                for chunk in plain.chunks(8 << 20) {
                    std::io::Write::write_all(&mut &f, chunk).unwrap();
                }
                f.sync_all().unwrap();
            },
            BatchSize::PerIteration,
        );
    });
    let key = VolumeKey::generate(64).unwrap();
    let cipher = SectorCipher::new(&key, 4096, 0).unwrap();
    let mut buf = vec![0x5au8; mib << 20];
    g.bench_function("aes_xts_raw", |b| {
        b.iter(|| cipher.encrypt(0, black_box(&mut buf)).unwrap());
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
