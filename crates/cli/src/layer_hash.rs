//! `confsum layer-hash`: the dm-verity root hash Azure computes for a layer.

use std::io::{self, Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;
use confsum_ext4::{ImageSink, Options, PathPolicy};
use confsum_verity::{RootHash, layer_root_hash, layer_root_hash_with_image};

use crate::fsio::{Output, open_input};
use crate::progress;

/// Print the dm-verity root hash of container layers, as Azure computes it.
///
/// Each layer (a tar, plain or gzip/zstd compressed) is converted to ext4
/// exactly as hcsshim's tar2ext4 does for Confidential ACI, and the root hash
/// of its dm-verity tree is printed, one line per input, in `sha256sum` style:
/// `<64 hex digits>  <path>`. These are the values a CCE policy lists under
/// `layers`. Nothing is written to disk unless --image-out is given.
///
/// Exit status: 0 when every input was hashed, 1 when any failed (each
/// failure is reported on stderr and the other inputs are still hashed),
/// 2 for usage errors.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Layer tarballs; `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,

    /// Also write the ext4 image (one input only). Written to a temporary
    /// file next to IMG and renamed into place only when complete.
    #[arg(long, value_name = "IMG")]
    image_out: Option<PathBuf>,

    /// Resolve absolute entry names and `..` inside the image root, as the
    /// reference does, instead of refusing the layer.
    #[arg(long)]
    clean_paths: bool,

    /// Replace an existing --image-out file.
    #[arg(long, requires = "image_out")]
    force: bool,

    /// Never show a progress bar (it only appears on a terminal anyway).
    #[arg(long)]
    no_progress: bool,
}

pub(crate) fn run(args: &Args) -> Result<ExitCode> {
    if args.image_out.is_some() && args.files.len() != 1 {
        crate::usage_error("--image-out takes exactly one input");
    }
    let mut options = Options::default();
    if args.clean_paths {
        options.path_policy = PathPolicy::Clean;
    }
    let mut out = crate::fsio::stdout();
    let mut failed = false;
    for file in &args.files {
        match hash_one(file, args, &options) {
            // A failed write to standard output ends the run: nothing
            // later could be reported either.
            Ok(root) => writeln!(out, "{root}  {}", file.display())?,
            Err(e) => {
                eprintln!("confsum: {}: {e:#}", file.display());
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Counts the bytes read through it, to tell an empty input.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn hash_one(file: &Path, args: &Args, options: &Options) -> Result<RootHash> {
    // Before any work, so a bad --image-out fails at once.
    let output = match &args.image_out {
        Some(path) => Some(Output::create(path, "--image-out", args.force)?),
        None => None,
    };
    let count = Arc::new(AtomicU64::new(0));
    let (input, len) = open_input(file)?;
    let progress = progress::bytes(len, "hashing", args.no_progress);
    let input = Counting {
        inner: progress.wrap_read(input),
        count: Arc::clone(&count),
    };

    let root = match output {
        None => layer_root_hash(input, options)?,
        Some(output) => {
            let (root, _) =
                layer_root_hash_with_image(input, options, ImageSink::new(output.file()))?;
            output.commit([])?;
            root
        }
    };
    progress.finish_and_clear();
    if count.load(Ordering::Relaxed) == 0 {
        eprintln!(
            "confsum: warning: {} is empty (0 bytes); its hash is that of an empty layer",
            crate::fsio::shown(file)
        );
    }
    Ok(root)
}
