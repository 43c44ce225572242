//! Arbitrary bytes -> `decompress` -> `convert_tar` -> a sink that drops the
//! image, under both path policies. Any panic (including a broken sink
//! contract, checked below) is a bug; errors are the expected outcome for
//! almost every input. When `PathPolicy::Reject` accepts an input, nothing
//! in it needs cleaning, so `PathPolicy::Clean` must write the same image.
#![no_main]

use std::hash::{DefaultHasher, Hasher};
use std::io;

use confsum_ext4::{BLOCK_SIZE, BlockSink, Options, PathPolicy, convert_tar, decompress};
use libfuzzer_sys::fuzz_target;

/// Small enough that absurd sizes fail fast with `DiskFull`.
const MAX_DISK: u64 = 64 << 20;

/// Counts what it is given, checks the `BlockSink` contract and digests the
/// calls (equal call sequences make equal images); the bytes are dropped.
#[derive(Debug, Default)]
struct Discard {
    len: u64,
    finished: bool,
    digest: DefaultHasher,
}

impl BlockSink for Discard {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        assert!(!self.finished, "append after finish");
        self.digest.write(data);
        self.len += data.len() as u64;
        Ok(())
    }

    fn append_zeros(&mut self, len: u64) -> io::Result<()> {
        assert!(!self.finished, "append_zeros after finish");
        self.digest.write_u64(len);
        self.len += len;
        Ok(())
    }

    fn overwrite_block(&mut self, index: u64, block: &[u8; BLOCK_SIZE]) -> io::Result<()> {
        assert!(!self.finished, "overwrite after finish");
        self.digest.write_u64(index);
        self.digest.write(block);
        let end = (index + 1) * BLOCK_SIZE as u64;
        assert!(
            end <= self.len,
            "overwrite of block {index} past the end of the image ({} bytes)",
            self.len
        );
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        assert!(!self.finished, "finish called twice");
        self.finished = true;
        Ok(())
    }
}

/// The image's length and digest, if it converts.
fn run(data: &[u8], policy: PathPolicy) -> Option<(u64, u64)> {
    let mut options = Options::default();
    options.max_disk_size = MAX_DISK;
    options.path_policy = policy;
    let input = decompress(data).ok()?;
    let sink = convert_tar(input, Discard::default(), &options).ok()?;
    assert!(sink.finished, "a finished image must have been flushed");
    assert_eq!(sink.len % BLOCK_SIZE as u64, 0, "image is whole blocks");
    assert!(sink.len <= MAX_DISK, "image exceeds max_disk_size");
    Some((sink.len, sink.digest.finish()))
}

fuzz_target!(|data: &[u8]| {
    let rejecting = run(data, PathPolicy::Reject);
    let cleaning = run(data, PathPolicy::Clean);
    if rejecting.is_some() {
        assert_eq!(
            rejecting, cleaning,
            "Clean changed an image Reject accepted"
        );
    }
});
