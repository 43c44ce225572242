//! LUKS2 headers, key slots and data encryption checked against the real
//! `cryptsetup` (cryptsetup-bin 2.6) and Python `cryptography`.
//!
//! Every image this crate writes is opened by cryptsetup, and every image
//! cryptsetup writes is opened here, with the volume key compared to what
//! `luksDump --dump-volume-key` prints. Without the tools these tests fail,
//! unless `CONFSUM_SKIP_REAL_TOOLS=1`.
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helpers fail the test by panicking"
)]

use std::fs;
use std::io::{Cursor, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use confsum_encfs::{Error, FormatOptions, Kdf, KeyslotPriority, Luks2, SectorCipher, VolumeKey};
use confsum_testkit::{det_bytes, run, run_ok};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

const MIB: u64 = 1 << 20;

/// Fast key derivations for tests (cryptsetup's minimums).
const PBKDF2: Kdf = Kdf::Pbkdf2 { iterations: 1000 };
const ARGON2ID: Kdf = Kdf::Argon2id {
    time: 4,
    memory_kib: 1024,
    parallel: 1,
};

fn cryptsetup() -> Option<PathBuf> {
    confsum_testkit::real_tool("cryptsetup", "cryptsetup-bin")
}

fn python_cryptography() -> Option<PathBuf> {
    confsum_testkit::python_with(&["cryptography.hazmat.primitives.ciphers"], "cryptography")
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Whether `cryptsetup open --test-passphrase` accepts the key file.
fn opens(tool: &Path, img: &Path, key_file: &Path) -> bool {
    run(
        tool,
        &[
            "open",
            "--test-passphrase",
            "--type",
            "luks2",
            "--key-file",
            path_str(key_file),
            path_str(img),
        ],
    )
    .status
    .success()
}

/// The volume key that `luksDump --dump-volume-key` prints under
/// "MK dump:" (hex bytes separated by spaces, over several lines).
fn dumped_volume_key(tool: &Path, img: &Path, key_file: &Path) -> Vec<u8> {
    let out = run_ok(
        tool,
        &[
            "luksDump",
            "--dump-volume-key",
            "--batch-mode",
            "--key-file",
            path_str(key_file),
            path_str(img),
        ],
    );
    let mut lines = out.lines().skip_while(|l| !l.starts_with("MK dump:"));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("no MK dump in:\n{out}"))
        .trim_start_matches("MK dump:");
    let hex: String = std::iter::once(first)
        .chain(lines.take_while(|l| l.starts_with(['\t', ' '])))
        .flat_map(str::split_whitespace)
        .collect();
    hex::decode(hex).unwrap()
}

/// Writes a 32-byte key file (the recipe's passphrase) and returns it.
fn key_file(dir: &Path, name: &str, seed: u64) -> (PathBuf, Vec<u8>) {
    let bytes = det_bytes(32, seed);
    let path = dir.join(name);
    fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

/// `cryptsetup luksFormat --type luks2` of a new 20 MiB file, with fast
/// key derivation, plus `extra` arguments.
fn cryptsetup_format(tool: &Path, img: &Path, key_file: &Path, extra: &[&str]) {
    fs::File::create(img).unwrap().set_len(20 * MIB).unwrap();
    let mut args = vec![
        "luksFormat",
        "--type",
        "luks2",
        "--batch-mode",
        "--key-file",
        path_str(key_file),
    ];
    args.extend_from_slice(extra);
    args.push(path_str(img));
    run_ok(tool, &args);
}

fn read_image(img: &Path) -> Luks2 {
    Luks2::read(fs::File::open(img).unwrap()).unwrap()
}

fn unlock_image(luks: &Luks2, img: &Path, passphrase: &[u8]) -> Result<(usize, VolumeKey), Error> {
    luks.unlock(fs::File::open(img).unwrap(), passphrase)
}

fn open_rw(img: &Path) -> fs::File {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .unwrap()
}

/// Writes `header_area` and then `data` encrypted as the image's data
/// segment.
fn write_image(img: &Path, luks: &Luks2, key: &VolumeKey, header_area: &[u8], data: &[u8]) {
    let mut encrypted = data.to_vec();
    SectorCipher::new(key, luks.sector_size(), luks.iv_tweak())
        .unwrap()
        .encrypt(0, &mut encrypted)
        .unwrap();
    let mut image = header_area.to_vec();
    image.extend_from_slice(&encrypted);
    fs::write(img, image).unwrap();
}

/// Headers this crate formats: `luksDump` shows what was asked for,
/// `open --test-passphrase` accepts the passphrase (and only it), and
/// `--dump-volume-key` prints our volume key.
#[test]
fn our_headers_open_in_cryptsetup() {
    let Some(tool) = cryptsetup() else { return };
    let dir = TempDir::new().unwrap();
    let (k, k_bytes) = key_file(dir.path(), "k", 1);
    let (wrong, _) = key_file(dir.path(), "wrong", 2);
    let cases = [
        (64, 4096, PBKDF2, "pbkdf2"),
        (64, 512, ARGON2ID, "argon2id"),
        (32, 4096, ARGON2ID, "argon2id"),
        (32, 1024, PBKDF2, "pbkdf2"),
    ];
    for (i, (key_len, sector_size, kdf, kdf_name)) in cases.into_iter().enumerate() {
        let key = VolumeKey::generate(key_len).unwrap();
        let opts = FormatOptions {
            sector_size,
            kdf,
            label: Some(format!("confsum-{i}")),
            uuid: Some([i as u8 + 1; 16]),
            ..FormatOptions::recipe()
        };
        let (luks, header_area) = Luks2::format(&key, &k_bytes, &opts).unwrap();
        let img = dir.path().join(format!("ours{i}.img"));
        write_image(&img, &luks, &key, &header_area, &det_bytes(64 * 1024, 7));

        let dump = run_ok(&tool, &["luksDump", path_str(&img)]);
        let expect = [
            "Version:       \t2".to_owned(),
            format!("UUID:          \t{}", luks.uuid()),
            format!("Label:         \tconfsum-{i}"),
            "offset: 16777216 [bytes]".to_owned(),
            "length: (whole device)".to_owned(),
            "cipher: aes-xts-plain64".to_owned(),
            format!("sector: {sector_size} [bytes]"),
            format!("Key:        {} bits", key_len * 8),
            format!("PBKDF:      {kdf_name}"),
            "AF stripes: 4000".to_owned(),
            "Area offset:32768 [bytes]".to_owned(),
            format!(
                "Area length:{} [bytes]",
                if key_len == 64 { 258048 } else { 131072 }
            ),
        ];
        for line in expect {
            assert!(dump.contains(&line), "{line:?} not in luksDump:\n{dump}");
        }
        assert_eq!(
            luks.uuid(),
            format!(
                "{0:02x}{0:02x}{0:02x}{0:02x}-{0:02x}{0:02x}-{0:02x}{0:02x}-{0:02x}{0:02x}-{0:02x}{0:02x}{0:02x}{0:02x}{0:02x}{0:02x}",
                i + 1
            )
        );

        assert!(opens(&tool, &img, &k), "case {i}");
        assert!(!opens(&tool, &img, &wrong), "case {i}");
        assert_eq!(dumped_volume_key(&tool, &img, &k), key.expose(), "case {i}");
    }
}

/// Images that cryptsetup formats open here, with cryptsetup's volume key:
/// the recipe's parameters and cryptsetup's defaults (Argon2id), with
/// 512- and 4096-byte sectors.
#[test]
fn cryptsetup_images_open_here() {
    let Some(tool) = cryptsetup() else { return };
    let dir = TempDir::new().unwrap();
    let (k, k_bytes) = key_file(dir.path(), "k", 3);
    let recipe = [
        "--cipher",
        "aes-xts-plain64",
        "--key-size",
        "512",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
    ];
    let defaults = [
        "--pbkdf-force-iterations",
        "4",
        "--pbkdf-memory",
        "32768",
        "--pbkdf-parallel",
        "1",
    ];
    for (name, args, kdf) in [
        ("recipe", &recipe[..], "pbkdf2"),
        ("defaults", &defaults[..], "argon2id"),
    ] {
        for sector in ["512", "4096"] {
            let img = dir.path().join(format!("{name}-{sector}.img"));
            let mut extra = args.to_vec();
            extra.extend(["--sector-size", sector, "--label", name]);
            cryptsetup_format(&tool, &img, &k, &extra);
            let expected = dumped_volume_key(&tool, &img, &k);

            let luks = read_image(&img);
            assert_eq!(luks.data_offset(), 16 * MIB);
            assert_eq!(luks.sector_size().to_string(), sector);
            assert_eq!(luks.cipher(), "aes-xts-plain64");
            assert_eq!(luks.iv_tweak(), 0);
            assert_eq!(luks.segment_size(), None);
            assert_eq!(luks.label(), Some(name));
            assert_eq!(luks.header_copies_ok(), [true, true]);
            let dump = run_ok(&tool, &["luksDump", path_str(&img)]);
            assert!(dump.contains(&format!("UUID:          \t{}", luks.uuid())));
            let slots = luks.keyslots();
            assert_eq!(slots.len(), 1);
            assert_eq!(
                (slots[0].id, slots[0].kdf.as_str(), slots[0].key_size),
                (0, kdf, 64)
            );
            assert_eq!((slots[0].area_offset, slots[0].area_size), (32768, 258_048));
            assert_eq!(slots[0].priority, KeyslotPriority::Normal);

            let (slot, key) = unlock_image(&luks, &img, &k_bytes).unwrap();
            assert_eq!((slot, key.expose()), (0, &expected[..]), "{name} {sector}");
            assert!(matches!(
                unlock_image(&luks, &img, b"not the key"),
                Err(Error::WrongKey)
            ));
        }
    }
}

/// Data encrypted by `SectorCipher` decrypts with Python `cryptography`'s
/// AES-XTS under the IV rule (byte offset / 512 + iv_tweak, also for
/// 4096-byte sectors).
#[test]
fn sector_cipher_matches_python_cryptography() {
    let Some(python) = python_cryptography() else {
        return;
    };
    let dir = TempDir::new().unwrap();
    const SCRIPT: &str = r#"
import sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
key = bytes.fromhex(sys.argv[1]); size = int(sys.argv[2])
tweak = int(sys.argv[3]); offset = int(sys.argv[4])
data = open(sys.argv[5], 'rb').read(); out = bytearray()
for i in range(0, len(data), size):
    iv = ((offset + i) // 512 + tweak).to_bytes(16, 'little')
    d = Cipher(algorithms.AES(key), modes.XTS(iv)).decryptor()
    out += d.update(data[i:i + size]) + d.finalize()
open(sys.argv[6], 'wb').write(out)
"#;
    for (key_len, size, tweak, offset) in [
        (64, 4096, 0, 0),
        (64, 4096, 5, 3 * 4096),
        (64, 512, 0, 512 * 9),
        (32, 512, 1 << 40, 0),
        (32, 2048, 0, 2048),
    ] {
        let key = VolumeKey::generate(key_len).unwrap();
        let cipher = SectorCipher::new(&key, size, tweak).unwrap();
        let plain = det_bytes(16 * 4096 + 2 * size, key_len as u64 + size as u64);
        let mut data = plain.clone();
        cipher.encrypt(offset, &mut data).unwrap();
        let (input, output) = (dir.path().join("in"), dir.path().join("out"));
        fs::write(&input, &data).unwrap();
        let out = Command::new(&python)
            .args(["-c", SCRIPT, &hex::encode(key.expose())])
            .args([size.to_string(), tweak.to_string(), offset.to_string()])
            .args([&input, &output])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            fs::read(&output).unwrap() == plain,
            "key {key_len}, sector {size}, tweak {tweak}, offset {offset}"
        );
        cipher.decrypt(offset, &mut data).unwrap();
        assert!(data == plain);
    }
}

/// `cryptsetup reencrypt --encrypt` of a file with known bytes: its data
/// segment decrypts here to those bytes, for both sector sizes.
#[test]
fn cryptsetup_reencrypted_data_decrypts_here() {
    let Some(tool) = cryptsetup() else { return };
    let dir = TempDir::new().unwrap();
    let (k, k_bytes) = key_file(dir.path(), "k", 4);
    for sector in ["4096", "512"] {
        let img = dir.path().join(format!("plain-{sector}.img"));
        let plain = det_bytes(24 * MIB as usize, 11);
        fs::write(&img, &plain).unwrap();
        run_ok(
            &tool,
            &[
                "reencrypt",
                "--encrypt",
                "--type",
                "luks2",
                "--reduce-device-size",
                "16M",
                "--sector-size",
                sector,
                "--cipher",
                "aes-xts-plain64",
                "--key-size",
                "512",
                "--pbkdf",
                "pbkdf2",
                "--pbkdf-force-iterations",
                "1000",
                "--key-file",
                path_str(&k),
                "--batch-mode",
                path_str(&img),
            ],
        );
        let luks = read_image(&img);
        assert_eq!(luks.data_offset(), 8 * MIB);
        assert_eq!(luks.sector_size().to_string(), sector);
        let (_, key) = unlock_image(&luks, &img, &k_bytes).unwrap();
        assert_eq!(key.expose(), dumped_volume_key(&tool, &img, &k));

        // The device shrank by 16 MiB: 8 MiB of data at offset 8 MiB.
        let image = fs::read(&img).unwrap();
        let mut data = image[8 * MIB as usize..16 * MIB as usize].to_vec();
        SectorCipher::new(&key, luks.sector_size(), luks.iv_tweak())
            .unwrap()
            .decrypt(0, &mut data)
            .unwrap();
        assert!(data == plain[..8 * MIB as usize], "sector {sector}");
    }
}

/// Key slots added here open in cryptsetup and key slots removed here do
/// not; key slots that cryptsetup adds open here and those it kills do not.
#[test]
fn key_slots_agree_with_cryptsetup() {
    let Some(tool) = cryptsetup() else { return };
    let dir = TempDir::new().unwrap();
    let (k, k_bytes) = key_file(dir.path(), "k", 5);
    let (k2, k2_bytes) = key_file(dir.path(), "k2", 6);
    let (k3, k3_bytes) = key_file(dir.path(), "k3", 7);

    // On an image cryptsetup formatted, and on one of ours.
    let theirs = dir.path().join("theirs.img");
    cryptsetup_format(
        &tool,
        &theirs,
        &k,
        &[
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--sector-size",
            "4096",
        ],
    );
    let ours = dir.path().join("ours.img");
    let key = VolumeKey::generate(64).unwrap();
    let (luks, area) = Luks2::format(&key, &k_bytes, &FormatOptions::recipe()).unwrap();
    write_image(&ours, &luks, &key, &area, &det_bytes(8192, 1));

    for img in [&theirs, &ours] {
        let volume_key = dumped_volume_key(&tool, img, &k);
        let mut luks = read_image(img);
        let slot = luks
            .add_key(open_rw(img), &k_bytes, &k2_bytes, &ARGON2ID)
            .unwrap();
        assert_eq!(slot, 1);
        assert!(opens(&tool, img, &k2), "{img:?}");
        assert!(opens(&tool, img, &k));
        assert_eq!(dumped_volume_key(&tool, img, &k2), volume_key);
        let dump = run_ok(&tool, &["luksDump", path_str(img)]);
        assert!(dump.contains("  1: luks2"), "{dump}");
        assert!(dump.contains("Epoch:         \t"), "{dump}");

        // Remove the first slot: its key stops working in cryptsetup.
        let mut luks = read_image(img);
        luks.remove_key(open_rw(img), 0, false).unwrap();
        assert!(!opens(&tool, img, &k), "{img:?}");
        assert!(opens(&tool, img, &k2), "{img:?}");
        let luks = read_image(img);
        assert!(matches!(
            unlock_image(&luks, img, &k_bytes),
            Err(Error::WrongKey)
        ));
        assert_eq!(luks.keyslots().len(), 1);

        // cryptsetup adds slot 0 again (in the freed area); it opens here.
        run_ok(
            &tool,
            &[
                "luksAddKey",
                "--batch-mode",
                "--pbkdf",
                "pbkdf2",
                "--pbkdf-force-iterations",
                "1000",
                "--key-file",
                path_str(&k2),
                path_str(img),
                path_str(&k3),
            ],
        );
        let luks = read_image(img);
        let (slot, got) = unlock_image(&luks, img, &k3_bytes).unwrap();
        assert_eq!((slot, got.expose()), (0, &volume_key[..]));
        assert_eq!(luks.keyslots()[0].area_offset, 32768);

        // cryptsetup kills slot 1 (ours): it no longer opens here.
        run_ok(&tool, &["luksKillSlot", "--batch-mode", path_str(img), "1"]);
        let mut luks = read_image(img);
        assert!(matches!(
            unlock_image(&luks, img, &k2_bytes),
            Err(Error::WrongKey)
        ));
        assert_eq!(unlock_image(&luks, img, &k3_bytes).unwrap().0, 0);
        assert!(matches!(
            luks.remove_key(open_rw(img), 0, false),
            Err(Error::LastKeyslot)
        ));
        assert!(matches!(
            luks.remove_key(open_rw(img), 1, false),
            Err(Error::NoSuchKeyslot(1))
        ));
    }
}

/// Flips the byte at `at`, then recomputes nothing.
fn flip(img: &Path, at: u64) {
    let mut f = open_rw(img);
    let mut image = fs::read(img).unwrap();
    image[at as usize] ^= 0x55;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&image[at as usize..at as usize + 1]).unwrap();
}

/// Replaces the JSON area of the metadata copy at `offset` (16 KiB) with
/// `json` and NULs, and recomputes the copy's checksum.
fn replace_json(image: &mut [u8], offset: usize, json: &[u8]) {
    let copy = &mut image[offset..offset + 16384];
    copy[4096..].fill(0);
    copy[4096..4096 + json.len()].copy_from_slice(json);
    copy[448..512].fill(0);
    let sum = Sha256::digest(&*copy);
    copy[448..480].copy_from_slice(&sum);
}

/// Damage: a bad primary copy falls back to the secondary (here and in
/// cryptsetup), two bad copies, a truncated image and garbage JSON with a
/// valid checksum are clear errors.
#[test]
fn damaged_headers() {
    let Some(tool) = cryptsetup() else { return };
    let dir = TempDir::new().unwrap();
    let (k, k_bytes) = key_file(dir.path(), "k", 8);
    let key = VolumeKey::generate(64).unwrap();
    let (_, area) = Luks2::format(&key, &k_bytes, &FormatOptions::recipe()).unwrap();
    let (luks, _) = (Luks2::read(Cursor::new(&area)).unwrap(), ());
    let img = dir.path().join("img");
    write_image(&img, &luks, &key, &area, &det_bytes(4096, 3));

    // The primary's label (binary header) and JSON area.
    for at in [30, 4096 + 10] {
        let copy = dir.path().join(format!("primary-{at}"));
        fs::copy(&img, &copy).unwrap();
        flip(&copy, at);
        let luks = read_image(&copy);
        assert_eq!(luks.header_copies_ok(), [false, true]);
        assert_eq!(
            unlock_image(&luks, &copy, &k_bytes).unwrap().1.expose(),
            key.expose()
        );
        assert!(
            opens(&tool, &copy, &k),
            "cryptsetup, primary flipped at {at}"
        );

        // A write repairs the primary.
        let mut luks = read_image(&copy);
        luks.add_key(open_rw(&copy), &k_bytes, b"second", &PBKDF2)
            .unwrap();
        assert_eq!(read_image(&copy).header_copies_ok(), [true, true]);
    }

    // Both copies.
    let both = dir.path().join("both");
    fs::copy(&img, &both).unwrap();
    flip(&both, 4096 + 10);
    flip(&both, 16384 + 4096 + 10);
    let err = Luks2::read(fs::File::open(&both).unwrap()).unwrap_err();
    assert!(
        matches!(err, Error::BadHeader("both header copies are corrupt")),
        "{err}"
    );
    assert!(!opens(&tool, &both, &k));

    // Truncated.
    let short = dir.path().join("short");
    fs::write(&short, &area[..10 * 1024]).unwrap();
    let err = Luks2::read(fs::File::open(&short).unwrap()).unwrap_err();
    assert!(
        matches!(err, Error::BadHeader("image ends inside its header")),
        "{err}"
    );
    // A short text file is not a cut image: it never started as one.
    let err = Luks2::read(Cursor::new(b"hello\n")).unwrap_err();
    assert!(matches!(err, Error::BadHeader("no LUKS2 header")), "{err}");
    let err = Luks2::read(Cursor::new(&area[..MIB as usize])).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BadHeader("image too short for its key slot area")
        ),
        "{err}"
    );
    assert!(matches!(
        Luks2::read(Cursor::new(Vec::new())),
        Err(Error::BadHeader(_))
    ));

    // Garbage JSON with good checksums, in both copies.
    for json in [&b"{garbage"[..], b"{\"keyslots\":{}}", b"[]", b"{}"] {
        let mut image = fs::read(&img).unwrap();
        replace_json(&mut image, 0, json);
        replace_json(&mut image, 16384, json);
        let garbage = dir.path().join("garbage");
        fs::write(&garbage, &image).unwrap();
        let err = Luks2::read(Cursor::new(&image)).unwrap_err();
        assert!(matches!(err, Error::BadHeader(_)), "{err}");
        assert!(
            !run(&tool, &["luksDump", path_str(&garbage)])
                .status
                .success()
        );
    }

    // Valid JSON that asks for something unsupported.
    let mut image = fs::read(&img).unwrap();
    let json = String::from_utf8(image[4096..16384].to_vec()).unwrap();
    let json = json.trim_end_matches('\0').replace(
        "\"keyslots_size\":\"16744448\"",
        "\"keyslots_size\":\"16744448\",\"requirements\":{\"mandatory\":[\"online-reencrypt-v2\"]}",
    );
    replace_json(&mut image, 0, json.as_bytes());
    replace_json(&mut image, 16384, json.as_bytes());
    let err = Luks2::read(Cursor::new(&image)).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
}

/// Every byte of the primary binary header changed in turn leaves a
/// readable image (through the secondary copy, or because the byte is not
/// checked); the same change in both copies never panics.
#[test]
fn every_binary_header_byte_flipped() {
    let key = VolumeKey::generate(64).unwrap();
    let opts = FormatOptions {
        data_offset: MIB,
        ..FormatOptions::recipe()
    };
    let (_, mut image) = Luks2::format(&key, b"k", &opts).unwrap();
    let (mut ok_both, mut err_both) = (0, 0);
    for at in 0..4096 {
        // One bit, a different one from byte to byte.
        let bit = 1 << (at % 8);
        image[at] ^= bit;
        let luks = Luks2::read(Cursor::new(&image))
            .unwrap_or_else(|e| panic!("byte {at} ^ {bit:#x}: {e}"));
        assert_eq!(luks.data_offset(), MIB);

        image[16384 + at] ^= bit;
        match Luks2::read(Cursor::new(&image)) {
            Ok(_) => ok_both += 1,
            Err(_) => err_both += 1,
        }
        image[16384 + at] ^= bit;
        image[at] ^= bit;
    }
    // Only the unused half of the 64-byte checksum field is not covered.
    assert_eq!((ok_both, err_both), (32, 4096 - 32));
}

/// Noise in the JSON area of both copies (with good checksums) is an
/// error, never a panic.
#[test]
fn json_noise_never_panics() {
    let key = VolumeKey::generate(32).unwrap();
    let opts = FormatOptions {
        data_offset: MIB,
        ..FormatOptions::recipe()
    };
    let (_, image) = Luks2::format(&key, b"k", &opts).unwrap();
    let json = image[4096..16384].to_vec();
    let len = json.iter().position(|&b| b == 0).unwrap();
    for seed in 0..300u64 {
        let mut text = json[..len].to_vec();
        let noise = det_bytes(8, seed);
        let at = (u64::from_le_bytes(noise.clone().try_into().unwrap()) % len as u64) as usize;
        match seed % 3 {
            0 => text[at] = noise[0],
            1 => text.truncate(at),
            _ => text.insert(at, b"{}[]\",:0-e9 "[noise[1] as usize % 12]),
        }
        let mut copy = image.clone();
        replace_json(&mut copy, 0, &text);
        replace_json(&mut copy, 16384, &text);
        let _ = Luks2::read(Cursor::new(&copy));
    }
}

/// Seeds for the `luks2_header` fuzz target (fuzz/README.md): with
/// `CONFSUM_DUMP_CASES=DIR`, writes header areas this crate formats (and
/// variants of their JSON) to DIR, each as an image (first byte 0) and as
/// a primary copy whose checksum the target fixes up (first byte 1).
#[test]
#[ignore = "writes fuzz seeds; run by hand"]
fn dump_fuzz_seeds() {
    let Some(dir) = std::env::var_os("CONFSUM_DUMP_CASES") else {
        return;
    };
    let dir = PathBuf::from(dir);
    fs::create_dir_all(&dir).unwrap();
    let mut images = Vec::new();
    for (name, key_len, kdf) in [("k64-pbkdf2", 64, PBKDF2), ("k32-argon2id", 32, ARGON2ID)] {
        let key = VolumeKey::generate(key_len).unwrap();
        let opts = FormatOptions {
            data_offset: 32768 + if key_len == 64 { 258_048 } else { 131_072 },
            kdf,
            label: Some("seed".to_owned()),
            sector_size: 512,
            uuid: None,
        };
        let (_, image) = Luks2::format(&key, b"k", &opts).unwrap();
        images.push((name.to_owned(), image));
    }
    // Two key slots in a larger key slot area.
    let key = VolumeKey::generate(32).unwrap();
    let opts = FormatOptions {
        data_offset: 32768 + 2 * 131_072,
        ..FormatOptions::recipe()
    };
    let (mut luks, image) = Luks2::format(&key, b"a", &opts).unwrap();
    let mut f = Cursor::new(image);
    luks.add_key(&mut f, b"a", b"b", &PBKDF2).unwrap();
    images.push(("two-slots".to_owned(), f.into_inner()));
    // Tokens, flags, priority and unknown fields.
    let mut image = images[0].1.clone();
    let json = String::from_utf8(image[4096..16384].to_vec()).unwrap();
    let json = json
        .trim_end_matches('\0')
        .replace(
            "\"tokens\":{}",
            "\"tokens\":{\"0\":{\"type\":\"luks2-keyring\",\"keyslots\":[\"0\"],\"key_description\":\"d\"}}",
        )
        .replace("\"kdf\":{", "\"priority\":2,\"kdf\":{")
        .replace(
            "\"keyslots_size\":\"258048\"",
            "\"keyslots_size\":\"258048\",\"flags\":[\"allow-discards\"],\"x\":null",
        );
    replace_json(&mut image, 0, json.as_bytes());
    replace_json(&mut image, 16384, json.as_bytes());
    Luks2::read(Cursor::new(&image)).unwrap();
    images.push(("tokens-flags".to_owned(), image));

    for (name, image) in images {
        let mut whole = vec![0];
        whole.extend_from_slice(&image);
        fs::write(dir.join(format!("{name}.img")), whole).unwrap();
        let mut primary = vec![1];
        primary.extend_from_slice(&image[..16384]);
        fs::write(dir.join(format!("{name}.primary")), primary).unwrap();
    }
}
