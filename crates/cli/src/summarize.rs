//! `confsum summarize`: T5 or BART summaries that match transformers.

use std::path::{Path, PathBuf};

use std::io::Write as _;

use anyhow::{Context, Result, bail};
use confsum_summarize::{LoadOptions, Precision, Summarizer};

/// transformers' `early_stopping` values, as flags.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum EarlyStopping {
    True,
    False,
    Never,
}

/// Summarize text with a T5 or BART checkpoint.
///
/// MODEL is a Hugging Face checkpoint folder: config.json, model.safetensors,
/// tokenizer.json and, when present, generation_config.json. A hub id
/// (`t5-small`, `facebook/bart-large-cnn`) works only in builds with the
/// `hub` feature, on a machine with internet.
///
/// Settings not given here come from the checkpoint as transformers takes
/// them: generation_config.json, then config.json (including T5's
/// `summarize: ` prefix from task_specific_params). The summary is the
/// same token for token as transformers' `generate` for the same
/// checkpoint and settings (fp32).
///
/// Exit status: 0 on success, 1 on any error (bad checkpoint, empty or
/// too long input), 2 for usage errors.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Checkpoint folder (or hub id, with the `hub` feature).
    #[arg(long, value_name = "DIR|HUB_ID")]
    model: String,

    /// The text to summarize; `-` or nothing reads standard input.
    #[arg(value_name = "FILE")]
    input: Option<PathBuf>,

    /// Beam search with N beams (1 = greedy).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    beams: Option<u32>,

    /// At most N generated tokens.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_new_tokens: Option<u32>,

    /// At least N generated tokens before the end token may come.
    #[arg(long, value_name = "N")]
    min_new_tokens: Option<u32>,

    /// Exponent of the length normalisation of beam scores.
    #[arg(long, value_name = "F")]
    length_penalty: Option<f64>,

    /// When beam search stops: `true` once every input has N finished
    /// beams; `false` when no running beam can still beat them; `never`
    /// only when none can, even at the maximum length.
    #[arg(long, value_name = "WHEN")]
    early_stopping: Option<EarlyStopping>,

    /// Never repeat an n-gram of this size (0 = off).
    #[arg(long, value_name = "N")]
    no_repeat_ngram_size: Option<u32>,

    /// Quantize linear layers to 8 bits: faster and smaller, but the
    /// summary may differ from transformers' (fp32) after a few tokens.
    #[arg(long)]
    int8: bool,

    /// Summarize inputs longer than the model's window in chunks, then
    /// summarize the parts' summaries. transformers has no such mode, so
    /// such summaries have nothing to be compared with.
    #[arg(long)]
    chunk: bool,

    /// Threads for the tensor kernels (default: all cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,

    /// Also print `ids: …`, the token ids transformers' generate returns
    /// (without the decoder start token).
    #[arg(long)]
    ids: bool,

    /// Show no progress on standard error (it shows only at a terminal).
    #[arg(long)]
    no_progress: bool,
}

pub(crate) fn run(args: &Args) -> Result<()> {
    let precision = if args.int8 {
        Precision::Int8
    } else {
        Precision::F32
    };
    if let Some(n) = args.threads.map(|n| n as usize) {
        if !confsum_summarize::threads_configured(n) {
            restart_with_threads(n)?;
        }
    }
    let dir = resolve_model(&args.model)?;
    let input = args.input.as_deref().unwrap_or(Path::new("-"));
    let text =
        String::from_utf8(crate::fsio::read_input(input)?).context("input is not UTF-8 text")?;

    let mut options = LoadOptions::default();
    options.precision = precision;
    options.chunking = args.chunk;
    let loading = crate::progress::spinner("loading the model", args.no_progress);
    let mut summarizer = Summarizer::load(&dir, &options)
        .with_context(|| format!("cannot load checkpoint {}", dir.display()))?;
    loading.finish_and_clear();

    let config = summarizer.generation_config_mut();
    if let Some(n) = args.beams {
        config.num_beams = n as usize;
    }
    if let Some(n) = args.max_new_tokens {
        config.max_new_tokens = Some(n as usize);
    }
    if let Some(n) = args.min_new_tokens {
        config.min_new_tokens = Some(n as usize);
    }
    if let Some(p) = args.length_penalty {
        config.length_penalty = p;
    }
    if let Some(when) = args.early_stopping {
        config.early_stopping = match when {
            EarlyStopping::True => confsum_summarize::EarlyStopping::True,
            EarlyStopping::False => confsum_summarize::EarlyStopping::False,
            EarlyStopping::Never => confsum_summarize::EarlyStopping::Never,
        };
    }
    if let Some(n) = args.no_repeat_ngram_size {
        config.no_repeat_ngram_size = n as usize;
    }

    let bar = crate::progress::steps(0, "summarizing", args.no_progress);
    let summary = summarizer.summarize_with_progress(&text, &mut |at| {
        bar.set_message(if at.round == 1 {
            "summarizing chunks".to_owned()
        } else {
            format!("round {}: summarizing summaries", at.round)
        });
        bar.set_length(at.chunks as u64);
        bar.set_position(at.done as u64);
    });
    bar.finish_and_clear();
    let summary = summary.map_err(|e| match e {
        confsum_summarize::Error::InputTooLong { .. }
        | confsum_summarize::Error::InputTooLongPrefix { .. } => {
            anyhow::anyhow!("{e} (pass --chunk)")
        }
        e => e.into(),
    })?;
    let mut out = crate::fsio::stdout();
    writeln!(out, "{}", summary.text)?;
    if args.ids {
        let ids: Vec<String> = summary.ids.iter().map(u32::to_string).collect();
        writeln!(out, "ids: {}", ids.join(" "))?;
    }
    Ok(())
}

/// candle sizes its thread pools once, from the environment, and changing
/// our own environment takes `unsafe`: so become this same command again
/// with the variables set. Returns only on failure.
fn restart_with_threads(n: usize) -> Result<()> {
    use std::os::unix::process::CommandExt;

    let exe = std::env::current_exe().context("cannot find this program to restart it")?;
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .envs(confsum_summarize::thread_env(n))
        .exec();
    Err(err).context(format!("cannot restart with {n} threads"))
}

/// A folder is used as is; anything else is a hub id.
pub(crate) fn resolve_model(model: &str) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(path.to_owned());
    }
    if path.exists() {
        bail!("{model} is not a folder; --model takes a checkpoint folder");
    }
    hub::download(model)
}

#[cfg(not(feature = "hub"))]
mod hub {
    use std::path::PathBuf;

    use anyhow::{Result, bail};

    pub(super) fn download(model: &str) -> Result<PathBuf> {
        bail!(
            "no checkpoint folder {model:?}; this build cannot download from the Hugging Face hub \
             (build with --features hub), so pass a folder holding config.json, model.safetensors \
             and tokenizer.json"
        )
    }
}

#[cfg(feature = "hub")]
mod hub {
    use std::path::PathBuf;

    use anyhow::{Context, Result, anyhow};
    use hf_hub::api::sync::ApiBuilder;

    pub(super) fn download(model: &str) -> Result<PathBuf> {
        let hint = || {
            format!(
                "cannot fetch {model:?} from the Hugging Face hub; without network, \
                 pass a checkpoint folder instead"
            )
        };
        let api = ApiBuilder::new()
            .with_progress(true)
            .build()
            .with_context(hint)?;
        let repo = api.model(model.to_owned());
        let config = repo.get("config.json").with_context(hint)?;
        for file in ["tokenizer.json", "model.safetensors"] {
            repo.get(file).with_context(hint)?;
        }
        // Optional: older checkpoints keep generation settings in config.json.
        let _ = repo.get("generation_config.json");
        config
            .parent()
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("hub cache path {} has no parent", config.display()))
    }
}
