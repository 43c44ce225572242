//! The padding around the kernel, and the portable path.

use crate::digest_one;
#[cfg(target_arch = "x86_64")]
use crate::{BLOCK, H0, State};

/// SHA-256 of `prefix || messages[0]` and of `prefix || messages[1]`.
///
/// With the x86 SHA extensions and messages of equal length, both are
/// computed in one pass; otherwise one after the other. The digests are
/// the same either way.
pub fn digest_pair(prefix: &[u8], messages: [&[u8]; 2]) -> [[u8; 32]; 2] {
    let [a, b] = messages;
    #[cfg(target_arch = "x86_64")]
    if a.len() == b.len() {
        if let Some(ni) = crate::ni::ShaNi::detect() {
            return pair_ni(ni, prefix, a, b);
        }
    }
    [digest_one(prefix, a), digest_one(prefix, b)]
}

/// Whether [`digest_pair`] uses the two-stream kernel on this CPU.
pub fn accelerated() -> bool {
    #[cfg(target_arch = "x86_64")]
    return crate::ni::ShaNi::detect().is_some();
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// Both digests through the kernel; `a` and `b` are equally long.
#[cfg(target_arch = "x86_64")]
fn pair_ni(ni: crate::ni::ShaNi, prefix: &[u8], a: &[u8], b: &[u8]) -> [[u8; 32]; 2] {
    let mut states = [H0; 2];
    // Whole blocks of the prefix alone are the same in both streams.
    let (whole, rest) = prefix.split_at(prefix.len() - prefix.len() % BLOCK);
    ni.compress_pair(&mut states, whole, whole);

    // The rest of the prefix shares a block with the messages' start,
    // unless the messages are too short to fill it.
    let mut at = 0;
    let mut pending = rest;
    let fill = BLOCK - rest.len();
    if !rest.is_empty() && a.len() >= fill {
        let mut blocks = [[0; BLOCK]; 2];
        for (block, message) in blocks.iter_mut().zip([a, b]) {
            let (head, tail) = block.split_at_mut(rest.len());
            head.copy_from_slice(rest);
            tail.copy_from_slice(message.get(..fill).unwrap_or_default());
        }
        ni.compress_pair(&mut states, &blocks[0], &blocks[1]);
        at = fill;
        pending = &[];
    }

    // The messages' whole blocks, read where they are.
    let body = (a.len() - at) / BLOCK * BLOCK;
    let span = at..at + body;
    ni.compress_pair(
        &mut states,
        a.get(span.clone()).unwrap_or_default(),
        b.get(span).unwrap_or_default(),
    );
    at += body;

    // The last bytes, 0x80, zeros and the length in bits: one block or two.
    let bits = ((prefix.len() + a.len()) as u64).wrapping_mul(8);
    let mut tails = [[0; 2 * BLOCK]; 2];
    let mut len = BLOCK;
    for (tail, message) in tails.iter_mut().zip([a, b]) {
        let left = message.get(at..).unwrap_or_default();
        let used = pending.len() + left.len();
        len = if used + 9 <= BLOCK { BLOCK } else { 2 * BLOCK };
        let (data, pad) = tail.split_at_mut(used);
        let (p, l) = data.split_at_mut(pending.len());
        p.copy_from_slice(pending);
        l.copy_from_slice(left);
        if let Some(marker) = pad.first_mut() {
            *marker = 0x80;
        }
        if let Some(end) = tail.get_mut(len - 8..len) {
            end.copy_from_slice(&bits.to_be_bytes());
        }
    }
    let [ta, tb] = &tails;
    ni.compress_pair(&mut states, &ta[..len], &tb[..len]);
    states.map(|state| encode(&state))
}

#[cfg(target_arch = "x86_64")]
fn encode(state: &State) -> [u8; 32] {
    let mut out = [0; 32];
    for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest_one;
    use proptest::prelude::*;

    /// FIPS 180-4 examples (NIST's SHA256.pdf): "abc", the 448-bit
    /// message, and one million 'a's, each split into prefix and message
    /// in several ways.
    #[test]
    fn nist_examples() {
        let million = vec![b'a'; 1_000_000];
        let cases: [(&[u8], &str); 3] = [
            (
                b"abc",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            ),
            (
                &million,
                "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
            ),
        ];
        for (text, hex) in cases {
            for cut in [0, 1, 2, 3, 31, 32, 55, 56, 63, 64, 65, 200] {
                let cut = cut.min(text.len());
                let (prefix, message) = text.split_at(cut);
                for digest in digest_pair(prefix, [message, message]) {
                    assert_eq!(to_hex(&digest), hex, "cut at {cut}");
                }
            }
        }
    }

    /// dm-verity's leaf of an all-zero block (salt of 32 zeros), as
    /// `veritysetup` computes it; also in confsum-verity.
    #[test]
    fn zero_block_leaf() {
        let [a, b] = digest_pair(&[0; 32], [&[0; 4096], &[0; 4096]]);
        let expected = "2e534ef0107d592d1706ac38ad58596b85ef3375d360a6d669f974792df5cb5a";
        assert_eq!((to_hex(&a), to_hex(&b)), (expected.into(), expected.into()));
    }

    /// Every length around the block and padding boundaries, for prefixes
    /// shorter than, equal to and longer than a block.
    #[test]
    fn all_boundaries_match_sha2() {
        let data: Vec<u8> = (0..400u32).map(|i| (i * 37 + 11) as u8).collect();
        let other: Vec<u8> = (0..400u32).map(|i| (i * 91 + 5) as u8).collect();
        for prefix_len in [0, 1, 32, 55, 56, 63, 64, 65, 100, 128] {
            let prefix = &other[..prefix_len];
            for len in 0..=200 {
                let (a, b) = (&data[..len], &other[200..200 + len]);
                assert_eq!(
                    digest_pair(prefix, [a, b]),
                    [digest_one(prefix, a), digest_one(prefix, b)],
                    "prefix {prefix_len}, length {len}"
                );
            }
        }
    }

    /// The tests above compare against `sha2`; they only test the kernel
    /// where it runs, which must be wherever the CPU has the extensions.
    #[test]
    fn kernel_runs_where_the_cpu_has_sha() {
        #[cfg(target_arch = "x86_64")]
        assert_eq!(accelerated(), std::is_x86_feature_detected!("sha"));
        #[cfg(not(target_arch = "x86_64"))]
        assert!(!accelerated());
    }

    fn to_hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    proptest! {
        #[test]
        fn matches_sha2(
            prefix in proptest::collection::vec(any::<u8>(), 0..130),
            a in proptest::collection::vec(any::<u8>(), 0..9000),
            b_seed in any::<u8>(),
            b_len_delta in 0usize..2,
        ) {
            // Mostly equal lengths (the kernel), sometimes not (the fallback).
            let b: Vec<u8> = a.iter().map(|x| x ^ b_seed).chain(std::iter::repeat_n(7, b_len_delta)).collect();
            prop_assert_eq!(
                digest_pair(&prefix, [&a, &b]),
                [digest_one(&prefix, &a), digest_one(&prefix, &b)]
            );
        }
    }
}
