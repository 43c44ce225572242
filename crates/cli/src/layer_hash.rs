//! `confsum layer-hash`: the dm-verity root hash Azure computes for a layer.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use confsum_ext4::{ImageSink, Options, PathPolicy, TarEnd};
use confsum_verity::{RootHash, hash_layer, hash_layer_with_image};

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
        crate::usage_error(&["layer-hash"], "--image-out takes exactly one input");
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

fn hash_one(file: &Path, args: &Args, options: &Options) -> Result<RootHash> {
    // Before any work, so a bad --image-out fails at once.
    let output = match &args.image_out {
        Some(path) => Some(Output::create(path, "--image-out", args.force)?),
        None => None,
    };
    let (input, len) = open_input(file)?;
    let progress = progress::bytes(len, "hashing", args.no_progress);
    let input = progress.wrap_read(input);
    let hash = match output {
        None => hash_layer(input, options)?,
        Some(output) => {
            let (hash, _) = hash_layer_with_image(input, options, ImageSink::new(output.file()))?;
            output.commit([])?;
            hash
        }
    };
    progress.finish_and_clear();
    // The reference hashes these silently; a user should know.
    let why = match hash.tar.end {
        TarEnd::EmptyInput => Some("the input is empty; its hash is the empty layer's"),
        TarEnd::CutInPadding => Some(
            "the tar ends inside its last member's padding (truncated?); hashed as hcsshim reads it",
        ),
        TarEnd::MissingMarker | TarEnd::LoneZeroBlock => {
            Some("the tar has no end-of-archive marker (truncated?); hashed as hcsshim reads it")
        }
        _ => None,
    };
    if let Some(why) = why {
        eprintln!("confsum: warning: {}: {why}", crate::fsio::shown(file));
    }
    Ok(hash.root)
}
