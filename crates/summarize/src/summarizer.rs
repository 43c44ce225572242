//! The public entry point: text in, summary out, with transformers' token
//! ids in between.

use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::{Checkpoint, Family};
use crate::error::{Error, Result, SettingError};
use crate::generation::{GenerationConfig, generate};
use crate::model::Model;
use crate::nn::Precision;
use crate::seq2seq::Seq2Seq;

/// Rounds of chunk-and-summarize before a too-long input is given up on.
const MAX_CHUNK_ROUNDS: usize = 4;

/// Tokens kept free in each chunk: re-tokenizing a chunk's text on its own
/// may give a token or two more than it had inside the whole text.
const CHUNK_MARGIN: usize = 4;

/// Inputs up to this many bytes per token of the window are counted
/// exactly; beyond, a prefix of that size is tokenized first, and an input
/// whose prefix is already over the window is refused without tokenizing
/// the rest (see [`Summarizer::summarize`]).
const PREFIX_BYTES_PER_WINDOW_TOKEN: usize = 64;

/// Where chunked summarization is; see [`Summarizer::summarize_with_progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChunkProgress {
    /// The round (1-based): round 1 summarizes chunks of the input, later
    /// rounds chunks of the joined summaries.
    pub round: usize,
    /// Chunks of this round summarized so far.
    pub done: usize,
    /// Chunks in this round.
    pub chunks: usize,
}

/// How to load a checkpoint.
///
/// ```
/// use confsum_summarize::{LoadOptions, Precision};
/// let options = LoadOptions::default().precision(Precision::Int8).chunking(true);
/// assert!(options.chunking);
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct LoadOptions {
    /// How the linear layers hold their weights (default f32, which
    /// matches transformers).
    pub precision: Precision,
    /// Summarize inputs longer than the model's window in chunks (default
    /// off). See [`Summarizer`] for what this does; transformers has no
    /// such mode.
    pub chunking: bool,
}

impl LoadOptions {
    /// Sets [`LoadOptions::precision`].
    #[must_use]
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Sets [`LoadOptions::chunking`].
    #[must_use]
    pub fn chunking(mut self, on: bool) -> Self {
        self.chunking = on;
        self
    }
}

/// One summary.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// The generated ids decoded without special tokens and without
    /// clean-up of spaces, as `tokenizer.decode(ids,
    /// skip_special_tokens=True)` gives them in transformers 5 (and as
    /// transformers 4's summarization pipeline returned them).
    pub text: String,
    /// The generated token ids as transformers' `generate` returns them,
    /// without the decoder start token and without the padding a batch
    /// adds after the end token.
    pub ids: Vec<u32>,
}

/// A loaded T5 or BART checkpoint that summarizes text.
///
/// Generation follows transformers 5.24's `model.generate(**tokenizer(text))`
/// for the same checkpoint: the settings come from
/// `generation_config.json`, else `config.json` (see
/// [`Summarizer::generation_config_mut`] to change them). The input is the
/// text after the checkpoint's summarization prefix (`"summarize: "` for
/// the original T5 checkpoints), as transformers 4's summarization pipeline
/// put it. transformers 5 removed that pipeline, and with it the use of
/// `task_specific_params.summarization`'s generation settings (beams,
/// lengths, …): they are not applied here either, only its prefix.
///
/// # Long inputs
///
/// An input with more tokens than the model's window
/// ([`Checkpoint::window`]) is refused with [`Error::InputTooLong`] —
/// transformers would error (BART) or run the model beyond what it was
/// trained on (T5). With [`LoadOptions::chunking`] on, such an input is
/// instead split into window-sized chunks (at sentence ends where one is
/// near, else between tokens), each chunk is summarized on its own, the
/// parts' texts are joined with spaces and the result is summarized
/// again, repeating while it is still too long (at most four rounds).
/// This is not something transformers does, so such
/// summaries cannot be compared with it.
///
/// # Limits checked before work
///
/// Before anything is tokenized or generated, the generation settings are
/// checked ([`Summarizer::check_generation_config`]), and an input far
/// over the window is refused from a prefix: when chunking is off and the
/// text is longer than 64 bytes per window token, its first such bytes
/// (cut where ASCII whitespace ends a word) are tokenized, and if they are
/// already over the window the text is refused with
/// [`Error::InputTooLongPrefix`]. That never refuses a text that would
/// fit: T5's and BART's pre-tokenizers split at whitespace, so the tokens
/// of such a prefix are the first tokens of the whole text.
pub struct Summarizer {
    checkpoint: Checkpoint,
    model: Model,
    generation: GenerationConfig,
    chunking: bool,
}

impl std::fmt::Debug for Summarizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Summarizer")
            .field("checkpoint", &self.checkpoint)
            .field("chunking", &self.chunking)
            .finish_non_exhaustive()
    }
}

impl Summarizer {
    /// Loads the checkpoint in folder `dir` and builds its model.
    ///
    /// # Errors
    ///
    /// Those of [`Checkpoint::load`], plus [`Error::MissingTensor`],
    /// [`Error::Shape`] and [`Error::DType`] for weights that do not fit
    /// the configuration.
    pub fn load(dir: &Path, options: &LoadOptions) -> Result<Self> {
        let checkpoint = Checkpoint::load(dir)?;
        let model = Model::load(&checkpoint, options.precision)?;
        let generation = checkpoint.generation_config().clone();
        Ok(Self {
            checkpoint,
            model,
            generation,
            chunking: options.chunking,
        })
    }

    /// The checkpoint it was loaded from.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The generation settings in use.
    pub fn generation_config(&self) -> &GenerationConfig {
        &self.generation
    }

    /// The generation settings in use, to change.
    pub fn generation_config_mut(&mut self) -> &mut GenerationConfig {
        &mut self.generation
    }

    /// Checks the generation settings before any work: `length_penalty`
    /// is finite, `min_new_tokens` is at most `max_new_tokens` and
    /// `min_length` at most `max_length` (when both are set and used), and
    /// the number of new tokens is within the model's limit: BART's
    /// `max_position_embeddings` (its decoder has no position beyond), and
    /// for T5, whose relative positions have no end, the checkpoint's
    /// window ([`Checkpoint::window`]), so that a huge `max_new_tokens`
    /// cannot run for hours. [`Summarizer::summarize`] and
    /// [`Summarizer::generate_ids`] call it first.
    ///
    /// # Errors
    ///
    /// [`Error::Setting`].
    pub fn check_generation_config(&self) -> Result<()> {
        let g = &self.generation;
        if !g.length_penalty.is_finite() {
            return Err(SettingError::NotFinite {
                setting: "length_penalty",
                value: g.length_penalty,
            }
            .into());
        }
        if let (Some(min), Some(max)) = (g.min_new_tokens, g.max_new_tokens) {
            if min > max {
                return Err(SettingError::MinAboveMax {
                    min_setting: "min_new_tokens",
                    min,
                    max_setting: "max_new_tokens",
                    max,
                }
                .into());
            }
        }
        if let (None, Some(max)) = (g.max_new_tokens, g.max_length) {
            if g.min_length > max {
                return Err(SettingError::MinAboveMax {
                    min_setting: "min_length",
                    min: g.min_length,
                    max_setting: "max_length",
                    max,
                }
                .into());
            }
        }
        // New tokens after the decoder start token, as generation counts.
        let requested = match (g.max_new_tokens, g.max_length) {
            (Some(n), _) => n,
            (None, Some(m)) => m.saturating_sub(1),
            (None, None) => 0,
        };
        let limit = match self.checkpoint.family() {
            Family::Bart => g
                .max_position_embeddings
                .unwrap_or(self.checkpoint.window()),
            _ => self.checkpoint.window(),
        };
        if requested > limit {
            return Err(SettingError::TooManyNewTokens { requested, limit }.into());
        }
        Ok(())
    }

    /// Refuses, from a prefix, a text so long that counting all its tokens
    /// would be the costly part (see the type's doc).
    fn refuse_far_too_long(&self, text: &str) -> Result<()> {
        let window = self.checkpoint.window();
        let budget = window.saturating_mul(PREFIX_BYTES_PER_WINDOW_TOKEN);
        if text.len() <= budget {
            return Ok(());
        }
        let Some(cut) = whitespace_cut(text, budget) else {
            // No place to cut that keeps tokens whole: count them all.
            return Ok(());
        };
        let prefix_tokens = self.encode_text(text.get(..cut).unwrap_or_default())?.len();
        if prefix_tokens > window {
            return Err(Error::InputTooLongPrefix {
                bytes: text.len(),
                prefix_bytes: cut,
                prefix_tokens,
                window,
            });
        }
        Ok(())
    }

    /// Token ids of `text` as the model's input: the summarization prefix,
    /// the text and the tokenizer's special tokens, as
    /// `tokenizer(prefix + text).input_ids` gives them.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyInput`] for empty or whitespace-only text,
    /// [`Error::Tokenizer`] if the tokenizer fails.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        if text.trim().is_empty() {
            return Err(Error::EmptyInput);
        }
        self.encode_raw(&format!("{}{text}", self.checkpoint.prefix()), true)
    }

    fn encode_raw(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        Ok(self
            .checkpoint
            .tokenizer
            .encode(text, special)
            .map_err(|e| Error::Tokenizer(format!("cannot encode: {e}")))?
            .get_ids()
            .to_vec())
    }

    /// Runs `generate` on token ids, one row per input (rows of different
    /// lengths are padded as transformers' tokenizer pads a batch), and
    /// returns the rows transformers returns, without the decoder start
    /// token: a batch's shorter rows end in padding.
    ///
    /// No window is applied here beyond the model's own (BART refuses
    /// inputs longer than its positions; T5, like transformers, runs them).
    ///
    /// # Errors
    ///
    /// [`Error::EmptyInput`] for an empty row, [`Error::InputTooLong`] for
    /// a BART input beyond its positions, [`Error::Generation`] for
    /// settings that cannot work together.
    pub fn generate_ids(&mut self, input_ids: &[Vec<u32>]) -> Result<Vec<Vec<u32>>> {
        if input_ids.is_empty() {
            return Ok(Vec::new());
        }
        if input_ids.iter().any(Vec::is_empty) {
            return Err(Error::EmptyInput);
        }
        self.check_generation_config()?;
        let rows = generate(&mut self.model, input_ids, &self.generation);
        // The caches hold the encoder output and every layer's keys and
        // values: no use once generation is over.
        self.model.clear_kv_cache();
        rows
    }

    /// The model's logits for each decoder position, as transformers'
    /// `model(input_ids=[input_ids],
    /// decoder_input_ids=[decoder_input_ids]).logits[0]` gives them: row
    /// `i`, as wide as the vocabulary, scores the token that follows
    /// `decoder_input_ids[..=i]`, before any of generation's logits
    /// processors. Decoder ids start with the decoder start token, so
    /// `logits(ids, &[start])` is the first step of generation.
    ///
    /// For scoring a given summary, and for checking the model against
    /// another implementation.
    ///
    /// ```
    /// # use std::path::Path;
    /// # use confsum_summarize::{LoadOptions, Summarizer};
    /// # fn main() -> Result<(), confsum_summarize::Error> {
    /// # let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/t5_v1_0"));
    /// let mut summarizer = Summarizer::load(dir, &LoadOptions::default())?;
    /// let ids = summarizer.encode_text("The council approved the budget.")?;
    /// let start = summarizer.generation_config().decoder_start_token_id.unwrap_or(0);
    /// let first = summarizer.logits(&ids, &[start])?;
    /// assert_eq!(first.len(), 1);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::EmptyInput`] for empty ids, [`Error::InputTooLong`] for a
    /// BART input beyond its positions, [`Error::Generation`] for ids
    /// outside the vocabulary or a BART decoder beyond its positions.
    pub fn logits(
        &mut self,
        input_ids: &[u32],
        decoder_input_ids: &[u32],
    ) -> Result<Vec<Vec<f32>>> {
        if input_ids.is_empty() || decoder_input_ids.is_empty() {
            return Err(Error::EmptyInput);
        }
        let rows = self.teacher_forced(input_ids, decoder_input_ids);
        self.model.clear_kv_cache();
        rows
    }

    fn teacher_forced(
        &mut self,
        input_ids: &[u32],
        decoder_input_ids: &[u32],
    ) -> Result<Vec<Vec<f32>>> {
        let n = input_ids.len();
        let ids = Tensor::from_slice(input_ids, (1, n), &Device::Cpu)?;
        let mask = Tensor::ones((1, n), DType::U32, &Device::Cpu)?;
        self.model.encode(&ids, &mask)?;
        decoder_input_ids
            .iter()
            .map(|&token| {
                let token = Tensor::new(&[token], &Device::Cpu)?;
                Ok(self.model.decode_step(&token)?.squeeze(0)?.to_vec1()?)
            })
            .collect()
    }

    /// Summarizes one text.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyInput`] for empty or whitespace-only text,
    /// [`Error::InputTooLong`] for a text beyond the window with chunking
    /// off, and those of [`Summarizer::generate_ids`].
    pub fn summarize(&mut self, text: &str) -> Result<Summary> {
        self.summarize_with_progress(text, &mut |_| {})
    }

    /// [`Summarizer::summarize`], calling `progress` as chunked
    /// summarization goes (before the first chunk of each round, and after
    /// each chunk); a text that fits the window is one generation and gets
    /// no calls. Chunking a long text takes a generation per chunk, so
    /// this is where a program shows how far it is.
    ///
    /// # Errors
    ///
    /// As [`Summarizer::summarize`].
    pub fn summarize_with_progress(
        &mut self,
        text: &str,
        progress: &mut dyn FnMut(ChunkProgress),
    ) -> Result<Summary> {
        self.check_generation_config()?;
        if !self.chunking {
            self.refuse_far_too_long(text)?;
        }
        let ids = self.encode_text(text)?;
        let window = self.checkpoint.window();
        if ids.len() <= window {
            return self.summarize_ids(ids);
        }
        if !self.chunking {
            return Err(Error::InputTooLong {
                tokens: ids.len(),
                window,
            });
        }
        self.summarize_long(text, progress)
    }

    /// Summarizes several texts as one padded batch (a text that needs
    /// chunking is summarized on its own).
    ///
    /// # Errors
    ///
    /// As [`Summarizer::summarize`], for the first text that fails.
    pub fn summarize_batch(&mut self, texts: &[&str]) -> Result<Vec<Summary>> {
        self.check_generation_config()?;
        let window = self.checkpoint.window();
        let mut direct = Vec::new();
        let mut slots: Vec<Option<Summary>> = Vec::with_capacity(texts.len());
        let mut long = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            if !self.chunking {
                self.refuse_far_too_long(text)?;
            }
            let ids = self.encode_text(text)?;
            if ids.len() > window {
                if !self.chunking {
                    return Err(Error::InputTooLong {
                        tokens: ids.len(),
                        window,
                    });
                }
                long.push(i);
            } else {
                direct.push((i, ids));
            }
            slots.push(None);
        }
        if !direct.is_empty() {
            let inputs: Vec<Vec<u32>> = direct.iter().map(|(_, ids)| ids.clone()).collect();
            let rows = self.generate_ids(&inputs)?;
            if rows.len() != inputs.len() {
                return Err(Error::Generation(format!(
                    "{} output rows for {} inputs",
                    rows.len(),
                    inputs.len()
                )));
            }
            for ((i, _), row) in direct.iter().zip(rows) {
                let summary = self.to_summary(row)?;
                if let Some(slot) = slots.get_mut(*i) {
                    *slot = Some(summary);
                }
            }
        }
        for i in long {
            let text = texts.get(i).copied().unwrap_or_default();
            let summary = self.summarize_long(text, &mut |_| {})?;
            if let Some(slot) = slots.get_mut(i) {
                *slot = Some(summary);
            }
        }
        slots
            .into_iter()
            .map(|s| s.ok_or_else(|| Error::Generation("a text got no summary".to_owned())))
            .collect()
    }

    /// Cuts a row after its first end token (dropping batch padding) and
    /// decodes it.
    fn to_summary(&self, mut ids: Vec<u32>) -> Result<Summary> {
        if let Some(end) = ids
            .iter()
            .position(|id| self.generation.eos_token_ids.contains(id))
        {
            ids.truncate(end + 1);
        }
        let text = self
            .checkpoint
            .tokenizer
            .decode(&ids, true)
            .map_err(|e| Error::Tokenizer(format!("cannot decode: {e}")))?;
        Ok(Summary { text, ids })
    }

    /// Summarizes one input of one row.
    fn summarize_ids(&mut self, ids: Vec<u32>) -> Result<Summary> {
        let row = self
            .generate_ids(&[ids])?
            .pop()
            .ok_or_else(|| Error::Generation("no output row".to_owned()))?;
        self.to_summary(row)
    }

    /// Chunk, summarize the chunks, join, repeat (see the type's doc).
    fn summarize_long(
        &mut self,
        text: &str,
        progress: &mut dyn FnMut(ChunkProgress),
    ) -> Result<Summary> {
        let window = self.checkpoint.window();
        let mut current = text.to_owned();
        let mut tokens = usize::MAX;
        for round in 1..=MAX_CHUNK_ROUNDS {
            let ids = self.encode_text(&current)?;
            if ids.len() <= window {
                return self.summarize_ids(ids);
            }
            if ids.len() >= tokens {
                // The parts' summaries are no shorter than what they
                // summarize: more rounds would not converge.
                break;
            }
            tokens = ids.len();
            let mut parts = Vec::new();
            let chunks = self.split(&current)?;
            let mut at = ChunkProgress {
                round,
                done: 0,
                chunks: chunks.len(),
            };
            progress(at);
            for chunk in chunks {
                let part = self.summarize_ids(chunk)?;
                at.done += 1;
                progress(at);
                let part = part.text.trim();
                if !part.is_empty() {
                    parts.push(part.to_owned());
                }
            }
            current = parts.join(" ");
            if current.trim().is_empty() {
                return Err(Error::Generation(
                    "every chunk of the input summarized to nothing".to_owned(),
                ));
            }
        }
        let tokens = self.encode_text(&current)?.len();
        if tokens <= window {
            let ids = self.encode_text(&current)?;
            return self.summarize_ids(ids);
        }
        Err(Error::InputTooLong { tokens, window })
    }

    /// Splits `text` into inputs (prefix and special tokens included) of at
    /// most the window each, ending chunks at sentence ends where one lies
    /// in the second half of the chunk.
    fn split(&self, text: &str) -> Result<Vec<Vec<u32>>> {
        let window = self.checkpoint.window();
        let encoding = self
            .checkpoint
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Tokenizer(format!("cannot encode: {e}")))?;
        let offsets = encoding.get_offsets();
        let n = offsets.len();
        // The prefix and the special tokens every chunk gets.
        let overhead = self.encode_raw(self.checkpoint.prefix(), true)?.len();
        let budget = window.saturating_sub(overhead + CHUNK_MARGIN);
        if budget < 8 {
            return Err(Error::InputTooLong {
                tokens: n + overhead,
                window,
            });
        }
        let sentence_end = |i: usize| -> bool {
            offsets.get(i).is_some_and(|&(_, end)| {
                let before = text.get(..end).unwrap_or_default().trim_end();
                let after = text.get(end..).unwrap_or_default();
                before.ends_with(['.', '!', '?', ':', ';'])
                    || after.starts_with("\n")
                    || after.starts_with(" \n")
            })
        };
        let mut chunks = Vec::new();
        let mut start = 0;
        while start < n {
            let mut end = (start + budget).min(n);
            if end < n {
                if let Some(b) = (start + budget / 2..end).rev().find(|&i| sentence_end(i)) {
                    end = b + 1;
                }
            }
            // Shrink until the chunk's own text tokenizes into the window.
            loop {
                let span = offsets
                    .get(start)
                    .zip(offsets.get(end.saturating_sub(1)))
                    .and_then(|(&(a, _), &(_, b))| text.get(a..b));
                if let Some(span) = span.filter(|s| !s.trim().is_empty()) {
                    let ids = self.encode_text(span)?;
                    if ids.len() <= window {
                        chunks.push(ids);
                        break;
                    }
                }
                if end <= start + 1 {
                    break; // a token we cannot cut out on its own: skip it
                }
                end = start + (end - start) * 7 / 8;
            }
            start = end;
        }
        Ok(chunks)
    }
}

/// The largest index at most `max` where ASCII whitespace follows a
/// character that is not whitespace: a place to cut `text` that ends a
/// word, so that the prefix's tokens are the whole text's first tokens.
/// (Only ASCII whitespace: no normalizer drops or merges it.)
fn whitespace_cut(text: &str, max: usize) -> Option<usize> {
    let mut cut = None;
    let mut prev_ws = true;
    for (i, c) in text.char_indices() {
        if i > max {
            break;
        }
        if c.is_ascii_whitespace() && !prev_ws {
            cut = Some(i);
        }
        prev_ws = c.is_whitespace();
    }
    cut
}
