//! Malformed, hostile or merely odd tar streams.
//!
//! Conversion must never panic, and every refusal must be a specific
//! [`Error`] variant whose message names the entry at fault (for a header
//! that cannot be read, the entry before it, if any). Inputs are built by
//! hand with `tar::Header` (plus raw byte edits for corruption); the small
//! ones are also kept as `testdata/fail_*` vectors, which are checked to match
//! their recipe here and are fed through the converter from disk.
//!
//! What the reference (hcsshim `tar2ext4` over Go's `archive/tar`) does with
//! each case was checked with the oracle described in `testdata/README.md`.
//!
//! Set `CONFSUM_WRITE_TESTDATA=1` to (re)write the vectors from the recipes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Cursor, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use confsum_ext4::{Error, ImageSink, Options, PathPolicy, Refusal, convert_tar, decompress};
use tar::{EntryType, Header};

// ---------------------------------------------------------------------------
// Building tars by hand.

const MTIME: u64 = 1_700_000_000;

/// One tar member: a 512-byte header and the data that follows it.
struct Member {
    header: Header,
    data: Vec<u8>,
}

impl Member {
    /// Edits the header; the checksum is recomputed afterwards.
    fn with(mut self, edit: impl FnOnce(&mut Header)) -> Self {
        edit(&mut self.header);
        self.header.set_cksum();
        self
    }

    /// Edits the raw header bytes and leaves the checksum as it was.
    fn corrupt(mut self, edit: impl FnOnce(&mut [u8; 512])) -> Self {
        edit(self.header.as_mut_bytes());
        self
    }
}

/// Copies `value` into a NUL-padded header field (bypassing the `tar`
/// crate's path checks, which refuse `..`).
fn put(field: &mut [u8], value: &[u8]) {
    field.fill(0);
    field[..value.len()].copy_from_slice(value);
}

fn member(name: &[u8], kind: EntryType, data: &[u8]) -> Member {
    let mut h = Header::new_ustar();
    put(&mut h.as_old_mut().name, name);
    h.set_entry_type(kind);
    h.set_mode(if kind == EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(data.len() as u64);
    h.set_cksum();
    Member {
        header: h,
        data: data.to_vec(),
    }
}

fn file(name: &str, data: &[u8]) -> Member {
    member(name.as_bytes(), EntryType::Regular, data)
}

fn dir(name: &str) -> Member {
    member(name.as_bytes(), EntryType::Directory, b"")
}

fn linked(kind: EntryType, name: &str, target: &str) -> Member {
    member(name.as_bytes(), kind, b"")
        .with(|h| put(&mut h.as_old_mut().linkname, target.as_bytes()))
}

fn hardlink(name: &str, target: &str) -> Member {
    linked(EntryType::Link, name, target)
}

fn symlink(name: &str, target: &str) -> Member {
    linked(EntryType::Symlink, name, target)
}

/// A header-only member (link, device, directory...) that still declares
/// `size` bytes of data, and carries them.
fn with_size(m: Member, size: usize) -> Member {
    let mut m = m.with(|h| h.set_size(size as u64));
    m.data = vec![b'x'; size];
    m
}

/// One PAX record, `"%d %s=%s\n"` where the length counts itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// A PAX extended header (`x`) applying to the next member.
fn pax(records: &[(&str, &[u8])]) -> Member {
    let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
    raw_pax(&data)
}

fn raw_pax(data: &[u8]) -> Member {
    member(b"PaxHeaders/x", EntryType::XHeader, data)
}

/// For the few expected entry names that are built at run time.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A GNU long-name member (`L`) naming the next member.
fn gnu_long_name(name: &str) -> Member {
    let mut data = name.as_bytes().to_vec();
    data.push(0);
    let mut h = Header::new_gnu();
    put(&mut h.as_old_mut().name, b"././@LongLink");
    h.set_entry_type(EntryType::GNULongName);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    h.set_cksum();
    Member { header: h, data }
}

/// The members, each padded to 512 bytes, without the end-of-archive marker.
fn body(members: impl IntoIterator<Item = Member>) -> Vec<u8> {
    let mut out = Vec::new();
    for m in members {
        out.extend_from_slice(m.header.as_bytes());
        out.extend_from_slice(&m.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out
}

/// A complete archive: the members, then two zero blocks.
fn tar(members: impl IntoIterator<Item = Member>) -> Vec<u8> {
    let mut out = body(members);
    out.resize(out.len() + 1024, 0);
    out
}

fn cut(mut bytes: Vec<u8>, len: usize) -> Vec<u8> {
    bytes.truncate(len);
    bytes
}

/// Deterministic, incompressible filler (xorshift).
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 19).unwrap()
}

/// Overwrites a numeric header field with text that is not octal.
fn not_octal(field: &mut [u8]) {
    put(field, &b"12x4567"[..field.len().min(7)]);
}

// ---------------------------------------------------------------------------
// Converting and judging.

fn convert(input: &[u8], policy: PathPolicy) -> Result<Vec<u8>, Error> {
    let mut options = Options::default();
    options.path_policy = policy;
    let reader = decompress(input)?;
    let sink = convert_tar(reader, ImageSink::new(Cursor::new(Vec::new())), &options)?;
    Ok(sink.into_inner().into_inner())
}

/// Converts, turning a panic into a message.
fn outcome(input: &[u8], policy: PathPolicy) -> Result<Result<Vec<u8>, Error>, String> {
    catch_unwind(AssertUnwindSafe(|| convert(input, policy))).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "non-string panic".to_owned())
    })
}

/// What a conversion must give.
#[derive(Debug, Clone)]
enum Want {
    /// An image.
    Image,
    /// `Error::Tar`, reporting the last entry read (the entry itself when
    /// one of its own fields is bad).
    Tar(Option<&'static str>),
    Unsupported(&'static str),
    Unsafe(&'static str),
    Refused(&'static str, Refusal),
}

/// `None` when `got` is what `want` asks for, else why not.
fn judge(got: Result<Result<Vec<u8>, Error>, String>, want: &Want) -> Option<String> {
    let err = match (got, want) {
        (Err(panic), _) => return Some(format!("PANICKED: {panic}")),
        (Ok(Ok(_)), Want::Image) => return None,
        (Ok(Ok(_)), _) => return Some(format!("converted, want {want:?}")),
        (Ok(Err(e)), Want::Image) => return Some(format!("failed: {e} ({e:?}), want an image")),
        (Ok(Err(e)), _) => e,
    };
    let msg = err.to_string();
    let named = |entry: &str| {
        msg.contains(entry)
            .then_some(())
            .ok_or_else(|| format!("message {msg:?} does not name {entry:?}"))
    };
    let verdict = match (&err, want) {
        (Error::Tar { entry, source }, Want::Tar(want_entry)) => {
            if entry.as_deref() != *want_entry {
                Err(format!("entry {entry:?}, want {want_entry:?}"))
            } else if !msg.starts_with("malformed tar") || source.to_string().is_empty() {
                Err(format!("unclear message {msg:?} / source {source:?}"))
            } else {
                want_entry.map_or(Ok(()), named)
            }
        }
        (Error::Unsupported { entry, .. }, Want::Unsupported(want_entry))
        | (Error::UnsafePath { entry }, Want::Unsafe(want_entry)) => {
            if entry != want_entry {
                Err(format!("entry {entry:?}, want {want_entry:?}"))
            } else {
                named(want_entry)
            }
        }
        (Error::Refused { entry, reason }, Want::Refused(want_entry, want_reason)) => {
            if entry != want_entry || reason != want_reason {
                Err(format!(
                    "refused {entry:?} ({reason:?}), want {want_entry:?} ({want_reason:?})"
                ))
            } else if !msg.contains(&want_reason.to_string()) {
                Err(format!("message {msg:?} lacks the reason"))
            } else {
                named(want_entry)
            }
        }
        _ => Err(String::new()),
    };
    verdict
        .err()
        .map(|why| format!("got {err:?} ({msg}), want {want:?} {why}"))
}

/// Runs a table and panics with every mismatch at once.
fn check_all<'a>(cases: impl IntoIterator<Item = (&'a str, &'a [u8], PathPolicy, &'a Want)>) {
    let mut failures = Vec::new();
    let mut n = 0;
    for (name, input, policy, want) in cases {
        n += 1;
        if let Some(why) = judge(outcome(input, policy), want) {
            failures.push(format!("{name}: {why}"));
        }
    }
    assert!(n > 0, "empty table");
    assert!(
        failures.is_empty(),
        "{} of {n} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn check(name: &str, input: &[u8], policy: PathPolicy, want: &Want) {
    check_all([(name, input, policy, want)]);
}

// ---------------------------------------------------------------------------
// The table.

struct Case {
    name: &'static str,
    input: Vec<u8>,
    want: Want,
    /// Kept as `testdata/<file>` too.
    file: Option<&'static str>,
}

fn case(name: &'static str, input: Vec<u8>, want: Want) -> Case {
    Case {
        name,
        input,
        want,
        file: None,
    }
}

fn vector(file: &'static str, name: &'static str, input: Vec<u8>, want: Want) -> Case {
    Case {
        name,
        input,
        want,
        file: Some(file),
    }
}

fn refused(entry: &'static str, reason: Refusal) -> Want {
    Want::Refused(entry, reason)
}

/// Every case, under the default `PathPolicy::Reject`.
#[allow(clippy::too_many_lines)]
fn cases() -> Vec<Case> {
    use Want::{Image, Tar, Unsafe};
    let a5 = || file("a", b"hello");
    let a1000 = || file("a", &noise(1000, 1));
    let big_pax_name = format!("d/{}", "n".repeat(200));
    let long_component = format!("d/{}", "c".repeat(256));
    let long_target = "t".repeat(100);
    let random_tar = tar([file("a", &noise(30_000, 7))]);
    vec![
        // Truncation.
        vector(
            "fail_truncated_in_header.tar",
            "truncated inside the first header",
            cut(tar([a5()]), 300),
            Tar(None),
        ),
        vector(
            "fail_truncated_in_second_header.tar",
            "truncated inside the second header",
            cut(tar([a5(), file("b", b"x")]), 1024 + 300),
            Tar(Some("a")),
        ),
        vector(
            "fail_truncated_in_data.tar",
            "truncated inside file data",
            cut(tar([a1000()]), 512 + 600),
            Tar(Some("a")),
        ),
        vector(
            "fail_truncated_after_header.tar",
            "truncated right after a header",
            cut(tar([a1000()]), 512),
            Tar(Some("a")),
        ),
        case(
            "truncated inside the last member's data",
            cut(tar([a5(), file("b", &noise(900, 2))]), 1024 + 512 + 100),
            Tar(Some("b")),
        ),
        case(
            "truncated inside PAX records",
            cut(
                tar([pax(&[("path", big_pax_name.as_bytes())]), a5()]),
                512 + 10,
            ),
            Tar(None),
        ),
        case(
            "truncated inside a GNU long name",
            cut(tar([gnu_long_name(&big_pax_name), a5()]), 512 + 10),
            Tar(None),
        ),
        // Checksums.
        vector(
            "fail_bad_checksum.tar",
            "bad header checksum",
            tar([a5().corrupt(|b| b[0] = b'b')]),
            Tar(None),
        ),
        case(
            "bad checksum on the second header",
            tar([a5(), file("b", b"").corrupt(|b| b[148] = b'7')]),
            Tar(Some("a")),
        ),
        case(
            "checksum field not octal",
            tar([a5().corrupt(|b| b[148..156].copy_from_slice(b"zzzzzz\0 "))]),
            Tar(None),
        ),
        // Absurd sizes.
        vector(
            "fail_huge_size_no_data.tar",
            "size 0o77777777777 and no data",
            body([file("a", b"").with(|h| h.set_size(0o777_7777_7777))]),
            Tar(Some("a")),
        ),
        case(
            "size 0o77777777777 then only the end marker",
            tar([file("a", b"").with(|h| h.set_size(0o777_7777_7777))]),
            Tar(Some("a")),
        ),
        case(
            "base-256 size u64::MAX",
            tar([a5().with(|h| {
                let size = &mut h.as_old_mut().size;
                size.fill(0xff);
                size[0] = 0x80;
            })]),
            Tar(None),
        ),
        vector(
            "fail_pax_huge_size.tar",
            "PAX size=99999999999999",
            tar([pax(&[("size", b"99999999999999")]), file("a", b"")]),
            refused("a", Refusal::FileTooBig(99_999_999_999_999)),
        ),
        case(
            "PAX size=u64::MAX",
            tar([pax(&[("size", b"18446744073709551615")]), file("a", b"")]),
            Tar(None),
        ),
        case(
            "size beyond 128 GiB in base-256",
            body([file("a", b"").with(|h| h.set_size((128 << 30) + 1))]),
            refused("a", Refusal::FileTooBig((128 << 30) + 1)),
        ),
        // Fields that are not numbers. The error comes from the header, before
        // its entry is read, so it names the entry before it, if any.
        vector(
            "fail_mode_not_octal.tar",
            "mode not octal",
            tar([a5().with(|h| not_octal(&mut h.as_old_mut().mode))]),
            Tar(None),
        ),
        case(
            "mode with an 8",
            tar([
                a5(),
                file("b", b"x").with(|h| put(&mut h.as_old_mut().mode, b"0000680")),
            ]),
            Tar(Some("a")),
        ),
        case(
            "uid not octal",
            tar([
                a5(),
                file("b", b"x").with(|h| not_octal(&mut h.as_old_mut().uid)),
            ]),
            Tar(Some("a")),
        ),
        case(
            "gid not octal",
            tar([
                a5(),
                file("b", b"x").with(|h| not_octal(&mut h.as_old_mut().gid)),
            ]),
            Tar(Some("a")),
        ),
        case(
            "mtime not octal",
            tar([
                a5(),
                file("b", b"x").with(|h| not_octal(&mut h.as_old_mut().mtime)),
            ]),
            Tar(Some("a")),
        ),
        vector(
            "fail_size_not_octal.tar",
            "size not octal",
            tar([a5().with(|h| not_octal(&mut h.as_old_mut().size))]),
            Tar(None),
        ),
        case(
            "size not octal after an entry",
            tar([
                a5(),
                file("b", b"").with(|h| not_octal(&mut h.as_old_mut().size)),
            ]),
            Tar(Some("a")),
        ),
        case(
            "devmajor not octal",
            tar([
                a5(),
                file("b", b"x").with(|h| not_octal(&mut h.as_ustar_mut().unwrap().dev_major)),
            ]),
            Tar(Some("a")),
        ),
        case(
            "devminor not octal",
            tar([
                a5(),
                file("b", b"x").with(|h| not_octal(&mut h.as_ustar_mut().unwrap().dev_minor)),
            ]),
            Tar(Some("a")),
        ),
        case(
            "PAX mtime not a number",
            tar([pax(&[("mtime", b"12x")]), a5()]),
            Tar(None),
        ),
        case(
            "PAX uid not a number, after an entry",
            tar([a5(), pax(&[("uid", b"12x")]), file("b", b"x")]),
            Tar(Some("a")),
        ),
        case(
            "malformed PAX record",
            tar([raw_pax(b"garbage"), a5()]),
            Tar(None),
        ),
        case(
            "PAX record longer than its header",
            tar([raw_pax(b"99 path=x\n"), a5()]),
            Tar(None),
        ),
        // Path traversal (see also `unsafe_paths_are_cleaned_on_request`).
        vector(
            "fail_dotdot.tar",
            "../x",
            tar([file("../x", b"x")]),
            Unsafe("../x"),
        ),
        vector(
            "fail_dotdot_escape.tar",
            "a/../../x",
            tar([file("a/../../x", b"x")]),
            Unsafe("a/../../x"),
        ),
        case(
            "a/../b, inside the root but still '..'",
            tar([file("a/../b", b"x")]),
            Unsafe("a/../b"),
        ),
        vector(
            "fail_absolute.tar",
            "/etc/passwd",
            tar([file("/etc/passwd", b"root:x:0:0::/:/bin/sh\n")]),
            Unsafe("/etc/passwd"),
        ),
        vector(
            "fail_hardlink_target_dotdot.tar",
            "hard link target ../x",
            tar([file("x", b"x"), hardlink("y", "../x")]),
            Unsafe("../x"),
        ),
        case(
            "hard link target /x",
            tar([file("x", b"x"), hardlink("y", "/x")]),
            Unsafe("/x"),
        ),
        case(
            "hard link named ../y",
            tar([file("x", b"x"), hardlink("../y", "x")]),
            Unsafe("../y"),
        ),
        case(
            "PAX path ../pax",
            tar([pax(&[("path", b"../pax")]), file("ok", b"x")]),
            Unsafe("../pax"),
        ),
        case(
            "PAX linkpath ../x",
            tar([
                file("x", b"x"),
                pax(&[("linkpath", b"../x")]),
                hardlink("y", "x"),
            ]),
            Unsafe("../x"),
        ),
        case(
            "GNU long name with ..",
            tar([
                gnu_long_name(&format!("../{big_pax_name}")),
                file("short", b"x"),
            ]),
            Unsafe(leak(format!("../{big_pax_name}"))),
        ),
        case(
            "symlink named ../s",
            tar([symlink("../s", "x")]),
            Unsafe("../s"),
        ),
        case("directory /abs/", tar([dir("/abs/")]), Unsafe("/abs/")),
        case(
            "whiteout ../.wh.x",
            tar([file("../.wh.x", b"")]),
            Unsafe("../.wh.x"),
        ),
        case(
            "symlink whose target climbs out (allowed)",
            tar([symlink("s", "../../etc/shadow")]),
            Image,
        ),
        // Overwriting a file whose data is already in the image.
        vector(
            "fail_overwrite_non_inline.tar",
            "regular file written twice",
            tar([file("f", &noise(5000, 3)), file("f", b"new")]),
            refused("f", Refusal::OverwriteNonInline),
        ),
        case(
            "regular file of one byte written twice",
            tar([file("d/f", b"1"), file("d/f", b"")]),
            refused("d/f", Refusal::OverwriteNonInline),
        ),
        case(
            "file with data replaced by a symlink",
            tar([file("f", b"data"), symlink("f", "x")]),
            refused("f", Refusal::OverwriteNonInline),
        ),
        case(
            "long symlink replaced by a file",
            tar([symlink("s", &long_target), file("s", b"")]),
            refused("s", Refusal::OverwriteNonInline),
        ),
        case(
            "empty file written twice (allowed)",
            tar([file("f", b""), file("f", b"second")]),
            Image,
        ),
        case(
            "hard-linked file written again gets a new inode (allowed)",
            tar([file("f", b"one"), hardlink("g", "f"), file("f", b"two")]),
            Image,
        ),
        // Directories and files replacing each other.
        vector(
            "fail_dir_replaced_by_file.tar",
            "directory replaced by a file",
            tar([dir("d/"), file("d", b"x")]),
            refused("d", Refusal::ReplaceDirWithFile),
        ),
        case(
            "implicit directory replaced by a file",
            tar([file("d/x", b"x"), file("d", b"")]),
            refused("d", Refusal::ReplaceDirWithFile),
        ),
        case(
            "directory replaced by a symlink",
            tar([dir("d/"), symlink("d", "x")]),
            refused("d", Refusal::ReplaceDirWithFile),
        ),
        case(
            "directory replaced by a whiteout",
            tar([dir("d/"), file(".wh.d", b"")]),
            refused("d", Refusal::ReplaceDirWithFile),
        ),
        case(
            "root replaced by a file",
            tar([file(".", b"")]),
            refused(".", Refusal::ReplaceDirWithFile),
        ),
        vector(
            "fail_file_replaced_by_dir.tar",
            "file replaced by a directory",
            tar([file("f", b""), dir("f/")]),
            refused("f/", Refusal::ReplaceFileWithDir),
        ),
        case(
            "device replaced by a directory",
            tar([member(b"c", EntryType::Char, b""), dir("c")]),
            refused("c", Refusal::ReplaceFileWithDir),
        ),
        case(
            "file used as a directory",
            tar([file("f", b""), file("f/x", b"x")]),
            refused("f/x", Refusal::PathNotFound),
        ),
        case(
            "symlink used as a directory",
            tar([symlink("s", "d"), dir("d/"), file("s/x", b"x")]),
            refused("s/x", Refusal::PathNotFound),
        ),
        case(
            "directory replaced by a hard link",
            tar([file("f", b"x"), dir("d/"), hardlink("d", "f")]),
            refused("d", Refusal::OrphanExisting),
        ),
        // Hard links.
        vector(
            "fail_hardlink_to_dir.tar",
            "hard link to a directory",
            tar([dir("d/"), hardlink("l", "d")]),
            refused("l", Refusal::LinkToDirectory),
        ),
        case(
            "hard link to the root",
            tar([hardlink("l", ".")]),
            refused("l", Refusal::LinkToDirectory),
        ),
        case(
            "hard link over a file with one link",
            tar([file("f", b"x"), file("g", b"y"), hardlink("f", "g")]),
            refused("f", Refusal::OrphanExisting),
        ),
        // Garbage and empty streams (empty ones are layers; see below).
        vector(
            "fail_garbage.bin",
            "garbage bytes",
            noise(1500, 42),
            Tar(None),
        ),
        case("text", b"hello, world\n".to_vec(), Tar(None)),
        case("a block of 0xff", vec![0xff; 512], Tar(None)),
        case("empty input", Vec::new(), Image),
        case("two zero blocks", vec![0; 1024], Image),
        case("one zero block", vec![0; 512], Image),
        // Compressed input.
        vector(
            "fail_truncated.tar.gz",
            "truncated gzip",
            cut(gzip(&random_tar), 10_000),
            Tar(Some("a")),
        ),
        case("gzip header only", cut(gzip(&random_tar), 10), Tar(None)),
        // zstd emits nothing until a whole block (up to 128 KiB) is in.
        case("truncated zstd", cut(zstd(&random_tar), 10_000), Tar(None)),
        case("zstd magic only", vec![0x28, 0xb5, 0x2f, 0xfd], Tar(None)),
        // Header-only types (hard and symbolic links, devices, directories,
        // fifos) carry no data whatever their size field says, as in Go: the
        // next header follows at once, so data there is a broken header. See
        // also `header_only_entries_ignore_their_size_field`.
        vector(
            "fail_symlink_with_size.tar",
            "symlink with a size and data",
            tar([with_size(symlink("s", "t"), 5)]),
            Tar(Some("s")),
        ),
        vector(
            "fail_dir_with_size.tar",
            "directory with a size and data",
            tar([with_size(dir("d/"), 512)]),
            Tar(Some("d/")),
        ),
        case(
            "char device with a size and data",
            tar([with_size(member(b"c", EntryType::Char, b""), 1)]),
            Tar(Some("c")),
        ),
        case(
            "block device with a size and data",
            tar([with_size(member(b"b", EntryType::Block, b""), 1)]),
            Tar(Some("b")),
        ),
        case(
            "fifo with a size and data",
            tar([with_size(member(b"p", EntryType::Fifo, b""), 1)]),
            Tar(Some("p")),
        ),
        case(
            "hard link with a size and data",
            tar([file("f", b"x"), with_size(hardlink("l", "f"), 3)]),
            Tar(Some("l")),
        ),
        // Other refusals.
        case(
            "name component of 256 bytes",
            tar([pax(&[("path", long_component.as_bytes())]), file("x", b"")]),
            refused(leak(long_component.clone()), Refusal::InvalidName),
        ),
        case(
            "xattr too large",
            tar([
                pax(&[("SCHILY.xattr.user.big", &[b'v'; 5000])]),
                file("f", b""),
            ]),
            refused("f", Refusal::XattrTooLarge("user.big".into())),
        ),
    ]
}

#[test]
fn malformed_tars_fail_with_a_clear_error() {
    let cases = cases();
    check_all(
        cases
            .iter()
            .map(|c| (c.name, c.input.as_slice(), PathPolicy::Reject, &c.want)),
    );
}

/// Go's reader ends cleanly at EOF (or at an end marker) even when the last
/// member's padding is cut off, or when a PAX header or GNU long name
/// describes no member; the reference then hashes what came before. We may
/// refuse these (with a clear error), but if we convert them it must be to
/// the reference's image.
#[test]
fn streams_the_reference_accepts_are_refused_clearly_or_converted_alike() {
    use Want::Tar;
    let a5 = || file("a", b"hello");
    let long = "n".repeat(200);
    let cases = [
        (
            "truncated inside the padding after data",
            cut(tar([a5()]), 512 + 100),
            Tar(Some("a")),
            tar([a5()]),
        ),
        (
            "truncated after a PAX header",
            cut(tar([pax(&[("path", b"p")]), a5()]), 1024),
            Tar(None),
            tar([]),
        ),
        (
            "PAX header describing no member",
            tar([a5(), pax(&[("path", b"p")])]),
            Tar(Some("a")),
            tar([a5()]),
        ),
        (
            "GNU long name describing no member",
            tar([gnu_long_name(&long)]),
            Tar(None),
            tar([]),
        ),
    ];
    for (name, input, refusal, reference) in cases {
        match outcome(&input, PathPolicy::Reject) {
            Ok(Ok(image)) => assert!(
                image == convert(&reference, PathPolicy::Reject).unwrap(),
                "{name}: converted, but not to the reference's image"
            ),
            got => {
                if let Some(why) = judge(got, &refusal) {
                    panic!("{name}: {why}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The vectors in testdata/.

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// Reproducers saved by the fuzzer (`testdata/fail_fuzz_*`), and what they
/// must give. None so far; see fuzz/README.md.
fn fuzz_vectors() -> Vec<(&'static str, Want)> {
    Vec::new()
}

#[test]
fn testdata_vectors_match_their_recipes() {
    let write = std::env::var_os("CONFSUM_WRITE_TESTDATA").is_some();
    let mut stale = Vec::new();
    for c in cases() {
        let Some(file) = c.file else { continue };
        assert!(c.input.len() < 20 << 10, "{file} is too big for testdata");
        let path = testdata().join(file);
        if write {
            std::fs::write(&path, &c.input).unwrap();
        } else if std::fs::read(&path).ok().as_ref() != Some(&c.input) {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "{stale:?} differ from their recipe: rerun with CONFSUM_WRITE_TESTDATA=1"
    );
}

#[test]
fn testdata_vectors_fail_with_a_clear_error() {
    let mut wants: Vec<(String, Want)> = cases()
        .into_iter()
        .filter_map(|c| c.file.map(|f| (f.to_owned(), c.want)))
        .collect();
    wants.extend(fuzz_vectors().into_iter().map(|(f, w)| (f.to_owned(), w)));
    let mut inputs = Vec::new();
    for entry in std::fs::read_dir(testdata()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !name.starts_with("fail_") {
            continue;
        }
        let want = wants
            .iter()
            .find(|(f, _)| *f == name)
            .map(|(_, w)| w.clone());
        let want = want.unwrap_or_else(|| panic!("testdata/{name} is not listed in malformed.rs"));
        inputs.push((
            name.clone(),
            std::fs::read(testdata().join(&name)).unwrap(),
            want,
        ));
    }
    assert!(inputs.len() >= 15, "the fail_* vectors are checked out");
    check_all(
        inputs
            .iter()
            .map(|(n, i, w)| (n.as_str(), i.as_slice(), PathPolicy::Reject, w)),
    );
}

// ---------------------------------------------------------------------------
// PathPolicy::Clean.

#[test]
fn unsafe_paths_are_cleaned_on_request() {
    // (what, the tar with unsafe names, the entry Reject names, the same tar with clean names)
    let pairs = [
        (
            "../x",
            tar([file("../x", b"x")]),
            "../x",
            tar([file("x", b"x")]),
        ),
        (
            "a/../../x",
            tar([file("a/../../x", b"x")]),
            "a/../../x",
            tar([file("x", b"x")]),
        ),
        (
            "a/../b",
            tar([file("a/../b", b"x")]),
            "a/../b",
            tar([file("b", b"x")]),
        ),
        (
            "/etc/passwd",
            tar([file("/etc/passwd", b"root")]),
            "/etc/passwd",
            tar([file("etc/passwd", b"root")]),
        ),
        (
            "hard link to ../x",
            tar([file("x", b"x"), hardlink("y", "../x")]),
            "../x",
            tar([file("x", b"x"), hardlink("y", "x")]),
        ),
        (
            "hard link /y to /x",
            tar([file("x", b"x"), hardlink("/y", "/x")]),
            "/y",
            tar([file("x", b"x"), hardlink("y", "x")]),
        ),
        (
            "PAX path",
            tar([pax(&[("path", b"/../pax")]), file("ok", b"x")]),
            "/../pax",
            tar([file("pax", b"x")]),
        ),
        (
            "directory and symlink",
            tar([dir("/../d/"), symlink("../../d/s", "../t")]),
            "/../d/",
            tar([dir("d/"), symlink("d/s", "../t")]),
        ),
        (
            "whiteout",
            tar([dir("d/"), file("d/x", b""), file("../d/.wh.x", b"")]),
            "../d/.wh.x",
            tar([dir("d/"), file("d/x", b""), file("d/.wh.x", b"")]),
        ),
    ];
    for (name, dirty, entry, clean) in pairs {
        check(name, &dirty, PathPolicy::Reject, &Want::Unsafe(entry));
        let cleaned = convert(&dirty, PathPolicy::Clean).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = convert(&clean, PathPolicy::Reject).unwrap();
        assert!(cleaned == expected, "{name}: cleaned image differs");
        // Cleaning a tar that needs none changes nothing.
        assert!(
            convert(&clean, PathPolicy::Clean).unwrap() == expected,
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------
// Things that must convert, and to what.

fn image(members: impl IntoIterator<Item = Member>) -> Vec<u8> {
    convert(&tar(members), PathPolicy::Reject).unwrap()
}

#[test]
fn empty_file_may_be_written_again() {
    let twice = image([file("d/f", b""), file("d/f", b"second copy")]);
    let once = image([file("d/f", b"second copy")]);
    assert!(
        twice == once,
        "the second copy replaces the empty first one"
    );
}

#[test]
fn empty_streams_are_the_empty_layer() {
    let reference =
        std::fs::read(confsum_testkit::shared_vectors().join("layers/empty.tar")).unwrap();
    let want = convert(&reference, PathPolicy::Reject).unwrap();
    for (name, input) in [
        ("0 bytes", Vec::new()),
        ("one zero block", vec![0; 512]),
        ("two zero blocks", vec![0; 1024]),
        ("twenty zero blocks", vec![0; 10240]),
        ("gzip of nothing", gzip(b"")),
        ("gzip of zero blocks", gzip(&[0; 10240])),
        ("zstd of zero blocks", zstd(&[0; 10240])),
    ] {
        let got = convert(&input, PathPolicy::Reject).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(got == want, "{name}: not the empty layer");
    }
}

#[test]
fn missing_end_of_archive_marker_is_accepted() {
    // Go's reader (and so the reference) stops cleanly at EOF between members.
    let members = || [dir("d/"), file("d/f", &noise(700, 5)), symlink("s", "d/f")];
    let full = convert(&tar(members()), PathPolicy::Reject).unwrap();
    let bare = body(members());
    assert!(
        convert(&bare, PathPolicy::Reject).unwrap() == full,
        "no end marker"
    );
    let half = [bare.as_slice(), &[0; 512]].concat();
    assert!(
        convert(&half, PathPolicy::Reject).unwrap() == full,
        "one zero block"
    );
}

#[test]
fn compressed_layers_convert_like_plain_ones() {
    let vectors = confsum_testkit::shared_vectors().join("layers");
    let mut plain_tars = vec![tar([
        dir("d/"),
        file("d/f", &noise(70_000, 9)),
        hardlink("d/g", "d/f"),
        symlink("s", "d/f"),
    ])];
    for name in ["links.tar", "special.tar", "whiteouts.tar"] {
        plain_tars.push(std::fs::read(vectors.join(name)).unwrap());
    }
    for plain in plain_tars {
        let want = convert(&plain, PathPolicy::Reject).unwrap();
        let gz = gzip(&plain);
        assert!(convert(&gz, PathPolicy::Reject).unwrap() == want, "gzip");
        // Concatenated gzip members are one stream, as with `cat a.gz b.gz`.
        let half = plain.len() / 2 / 512 * 512;
        let multi = [gzip(&plain[..half]), gzip(&plain[half..])].concat();
        assert!(
            convert(&multi, PathPolicy::Reject).unwrap() == want,
            "multi-member gzip"
        );
        assert!(
            convert(&zstd(&plain), PathPolicy::Reject).unwrap() == want,
            "zstd"
        );
    }
}

#[test]
fn image_larger_than_the_maximum_disk_size_is_refused() {
    let tar = tar([file("big", &vec![1; 3 << 20])]);
    let mut options = Options::default();
    options.max_disk_size = 2 << 20;
    let err = convert_tar(&tar[..], ImageSink::new(Cursor::new(Vec::new())), &options)
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(err, Error::DiskFull { max } if max == 2 << 20),
        "{err:?}"
    );
    assert!(err.to_string().contains("2097152"), "{err}");
}

#[test]
fn header_with_absurd_size_fails_fast_under_a_small_disk() {
    // 0o77777777777 bytes of zeros arrive through a gzip bomb of a few KiB;
    // the converter must give up once the disk is full, not read them all.
    let mut header = file("a", b"").with(|h| h.set_size(0o777_7777_7777));
    header.data.clear();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(header.header.as_bytes()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        e.write_all(&zeros).unwrap();
    }
    let gz = e.finish().unwrap();
    let mut options = Options::default();
    options.max_disk_size = 16 << 20;
    let reader = decompress(&gz[..]).unwrap();
    let err = convert_tar(reader, ImageSink::new(Cursor::new(Vec::new())), &options)
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------
// Where the `tar` crate and Go's reader disagree. Each of these gave a hash
// that the reference does not give while the converter read tars with the
// `tar` crate (before commit 3b72cad); they hold since `gotar.rs`.

/// The input converts to an error (any variant) whose message names `entry`
/// when there is one.
fn assert_refused(what: &str, input: &[u8], entry: Option<&str>) {
    match outcome(input, PathPolicy::Reject) {
        Err(panic) => panic!("{what}: PANICKED: {panic}"),
        Ok(Ok(_)) => panic!("{what}: converted; the reference fails"),
        Ok(Err(e)) => {
            if let Some(entry) = entry {
                let quoted = format!("{entry:?}");
                let msg = e.to_string();
                assert!(
                    msg.contains(&quoted),
                    "{what}: {msg:?} does not name {quoted}"
                );
            }
        }
    }
}

/// Go: a zero block followed by anything but a second zero block (or EOF) is
/// `archive/tar: invalid tar header` (or an unexpected EOF).
fn zero_block_then(rest: &[u8]) -> Vec<u8> {
    [&[0u8; 512][..], rest].concat()
}

#[test]
fn zero_block_followed_by_data_is_refused() {
    let hidden = tar([file("etc/passwd", b"root::0:0::/:/bin/sh\n")]);
    assert_refused("zero block, then a member", &zero_block_then(&hidden), None);
    assert_refused(
        "zero block, then 300 bytes",
        &zero_block_then(&noise(300, 4)),
        None,
    );
    assert_refused(
        "zero block, then garbage",
        &zero_block_then(&noise(512, 4)),
        None,
    );
    let after = [
        tar([file("a", b"x")]).get(..1024).unwrap(),
        &zero_block_then(&hidden),
    ]
    .concat();
    assert_refused("member, zero block, member", &after, Some("a"));
}

/// A member `f` whose data is `hello` padded with zeros to 600 bytes, under
/// a PAX header whose size records disagree: Go takes the last one.
fn duplicate_pax_size() -> Vec<u8> {
    let mut data = b"hello".to_vec();
    data.resize(600, 0);
    let mut f = file("f", &data).with(|h| h.set_size(0));
    f.data = data;
    tar([pax(&[("size", b"5"), ("size", b"600")]), f])
}

#[test]
fn duplicate_pax_size_records_frame_like_the_reference() {
    let mut data = b"hello".to_vec();
    data.resize(600, 0);
    let reference = convert(&tar([file("f", &data)]), PathPolicy::Reject).unwrap();
    match convert(&duplicate_pax_size(), PathPolicy::Reject) {
        // Refusing would be fine too: the two readers frame the archive differently.
        Err(e) => assert!(e.to_string().contains("\"f\""), "{e}"),
        Ok(image) => assert!(
            image == reference,
            "hashed the first 'size' record, not the last"
        ),
    }
}

#[test]
fn duplicate_pax_path_records_use_the_last_one() {
    let dup = tar([
        pax(&[("path", b"first"), ("path", b"second")]),
        file("h", b"x"),
    ]);
    let want = convert(&tar([file("second", b"x")]), PathPolicy::Reject).unwrap();
    assert!(convert(&dup, PathPolicy::Reject).unwrap() == want, "path");
    let dup = tar([
        file("a", b"x"),
        file("b", b"y"),
        pax(&[("linkpath", b"a"), ("linkpath", b"b")]),
        hardlink("l", "z"),
    ]);
    let want = tar([file("a", b"x"), file("b", b"y"), hardlink("l", "b")]);
    let want = convert(&want, PathPolicy::Reject).unwrap();
    assert!(
        convert(&dup, PathPolicy::Reject).unwrap() == want,
        "linkpath"
    );
}

#[test]
fn pax_numbers_that_do_not_parse_are_refused() {
    for (key, value) in [
        ("size", &b"abc"[..]),
        ("size", b"-1"),
        ("size", b" 5"),
        ("uid", b"abc"),
        ("uid", b"1.5"),
        ("gid", b"0x10"),
        ("mtime", b"1.5e3"),
    ] {
        let input = tar([file("ok", b""), pax(&[(key, value)]), file("a", b"hello")]);
        assert_refused(&format!("PAX {key}={value:?}"), &input, Some("ok"));
    }
}

#[test]
fn negative_pax_uid_wraps_like_the_reference() {
    let input = tar([pax(&[("uid", b"-1"), ("gid", b"-2")]), file("a", b"hello")]);
    let want = tar([file("a", b"hello").with(|h| {
        h.set_uid(u64::from(u32::MAX));
        h.set_gid(u64::from(u32::MAX - 1));
    })]);
    let want = convert(&want, PathPolicy::Reject).unwrap();
    assert!(convert(&input, PathPolicy::Reject).unwrap() == want);
}

#[test]
fn gnu_long_name_ends_at_the_first_nul() {
    let want = convert(&tar([file("abc", b"x")]), PathPolicy::Reject).unwrap();
    for long in ["abc\0def", "abc\0"] {
        let input = tar([gnu_long_name(long), file("short", b"x")]);
        let got = convert(&input, PathPolicy::Reject);
        assert!(got.ok().as_ref() == Some(&want), "{long:?}");
    }
}

#[test]
fn special_headers_over_one_mebibyte_are_refused() {
    let comment = vec![b'c'; (1 << 20) + 1];
    let input = tar([pax(&[("comment", &comment)]), file("a", b"x")]);
    assert_refused("PAX header of 1 MiB", &input, None);
    let long = "n".repeat((1 << 20) + 1);
    assert_refused(
        "GNU long name of 1 MiB",
        &tar([gnu_long_name(&long), file("a", b"x")]),
        None,
    );
}

/// Go ignores the size field of header-only entries (and hcsshim the size
/// of anything but a regular file), so it changes nothing when no data
/// follows.
#[test]
fn header_only_entries_ignore_their_size_field() {
    let sized = |m: Member, n: u64| m.with(|h| h.set_size(n));
    let members = || {
        [
            file("f", b"data"),
            dir("d/"),
            symlink("d/s", "../f"),
            hardlink("d/l", "f"),
            member(b"c", EntryType::Char, b""),
            member(b"b", EntryType::Block, b""),
            member(b"p", EntryType::Fifo, b""),
        ]
    };
    let want = convert(&tar(members()), PathPolicy::Reject).unwrap();
    let with_sizes = members().map(|m| {
        if m.header.entry_type() == EntryType::Regular {
            m
        } else {
            sized(m, 4096)
        }
    });
    let got = convert(&tar(with_sizes), PathPolicy::Reject).unwrap();
    assert!(got == want, "size fields");
    let pax_sized = tar([pax(&[("size", b"4")]), symlink("s", "t")]);
    let want = convert(&tar([symlink("s", "t")]), PathPolicy::Reject).unwrap();
    assert!(
        convert(&pax_sized, PathPolicy::Reject).unwrap() == want,
        "PAX size"
    );
}

fn sparse_cases() -> Vec<(&'static str, Vec<u8>)> {
    let pax_sparse = || pax(&[("GNU.sparse.major", b"1"), ("GNU.sparse.minor", b"0")]);
    let old_sparse = || {
        let mut h = Header::new_gnu();
        put(&mut h.as_old_mut().name, b"s");
        h.set_entry_type(EntryType::GNUSparse);
        h.set_mode(0o644);
        h.set_size(0);
        h.set_cksum();
        Member {
            header: h,
            data: Vec::new(),
        }
    };
    vec![
        ("PAX sparse file first", tar([pax_sparse(), file("s", b"")])),
        (
            "PAX sparse file after a",
            tar([file("a", b"x"), pax_sparse(), file("s", b"")]),
        ),
        (
            "old GNU sparse file after a",
            tar([file("a", b"x"), old_sparse()]),
        ),
    ]
}

#[test]
fn sparse_files_are_unsupported() {
    for (what, input) in sparse_cases() {
        match outcome(&input, PathPolicy::Reject) {
            Ok(Err(Error::Unsupported { what: why, .. })) => {
                assert!(why.contains("sparse"), "{what}: {why}")
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Known bugs: remove the `ignore` once fixed.

#[test]
fn unsupported_entries_are_named() {
    let global = member(b"g", EntryType::XGlobalHeader, &pax_record("uid", b"12x"));
    let mut cases: Vec<(&str, Vec<u8>, Want)> = sparse_cases()
        .into_iter()
        .map(|(what, input)| (what, input, Want::Unsupported("s")))
        .collect();
    cases.push((
        "global PAX header with a bad uid, after a",
        tar([file("a", b"x"), global]),
        Want::Unsupported("g"),
    ));
    check_all(
        cases
            .iter()
            .map(|(n, i, w)| (*n, i.as_slice(), PathPolicy::Reject, w)),
    );
}

#[test]
fn hard_link_to_a_missing_target_names_the_link_and_the_target() {
    for target in ["missing", "nodir/missing", "f/x"] {
        let input = tar([file("f", b""), hardlink("l", target)]);
        let want = Want::Refused("l", Refusal::LinkTargetNotFound(target.to_owned()));
        check(target, &input, PathPolicy::Reject, &want);
    }
}

/// A header whose numeric field `which` reads `text`, checksum recomputed.
fn with_field(which: &str, text: &[u8]) -> Vec<u8> {
    let m = file("a", b"x").with(|h| {
        let old = h.as_old_mut();
        let field: &mut [u8] = match which {
            "mode" => &mut old.mode,
            "uid" => &mut old.uid,
            "size" => &mut old.size,
            "mtime" => &mut old.mtime,
            _ => unreachable!(),
        };
        put(field, text);
    });
    tar([m])
}

#[test]
fn octal_fields_with_a_plus_sign_are_refused() {
    let mut cases = vec![
        ("mode +000644", with_field("mode", b"+000644")),
        ("uid +000000", with_field("uid", b"+000000")),
        ("size +0000000001", with_field("size", b"+0000000001")),
        ("mtime +1234567", with_field("mtime", b"+1234567")),
    ];
    // The checksum field is parsed the same way.
    let mut plus_sum = tar([file("a", b"x")]);
    assert_eq!(plus_sum[148], b'0', "checksums here have a leading zero");
    plus_sum[148] = b'+';
    cases.push(("checksum +...", plus_sum));
    // Sanity: the same fields without the sign convert.
    assert!(convert(&with_field("mode", b"0000644"), PathPolicy::Reject).is_ok());
    let failures: Vec<String> = cases
        .iter()
        .filter(|(_, input)| convert(input, PathPolicy::Reject).is_ok())
        .map(|(what, _)| (*what).to_owned())
        .collect();
    assert!(
        failures.is_empty(),
        "converted, the reference refuses: {failures:?}"
    );
}

#[test]
#[ignore = "tool, not a test: writes every case, and what we make of it, to $CONFSUM_DUMP_CASES for the Go oracle in testdata/README.md"]
fn dump_cases_for_the_go_oracle() {
    use sha2::{Digest, Sha256};
    let Some(dir) = std::env::var_os("CONFSUM_DUMP_CASES") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut all: Vec<(String, Vec<u8>)> = cases()
        .into_iter()
        .enumerate()
        .map(|(i, c)| (format!("{i:03}_{}", c.name), c.input))
        .collect();
    let mut padded = b"hello".to_vec();
    padded.resize(600, 0);
    let more = [
        (
            "bug_zero_block_then_member",
            zero_block_then(&tar([file("etc/passwd", b"root")])),
        ),
        (
            "bug_zero_block_then_300_bytes",
            zero_block_then(&noise(300, 4)),
        ),
        ("bug_duplicate_pax_size", duplicate_pax_size()),
        (
            "bug_duplicate_pax_size_reference",
            tar([file("f", &padded)]),
        ),
        (
            "bug_duplicate_pax_path",
            tar([
                pax(&[("path", b"first"), ("path", b"second")]),
                file("h", b"x"),
            ]),
        ),
        (
            "bug_duplicate_pax_path_reference",
            tar([file("second", b"x")]),
        ),
        (
            "bug_pax_size_abc",
            tar([pax(&[("size", b"abc")]), file("a", b"hello")]),
        ),
        (
            "bug_pax_uid_abc",
            tar([pax(&[("uid", b"abc")]), file("a", b"hello")]),
        ),
        (
            "bug_pax_uid_minus_1",
            tar([pax(&[("uid", b"-1"), ("gid", b"-2")]), file("a", b"hello")]),
        ),
        (
            "bug_pax_uid_minus_1_reference",
            tar([file("a", b"hello").with(|h| {
                h.set_uid(u64::from(u32::MAX));
                h.set_gid(u64::from(u32::MAX - 1));
            })]),
        ),
        (
            "bug_gnu_long_name_nul",
            tar([gnu_long_name("abc\0def"), file("short", b"x")]),
        ),
        ("bug_gnu_long_name_nul_reference", tar([file("abc", b"x")])),
        (
            "bug_pax_over_1mib",
            tar([
                pax(&[("comment", &vec![b'c'; (1 << 20) + 1])]),
                file("a", b"x"),
            ]),
        ),
        ("bug_hard_link_to_missing", tar([hardlink("l", "missing")])),
        (
            "bug_octal_plus_mode",
            tar([file("a", b"x").with(|h| put(&mut h.as_old_mut().mode, b"+000644"))]),
        ),
        (
            "bug_octal_plus_mode_reference",
            tar([file("a", b"x").with(|h| put(&mut h.as_old_mut().mode, b"0000644"))]),
        ),
        (
            "bug_octal_plus_checksum",
            tar([file("a", b"x").corrupt(|b| {
                assert_eq!(b[148], b'0');
                b[148] = b'+';
            })]),
        ),
        (
            "bug_octal_plus_size",
            tar([file("a", b"x").with(|h| put(&mut h.as_old_mut().size, b"+0000000001"))]),
        ),
        (
            "octal_minus_uid",
            tar([file("a", b"x").with(|h| put(&mut h.as_old_mut().uid, b"-000001"))]),
        ),
        (
            "empty_file_written_twice_reference",
            tar([file("f", b"second")]),
        ),
    ];
    all.extend(more.into_iter().map(|(n, b)| (n.to_owned(), b)));
    let mut ours = String::new();
    let mut clean = String::new();
    for (name, input) in all {
        let name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-=".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        std::fs::write(dir.join(&name), &input).unwrap();
        let verdict = match outcome(&input, PathPolicy::Reject) {
            Err(p) => format!("PANIC {p}"),
            Ok(Ok(image)) => format!("OK {}", hex::encode(Sha256::digest(&image))),
            Ok(Err(e)) => format!("ERROR {e}"),
        };
        ours.push_str(&format!("{name}\t{verdict}\n"));
        if let Ok(Ok(image)) = outcome(&input, PathPolicy::Clean) {
            let hash = hex::encode(Sha256::digest(&image));
            clean.push_str(&format!("{name}\tOK {hash}\n"));
        }
    }
    std::fs::write(dir.join("ours.txt"), ours).unwrap();
    std::fs::write(dir.join("ours_clean.txt"), clean).unwrap();
}
