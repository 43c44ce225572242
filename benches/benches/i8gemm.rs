//! `confsum-i8gemm` against the f32 product it replaces in `--int8`
//! summarization: candle's matmul (gemm, AVX-512 where the CPU has it) on
//! the `[in, out]` weight layout the f32 encoder uses. Both on one
//! thread: candle inside a one-thread rayon pool, the int8 product as a
//! single call (input quantization included).
//!
//! Shapes are bart-large's: the encoder's feed-forward over 512 positions
//! (1024 → 4096 and 4096 → 1024) and one decoder row (1024 → 4096).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use candle_core::{Device, Tensor};
use confsum_i8gemm::{I8Rows, I8Weight};
use confsum_testkit::det_floats as values;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let mut g = c.benchmark_group("i8_linear");
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    for (rows, in_dim, out_dim) in [(512, 1024, 4096), (512, 4096, 1024), (1, 1024, 4096)] {
        let shape = format!("{rows}x{in_dim}x{out_dim}");
        let w = values(out_dim * in_dim, 1);
        let x = values(rows * in_dim, 2);

        let wt = Tensor::from_vec(w.clone(), (out_dim, in_dim), &Device::Cpu)
            .unwrap()
            .t()
            .unwrap()
            .contiguous()
            .unwrap();
        let xt = Tensor::from_vec(x.clone(), (rows, in_dim), &Device::Cpu).unwrap();
        g.bench_function(BenchmarkId::new("f32_candle", &shape), |b| {
            b.iter(|| pool.install(|| black_box(xt.matmul(&wt).unwrap())))
        });

        let q = I8Weight::quantize(&w, out_dim, in_dim).unwrap();
        let mut y = vec![0f32; rows * out_dim];
        g.bench_function(BenchmarkId::new("i8gemm", &shape), |b| {
            b.iter(|| {
                let xq = I8Rows::quantize(black_box(&x), in_dim).unwrap();
                q.matmul(&xq, 0..rows, 0..q.panels(), &mut y).unwrap();
                black_box(&y);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
