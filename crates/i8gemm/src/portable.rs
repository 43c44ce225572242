//! The kernel in plain Rust: the answer on CPUs without VNNI, and the
//! reference for the fast one (integer sums are exact, so both agree bit
//! for bit).

use crate::{GROUP, GROUP_BYTES, PANEL, Tile};

/// Integer sums of `rows` input rows (`stride` bytes apart in `input`)
/// with one packed weight panel, into `tile`'s first `rows` rows.
pub(crate) fn tile(rows: usize, input: &[u8], stride: usize, weights: &[i8], tile: &mut Tile) {
    for (r, sums) in tile.iter_mut().take(rows).enumerate() {
        *sums = [0; PANEL];
        let row = input.get(r * stride..(r + 1) * stride).unwrap_or_default();
        for (x, w) in row
            .chunks_exact(GROUP)
            .zip(weights.chunks_exact(GROUP_BYTES))
        {
            for (sum, w) in sums.iter_mut().zip(w.chunks_exact(GROUP)) {
                let dot: i32 = x
                    .iter()
                    .zip(w)
                    .map(|(&x, &w)| i32::from(x) * i32::from(w))
                    .sum();
                *sum = sum.wrapping_add(dot);
            }
        }
    }
}
