//! SHA-256 of two equal-length messages at once, for dm-verity's leaves.
//!
//! A dm-verity tree hashes every 4 KiB block of an image on its own, with
//! the same salt in front, and that hashing is most of the work of a layer
//! hash. On x86 the SHA extensions run one message as a single chain of
//! dependent `sha256rnds2` instructions, so one stream leaves the unit
//! waiting on each result. Two independent messages stepped through the
//! same rounds fill those gaps. On this project's Intel Xeon machines
//! (AVX-512, SHA-NI) a pair of salted 4 KiB leaves takes 0.8 of the time
//! of two calls to the `sha2` crate, which has no such interface.
//!
//! Without the SHA extensions, or for messages of different lengths, both
//! digests come from the `sha2` crate, so the answer never depends on the
//! CPU. This crate allows `unsafe` only in its `ni` module (with
//! `confsum-i8gemm`, the only crates that do); README.md says why.
//!
//! ```
//! use sha2::{Digest, Sha256};
//!
//! let salt = [0u8; 32];
//! let (a, b) = ([1u8; 4096], [2u8; 4096]);
//! let [ha, hb] = confsum_sha256x2::digest_pair(&salt, [&a, &b]);
//! let expected: [u8; 32] = Sha256::new().chain_update(salt).chain_update(b).finalize().into();
//! assert_eq!(hb, expected);
//! ```
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

#[cfg(target_arch = "x86_64")]
mod ni;
mod pair;

use sha2::{Digest, Sha256};

pub use self::pair::{accelerated, digest_pair};

/// Bytes per SHA-256 block.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const BLOCK: usize = 64;

/// A SHA-256 chaining value.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
type State = [u32; 8];

/// The initial chaining value (FIPS 180-4, 5.3.3).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const H0: State = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// The round constants (FIPS 180-4, 4.2.2).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const K: [u32; 64] = [
    0x428a_2f98,
    0x7137_4491,
    0xb5c0_fbcf,
    0xe9b5_dba5,
    0x3956_c25b,
    0x59f1_11f1,
    0x923f_82a4,
    0xab1c_5ed5,
    0xd807_aa98,
    0x1283_5b01,
    0x2431_85be,
    0x550c_7dc3,
    0x72be_5d74,
    0x80de_b1fe,
    0x9bdc_06a7,
    0xc19b_f174,
    0xe49b_69c1,
    0xefbe_4786,
    0x0fc1_9dc6,
    0x240c_a1cc,
    0x2de9_2c6f,
    0x4a74_84aa,
    0x5cb0_a9dc,
    0x76f9_88da,
    0x983e_5152,
    0xa831_c66d,
    0xb003_27c8,
    0xbf59_7fc7,
    0xc6e0_0bf3,
    0xd5a7_9147,
    0x06ca_6351,
    0x1429_2967,
    0x27b7_0a85,
    0x2e1b_2138,
    0x4d2c_6dfc,
    0x5338_0d13,
    0x650a_7354,
    0x766a_0abb,
    0x81c2_c92e,
    0x9272_2c85,
    0xa2bf_e8a1,
    0xa81a_664b,
    0xc24b_8b70,
    0xc76c_51a3,
    0xd192_e819,
    0xd699_0624,
    0xf40e_3585,
    0x106a_a070,
    0x19a4_c116,
    0x1e37_6c08,
    0x2748_774c,
    0x34b0_bcb5,
    0x391c_0cb3,
    0x4ed8_aa4a,
    0x5b9c_ca4f,
    0x682e_6ff3,
    0x748f_82ee,
    0x78a5_636f,
    0x84c8_7814,
    0x8cc7_0208,
    0x90be_fffa,
    0xa450_6ceb,
    0xbef9_a3f7,
    0xc671_78f2,
];

/// One message's digest the portable way.
fn digest_one(prefix: &[u8], message: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(prefix)
        .chain_update(message)
        .finalize()
        .into()
}
