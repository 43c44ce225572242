//! The two-stream compression on the x86 SHA extensions: the only
//! `unsafe` code of this crate.
//!
//! The layout is the one the instructions want (Intel's "SHA Extensions"
//! paper): the state as two vectors, A B E F and C D G H, and message words
//! byte-swapped into native order, four at a time. The two streams go
//! through the same rounds in lock step, one instruction of each in turn,
//! so that each stream's `sha256rnds2` has the other's to hide behind.
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m128i, _mm_add_epi32, _mm_alignr_epi8, _mm_blend_epi16, _mm_loadu_si128, _mm_set_epi64x,
    _mm_sha256msg1_epu32, _mm_sha256msg2_epu32, _mm_sha256rnds2_epu32, _mm_shuffle_epi8,
    _mm_shuffle_epi32, _mm_storeu_si128,
};

use crate::{BLOCK, K, State};

/// Proof that this CPU has the instructions [`compress_pair_ni`] uses: it
/// is made only by [`ShaNi::detect`], which makes calling it sound.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShaNi(());

impl ShaNi {
    /// `Some` when the CPU has SHA, SSE2, SSSE3 and SSE4.1.
    pub(crate) fn detect() -> Option<Self> {
        let found = std::is_x86_feature_detected!("sha")
            && std::is_x86_feature_detected!("sse2")
            && std::is_x86_feature_detected!("ssse3")
            && std::is_x86_feature_detected!("sse4.1");
        found.then_some(ShaNi(()))
    }

    /// Runs the whole 64-byte blocks of `a` through `states[0]` and those
    /// of `b` through `states[1]`, pairwise; `a` and `b` should be equally
    /// long (blocks past the shorter one's end are left out).
    pub(crate) fn compress_pair(self, states: &mut [State; 2], a: &[u8], b: &[u8]) {
        // SAFETY: a `ShaNi` exists only where `detect` found every feature
        // that `compress_pair_ni` enables.
        unsafe { compress_pair_ni(states, a, b) }
    }
}

/// SHA-256 compression of two streams at once.
///
/// # Safety
/// The CPU must have the SHA, SSE2, SSSE3 and SSE4.1 extensions.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn compress_pair_ni(states: &mut [State; 2], a: &[u8], b: &[u8]) {
    // SAFETY: the features are enabled (the caller's promise). The only
    // memory accessed through pointers is: 16-byte loads at offsets 0, 16,
    // 32 and 48 of a 64-byte chunk, from `K` at offsets 4i for i < 16 (64
    // words), and 16-byte loads and stores at offsets 0 and 4 of an
    // 8-word state; all unaligned loads and stores, all in bounds.
    unsafe {
        // Swaps the bytes of each 32-bit word: SHA-256 is big-endian.
        let bswap = _mm_set_epi64x(0x0c0d_0e0f_0809_0a0b, 0x0405_0607_0001_0203);

        macro_rules! load_state {
            ($h:expr) => {{
                let abcd = _mm_loadu_si128($h.as_ptr().cast::<__m128i>());
                let efgh = _mm_loadu_si128($h.as_ptr().add(4).cast::<__m128i>());
                let cdab = _mm_shuffle_epi32(abcd, 0xb1);
                let hgfe = _mm_shuffle_epi32(efgh, 0x1b);
                (
                    _mm_alignr_epi8(cdab, hgfe, 8),
                    _mm_blend_epi16(hgfe, cdab, 0xf0),
                )
            }};
        }
        macro_rules! store_state {
            ($h:expr, $abef:expr, $cdgh:expr) => {{
                let feba = _mm_shuffle_epi32($abef, 0x1b);
                let dchg = _mm_shuffle_epi32($cdgh, 0xb1);
                _mm_storeu_si128(
                    $h.as_mut_ptr().cast::<__m128i>(),
                    _mm_blend_epi16(feba, dchg, 0xf0),
                );
                _mm_storeu_si128(
                    $h.as_mut_ptr().add(4).cast::<__m128i>(),
                    _mm_alignr_epi8(dchg, feba, 8),
                );
            }};
        }
        // Four message words, byte-swapped.
        macro_rules! words {
            ($block:expr, $i:expr) => {
                _mm_shuffle_epi8(
                    _mm_loadu_si128($block.as_ptr().add(16 * $i).cast::<__m128i>()),
                    bswap,
                )
            };
        }
        // Four rounds with message words `w` and constants K[4i..4i+4].
        macro_rules! rounds {
            ($abef:ident, $cdgh:ident, $w:expr, $i:expr) => {{
                let wk = _mm_add_epi32($w, _mm_loadu_si128(K.as_ptr().add(4 * $i).cast()));
                $cdgh = _mm_sha256rnds2_epu32($cdgh, $abef, wk);
                $abef = _mm_sha256rnds2_epu32($abef, $cdgh, _mm_shuffle_epi32(wk, 0x0e));
            }};
        }
        // The next four words of the schedule from the last sixteen.
        macro_rules! schedule {
            ($w0:expr, $w1:expr, $w2:expr, $w3:expr) => {
                _mm_sha256msg2_epu32(
                    _mm_add_epi32(_mm_sha256msg1_epu32($w0, $w1), _mm_alignr_epi8($w3, $w2, 4)),
                    $w3,
                )
            };
        }

        let [sa, sb] = states;
        let (mut abef_a, mut cdgh_a) = load_state!(sa);
        let (mut abef_b, mut cdgh_b) = load_state!(sb);
        for (x, y) in a.chunks_exact(BLOCK).zip(b.chunks_exact(BLOCK)) {
            let (save_abef_a, save_cdgh_a) = (abef_a, cdgh_a);
            let (save_abef_b, save_cdgh_b) = (abef_b, cdgh_b);
            let (mut a0, mut a1, mut a2, mut a3) =
                (words!(x, 0), words!(x, 1), words!(x, 2), words!(x, 3));
            let (mut b0, mut b1, mut b2, mut b3) =
                (words!(y, 0), words!(y, 1), words!(y, 2), words!(y, 3));
            rounds!(abef_a, cdgh_a, a0, 0);
            rounds!(abef_b, cdgh_b, b0, 0);
            rounds!(abef_a, cdgh_a, a1, 1);
            rounds!(abef_b, cdgh_b, b1, 1);
            rounds!(abef_a, cdgh_a, a2, 2);
            rounds!(abef_b, cdgh_b, b2, 2);
            rounds!(abef_a, cdgh_a, a3, 3);
            rounds!(abef_b, cdgh_b, b3, 3);
            for i in (4..16).step_by(4) {
                a0 = schedule!(a0, a1, a2, a3);
                b0 = schedule!(b0, b1, b2, b3);
                rounds!(abef_a, cdgh_a, a0, i);
                rounds!(abef_b, cdgh_b, b0, i);
                a1 = schedule!(a1, a2, a3, a0);
                b1 = schedule!(b1, b2, b3, b0);
                rounds!(abef_a, cdgh_a, a1, i + 1);
                rounds!(abef_b, cdgh_b, b1, i + 1);
                a2 = schedule!(a2, a3, a0, a1);
                b2 = schedule!(b2, b3, b0, b1);
                rounds!(abef_a, cdgh_a, a2, i + 2);
                rounds!(abef_b, cdgh_b, b2, i + 2);
                a3 = schedule!(a3, a0, a1, a2);
                b3 = schedule!(b3, b0, b1, b2);
                rounds!(abef_a, cdgh_a, a3, i + 3);
                rounds!(abef_b, cdgh_b, b3, i + 3);
            }
            abef_a = _mm_add_epi32(abef_a, save_abef_a);
            cdgh_a = _mm_add_epi32(cdgh_a, save_cdgh_a);
            abef_b = _mm_add_epi32(abef_b, save_abef_b);
            cdgh_b = _mm_add_epi32(cdgh_b, save_cdgh_b);
        }
        store_state!(sa, abef_a, cdgh_a);
        store_state!(sb, abef_b, cdgh_b);
    }
}
