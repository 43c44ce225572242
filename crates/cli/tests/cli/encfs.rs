//! `confsum encfs` end to end, checked with the real cryptsetup.
//!
//! Needs cryptsetup (Debian: cryptsetup-bin); set
//! `CONFSUM_SKIP_REAL_TOOLS=1` to skip where it cannot be installed.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use confsum_testkit::Run;

use crate::common::{self, cryptsetup};

fn confsum(dir: &Path, args: &[&str], stdin: &[u8]) -> Run {
    common::confsum()
        .current_dir(dir)
        .args(args)
        .stdin(stdin)
        .run()
}

fn ok(out: &Run) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn opens(cryptsetup: &Path, dir: &Path, img: &str, key: &str) -> bool {
    Command::new(cryptsetup)
        .current_dir(dir)
        .args(["open", "--test-passphrase", "--key-file", key, img])
        .status()
        .unwrap()
        .success()
}

fn docs(dir: &Path) {
    fs::create_dir_all(dir.join("docs/sub")).unwrap();
    fs::write(dir.join("docs/a.txt"), "secret\n").unwrap();
    fs::write(dir.join("docs/sub/n.bin"), vec![9u8; 300_000]).unwrap();
}

#[test]
fn create_read_rotate_and_remove_keys() {
    let Some(cryptsetup) = cryptsetup() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    docs(d);
    ok(&confsum(
        d,
        &[
            "encfs",
            "create",
            "--from",
            "docs",
            "--out",
            "enc.img",
            "--key-file",
            "k",
        ],
        b"",
    ));
    let key = fs::metadata(d.join("k")).unwrap();
    assert_eq!(key.len(), 32);
    assert_eq!(key.permissions().mode() & 0o777, 0o600, "key file mode");
    assert!(opens(&cryptsetup, d, "enc.img", "k"));

    assert_eq!(
        ok(&confsum(
            d,
            &["encfs", "cat", "enc.img", "/a.txt", "-k", "k"],
            b""
        )),
        "secret\n"
    );
    let listing = ok(&confsum(
        d,
        &["encfs", "ls", "enc.img", "/sub", "-k", "k"],
        b"",
    ));
    assert!(listing.contains("300000 n.bin"), "{listing}");

    ok(&confsum(
        d,
        &["encfs", "extract", "enc.img", "--to", "out", "-k", "k"],
        b"",
    ));
    assert_eq!(
        fs::read(d.join("out/sub/n.bin")).unwrap(),
        vec![9u8; 300_000]
    );
    assert_eq!(fs::read_to_string(d.join("out/a.txt")).unwrap(), "secret\n");
    assert!(!d.join("out/lost+found").exists());

    ok(&confsum(
        d,
        &[
            "encfs",
            "add-key",
            "enc.img",
            "-k",
            "k",
            "--new-key-file",
            "k2",
        ],
        b"",
    ));
    assert!(
        opens(&cryptsetup, d, "enc.img", "k2"),
        "cryptsetup opens the added key"
    );
    ok(&confsum(
        d,
        &["encfs", "remove-key", "enc.img", "--slot", "0", "-k", "k2"],
        b"",
    ));
    assert!(
        !opens(&cryptsetup, d, "enc.img", "k"),
        "the removed key no longer opens"
    );
    assert!(opens(&cryptsetup, d, "enc.img", "k2"));
    let out = confsum(d, &["encfs", "ls", "enc.img", "-k", "k"], b"");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no key slot opens with this key"), "{err}");
}

/// The documents of `docs`, as a tar.
fn docs_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in [
        ("a.txt", b"secret\n".to_vec()),
        ("sub/n.bin", vec![9u8; 300_000]),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, path, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// `--from-tar` reads what `layer-hash` reads: gzip and zstd tars, from a
/// file or from standard input.
#[test]
fn create_from_gzip_and_zstd_tars() {
    let Some(cryptsetup) = cryptsetup() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let tar = docs_tar();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    fs::write(d.join("docs.tar.gz"), &gz).unwrap();
    fs::write(d.join("docs.tar.zst"), &zst).unwrap();

    for (name, from, stdin) in [
        ("gz-file", "docs.tar.gz", &b""[..]),
        ("zst-file", "docs.tar.zst", &b""[..]),
        ("gz-stdin", "-", &gz[..]),
        ("zst-stdin", "-", &zst[..]),
    ] {
        let (img, key) = (format!("{name}.img"), format!("{name}.key"));
        ok(&confsum(
            d,
            &[
                "encfs",
                "create",
                "--from-tar",
                from,
                "--out",
                &img,
                "-k",
                &key,
            ],
            stdin,
        ));
        assert!(
            opens(&cryptsetup, d, &img, &key),
            "{name}: cryptsetup opens it"
        );
        assert_eq!(
            ok(&confsum(
                d,
                &["encfs", "cat", &img, "/a.txt", "-k", &key],
                b""
            )),
            "secret\n",
            "{name}"
        );
        let listing = ok(&confsum(d, &["encfs", "ls", &img, "/sub", "-k", &key], b""));
        assert!(listing.contains("300000 n.bin"), "{name}: {listing}");
    }
}

/// A tar that cannot be opened or read fails before anything is sealed, and
/// the key file made for the image goes with it.
#[test]
fn a_bad_tar_leaves_no_key_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut truncated_gz =
        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    truncated_gz.write_all(&docs_tar()).unwrap();
    let mut truncated_gz = truncated_gz.finish().unwrap();
    truncated_gz.truncate(truncated_gz.len() / 2);
    fs::write(d.join("cut.tar.gz"), &truncated_gz).unwrap();
    for (from, why) in [
        ("missing.tar", "cannot open missing.tar"),
        ("cut.tar.gz", "malformed tar"),
    ] {
        let out = confsum(
            d,
            &[
                "encfs",
                "create",
                "--from-tar",
                from,
                "--out",
                "enc.img",
                "-k",
                "new.key",
            ],
            b"",
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(why), "{from}: {err}");
        assert!(!d.join("new.key").exists(), "{from}: key file left behind");
        assert!(!d.join("enc.img").exists(), "{from}: image left behind");
    }
}

#[test]
fn passphrase_slots_use_argon2id() {
    let Some(cryptsetup) = cryptsetup() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    docs(d);
    ok(&confsum(
        d,
        &[
            "encfs",
            "create",
            "--from",
            "docs",
            "--out",
            "p.img",
            "--passphrase-stdin",
            "--pbkdf-memory",
            "65536",
        ],
        b"correct horse\n",
    ));
    let dump = Command::new(&cryptsetup)
        .current_dir(d)
        .args(["luksDump", "p.img"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&dump.stdout).contains("argon2id"));
    let mut child = Command::new(&cryptsetup)
        .current_dir(d)
        .args(["open", "--test-passphrase", "p.img"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "cryptsetup opens the passphrase slot"
    );
    let cat = confsum(
        d,
        &["encfs", "cat", "p.img", "/a.txt", "--passphrase-stdin"],
        b"correct horse\n",
    );
    assert_eq!(ok(&cat), "secret\n");
}

#[test]
fn dump_never_prints_the_key() {
    let Some(cryptsetup) = cryptsetup() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    docs(d);
    ok(&confsum(
        d,
        &[
            "encfs", "create", "--from", "docs", "--out", "enc.img", "-k", "k",
        ],
        b"",
    ));
    let dump = ok(&confsum(d, &["encfs", "dump", "enc.img"], b""));
    assert!(
        dump.contains("aes-xts-plain64") && dump.contains("pbkdf2"),
        "{dump}"
    );
    let mk = Command::new(&cryptsetup)
        .current_dir(d)
        .args([
            "luksDump",
            "--dump-volume-key",
            "--batch-mode",
            "--key-file",
            "k",
            "enc.img",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(mk.stdout).unwrap();
    let first_key_bytes: String = text[text.find("MK dump:").unwrap() + 8..]
        .split_whitespace()
        .take(4)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        !dump.contains(&first_key_bytes),
        "dump shows key bytes {first_key_bytes}"
    );
    let key = hex_of(&fs::read(d.join("k")).unwrap());
    assert!(!dump.to_lowercase().replace(' ', "").contains(&key[..16]));
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn existing_files_are_never_replaced_and_failures_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    docs(d);
    // An existing key file is used, never replaced, and survives a failure.
    fs::write(d.join("k"), b"an old key the owner still needs").unwrap();
    fs::set_permissions(d.join("k"), fs::Permissions::from_mode(0o600)).unwrap();
    ok(&confsum(
        d,
        &[
            "encfs", "create", "--from", "docs", "--out", "enc.img", "-k", "k",
        ],
        b"",
    ));
    assert_eq!(
        fs::read(d.join("k")).unwrap(),
        b"an old key the owner still needs"
    );
    assert_eq!(
        ok(&confsum(
            d,
            &["encfs", "cat", "enc.img", "/a.txt", "-k", "k"],
            b""
        )),
        "secret\n"
    );
    let out = confsum(
        d,
        &[
            "encfs", "create", "--from", "docs", "--out", "enc.img", "-k", "k",
        ],
        b"",
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "an existing image is not replaced"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    let out = confsum(
        d,
        &[
            "encfs", "create", "--from", "nowhere", "--out", "new.img", "-k", "k",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        fs::read(d.join("k")).unwrap(),
        b"an old key the owner still needs"
    );

    // A tar that ends half way through a file.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(1 << 20);
    h.set_mode(0o644);
    b.append_data(&mut h, "doc", &vec![1u8; 1 << 20][..])
        .unwrap();
    let tar = b.into_inner().unwrap();
    fs::create_dir(d.join("new")).unwrap();
    let out = confsum(
        &d.join("new"),
        &[
            "encfs",
            "create",
            "--from-tar",
            "-",
            "--out",
            "enc.img",
            "-k",
            "k",
        ],
        &tar[..700_000],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_dir(d.join("new")).unwrap().count(),
        0,
        "no image, no key, no temporary file"
    );
}

#[test]
fn an_interrupted_create_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // A tar header for one 256 MiB file; the data follows in pieces.
    let mut h = tar::Header::new_ustar();
    h.set_path("big").unwrap();
    h.set_size(256 << 20);
    h.set_mode(0o644);
    h.set_cksum();
    let mut child = Command::new(common::BIN)
        .current_dir(d)
        .args([
            "encfs",
            "create",
            "--from-tar",
            "-",
            "--out",
            "enc.img",
            "-k",
            "k",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(h.as_bytes()).unwrap();
    let chunk = vec![0x42u8; 8 << 20];
    for _ in 0..4 {
        stdin.write_all(&chunk).unwrap();
    }
    // Sealing is under way once its temporary image exists.
    let started = std::time::Instant::now();
    while !fs::read_dir(d).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".enc.img.confsum-")
    }) {
        assert!(started.elapsed().as_secs() < 30, "sealing never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // More data makes the sealer look at the flag; it may have quit already.
    for _ in 0..4 {
        if stdin.write_all(&chunk).is_err() {
            break;
        }
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
    let left: Vec<_> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
