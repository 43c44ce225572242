use std::io;

/// Everything that can go wrong while building an image.
///
/// Variants that concern one entry carry its path, as the archive or the
/// directory spells it, so that a user can find the culprit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the input or writing the output failed.
    #[error("i/o error")]
    Io(#[from] io::Error),

    /// The tar stream is malformed (bad checksum, truncated, bad field).
    #[error("malformed tar{}", at(.entry))]
    Tar {
        /// The last entry read before the problem, if any.
        entry: Option<String>,
        /// What the tar reader reported.
        #[source]
        source: io::Error,
    },

    /// The archive uses a feature whose meaning the reference converter would
    /// not agree on, so no trustworthy hash exists for it.
    #[error("unsupported tar entry {entry:?}: {what}")]
    Unsupported {
        /// The entry's path.
        entry: String,
        /// What is not supported.
        what: &'static str,
    },

    /// An entry name is absolute or climbs out of the root with `..`.
    #[error("unsafe path {entry:?}: absolute paths and '..' are refused")]
    UnsafePath {
        /// The entry's path.
        entry: String,
    },

    /// The file system refuses the operation, the way the reference does.
    #[error("{entry:?}: {reason}")]
    Refused {
        /// The path of the entry being added.
        entry: String,
        /// Why, in the reference converter's words where it has them.
        reason: Refusal,
    },

    /// The image would exceed the configured maximum disk size.
    #[error("disk exceeded maximum size of {max} bytes")]
    DiskFull {
        /// The maximum size in bytes.
        max: u64,
    },

    /// A directory to convert could not be read.
    #[error("cannot read {path:?}")]
    Walk {
        /// The path on disk.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// Why the file system refused an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// A regular file whose data is already in the image was written again.
    OverwriteNonInline,
    /// A name component is empty or longer than 255 bytes.
    InvalidName,
    /// A parent directory does not exist or is not a directory.
    PathNotFound,
    /// A hard link's target (named here) does not exist.
    LinkTargetNotFound(String),
    /// A directory would be replaced by a non-directory.
    ReplaceDirWithFile,
    /// A non-directory would be replaced by a directory.
    ReplaceFileWithDir,
    /// A hard link would orphan an existing file or directory.
    OrphanExisting,
    /// A hard link points at a directory.
    LinkToDirectory,
    /// A link count would exceed 65000.
    TooManyLinks,
    /// A regular file is larger than 128 GiB.
    FileTooBig(u64),
    /// An extended attribute does not fit in the inode nor in one xattr block.
    XattrTooLarge(String),
    /// The data written for a file did not match its declared size.
    SizeMismatch {
        /// The declared size.
        expected: u64,
        /// What was written.
        written: u64,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::OverwriteNonInline => {
                f.write_str("cannot overwrite file with non-inline data")
            }
            Refusal::InvalidName => f.write_str("invalid name"),
            Refusal::PathNotFound => f.write_str("path not found"),
            Refusal::LinkTargetNotFound(target) => write!(f, "link target not found: {target:?}"),
            Refusal::ReplaceDirWithFile => f.write_str("cannot replace a directory with a file"),
            Refusal::ReplaceFileWithDir => f.write_str("cannot replace a file with a directory"),
            Refusal::OrphanExisting => f.write_str("cannot orphan existing file or directory"),
            Refusal::LinkToDirectory => f.write_str("link target cannot be a directory"),
            Refusal::TooManyLinks => f.write_str("exceeded maximum link count"),
            Refusal::FileTooBig(size) => write!(f, "file too big: {size} > 137438953472"),
            Refusal::XattrTooLarge(name) => write!(f, "could not fit xattr {name}"),
            Refusal::SizeMismatch { expected, written } => {
                write!(f, "did not write the right amount: {written} != {expected}")
            }
        }
    }
}

fn at(entry: &Option<String>) -> String {
    match entry {
        Some(e) => format!(" after entry {e:?}"),
        None => String::new(),
    }
}
