//! Conversion settings, shared by the tar and directory converters and read
//! by the writer.

/// How entry names that are absolute or contain `..` are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PathPolicy {
    /// Refuse the archive. The safe choice, and the default.
    #[default]
    Reject,
    /// Resolve them inside the image root, as the reference converter does
    /// (`/../etc/x` becomes `etc/x`). Use to reproduce the hash of such a layer.
    Clean,
}

/// Conversion settings. The defaults are the ones Azure uses for layer hashes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Largest image allowed, in bytes; also sizes the group descriptor table,
    /// so it changes the image. Azure uses 128 GiB. As in the reference, 0
    /// means 16 GiB, and more than 16 TiB counts as 16 TiB.
    pub max_disk_size: u64,
    /// Turn OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`) into overlayfs ones
    /// (tar input only).
    pub convert_whiteouts: bool,
    /// What to do with absolute names and `..` (tar input only).
    pub path_policy: PathPolicy,
    /// Lay out an image the kernel can mount read-write, instead of the
    /// reference's read-only one. Such images never match a layer hash.
    pub writable: Option<Writable>,
}

/// Room for a read-write file system, beyond what the content needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Writable {
    /// Smallest image size in bytes; what the content does not use is free.
    pub min_size: u64,
    /// Free bytes to leave at least, whatever the content's size.
    pub free_space: u64,
    /// One inode for every this many bytes of image, as `mke2fs -i`.
    pub bytes_per_inode: u64,
}

impl Writable {
    /// An image of at least `min_size` bytes with mke2fs's default inode ratio.
    pub fn with_min_size(min_size: u64) -> Self {
        Writable {
            min_size,
            free_space: 0,
            bytes_per_inode: 16 << 10,
        }
    }

    /// An image with at least `free_space` bytes free beyond its content.
    pub fn with_free_space(free_space: u64) -> Self {
        Writable {
            free_space,
            ..Writable::with_min_size(0)
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_disk_size: 128 << 30,
            convert_whiteouts: true,
            path_policy: PathPolicy::Reject,
            writable: None,
        }
    }
}
