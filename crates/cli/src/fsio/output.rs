//! Outputs: written under a temporary name, renamed into place when done.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::cleanup::{Created, commit_guard};

/// Marks confsum's temporary files: `.NAME.confsum-PID-RANDOM.tmp`.
const MARK: &[u8] = b".confsum-";
const SUFFIX: &str = ".tmp";
/// Room left in a 255-byte file name for the mark, pid and random part.
const NAME_ROOM: usize = 200;

/// A file being written: a temporary file beside its final path, renamed
/// over it by [`Output::commit`], and removed if the run fails or is
/// interrupted first.
#[derive(Debug)]
pub(crate) struct Output {
    path: PathBuf,
    force: bool,
    tmp: tempfile::NamedTempFile,
    guard: Created,
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// `.NAME.confsum-`, with NAME shortened so the whole name fits.
fn temp_stem(path: &Path) -> Vec<u8> {
    let name = path.file_name().map(OsStrExt::as_bytes).unwrap_or(b"out");
    let mut stem = vec![b'.'];
    stem.extend_from_slice(&name[..name.len().min(NAME_ROOM)]);
    stem.extend_from_slice(MARK);
    stem
}

impl Output {
    /// Starts writing `path` (what `flag` names in messages, e.g.
    /// `--out`). Refuses an existing `path` unless `force`, a directory in
    /// any case, and a missing parent directory; removes (and names)
    /// temporary files that killed runs left for the same path.
    pub(crate) fn create(path: &Path, flag: &str, force: bool) -> Result<Self> {
        if path.is_dir() {
            bail!("{flag} {} is a directory; name a file", path.display());
        }
        if path.symlink_metadata().is_ok() && !force {
            bail!(
                "{flag} {} already exists; pass --force to replace it",
                path.display()
            );
        }
        let dir = parent(path);
        if !dir.is_dir() {
            bail!(
                "{flag} {}: directory {} does not exist",
                path.display(),
                dir.display()
            );
        }
        sweep_stale(dir, &temp_stem(path));
        let mut prefix = temp_stem(path);
        prefix.extend_from_slice(format!("{}-", std::process::id()).as_bytes());
        let tmp = tempfile::Builder::new()
            .prefix(&OsString::from_vec(prefix))
            .suffix(SUFFIX)
            .tempfile_in(dir)
            .map_err(|e| cannot_write_in(flag, path, dir, e))?;
        let guard = Created::file(tmp.path());
        Ok(Self {
            path: path.to_path_buf(),
            force,
            tmp,
            guard,
        })
    }

    /// The temporary file to write.
    pub(crate) fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// Flushes the file to disk and renames it into place; `also` (a new
    /// key file, say) is kept in the same step, so an interrupt leaves all
    /// of them or none.
    pub(crate) fn commit(mut self, also: impl IntoIterator<Item = Created>) -> Result<()> {
        let path = self.path.clone();
        self.tmp
            .as_file()
            .sync_all()
            .with_context(|| format!("cannot write {}", path.display()))?;
        let _commit = commit_guard();
        let persisted = if self.force {
            self.tmp.persist(&path).map(drop)
        } else {
            self.tmp.persist_noclobber(&path).map(drop)
        };
        persisted.map_err(|e| {
            anyhow::Error::new(e.error).context(format!("cannot write {}", path.display()))
        })?;
        self.guard.disarm();
        for created in also {
            created.keep();
        }
        // The rename is durable only once the directory is flushed too.
        if let Ok(dir) = File::open(parent(&path)) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// "FLAG PATH: cannot write in DIR: REASON", without the temporary name
/// that tempfile adds to its errors (the user never chose it).
pub(crate) fn cannot_write_in(
    flag: &str,
    path: &Path,
    dir: &Path,
    e: std::io::Error,
) -> anyhow::Error {
    let reason = e
        .raw_os_error()
        .map_or(e, std::io::Error::from_raw_os_error);
    anyhow::anyhow!(
        "{flag} {}: cannot write in {}: {reason}",
        path.display(),
        dir.display()
    )
}

/// A directory tree being extracted: a temporary directory beside its
/// final path, renamed into place by [`ExtractDir::commit`], and removed
/// with everything in it if the run fails or is interrupted first. The
/// final path may exist as an empty directory, which the rename replaces.
#[derive(Debug)]
pub(crate) struct ExtractDir {
    to: PathBuf,
    tmp: PathBuf,
    guard: Created,
}

impl ExtractDir {
    /// Starts extracting into `to`.
    pub(crate) fn create(to: &Path) -> Result<Self> {
        if let Ok(meta) = to.symlink_metadata() {
            if !meta.is_dir() {
                bail!("--to {} exists and is not a directory", to.display());
            }
            let mut entries =
                std::fs::read_dir(to).with_context(|| format!("cannot read {}", to.display()))?;
            if entries.next().is_some() {
                bail!("--to {} is not empty", to.display());
            }
        }
        let dir = parent(to);
        if !dir.is_dir() {
            bail!(
                "--to {}: directory {} does not exist",
                to.display(),
                dir.display()
            );
        }
        sweep_stale(dir, &temp_stem(to));
        let mut prefix = temp_stem(to);
        prefix.extend_from_slice(format!("{}-", std::process::id()).as_bytes());
        let tmp = tempfile::Builder::new()
            .prefix(&OsString::from_vec(prefix))
            .suffix(SUFFIX)
            .tempdir_in(dir)
            .map_err(|e| cannot_write_in("--to", to, dir, e))?
            .keep();
        let guard = Created::tree(&tmp);
        Ok(Self {
            to: to.to_path_buf(),
            tmp,
            guard,
        })
    }

    /// The temporary directory to extract into.
    pub(crate) fn path(&self) -> &Path {
        &self.tmp
    }

    /// Renames the complete tree into place.
    pub(crate) fn commit(mut self) -> Result<()> {
        let _commit = commit_guard();
        std::fs::rename(&self.tmp, &self.to)
            .with_context(|| format!("cannot move the extracted tree to {}", self.to.display()))?;
        self.guard.disarm();
        if let Ok(dir) = File::open(parent(&self.to)) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

/// Removes `.NAME.confsum-PID-*.tmp` files in `dir` whose process is gone,
/// saying so: a run killed with SIGKILL cannot clean up after itself.
fn sweep_stale(dir: &Path, stem: &[u8]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let bytes = name.as_bytes();
        let Some(rest) = bytes.strip_prefix(stem) else {
            continue;
        };
        if !rest.ends_with(SUFFIX.as_bytes()) {
            continue;
        }
        let pid = rest
            .split(|&b| b == b'-')
            .next()
            .and_then(|p| std::str::from_utf8(p).ok())
            .and_then(|p| p.parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => eprintln!(
                "confsum: removed {}, left behind by an interrupted run",
                path.display()
            ),
            Err(e) => eprintln!(
                "confsum: warning: {} was left behind by an interrupted run and cannot be removed: {e}",
                path.display()
            ),
        }
    }
}

/// Refuses an output (`flag` `path`) that would land inside the input
/// directory `input` (named by `input_flag`): the result would contain
/// itself, or a key would be sealed next to the data it protects.
pub(crate) fn refuse_inside(path: &Path, flag: &str, input: &Path, input_flag: &str) -> Result<()> {
    let Ok(input_abs) = input.canonicalize() else {
        return Ok(());
    };
    let Ok(dir_abs) = parent(path).canonicalize() else {
        return Ok(());
    };
    if dir_abs.starts_with(&input_abs) {
        bail!(
            "{flag} {} is inside {input_flag} {}: it would be sealed into the image; write it elsewhere",
            path.display(),
            input.display()
        );
    }
    Ok(())
}

/// Whether two paths name one file, now or once created (the same name in
/// the same directory, after resolving the directory).
pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    let resolve = |p: &Path| {
        parent(p)
            .canonicalize()
            .ok()
            .map(|d| d.join(p.file_name().unwrap_or_default()))
    };
    a == b || matches!((resolve(a), resolve(b)), (Some(x), Some(y)) if x == y)
}
