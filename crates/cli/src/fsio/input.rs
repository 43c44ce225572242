//! Inputs: files, or standard input for `-`.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, bail};

fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// The bytes of `path`, or of standard input for `-`.
pub(crate) fn read_input(path: &Path) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    open_input(path)?
        .0
        .read_to_end(&mut data)
        .with_context(|| format!("cannot read {}", shown(path)))?;
    Ok(data)
}

/// `path` (or standard input for `-`) opened for reading, with its length
/// when it is a regular file. A directory is refused here, with its name,
/// rather than failing later with a confusing read error.
pub(crate) fn open_input(path: &Path) -> Result<(Box<dyn Read + Send>, Option<u64>)> {
    if is_stdin(path) {
        return Ok((Box::new(io::stdin()), None));
    }
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_dir() {
        bail!("{} is a directory, not a file", path.display());
    }
    let len = meta.is_file().then_some(meta.len());
    Ok((Box::new(file), len))
}

/// A tar from `path` or standard input, plain or compressed with gzip or
/// zstd (detected from its first bytes), as `layer-hash` and `encfs create
/// --from-tar` both take it. `wrap` sees the raw (compressed) bytes, for
/// progress bars.
pub(crate) fn open_tar(
    path: &Path,
    wrap: impl FnOnce(Box<dyn Read + Send>, Option<u64>) -> Box<dyn Read + Send>,
) -> Result<Box<dyn Read>> {
    let (raw, len) = open_input(path)?;
    let raw = BufReader::with_capacity(1 << 20, wrap(raw, len));
    let tar =
        confsum_ext4::decompress(raw).with_context(|| format!("cannot read {}", shown(path)))?;
    Ok(Box::new(tar))
}

/// How messages name an input.
pub(crate) fn shown(path: &Path) -> String {
    if is_stdin(path) {
        "standard input".to_owned()
    } else {
        path.display().to_string()
    }
}
