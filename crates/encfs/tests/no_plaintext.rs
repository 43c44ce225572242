//! No plaintext of the documents ever reaches the disk while sealing.
//!
//! A watcher thread reads every file in the output directory (the image's
//! temporary file included) over and over while `seal` runs, and looks for
//! a marker that every document (and one file name) holds. The test fails
//! if the marker shows up in any read, or in the finished image, or if the
//! watcher never saw the temporary image with data in it (then it proved
//! nothing).
//!
//! The same seal into `/dev/shm` (tmpfs: direct I/O only since Linux 6.6,
//! buffered writes before) checks that the image opens with every file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use confsum_encfs::{SealOptions, SealSource, Volume, seal};

/// Appears in every document and in one file name, never in ciphertext
/// by chance (2^-192 per position).
const MARKER: &[u8] = b"PLAINTEXT-MARKER-d41d8cd98f00b204";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    haystack
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == first)
        .any(|(i, _)| haystack.get(i + 1..i + needle.len()) == Some(rest))
}

/// Documents of several sizes (inline-sized, block-straddling, many MiB),
/// each full of the marker at unaligned offsets.
fn documents(root: &Path) -> u64 {
    let mut total = 0;
    let mut unit = b"confidential ".to_vec();
    unit.extend_from_slice(MARKER);
    unit.push(b'\n');
    for (i, size) in [10usize, 100, 4095, 4097, 1 << 16, 6 << 20]
        .iter()
        .cycle()
        .take(60)
        .enumerate()
    {
        let data: Vec<u8> = unit.iter().copied().cycle().skip(i).take(*size).collect();
        let dir = root.join(format!("d{}", i % 5));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("doc{i}.txt")), &data).unwrap();
        total += data.len() as u64;
    }
    let name = format!("{}.txt", String::from_utf8_lossy(MARKER));
    fs::write(root.join(name), b"x").unwrap();
    total
}

/// Reads every file in `dir` until `stop`, counting whole rounds in
/// `rounds`; panics on the marker. Returns how many reads saw more than the
/// LUKS2 header of a partial image.
fn watch(dir: &Path, stop: &AtomicBool, rounds: &AtomicUsize) -> usize {
    let mut saw_data = 0;
    loop {
        let last_round = stop.load(Ordering::SeqCst);
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            // Files come and go (the temporary image is renamed at the end).
            let Ok(bytes) = fs::read(&path) else { continue };
            assert!(
                !contains(&bytes, MARKER),
                "plaintext in {} ({} bytes) while sealing",
                path.display(),
                bytes.len()
            );
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with(".confsum-seal-") && bytes.len() > 16 << 20 {
                saw_data += 1;
            }
        }
        rounds.fetch_add(1, Ordering::SeqCst);
        if last_round {
            return saw_data;
        }
    }
}

#[test]
fn no_plaintext_reaches_the_output_directory_while_sealing() {
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    let total = documents(&docs);
    assert!(total > 50 << 20);
    let out_dir = tmp.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let img = out_dir.join("docs.img");

    let stop = AtomicBool::new(false);
    let rounds = AtomicUsize::new(0);
    let saw_data = thread::scope(|scope| {
        let watcher = scope.spawn(|| watch(&out_dir, &stop, &rounds));
        // After each batch, let the watcher scan everything at least once
        // (two round ends: one that started after this point), however
        // loaded the machine is.
        let mut progress = |_| {
            let seen = rounds.load(Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(30);
            while rounds.load(Ordering::SeqCst) < seen + 2 && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
        };
        let sealed = seal(
            SealSource::Dir(&docs),
            &img,
            b"passphrase",
            &SealOptions::default(),
            &mut progress,
        );
        stop.store(true, Ordering::SeqCst);
        let saw_data = watcher.join().unwrap();
        sealed.unwrap();
        saw_data
    });
    assert!(
        saw_data >= 3,
        "the watcher read the partial image with data only {saw_data} times: it proved nothing"
    );
    assert!(!contains(&fs::read(&img).unwrap(), MARKER));

    // And the marker really is in what was sealed.
    let fs = Volume::open(&img, b"passphrase")
        .unwrap()
        .filesystem()
        .unwrap();
    let mut doc = Vec::new();
    fs.copy_to("/d0/doc0.txt", &mut doc).unwrap();
    assert_eq!(doc, fs::read(docs.join("d0/doc0.txt")).unwrap());
    let mut big = Vec::new();
    fs.copy_to("/d0/doc5.txt", &mut big).unwrap();
    assert!(contains(&big, MARKER));
}

#[test]
fn images_sealed_onto_tmpfs_open_with_every_file() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("no /dev/shm: skipping the tmpfs fallback test");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    documents(&docs);
    let out = tempfile::tempdir_in(shm).unwrap();
    let img = out.path().join("docs.img");
    seal(
        SealSource::Dir(&docs),
        &img,
        b"passphrase",
        &SealOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert!(!contains(&fs::read(&img).unwrap(), MARKER));
    let fs = Volume::open(&img, b"passphrase")
        .unwrap()
        .filesystem()
        .unwrap();
    for i in [0usize, 5, 11, 59] {
        let path = format!("/d{}/doc{i}.txt", i % 5);
        let mut got = Vec::new();
        fs.copy_to(&path, &mut got).unwrap();
        let want = fs::read(docs.join(&path[1..])).unwrap();
        assert_eq!(got, want, "{path}");
    }
}
