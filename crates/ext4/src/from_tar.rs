//! Tar streams in: what hcsshim's `tar2ext4` does with each entry.
//!
//! Entries come from [`TarReader`], which reads them as Go does; this module
//! maps them onto the writer the way the reference converter does, including
//! whiteout conversion and xattrs from `SCHILY.xattr.*` records.

use std::io::{self, BufRead, Read};

use crate::error::Error;
use crate::gotar::{TarError, TarReader, TarReport};
use crate::options::{Options, PathPolicy};
use crate::shared::SharedReader;
use crate::sink::BlockSink;
use crate::writer::{FileSpec, Writer, lossy, mode, split_last};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";
const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// How a layer stream is stored, told by its first bytes.
enum Stored {
    Gzip,
    Zstd,
    Plain,
}

fn sniff(head: &[u8]) -> Stored {
    if head.starts_with(&[0x1f, 0x8b]) {
        Stored::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Stored::Zstd
    } else {
        Stored::Plain
    }
}

/// Wraps `input` in a gzip or zstd decoder when its first bytes say so.
pub fn decompress<'a, R: BufRead + 'a>(mut input: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match sniff(input.fill_buf()?) {
        Stored::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Stored::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
        Stored::Plain => Box::new(input),
    })
}

/// [`decompress`] for a [`SharedReader`]: the decoded stream is again a
/// `SharedReader`, and a plain one is the same reader, so its bytes are
/// neither copied nor buffered twice. An observer on `input` keeps seeing the
/// raw (compressed) bytes.
pub fn decompress_shared<'a, R: Read + 'a>(
    mut input: SharedReader<'a, R>,
) -> io::Result<SharedReader<'a, Box<dyn Read + 'a>>> {
    let decoder: Box<dyn Read + 'a> = match sniff(input.fill_buf()?) {
        Stored::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Stored::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input)?),
        Stored::Plain => return Ok(input.into_boxed()),
    };
    Ok(SharedReader::new(decoder))
}

/// Converts an uncompressed tar stream into an ext4 image written to `sink`,
/// and returns the sink once the image is complete.
///
/// The stream is read as hcsshim's `tar2ext4` reads it (Go's
/// `archive/tar`): a stream that stops right after a member, after one
/// zero block, or inside the padding after the last member's data is
/// complete, and an empty input is an archive with no members (the empty
/// layer). A header or data cut short is [`Error::Tar`]. To tell those
/// cases apart, use [`convert_tar_with_report`].
pub fn convert_tar<R: Read, S: BlockSink>(
    input: R,
    sink: S,
    options: &Options,
) -> Result<S, Error> {
    convert_tar_with_report(input, sink, options).map(|(sink, _)| sink)
}

/// [`convert_tar`], also saying how the archive ended and how many members
/// it had, so that a program can warn about an empty input or a missing
/// end-of-archive marker that the reference accepts silently.
///
/// ```
/// use confsum_ext4::{convert_tar_with_report, ImageSink, Options, TarEnd};
/// use std::io::Cursor;
///
/// let sink = ImageSink::new(Cursor::new(Vec::new()));
/// let (_, report) = convert_tar_with_report(&b""[..], sink, &Options::default())?;
/// assert!(report.is_empty_input());
/// assert_eq!((report.entries, report.end), (0, TarEnd::EmptyInput));
/// # Ok::<(), confsum_ext4::Error>(())
/// ```
pub fn convert_tar_with_report<R: Read, S: BlockSink>(
    input: R,
    sink: S,
    options: &Options,
) -> Result<(S, TarReport), Error> {
    convert_shared_tar(SharedReader::new(input), sink, options)
}

/// [`convert_tar_with_report`] from a [`SharedReader`], for a caller that
/// watches the input's buffers (say, to digest them) or decompressed it with
/// [`decompress_shared`].
///
/// File data reaches the sink through [`BlockSink::append_shared`], as
/// pieces of the reader's buffers.
pub fn convert_shared_tar<R: Read, S: BlockSink>(
    input: SharedReader<'_, R>,
    sink: S,
    options: &Options,
) -> Result<(S, TarReport), Error> {
    let mut tar = TarReader::new(input);
    let mut w = Writer::new(sink, options);
    // The entry being converted, for errors; made into text only then.
    let mut last: Option<Vec<u8>> = None;
    loop {
        let e = match tar.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => return Err(tar_error(e, &last)),
        };
        match &mut last {
            Some(name) => name.clone_from(&e.name),
            None => last = Some(e.name.clone()),
        }
        check_path(&e.name, options)?;
        if e.typeflag == b'1' {
            check_path(&e.link_name, options)?;
        }

        w.make_parents(&e.name)?;

        if options.convert_whiteouts {
            let (dir, file) = split_last(&e.name);
            if let Some(target) = file.strip_prefix(WHITEOUT_PREFIX) {
                if file == OPAQUE_WHITEOUT {
                    let mut f = w.stat(dir)?;
                    f.xattrs
                        .insert(b"trusted.overlay.opaque".to_vec(), b"y".to_vec());
                    w.create(dir, &mut f)?;
                } else {
                    let mut f = FileSpec {
                        mode: mode::CHR,
                        ..FileSpec::default()
                    };
                    w.create(&[dir, target].concat(), &mut f)?;
                }
                continue;
            }
        }

        if e.typeflag == b'1' {
            w.link(&e.link_name, &e.name)?;
            continue;
        }

        let typ = match e.typeflag {
            b'0' => mode::REG,
            b'2' => mode::LNK,
            b'3' => mode::CHR,
            b'4' => mode::BLK,
            b'5' => mode::DIR,
            b'6' => mode::FIFO,
            // Anything else (a global header, a contiguous file, a volume
            // label) becomes a regular file, as in the reference.
            _ => 0,
        };
        let mut f = FileSpec {
            link_name: e.link_name.clone(),
            size: e.size as u64,
            mode: (e.mode as u16 & !mode::TYPE_MASK) | typ,
            uid: e.uid as u32,
            gid: e.gid as u32,
            atime: e.atime,
            ctime: e.ctime,
            mtime: e.mtime,
            crtime: e.mtime,
            devmajor: e.devmajor as u32,
            devminor: e.devminor as u32,
            xattrs: e
                .pax
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(XATTR_PREFIX)?.to_vec(), v.clone())))
                .collect(),
        };
        w.create(&e.name, &mut f)?;
        loop {
            let chunk = tar
                .data_chunk()
                .map_err(|err| tar_error(TarError::Io(err), &last))?;
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            // Buffered by the call above, so the piece always exists.
            match tar.reader().peek_shared(n) {
                Some(shared) => w.write_shared(&shared)?,
                None => {
                    let chunk = tar
                        .data_chunk()
                        .map_err(|err| tar_error(TarError::Io(err), &last))?;
                    w.write_data(chunk)?;
                }
            }
            tar.consume_data(n);
        }
    }
    let report = tar.report().ok_or_else(|| Error::Tar {
        entry: last.as_deref().map(lossy),
        source: io::Error::other("the tar reader stopped before the end"),
    })?;
    Ok((w.close()?, report))
}

fn tar_error(e: TarError, last: &Option<Vec<u8>>) -> Error {
    let entry = last.as_deref().map(lossy);
    match e {
        TarError::Io(source) => Error::Tar { entry, source },
        TarError::Invalid(what) => Error::Tar {
            entry,
            source: io::Error::new(io::ErrorKind::InvalidData, what),
        },
        TarError::Unsupported(entry, what) => Error::Unsupported {
            entry: lossy(&entry),
            what,
        },
    }
}

fn check_path(name: &[u8], options: &Options) -> Result<(), Error> {
    if options.path_policy == PathPolicy::Clean {
        return Ok(());
    }
    if name.starts_with(b"/") || name.split(|&b| b == b'/').any(|c| c == b"..") {
        return Err(Error::UnsafePath { entry: lossy(name) });
    }
    Ok(())
}
