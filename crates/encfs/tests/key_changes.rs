//! Key slot changes that are atomic, serialized and within cryptsetup's
//! limits (issue 10), checked against the real `cryptsetup`.
//!
//! - A header update cut off at any byte (a crash, simulated by a writer
//!   that stops there) leaves the image opening with exactly the old key
//!   set or exactly the new one, here and in cryptsetup.
//! - [`LockedImage`] serializes changes: a second one waits for the first,
//!   and works on the header the first wrote.
//! - Key files over cryptsetup's limit are refused, at the same byte count
//!   where cryptsetup refuses them.
//!
//! The racing-processes test is in `crates/cli/tests/encfs_keys.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use confsum_encfs::{Error, FormatOptions, Kdf, KeyFile, LockedImage, Luks2, VolumeKey};
use confsum_testkit::{real_tool, run};

const PBKDF2: Kdf = Kdf::Pbkdf2 { iterations: 1000 };

/// Keys the tests use, by name.
const KEYS: [&[u8]; 3] = [b"key a", b"key b", b"key c"];

/// A writer that lets `limit` bytes through and then fails every write:
/// what is on disk after a crash at that byte, when each step is synced
/// before the next (as `LockedImage` does).
struct CutAfter<'a> {
    inner: &'a mut Cursor<Vec<u8>>,
    left: u64,
    /// (offset, length) of every write asked for, cut or not.
    writes: Vec<(u64, usize)>,
}

impl Read for CutAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl Seek for CutAfter<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl Write for CutAfter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writes.push((self.inner.position(), buf.len()));
        let n = (buf.len() as u64).min(self.left) as usize;
        if n == 0 {
            return Err(io::Error::other("simulated crash"));
        }
        self.left -= n as u64;
        self.inner.write(&buf[..n])
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An image of slots 0 (key a) and 1 (key b) and two data sectors.
fn image_a_b() -> Vec<u8> {
    let key = VolumeKey::generate(64).unwrap();
    let opts = FormatOptions {
        kdf: PBKDF2,
        data_offset: 1 << 20,
        ..FormatOptions::recipe()
    };
    let (mut luks, header) = Luks2::format(&key, KEYS[0], &opts).unwrap();
    let mut image = Cursor::new(header);
    image.get_mut().resize((1 << 20) + 8192, 0);
    luks.add_key(&mut image, KEYS[0], KEYS[1], &PBKDF2).unwrap();
    image.into_inner()
}

/// Which of [`KEYS`] open the image here.
fn opening_keys(image: &[u8]) -> BTreeSet<usize> {
    let Ok(luks) = Luks2::read(Cursor::new(image)) else {
        return BTreeSet::new();
    };
    (0..KEYS.len())
        .filter(|&i| luks.unlock(Cursor::new(image), KEYS[i]).is_ok())
        .collect()
}

/// Which of [`KEYS`] open the image in `cryptsetup open --test-passphrase`.
fn cryptsetup_keys(tool: &Path, dir: &Path, image: &[u8]) -> BTreeSet<usize> {
    let img = dir.join("cut.img");
    fs::write(&img, image).unwrap();
    (0..KEYS.len())
        .filter(|&i| {
            let key = dir.join(format!("key{i}"));
            fs::write(&key, KEYS[i]).unwrap();
            let args = ["open", "--test-passphrase", "--key-file"];
            run(
                tool,
                &[&args[..], &[key.to_str().unwrap(), img.to_str().unwrap()]].concat(),
            )
            .status
            .success()
        })
        .collect()
}

/// One header change, run through `w` on a loaded copy of the image.
type Change = fn(&mut Luks2, &mut CutAfter<'_>) -> Result<(), Error>;

fn add_c(luks: &mut Luks2, w: &mut CutAfter<'_>) -> Result<(), Error> {
    luks.add_key(w, KEYS[1], KEYS[2], &PBKDF2).map(drop)
}

fn remove_b(luks: &mut Luks2, w: &mut CutAfter<'_>) -> Result<(), Error> {
    luks.remove_key(w, 1, false)
}

/// Runs `change` on a copy of `image`, cut after `limit` bytes; returns
/// the image as left, whether the change reported success, and its writes.
fn cut_run(image: &[u8], change: Change, limit: u64) -> (Vec<u8>, bool, Vec<(u64, usize)>) {
    let mut disk = Cursor::new(image.to_vec());
    let mut luks = Luks2::read(&mut disk).unwrap();
    let mut w = CutAfter {
        inner: &mut disk,
        left: limit,
        writes: Vec::new(),
    };
    let ok = change(&mut luks, &mut w).is_ok();
    let writes = w.writes;
    (disk.into_inner(), ok, writes)
}

#[test]
fn a_header_update_cut_at_any_byte_leaves_the_old_or_the_new_key_set() {
    let tool = real_tool("cryptsetup", "cryptsetup-bin");
    let tmp = tempfile::tempdir().unwrap();
    let image = image_a_b();
    let old = BTreeSet::from([0, 1]);
    let cases: [(&str, Change, BTreeSet<usize>); 2] = [
        ("add key c", add_c, BTreeSet::from([0, 1, 2])),
        ("remove slot 1 (key b)", remove_b, BTreeSet::from([0])),
    ];
    for (name, change, new) in cases {
        let (done, ok, writes) = cut_run(&image, change, u64::MAX);
        assert!(ok, "{name}: uncut change failed");
        assert_eq!(opening_keys(&done), new, "{name}: uncut");
        let total: u64 = writes.iter().map(|&(_, n)| n as u64).sum();

        // Every write's edges and middle, and a stride through the rest.
        let mut cuts = BTreeSet::new();
        let mut at = 0;
        for &(_, n) in &writes {
            let n = n as u64;
            cuts.extend([at, at + 1, at + n / 2, at + n - 1]);
            at += n;
        }
        cuts.extend((0..total).step_by(32749));
        // Where cryptsetup checks too: the start, each write's middle
        // and end.
        let mut checked = BTreeSet::from([0]);
        let mut at = 0;
        for &(_, n) in &writes {
            checked.extend([at + n as u64 / 2, at + n as u64 - 1]);
            at += n as u64;
        }

        let mut seen_old = 0;
        let mut seen_new = 0;
        for &cut in &cuts {
            let (left, ok, _) = cut_run(&image, change, cut);
            assert!(
                !ok,
                "{name}: a change cut at byte {cut} of {total} reported success"
            );
            let keys = opening_keys(&left);
            assert!(
                keys == old || keys == new,
                "{name}: cut at byte {cut} of {total}: keys {keys:?} open, neither {old:?} nor {new:?}"
            );
            if keys == old {
                seen_old += 1;
            } else {
                seen_new += 1;
            }
            if let Some(tool) = &tool {
                if checked.contains(&cut) {
                    assert_eq!(
                        cryptsetup_keys(tool, tmp.path(), &left),
                        keys,
                        "{name}: cut at byte {cut}: cryptsetup disagrees"
                    );
                }
            }
        }
        // The cuts span both outcomes, so the check above could fail.
        assert!(
            seen_old > 0 && seen_new > 0,
            "{name}: {seen_old} old, {seen_new} new"
        );
    }
}

#[test]
fn metadata_is_written_primary_first_with_one_seqid() {
    // The order that makes the cut test pass: key material (or wipe), then
    // the primary copy at 0, then the secondary at its hdr_size.
    let image = image_a_b();
    for change in [add_c as Change, remove_b] {
        let (done, _, writes) = cut_run(&image, change, u64::MAX);
        let offsets: Vec<u64> = writes.iter().map(|&(o, _)| o).collect();
        let primary = offsets.iter().position(|&o| o == 0).unwrap();
        let secondary = offsets.iter().position(|&o| o == 0x4000).unwrap();
        assert!(primary > 0 && primary < secondary, "{offsets:?}");
        assert!(
            offsets[..primary].iter().all(|&o| o >= 0x8000),
            "{offsets:?}"
        );
        let seqid = |at: usize| u64::from_be_bytes(done[at + 16..at + 24].try_into().unwrap());
        assert_eq!(seqid(0), seqid(0x4000));
        assert_eq!(seqid(0), 3, "format 1, add b 2, this change 3");
    }
}

fn write_image(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("img");
    fs::write(&path, image_a_b()).unwrap();
    path
}

#[test]
fn a_second_locked_change_waits_for_the_first_and_sees_its_header() {
    let tmp = tempfile::tempdir().unwrap();
    let img = write_image(tmp.path());
    let mut first = LockedImage::open(&img).unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let second = {
        let (img, barrier) = (img.clone(), Arc::clone(&barrier));
        std::thread::spawn(move || {
            barrier.wait();
            // Blocks until `first` is dropped.
            let mut second = LockedImage::open(&img).unwrap();
            let slots: Vec<usize> = second.header().keyslots().iter().map(|k| k.id).collect();
            // Removing slot 1 (key b) with key a: the header read here
            // must be the one the first change wrote.
            second.remove_key(1, KEYS[0]).map(|()| slots)
        })
    };
    barrier.wait();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !second.is_finished(),
        "the second change did not wait for the lock"
    );
    assert_eq!(first.add_key(KEYS[0], KEYS[2], &PBKDF2).unwrap(), 2);
    drop(first);
    let slots = second.join().unwrap().unwrap();
    assert_eq!(slots, [0, 1, 2], "the second change read a stale header");
    assert_eq!(
        opening_keys(&fs::read(&img).unwrap()),
        BTreeSet::from([0, 2])
    );
}

#[test]
fn removing_two_slots_with_each_others_keys_never_leaves_no_key() {
    // The lockout, in one process: remove slot 0 proving with key
    // b, and slot 1 proving with key a. One must fail.
    let tmp = tempfile::tempdir().unwrap();
    let img = write_image(tmp.path());
    let mut one = LockedImage::open(&img).unwrap();
    one.remove_key(0, KEYS[1]).unwrap();
    drop(one);
    let mut two = LockedImage::open(&img).unwrap();
    assert!(matches!(two.remove_key(1, KEYS[0]), Err(Error::WrongKey)));
    assert_eq!(opening_keys(&fs::read(&img).unwrap()), BTreeSet::from([1]));
}

#[test]
fn a_key_that_opens_only_the_slot_removed_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let img = write_image(tmp.path());
    let mut image = LockedImage::open(&img).unwrap();
    assert!(matches!(
        image.remove_key(1, KEYS[1]),
        Err(Error::KeyOpensRemovedSlot(1))
    ));
    assert!(matches!(
        image.remove_key(5, KEYS[0]),
        Err(Error::NoSuchKeyslot(5))
    ));
    assert!(matches!(image.remove_key(1, KEYS[2]), Err(Error::WrongKey)));
    assert_eq!(
        opening_keys(&fs::read(&img).unwrap()),
        BTreeSet::from([0, 1])
    );
}

#[test]
fn a_stale_header_is_never_written_back() {
    let tmp = tempfile::tempdir().unwrap();
    let img = write_image(tmp.path());
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    let mut stale = Luks2::read(&file).unwrap();
    LockedImage::open(&img)
        .unwrap()
        .add_key(KEYS[0], KEYS[2], &PBKDF2)
        .unwrap();
    assert!(matches!(
        stale.remove_key(&file, 2, false),
        Err(Error::NoSuchKeyslot(2))
    ));
    assert!(matches!(
        stale.remove_key(&file, 1, false),
        Err(Error::HeaderChanged)
    ));
    assert_eq!(
        opening_keys(&fs::read(&img).unwrap()),
        BTreeSet::from([0, 1, 2])
    );
}

#[test]
fn key_files_over_cryptsetups_limit_are_refused_where_cryptsetup_refuses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let max = KeyFile::MAX_LEN as usize;
    assert_eq!(max, 8 << 20);
    let at_limit = dir.join("8MiB.key");
    let over = dir.join("8MiB+1.key");
    let bytes: Vec<u8> = (0..max + 1).map(|i| (i * 31 % 251) as u8).collect();
    fs::write(&at_limit, &bytes[..max]).unwrap();
    fs::write(&over, &bytes).unwrap();
    fs::write(dir.join("empty.key"), b"").unwrap();

    assert_eq!(KeyFile::load(&at_limit).unwrap().expose().len(), max);
    match KeyFile::load(&over) {
        Err(
            e @ Error::KeyFileTooLarge {
                len, max: limit, ..
            },
        ) => {
            assert_eq!((len, limit), (max as u64 + 1, max as u64));
            let msg = e.to_string();
            assert!(
                msg.contains("8MiB+1.key") && msg.contains("maximum"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        KeyFile::load(&dir.join("empty.key")),
        Err(Error::KeyFileEmpty(_))
    ));
    assert!(matches!(
        KeyFile::load(&dir.join("missing.key")),
        Err(Error::KeyFileIo { .. })
    ));

    // cryptsetup draws the line at the same byte.
    let Some(tool) = real_tool("cryptsetup", "cryptsetup-bin") else {
        return;
    };
    let img = write_image(dir);
    let a = dir.join("a.key");
    fs::write(&a, KEYS[0]).unwrap();
    let add = |new: &Path| {
        let args = [
            "luksAddKey",
            "--batch-mode",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--key-file",
        ];
        let paths = [
            a.to_str().unwrap(),
            img.to_str().unwrap(),
            new.to_str().unwrap(),
        ];
        run(&tool, &[&args[..], &paths[..]].concat())
    };
    assert!(add(&at_limit).status.success(), "cryptsetup refused 8 MiB");
    let refused = add(&over);
    assert!(!refused.status.success(), "cryptsetup took 8 MiB + 1");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Maximum keyfile size exceeded"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn new_key_files_are_private_and_never_replace_a_file() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("k");
    let key = KeyFile::generate().unwrap();
    assert_eq!(key.expose().len(), 32);
    assert_ne!(key.expose(), KeyFile::generate().unwrap().expose());
    key.write_new(&path).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(fs::read(&path).unwrap(), key.expose());
    assert!(matches!(
        KeyFile::generate().unwrap().write_new(&path),
        Err(Error::KeyFileIo { .. })
    ));
    assert_eq!(fs::read(&path).unwrap(), key.expose(), "replaced");
    assert!(!format!("{key:?}").contains(&format!("{:?}", &key.expose()[..4])));
}
