//! `confsum_i8gemm` on the CPU's kernel against its portable path, for
//! arbitrary shapes and values: the first three bytes set rows (1-16),
//! output width (1-200) and input width (1-80); the rest, read as
//! little-endian f32s (NaN, infinities and subnormals included) and
//! repeated as needed, fill the weight and then the input. Quantizing and
//! multiplying must give the same bits both ways, over the whole product
//! and over a part of it. Any difference is a bug in the VNNI kernel or
//! in the AVX-512 build of the quantizer.
#![no_main]

use confsum_i8gemm::{I8Rows, I8Weight};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [r, o, i, rest @ ..] = data else {
        return;
    };
    let (rows, out_dim, in_dim) = (1 + usize::from(*r % 16), 1 + usize::from(*o % 200), 1 + usize::from(*i % 80));
    let floats: Vec<f32> = rest
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    if floats.is_empty() {
        return;
    }
    let mut values = floats.iter().copied().cycle();
    let w: Vec<f32> = values.by_ref().take(out_dim * in_dim).collect();
    let x: Vec<f32> = values.take(rows * in_dim).collect();

    let w = I8Weight::quantize(&w, out_dim, in_dim).unwrap();
    let (fast_x, slow_x) = (
        I8Rows::quantize(&x, in_dim).unwrap(),
        I8Rows::quantize_portable(&x, in_dim).unwrap(),
    );
    let parts = [(0..rows, 0..w.panels()), (rows / 2..rows, w.panels() / 2..w.panels())];
    for (rows, panels) in parts {
        let n = rows.len() * w.columns(panels.clone()).len();
        let (mut fast, mut slow) = (vec![0f32; n], vec![1f32; n]);
        w.matmul(&fast_x, rows.clone(), panels.clone(), &mut fast).unwrap();
        w.matmul_portable(&slow_x, rows, panels, &mut slow).unwrap();
        assert!(fast.iter().zip(&slow).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
});
