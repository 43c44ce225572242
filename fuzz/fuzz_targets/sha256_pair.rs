//! `confsum_sha256x2::digest_pair` against the `sha2` crate, for arbitrary
//! prefixes and message pairs: the first byte sets the prefix length, the
//! rest splits into two messages (of equal length when the input allows, so
//! the two-stream kernel runs; the second may be one byte longer, which
//! takes the portable path). Any difference is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let (prefix, messages) = rest.split_at(usize::from(cut).min(rest.len()));
    let half = messages.len() / 2;
    let (a, b) = messages.split_at(half);
    let [da, db] = confsum_sha256x2::digest_pair(prefix, [a, b]);
    let one = |m: &[u8]| -> [u8; 32] { Sha256::new().chain_update(prefix).chain_update(m).finalize().into() };
    assert_eq!(da, one(a));
    assert_eq!(db, one(b));
});
