//! `confsum layer-hash`: the dm-verity root hash Azure computes for a layer.

use std::fs::File;
use std::io::{self, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use confsum_encfs::{RootHash, VerityHasher};
use confsum_ext4::{ImageSink, Options, PathPolicy, TarEnd, convert_tar_with_report, decompress};
use indicatif::{ProgressBar, ProgressStyle};

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
    let mut failed = false;
    for file in &args.files {
        match hash_one(file, args, &options) {
            Ok(root) => println!("{root}  {}", file.display()),
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
    let (input, len): (Box<dyn Read>, Option<u64>) = if file.as_os_str() == "-" {
        (Box::new(io::stdin().lock()), None)
    } else {
        let f = File::open(file).context("cannot open")?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(f), len)
    };
    let progress = progress_bar(len, args.no_progress);
    let input = BufReader::with_capacity(1 << 20, progress.wrap_read(input));
    let tar = decompress(input).context("cannot read the compression header")?;

    let (root, report) = match &args.image_out {
        None => {
            let (hasher, report) = convert_tar_with_report(tar, VerityHasher::new(), options)?;
            (hasher.root_hash()?, report)
        }
        Some(out) => {
            let dir = match out.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
            let sink = (ImageSink::new(tmp), VerityHasher::new());
            let ((image, hasher), report) = convert_tar_with_report(tar, sink, options)?;
            let root = hasher.root_hash()?;
            let tmp = image.into_inner();
            tmp.as_file().sync_all().context("cannot flush the image")?;
            tmp.persist(out)
                .with_context(|| format!("cannot write {}", out.display()))?;
            (root, report)
        }
    };
    progress.finish_and_clear();
    // The reference hashes these silently; a user should know.
    let why = match report.end {
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
        eprintln!("confsum: warning: {}: {why}", file.display());
    }
    Ok(root)
}

fn progress_bar(len: Option<u64>, disabled: bool) -> ProgressBar {
    if disabled || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}
