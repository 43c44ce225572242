//! A Hugging Face checkpoint folder, read and checked before any model is
//! built: configuration, generation settings, tokenizer and weights.

use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::Device;
use tokenizers::Tokenizer;

use crate::bart::BartConfig;
use crate::error::{Error, Result, TokenizerMismatch};
use crate::generation::GenerationConfig;
use crate::json::{self, Fields};
use crate::t5::T5Config;
use crate::weights::Weights;

/// The T5 window when `config.json` names none (`n_positions` is not a
/// field of transformers' `T5Config`; the original checkpoints carry 512).
const T5_DEFAULT_WINDOW: usize = 512;

const CONFIG: &str = "config.json";

/// The model families this crate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Family {
    /// T5: t5-small/base/large (v1.0) and T5 v1.1 / flan-t5.
    T5,
    /// BART: bart-large-cnn, distilbart-cnn and the like.
    Bart,
}

/// The family's own configuration, parsed from `config.json`.
pub(crate) enum ModelConfig {
    T5(T5Config),
    Bart(BartConfig),
}

/// A checkpoint folder: `config.json`, `tokenizer.json` and
/// `model.safetensors` (all required) and `generation_config.json`
/// (optional; older checkpoints keep generation settings in
/// `config.json`).
///
/// Loading reads both configurations and the tokenizer and checks the
/// safetensors header against the file; the weights themselves are read
/// when a [`Summarizer`](crate::Summarizer) is built from it.
pub struct Checkpoint {
    dir: PathBuf,
    family: Family,
    window: usize,
    prefix: String,
    generation: GenerationConfig,
    pub(crate) model_config: ModelConfig,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) weights: Weights,
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("family", &self.family)
            .field("window", &self.window)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The summarization prefix: `task_specific_params.summarization.prefix`,
/// else a top-level `prefix`, else none.
fn summarization_prefix(config: &Fields<'_>) -> Result<String> {
    let from_task = config
        .get("task_specific_params")
        .and_then(|p| p.get("summarization"))
        .and_then(|s| s.get("prefix"));
    match from_task.or_else(|| config.get("prefix")) {
        None => Ok(String::new()),
        Some(v) => json::opt("summarization prefix", v, json::string)
            .map(|s| s.unwrap_or_default().to_owned())
            .map_err(|reason| config.error(reason)),
    }
}

fn load_tokenizer(dir: &Path) -> Result<Tokenizer> {
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Err(Error::MissingFile { path });
    }
    let mut tokenizer = Tokenizer::from_file(&path)
        .map_err(|e| Error::Tokenizer(format!("cannot load {}: {e}", path.display())))?;
    // Saved checkpoints may carry padding and truncation (T5's shared
    // tokenizer truncates at 256); transformers' own calls do neither unless
    // asked, and silent truncation would hide too-long inputs.
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| Error::Tokenizer(format!("cannot switch truncation off: {e}")))?;
    Ok(tokenizer)
}

/// Checks that `tokenizer` belongs to a model of `vocab` embeddings with
/// the special ids of `generation`: a tokenizer from another family loads
/// and runs, and gives an empty or meaningless summary, so this is the
/// only place the mistake can be caught.
fn check_tokenizer(
    tokenizer: &Tokenizer,
    vocab: usize,
    generation: &GenerationConfig,
) -> Result<(), TokenizerMismatch> {
    let size = tokenizer.get_vocab_size(true);
    if size > vocab {
        return Err(TokenizerMismatch::VocabTooLarge {
            tokenizer: size,
            model: vocab,
        });
    }
    let g = generation;
    let ids = [
        ("pad_token_id", g.pad_token_id),
        ("decoder_start_token_id", g.decoder_start_token_id),
        ("bos_token_id", g.bos_token_id),
        ("forced_bos_token_id", g.forced_bos_token_id),
    ]
    .into_iter()
    .filter_map(|(name, id)| Some((name, id?)))
    .chain(g.eos_token_ids.iter().map(|&id| ("eos_token_id", id)))
    .chain(
        g.forced_eos_token_ids
            .iter()
            .map(|&id| ("forced_eos_token_id", id)),
    );
    for (name, id) in ids {
        if id as usize >= vocab {
            return Err(TokenizerMismatch::IdOutsideVocab { name, id, vocab });
        }
        if tokenizer.id_to_token(id).is_none() {
            return Err(TokenizerMismatch::IdNotInTokenizer { name, id });
        }
    }
    // T5's and BART's tokenizers both end an input with their end token;
    // it must be the model's.
    let encode = |special| {
        tokenizer
            .encode("a", special)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
    };
    let (with, without) = (encode(true), encode(false));
    if let Some(&last) = with.last() {
        let appended = with.len() > without.len() && without.last() != Some(&last);
        if appended && !g.eos_token_ids.is_empty() && !g.eos_token_ids.contains(&last) {
            return Err(TokenizerMismatch::EndToken {
                tokenizer: last,
                model: g.eos_token_ids.clone(),
            });
        }
    }
    Ok(())
}

impl Checkpoint {
    /// Reads the checkpoint in folder `dir`.
    ///
    /// # Errors
    ///
    /// [`Error::MissingFile`] for a required file that is not there,
    /// [`Error::Config`] for a configuration that is not JSON or not what a
    /// T5 or BART checkpoint holds, [`Error::UnsupportedModel`] for another
    /// `model_type`, [`Error::Tokenizer`] for a tokenizer that does not
    /// load, [`Error::TokenizerMismatch`] for a tokenizer that does not
    /// fit the model (vocabulary size, special ids, end token),
    /// [`Error::Safetensors`] for a malformed or truncated weights file.
    pub fn load(dir: &Path) -> Result<Self> {
        let config_json = json::read_object(dir, CONFIG)?.ok_or_else(|| Error::MissingFile {
            path: dir.join(CONFIG),
        })?;
        let config = Fields::new(CONFIG, &config_json)?;
        let model_type = config
            .opt("model_type", json::string)?
            .ok_or_else(|| config.error("no model_type"))?;
        let (family, model_config, window) = match model_type {
            "t5" => (
                Family::T5,
                ModelConfig::T5(T5Config::from_json(&config_json)?),
                config
                    .opt("n_positions", json::count)?
                    .unwrap_or(T5_DEFAULT_WINDOW),
            ),
            "bart" => {
                let c = BartConfig::from_json(&config_json)?;
                let window = c.max_position_embeddings;
                (Family::Bart, ModelConfig::Bart(c), window)
            }
            other => return Err(Error::UnsupportedModel(other.to_owned())),
        };
        if window == 0 {
            return Err(config.error("the model's window is 0"));
        }
        let prefix = summarization_prefix(&config)?;
        let generation_json = json::read_object(dir, "generation_config.json")?;
        let generation = GenerationConfig::from_json(&config_json, generation_json.as_ref())?;
        let tokenizer = load_tokenizer(dir)?;
        let vocab = match &model_config {
            ModelConfig::T5(c) => c.vocab_size,
            ModelConfig::Bart(c) => c.vocab_size,
        };
        check_tokenizer(&tokenizer, vocab, &generation)?;
        let weights = Weights::open(&dir.join("model.safetensors"), &Device::Cpu)?;
        Ok(Self {
            dir: dir.to_owned(),
            family,
            window,
            prefix,
            generation,
            model_config,
            tokenizer,
            weights,
        })
    }

    /// The folder it was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Which family the checkpoint is.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The longest input, in tokens, the model was built for: BART's
    /// `max_position_embeddings`, T5's `n_positions` (512 when absent).
    pub fn window(&self) -> usize {
        self.window
    }

    /// The text put before every input, from
    /// `task_specific_params.summarization.prefix` (`"summarize: "` for the
    /// original T5 checkpoints; empty for BART).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The generation settings the checkpoint carries, as transformers'
    /// `generate` would take them.
    pub fn generation_config(&self) -> &GenerationConfig {
        &self.generation
    }
}
