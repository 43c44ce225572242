//! Deterministic filler.

/// `len` deterministic, incompressible bytes for `seed` (splitmix64).
///
/// Incompressible like real binaries, so compression and block-level
/// shortcuts get no free ride; the same `(len, seed)` always gives the same
/// bytes, so failures reproduce.
pub fn det_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `n` deterministic floats in [-1, 1) for `seed` (Knuth's MMIX linear
/// congruential generator, its top 24 bits): weights and inputs for
/// numeric tests and benches that are not all alike.
pub fn det_floats(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{det_bytes, det_floats};

    #[test]
    fn seeds_differ_and_prefixes_agree() {
        assert_ne!(det_bytes(64, 1), det_bytes(64, 2));
        assert_eq!(det_bytes(13, 5)[..], det_bytes(64, 5)[..13]);
        assert!(det_bytes(0, 5).is_empty());
    }

    #[test]
    fn floats_are_in_range_and_reproduce() {
        let v = det_floats(1000, 3);
        assert!(v.iter().all(|x| (-1.0..1.0).contains(x)));
        assert_eq!(v[..10], det_floats(10, 3)[..]);
        assert_ne!(det_floats(10, 3), det_floats(10, 4));
    }
}
