//! The kernel against the portable path (bit for bit) and against the f32
//! product (within quantization error).
#![allow(clippy::unwrap_used)]

use confsum_i8gemm::{Error, I8Rows, I8Weight, MAX_IN_DIM, PANEL, accelerated};
use confsum_testkit::det_floats as values;
use proptest::prelude::*;

fn f32_product(x: &[f32], w: &[f32], in_dim: usize) -> Vec<f32> {
    x.chunks(in_dim)
        .flat_map(|row| {
            w.chunks(in_dim)
                .map(|col| row.iter().zip(col).map(|(a, b)| a * b).sum::<f32>())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `x` quantized and multiplied over `rows` and `panels` both ways (the
/// CPU's and the portable one), which must agree bit for bit.
fn both(
    w: &I8Weight,
    x: &[f32],
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
) -> Vec<f32> {
    let n = rows.len() * w.columns(panels.clone()).len();
    let (mut fast, mut slow) = (vec![f32::NAN; n], vec![f32::NAN; n]);
    let (xf, xs) = (
        I8Rows::quantize(x, w.in_dim()).unwrap(),
        I8Rows::quantize_portable(x, w.in_dim()).unwrap(),
    );
    w.matmul(&xf, rows.clone(), panels.clone(), &mut fast)
        .unwrap();
    w.matmul_portable(&xs, rows.clone(), panels.clone(), &mut slow)
        .unwrap();
    assert!(
        fast.iter()
            .zip(&slow)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "rows {rows:?} panels {panels:?}"
    );
    fast
}

/// Whole products of many shapes: every tile height (1 to 6 rows and
/// blocks past 48), widths that are not whole groups or panels, and the
/// layer shapes of t5-small and BART.
#[test]
fn kernel_matches_portable_and_f32() {
    let shapes = [
        (1, 1, 1),
        (1, 64, 4),
        (3, 65, 5),
        (7, 130, 31),
        (13, 200, 64),
        (50, 64, 96),
        (97, 33, 250),
        (6, 512, 512),
        (2, 1024, 4096),
        (1, 2048, 512),
    ];
    for (i, &(rows, out_dim, in_dim)) in shapes.iter().enumerate() {
        let wv = values(out_dim * in_dim, 3 + i as u64);
        let xv = values(rows * in_dim, 99 + i as u64);
        let w = I8Weight::quantize(&wv, out_dim, in_dim).unwrap();
        let x = I8Rows::quantize(&xv, in_dim).unwrap();
        assert_eq!((w.out_dim(), w.in_dim(), x.rows()), (out_dim, in_dim, rows));
        let got = both(&w, &xv, 0..rows, 0..w.panels());
        let want = f32_product(&xv, &wv, in_dim);
        // Each factor is off by at most half a level (1/254 of its row's
        // largest magnitude, here below 1); summed over in_dim products.
        let bound = 2.0 * in_dim as f32 / 254.0 + 1e-4;
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < bound, "{rows}x{out_dim}x{in_dim}: {err} >= {bound}");
        // And much closer than that in practice: errors cancel.
        assert!(
            err < (in_dim as f32).sqrt() * 0.02 + 1e-3,
            "{rows}x{out_dim}x{in_dim}: {err}"
        );
    }
}

/// Parts of a product (row ranges, panel ranges) are the same numbers as
/// the whole.
#[test]
fn parts_equal_the_whole() {
    let (rows, out_dim, in_dim) = (20, 3 * PANEL + 10, 40);
    let w = I8Weight::quantize(&values(out_dim * in_dim, 1), out_dim, in_dim).unwrap();
    let x = values(rows * in_dim, 2);
    let whole = both(&w, &x, 0..rows, 0..w.panels());
    for (r, p) in [
        (3..11, 1..3),
        (0..1, 3..4),
        (19..20, 0..1),
        (5..5, 0..4),
        (0..20, 2..2),
    ] {
        let part = both(&w, &x, r.clone(), p.clone());
        let cols = w.columns(p.clone());
        let expected: Vec<f32> = r
            .clone()
            .flat_map(|row| whole[row * out_dim + cols.start..row * out_dim + cols.end].to_vec())
            .collect();
        assert_eq!(part, expected, "rows {r:?} panels {p:?}");
    }
}

/// The products are exactly (to f32 rounding) those of the dequantized
/// operands, and dequantizing is off by at most half a level: what
/// callers that bound the int8 error rely on.
fn check_dequantized(w: &I8Weight, wv: &[f32], xv: &[f32]) {
    let (out_dim, in_dim) = (w.out_dim(), w.in_dim());
    let x = I8Rows::quantize(xv, in_dim).unwrap();
    let mut y = vec![0f32; x.rows() * out_dim];
    w.matmul(&x, 0..x.rows(), 0..w.panels(), &mut y).unwrap();
    // One level: the largest magnitude / 127 for a weight row, the range
    // (zero included) / 255 for an input row.
    let high = |row: &[f32]| row.iter().fold(0f32, |m, &v| m.max(v));
    let low = |row: &[f32]| row.iter().fold(0f32, |m, &v| m.min(v));
    let deq_rows = |n: usize, f: &dyn Fn(usize, &mut [f32])| -> Vec<Vec<f32>> {
        (0..n)
            .map(|r| {
                let mut out = vec![f32::NAN; in_dim];
                f(r, &mut out);
                out
            })
            .collect()
    };
    let dw = deq_rows(out_dim, &|r, out| w.dequantize(r, out).unwrap());
    let dx = deq_rows(x.rows(), &|r, out| x.dequantize(r, out).unwrap());
    for (row, deq) in wv.chunks(in_dim).zip(&dw) {
        let half = 0.5001 * high(row).max(-low(row)) / 127.0;
        assert!(row.iter().zip(deq).all(|(a, b)| (a - b).abs() <= half));
    }
    for (row, deq) in xv.chunks(in_dim).zip(&dx) {
        let half = 0.5001 * (high(row) - low(row)) / 255.0;
        assert!(row.iter().zip(deq).all(|(a, b)| (a - b).abs() <= half));
    }
    for (r, xr) in dx.iter().enumerate() {
        for (c, wr) in dw.iter().enumerate() {
            let (dot, mag) = xr.iter().zip(wr).fold((0f64, 0f64), |(d, m), (&a, &b)| {
                let p = f64::from(a) * f64::from(b);
                (d + p, m + p.abs())
            });
            let got = f64::from(y[r * out_dim + c]);
            assert!(
                (got - dot).abs() <= mag * 2f64.powi(-20) + 1e-35,
                "row {r} column {c}: {got} against {dot}"
            );
        }
    }
}

#[test]
fn products_are_those_of_the_dequantized_operands() {
    for (i, &(rows, out_dim, in_dim)) in [(1, 1, 1), (3, 70, 33), (2, 130, 512), (7, 64, 1000)]
        .iter()
        .enumerate()
    {
        let wv = values(out_dim * in_dim, 11 + i as u64);
        let xv: Vec<f32> = values(rows * in_dim, 17 + i as u64)
            .iter()
            .map(|v| v + 0.3)
            .collect();
        let w = I8Weight::quantize(&wv, out_dim, in_dim).unwrap();
        check_dequantized(&w, &wv, &xv);
    }
    let w = I8Weight::quantize(&values(6, 1), 2, 3).unwrap();
    let x = I8Rows::quantize(&values(3, 2), 3).unwrap();
    let mut out = [0f32; 3];
    assert!(w.dequantize(2, &mut out).is_err());
    assert!(w.dequantize(0, &mut out[..2]).is_err());
    assert!(x.dequantize(1, &mut out).is_err());
    assert!(x.dequantize(0, &mut [0f32; 4]).is_err());
}

/// The kernel must really run where the CPU has VNNI: otherwise the tests
/// above compare the portable path with itself.
#[test]
fn kernel_runs_where_the_cpu_has_vnni() {
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        accelerated(),
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni")
    );
    #[cfg(not(target_arch = "x86_64"))]
    assert!(!accelerated());
}

/// Zeros, extremes and non-finite values quantize without panicking, and
/// a row of zeros gives zeros.
#[test]
fn odd_values() {
    let in_dim = 8;
    let w = [
        [0.0; 8],
        [f32::MAX, -f32::MAX, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [f32::NAN, 1.0, f32::INFINITY, 0.0, 0.0, 0.0, 0.0, -1.0],
    ]
    .concat();
    let w = I8Weight::quantize(&w, 3, in_dim).unwrap();
    let x = [[1.0; 8], [0.0; 8]].concat();
    let y = both(&w, &x, 0..2, 0..1);
    // Odd inputs too: NaN, infinities, one huge value, all negative.
    let odd = [
        [f32::NAN, 1.0, -2.0, 0.5, 0.0, 0.0, 0.0, 0.0],
        [f32::INFINITY, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [1e30, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1e-30],
        [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0],
    ]
    .concat();
    both(&w, &odd, 0..4, 0..1);
    assert_eq!(y[0], 0.0);
    assert!(y[1].is_finite());
    assert_eq!(&y[3..], &[0.0, 0.0, 0.0]);
}

#[test]
fn bad_shapes_and_ranges_are_errors() {
    assert_eq!(
        I8Weight::quantize(&[0.0; 10], 3, 4).unwrap_err(),
        Error::Shape { len: 10, width: 4 }
    );
    assert!(I8Weight::quantize(&[0.0; 12], 2, 4).is_err());
    assert!(I8Weight::quantize(&[], 0, 0).is_err());
    assert!(I8Rows::quantize(&[0.0; 5], 2).is_err());
    assert!(I8Rows::quantize(&[0.0; 4], 0).is_err());
    let wide = MAX_IN_DIM + 4;
    assert_eq!(
        I8Weight::quantize(&vec![0.0; wide], 1, wide).unwrap_err(),
        Error::TooWide { in_dim: wide }
    );

    let w = I8Weight::quantize(&values(70 * 8, 1), 70, 8).unwrap();
    let x = I8Rows::quantize(&values(3 * 8, 2), 8).unwrap();
    let mut out = vec![0.0; 3 * 70];
    assert!(w.matmul(&x, 0..3, 0..2, &mut out).is_ok());
    assert!(w.matmul(&x, 0..4, 0..2, &mut out).is_err());
    assert!(w.matmul(&x, 0..3, 0..3, &mut out).is_err());
    #[allow(clippy::reversed_empty_ranges)]
    let backwards = 2..1;
    assert!(w.matmul(&x, backwards, 0..2, &mut out).is_err());
    assert!(w.matmul(&x, 0..3, 0..2, &mut out[1..]).is_err());
    let other = I8Rows::quantize(&values(3 * 4, 2), 4).unwrap();
    assert!(w.matmul(&other, 0..3, 0..2, &mut out).is_err());
    let e = w.matmul(&x, 0..4, 0..2, &mut out).unwrap_err();
    assert_eq!(e.to_string(), "rows out of range");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_shape_kernel_equals_portable(
        rows in 1usize..20,
        out_dim in 1usize..150,
        in_dim in 1usize..70,
        seed in any::<u64>(),
        scale in prop_oneof![Just(1e-6f32), Just(1.0f32), Just(1e6f32)],
        shift in prop_oneof![Just(0f32), Just(0.7f32), Just(-3.0f32)],
    ) {
        let wv: Vec<f32> = values(out_dim * in_dim, seed).iter().map(|v| v * scale).collect();
        let xv = values(rows * in_dim, seed ^ 0x5555);
        let xv: Vec<f32> = xv.iter().map(|v| v * scale + shift).collect();
        let w = I8Weight::quantize(&wv, out_dim, in_dim).unwrap();
        both(&w, &xv, 0..rows, 0..w.panels());
        check_dequantized(&w, &wv, &xv);
    }
}
