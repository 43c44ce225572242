//! dm-verity trees checked against the real `veritysetup` (cryptsetup-bin).
//!
//! Every root, hash device and superblock here is compared with what the
//! tool computes or accepts, not with this crate's own idea of the format.
//! Without the tool these tests fail, unless `CONFSUM_SKIP_REAL_TOOLS=1`.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

use std::fs;
use std::path::{Path, PathBuf};

use confsum_ext4::BlockSink;
use confsum_testkit::{det_bytes, run, run_ok};
use confsum_verity::{Error, RootHash, VerityHasher, VeritySuperblock, root_hash};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

const BLOCK: usize = 4096;
const SALT_HEX: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const UUID: [u8; 16] = [
    0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10,
];
const UUID_TEXT: &str = "01020304-0506-0708-090a-0b0c0d0e0f10";

fn veritysetup() -> Option<PathBuf> {
    confsum_testkit::real_tool("veritysetup", "cryptsetup-bin")
}

/// The value of `field:` in veritysetup's output.
fn field<'a>(output: &'a str, name: &str) -> &'a str {
    output
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name:?} in veritysetup output:\n{output}"))
        .trim()
}

/// `veritysetup format` with this crate's parameters, writing a hash device
/// with a superblock (and a fixed UUID) to `hash`; returns its root hash.
fn format(tool: &Path, data: &Path, hash: &Path) -> RootHash {
    let out = run_ok(
        tool,
        &[
            "format",
            "--hash",
            "sha256",
            "--data-block-size",
            "4096",
            "--hash-block-size",
            "4096",
            "--salt",
            SALT_HEX,
            "--uuid",
            UUID_TEXT,
            path_str(data),
            path_str(hash),
        ],
    );
    field(&out, "Root hash").parse().unwrap()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Feeds `data` to a hasher in irregular pieces (1 byte up to ~1.3 MiB).
fn stream_irregular(data: &[u8]) -> VerityHasher {
    let mut hasher = VerityHasher::new();
    let sizes = [1, 4095, 4097, 12_345, 1 << 20, 3, 333_333, 8192, 1_300_000];
    let mut pos = 0;
    for size in sizes.iter().cycle() {
        if pos == data.len() {
            break;
        }
        let end = (pos + size).min(data.len());
        hasher.append(&data[pos..end]).unwrap();
        pos = end;
    }
    hasher
}

fn salted_sha256(data: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update([0; 32])
        .chain_update(data)
        .finalize()
        .into()
}

/// Roots and hash devices for sizes around level boundaries, up to a tree of
/// three levels (128 * 128 + 1 blocks).
#[test]
fn roots_and_hash_devices_match_veritysetup() {
    let Some(tool) = veritysetup() else { return };
    let dir = TempDir::new().unwrap();
    for blocks in [2, 127, 128, 129, 128 * 128, 128 * 128 + 1] {
        let data = det_bytes(blocks * BLOCK, blocks as u64);
        let data_path = dir.path().join(format!("data{blocks}"));
        let their_hash_path = dir.path().join(format!("theirs{blocks}"));
        fs::write(&data_path, &data).unwrap();
        let expected = format(&tool, &data_path, &their_hash_path);

        assert_eq!(
            root_hash(fs::File::open(&data_path).unwrap()).unwrap(),
            expected,
            "root_hash, {blocks} blocks"
        );
        let tree = stream_irregular(&data).into_tree().unwrap();
        assert_eq!(tree.root_hash(), expected, "VerityHasher, {blocks} blocks");

        // With the same UUID our hash device is veritysetup's, byte for byte.
        let mut ours = Vec::new();
        tree.write_hash_device(&mut ours, UUID).unwrap();
        assert!(
            ours == fs::read(&their_hash_path).unwrap(),
            "hash device differs from veritysetup's, {blocks} blocks"
        );
    }
}

/// hcsshim hashes a single data block into one level; veritysetup (and the
/// kernel) use no level and the block's own salted hash as the root.
#[test]
fn single_block_root_is_hcsshims_not_veritysetups() {
    let Some(tool) = veritysetup() else { return };
    let dir = TempDir::new().unwrap();
    let data = det_bytes(BLOCK, 99);
    let data_path = dir.path().join("data");
    fs::write(&data_path, &data).unwrap();
    let theirs = format(&tool, &data_path, &dir.path().join("theirs"));
    assert_eq!(theirs.as_bytes(), &salted_sha256(&data));

    let ours = root_hash(&data[..]).unwrap();
    let mut level = salted_sha256(&data).to_vec();
    level.resize(BLOCK, 0);
    assert_eq!(ours.as_bytes(), &salted_sha256(&level));
    assert_ne!(ours, theirs);

    // The zero block's hash, as the real tool computes it.
    let zeros_path = dir.path().join("zeros");
    fs::write(&zeros_path, [0; BLOCK]).unwrap();
    assert_eq!(
        format(&tool, &zeros_path, &dir.path().join("zh")).to_string(),
        "2e534ef0107d592d1706ac38ad58596b85ef3375d360a6d669f974792df5cb5a"
    );
}

/// The streaming path (irregular appends, zero runs, overwrites of blocks
/// in every stage of the pipeline, a long zero tail) gives the root of the
/// final bytes, and that root is veritysetup's.
#[test]
fn streaming_with_zeros_and_overwrites_matches_final_bytes() {
    let Some(tool) = veritysetup() else { return };
    let mut image: Vec<u8> = Vec::new();
    let mut hasher = VerityHasher::new();
    let chunk = det_bytes(3 << 20, 5);
    let mut step = 0u64;
    while image.len() < 40 << 20 {
        step += 1;
        let len = (step * 7919 * 37) as usize % (1 << 20) + 1;
        if step % 4 == 0 {
            // Zero runs: sub-block, whole blocks, and unaligned multi-block.
            let zeros = [100, 4096, 3 * 4096, 5 * 4096 + 17, 64 << 10][step as usize % 5];
            hasher.append_zeros(zeros as u64).unwrap();
            image.resize(image.len() + zeros, 0);
        } else {
            let start = (step as usize * 4099) % (2 << 20);
            let piece = &chunk[start..start + len];
            hasher.append(piece).unwrap();
            image.extend_from_slice(piece);
        }
        // Overwrite just-written blocks (still in the batch or in flight)
        // and long-hashed ones.
        let whole = image.len() / BLOCK;
        for back in [1, 2, 300, 600, 5000] {
            if whole > back && step % 3 == 0 {
                let index = whole - back;
                let block: [u8; BLOCK] = det_bytes(BLOCK, step * 1000 + back as u64)
                    .try_into()
                    .unwrap();
                hasher.overwrite_block(index as u64, &block).unwrap();
                image[index * BLOCK..][..BLOCK].copy_from_slice(&block);
            }
        }
    }
    // Pad to a whole block, then a tail of zeros like the ext4 writer's.
    let pad = image.len().next_multiple_of(BLOCK) - image.len();
    hasher.append_zeros(pad as u64 + (32 << 20)).unwrap();
    image.resize(image.len() + pad + (32 << 20), 0);
    // Rewrite the first block last, as the ext4 writer does its superblock.
    let first = [0x5a; BLOCK];
    hasher.overwrite_block(0, &first).unwrap();
    image[..BLOCK].copy_from_slice(&first);
    hasher.finish().unwrap();
    let streamed = hasher.root_hash().unwrap();

    assert_eq!(streamed, root_hash(&image[..]).unwrap());
    let dir = TempDir::new().unwrap();
    let data_path = dir.path().join("image");
    fs::write(&data_path, &image).unwrap();
    assert_eq!(
        streamed,
        format(&tool, &data_path, &dir.path().join("hash"))
    );
}

/// veritysetup verifies data against the hash device we write and reads our
/// superblock; it also rejects the pair once the data changes.
#[test]
fn veritysetup_verifies_and_dumps_our_hash_device() {
    let Some(tool) = veritysetup() else { return };
    let dir = TempDir::new().unwrap();
    for blocks in [1usize, 129, 128 * 128 + 1] {
        let mut data = det_bytes(blocks * BLOCK, 1000 + blocks as u64);
        let data_path = dir.path().join(format!("data{blocks}"));
        let hash_path = dir.path().join(format!("ours{blocks}"));
        fs::write(&data_path, &data).unwrap();
        let tree = root_hash(&data[..])
            .and_then(|_| stream_irregular(&data).into_tree())
            .unwrap();
        let mut device = fs::File::create(&hash_path).unwrap();
        tree.write_hash_device(&mut device, UUID).unwrap();
        drop(device);

        // For one block the kernel checks the block itself (see above).
        let root = if blocks == 1 {
            RootHash::from(salted_sha256(&data)).to_string()
        } else {
            tree.root_hash().to_string()
        };
        let args = ["verify", path_str(&data_path), path_str(&hash_path), &root];
        run_ok(&tool, &args);

        let dump = run_ok(&tool, &["dump", path_str(&hash_path)]);
        assert_eq!(field(&dump, "UUID"), UUID_TEXT);
        assert_eq!(field(&dump, "Hash type"), "1");
        assert_eq!(field(&dump, "Data blocks"), blocks.to_string());
        assert_eq!(field(&dump, "Data block size"), "4096");
        assert_eq!(field(&dump, "Hash block size"), "4096");
        assert_eq!(field(&dump, "Hash algorithm"), "sha256");
        assert_eq!(field(&dump, "Salt"), SALT_HEX);
        if blocks > 1 {
            assert_eq!(field(&dump, "Hash blocks"), tree.hash_blocks().to_string());
        }

        // One flipped data byte must fail verification.
        data[blocks * BLOCK / 2] ^= 1;
        fs::write(&data_path, &data).unwrap();
        assert!(
            !run(&tool, &args).status.success(),
            "veritysetup verify accepted corrupted data, {blocks} blocks"
        );
    }
}

#[test]
fn decodes_veritysetups_superblock() {
    let Some(tool) = veritysetup() else { return };
    let dir = TempDir::new().unwrap();
    let data_path = dir.path().join("data");
    let hash_path = dir.path().join("hash");
    fs::write(&data_path, det_bytes(300 * BLOCK, 3)).unwrap();
    format(&tool, &data_path, &hash_path);
    let bytes = fs::read(&hash_path).unwrap();

    let sb = VeritySuperblock::decode(&bytes).unwrap();
    assert_eq!(sb.hash_type(), 1);
    assert_eq!(sb.uuid(), UUID);
    assert_eq!(sb.algorithm(), "sha256");
    assert_eq!(sb.data_block_size(), 4096);
    assert_eq!(sb.hash_block_size(), 4096);
    assert_eq!(sb.data_blocks(), 300);
    assert_eq!(sb.salt(), &[0; 32]);
    assert_eq!(sb, VeritySuperblock::new(300, UUID));
    assert_eq!(&sb.encode()[..], &bytes[..VeritySuperblock::SIZE]);
}

/// Broken superblocks are errors, never panics, and veritysetup refuses
/// each of them too.
#[test]
fn malformed_superblocks_are_rejected() {
    let good = VeritySuperblock::new(129, UUID).encode();
    let with = |offset: usize, bytes: &[u8]| {
        let mut sb = good.to_vec();
        sb[offset..offset + bytes.len()].copy_from_slice(bytes);
        sb
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("signature only", good[..8].to_vec()),
        ("cut in the salt", good[..200].to_vec()),
        ("one byte short", good[..511].to_vec()),
        ("bad signature", with(0, b"verify\0\0")),
        ("version 0", with(8, &0u32.to_le_bytes())),
        ("version 2", with(8, &2u32.to_le_bytes())),
        ("hash type 2", with(12, &2u32.to_le_bytes())),
        ("empty algorithm", with(32, &[0; 32])),
        ("unterminated algorithm", with(32, &[b'a'; 32])),
        ("algorithm with a space", with(32, b"sha 256\0")),
        ("data block size 0", with(64, &0u32.to_le_bytes())),
        ("data block size 256", with(64, &256u32.to_le_bytes())),
        ("data block size 6144", with(64, &6144u32.to_le_bytes())),
        (
            "hash block size 1 MiB",
            with(68, &(1u32 << 20).to_le_bytes()),
        ),
        ("salt size 257", with(80, &257u16.to_le_bytes())),
        ("salt size 65535", with(80, &u16::MAX.to_le_bytes())),
        ("all ones", vec![0xff; 512]),
        ("all zeros", vec![0; 512]),
    ];
    for (name, bytes) in &cases {
        match VeritySuperblock::decode(bytes) {
            Err(Error::BadSuperblock(why)) => {
                assert!(!why.is_empty() && why.chars().next().unwrap().is_lowercase());
            }
            other => panic!("{name}: expected BadSuperblock, got {other:?}"),
        }
    }

    // No byte value anywhere makes decode panic.
    for offset in 0..good.len() {
        for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
            let _ = VeritySuperblock::decode(&with(offset, &[value]));
        }
    }
    for len in 0..good.len() {
        assert!(VeritySuperblock::decode(&good[..len]).is_err());
    }

    // veritysetup agrees on the whole-length cases (and accepts the good one).
    let Some(tool) = veritysetup() else { return };
    let dir = TempDir::new().unwrap();
    let dump = |bytes: &[u8]| {
        let path = dir.path().join("sb");
        let mut block = bytes.to_vec();
        block.resize(BLOCK, 0);
        fs::write(&path, block).unwrap();
        run(&tool, &["dump", path_str(&path)]).status.success()
    };
    assert!(dump(&good), "veritysetup rejected our superblock");
    for (name, bytes) in cases.iter().filter(|(_, b)| b.len() == 512) {
        assert!(!dump(bytes), "{name}: veritysetup accepted it");
    }
}
