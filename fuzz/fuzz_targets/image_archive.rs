//! Arbitrary bytes as an image archive (docker save or OCI layout tar):
//! open it, and when that succeeds hash its layers with no cache. Any panic
//! is a bug; errors (bad manifests, traversal, digest mismatches) are the
//! expected outcome.
#![no_main]

use std::io::Write;

use confsum_policy::{Image, LayerCache};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut file) = tempfile::NamedTempFile::new() else {
        return;
    };
    if file.write_all(data).is_err() {
        return;
    }
    let Ok(image) = Image::open_local(file.path(), "fuzz/image:v1") else {
        return;
    };
    if let Ok(facts) = image.facts(&LayerCache::disabled(), None) {
        assert_eq!(facts.layers.len(), image.layer_digests().len());
        assert!(facts.layers.iter().all(|h| h.len() == 64));
    }
});
