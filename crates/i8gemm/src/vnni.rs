//! The tile kernel on AVX-512 VNNI: the only `unsafe` code of this crate.
//!
//! A tile is up to six input rows by one 64-column weight panel: 24
//! accumulators, four panel vectors and one broadcast input word, 29 of
//! the 32 vector registers. Per group of four inputs, the kernel loads the
//! panel's 256 bytes once and issues one `vpdpbusd` per row and vector.
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m512i, _mm512_dpbusd_epi32, _mm512_loadu_si512, _mm512_set1_epi32, _mm512_setzero_si512,
    _mm512_storeu_si512,
};

use crate::{GROUP, GROUP_BYTES, PANEL, TILE_ROWS, Tile};

/// i32 lanes per vector.
const LANES: usize = 16;
/// Vectors per panel row.
const VECTORS: usize = PANEL / LANES;

/// Proof that this CPU has the instructions [`tile_vnni`] uses: it is made
/// only by [`Vnni::detect`], which makes calling it sound.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vnni(());

impl Vnni {
    /// `Some` when the CPU has AVX-512 F, BW and VNNI.
    pub(crate) fn detect() -> Option<Self> {
        let found = std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni");
        found.then_some(Vnni(()))
    }

    /// As [`crate::quant::quantize_row`], with the same results.
    pub(crate) fn quantize_row(self, row: &[f32], dst: &mut [u8]) -> (f32, u8) {
        // SAFETY: a `Vnni` exists only where `detect` found AVX-512 F and
        // BW; the function is safe code otherwise.
        unsafe { quantize_row_avx512(row, dst) }
    }

    /// As [`crate::portable::tile`], with the same results.
    ///
    /// # Panics
    /// When the operands are shorter than `rows`, `stride` and the panel
    /// imply: the bounds the unsafe code relies on. The loop in
    /// `quant.rs` always passes whole operands.
    pub(crate) fn tile(
        self,
        rows: usize,
        input: &[u8],
        stride: usize,
        weights: &[i8],
        tile: &mut Tile,
    ) {
        let groups = weights.len() / GROUP_BYTES;
        assert!(
            rows <= TILE_ROWS
                && weights.len() == groups * GROUP_BYTES
                && groups * GROUP <= stride
                && (rows == 0 || input.len() >= (rows - 1) * stride + groups * GROUP),
            "tile operands out of bounds"
        );
        let (a, b) = (input.as_ptr(), weights.as_ptr());
        // SAFETY: a `Vnni` exists only where `detect` found every feature
        // that the kernels enable, and the assertion above is the bounds
        // each kernel documents.
        unsafe {
            match rows {
                1 => tile_vnni::<1>(a, stride, b, groups, tile),
                2 => tile_vnni::<2>(a, stride, b, groups, tile),
                3 => tile_vnni::<3>(a, stride, b, groups, tile),
                4 => tile_vnni::<4>(a, stride, b, groups, tile),
                5 => tile_vnni::<5>(a, stride, b, groups, tile),
                6 => tile_vnni::<6>(a, stride, b, groups, tile),
                _ => {}
            }
        }
    }
}

/// [`crate::quant::quantize_row`] compiled for AVX-512.
///
/// # Safety
/// The CPU must have AVX-512 F and BW.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_row_avx512(row: &[f32], dst: &mut [u8]) -> (f32, u8) {
    crate::quant::quantize_row(row, dst)
}

/// Sums of `R` rows of `a` with one panel of `b`, into `tile[..R]`.
///
/// # Safety
/// The CPU must have AVX-512 F, BW and VNNI. `R <= TILE_ROWS`; `a` must
/// be valid for `(R - 1) * stride + groups * 4` bytes, and `b` for
/// `groups * 256`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_vnni<const R: usize>(
    a: *const u8,
    stride: usize,
    b: *const i8,
    groups: usize,
    tile: &mut Tile,
) {
    let mut acc = [[_mm512_setzero_si512(); VECTORS]; R];
    for g in 0..groups {
        // SAFETY: `g < groups`, so the panel reads end at `groups * 256`
        // bytes of `b`, and the input reads at `(R - 1) * stride +
        // groups * 4` bytes of `a`: the bounds the caller promises. All
        // loads are unaligned ones.
        unsafe {
            let w = b.add(g * GROUP_BYTES);
            let panel: [__m512i; VECTORS] = [
                _mm512_loadu_si512(w.cast()),
                _mm512_loadu_si512(w.add(64).cast()),
                _mm512_loadu_si512(w.add(128).cast()),
                _mm512_loadu_si512(w.add(192).cast()),
            ];
            for (r, acc) in acc.iter_mut().enumerate() {
                let word = a.add(r * stride + g * GROUP).cast::<i32>().read_unaligned();
                let x = _mm512_set1_epi32(word);
                for (acc, w) in acc.iter_mut().zip(panel) {
                    *acc = _mm512_dpbusd_epi32(*acc, x, w);
                }
            }
        }
    }
    for (sums, acc) in tile.iter_mut().zip(acc) {
        for (dst, v) in sums.chunks_exact_mut(LANES).zip(acc) {
            // SAFETY: `dst` is 16 i32s, 64 writable bytes; the store is an
            // unaligned one.
            unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), v) };
        }
    }
}
