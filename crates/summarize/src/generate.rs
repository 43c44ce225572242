//! Greedy and beam-search generation with the semantics of transformers
//! 5.24's `generate()` for encoder-decoders, and the generation settings
//! read the way transformers reads a checkpoint folder.
//!
//! Facts this module follows (from transformers 5.24's `generation/`):
//! - Every length counts the decoder start token: the sequence starts as
//!   `[start]`, `max_length` bounds its whole length, `max_new_tokens` sets
//!   `max_length = max_new_tokens + 1`, `min_length` bans EOS while the
//!   sequence (start included) is shorter than it, and `min_new_tokens`
//!   sets `min_length = min_new_tokens + 1`. With no `max_length` anywhere,
//!   20 tokens are generated (`max_length = 21`, capped at the model's
//!   `max_position_embeddings`).
//! - Processors run in the order no-repeat-ngram, min length, forced BOS
//!   (at length 1), forced EOS (at length `max_length - 1`); greedy applies
//!   them to the raw logits, beam search to float32 log-softmax.
//! - Beam search keeps `max(2, 1 + eos ids) * num_beams` candidates a step;
//!   a candidate ending in EOS (or reaching `max_length`) is finished only
//!   if it is among the first `num_beams`, scored `sum of log-probs /
//!   generated_len ^ length_penalty` where `generated_len` counts the new
//!   tokens, EOS included, start excluded. Finished rows shorter than the
//!   longest are filled with `pad_token_id`, or with the first EOS id when
//!   the pad id is 0 (transformers tests the pad id's truthiness).
//! - Greedy fills finished rows with `pad_token_id` (the first EOS id when
//!   there is none).

use candle_core::{Device, Tensor};
use serde_json::Value;

use crate::{
    error::{Error, Result},
    json::{count, opt, token_id, token_ids, truthy},
    model::Seq2Seq,
};

/// When beam search stops, transformers' `early_stopping`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// `True`: stop once every input has `num_beams` finished hypotheses.
    True,
    /// `False` (the default): stop when the best running beam, normalised
    /// by its current length, cannot beat the worst finished one.
    #[default]
    False,
    /// `"never"`: as `False`, but with a positive `length_penalty` the
    /// running beam is normalised by the longest possible length.
    Never,
}

/// Generation settings, named as transformers names them.
///
/// [`Default`] is transformers' `GenerationConfig()` with its global
/// defaults: greedy, 20 new tokens, no length or n-gram constraints, and no
/// special tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Longest sequence, decoder start token included. `None` means
    /// transformers' default: 20 new tokens, capped at
    /// `max_position_embeddings`.
    pub max_length: Option<usize>,
    /// Most new tokens; wins over `max_length` when set.
    pub max_new_tokens: Option<usize>,
    /// EOS is banned while the sequence, decoder start token included, is
    /// shorter than this.
    pub min_length: usize,
    /// Fewest new tokens before EOS; wins over `min_length` when set.
    pub min_new_tokens: Option<usize>,
    /// Beams; 1 is greedy search.
    pub num_beams: usize,
    /// Exponent of the generated length that divides a finished beam's
    /// log-probability.
    pub length_penalty: f64,
    /// When beam search stops.
    pub early_stopping: EarlyStopping,
    /// No n-gram of this size occurs twice in a sequence (0: off).
    pub no_repeat_ngram_size: usize,
    /// Token forced right after the decoder start token.
    pub forced_bos_token_id: Option<u32>,
    /// Tokens forced as the last token at `max_length` (transformers'
    /// `forced_eos_token_id`, an int or a list; empty: off).
    pub forced_eos_token_ids: Vec<u32>,
    /// End-of-sequence ids (transformers' `eos_token_id`, an int or a list).
    pub eos_token_ids: Vec<u32>,
    /// Fills finished rows; the first EOS id when `None`.
    pub pad_token_id: Option<u32>,
    /// First decoder token; `bos_token_id` when `None`.
    pub decoder_start_token_id: Option<u32>,
    /// Beginning-of-sequence id, the fallback decoder start token.
    pub bos_token_id: Option<u32>,
    /// The model's `max_position_embeddings` (from `config.json`), which
    /// caps the default `max_length`.
    pub max_position_embeddings: Option<usize>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_length: None,
            max_new_tokens: None,
            min_length: 0,
            min_new_tokens: None,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::False,
            no_repeat_ngram_size: 0,
            forced_bos_token_id: None,
            forced_eos_token_ids: Vec::new(),
            eos_token_ids: Vec::new(),
            pad_token_id: None,
            decoder_start_token_id: None,
            bos_token_id: None,
            max_position_embeddings: None,
        }
    }
}

/// How a key of a config file or of `generate()` kwargs is handled.
enum Key {
    /// A setting this module runs.
    Supported,
    /// Only steers sampling, which is off: ignored, as transformers does.
    SamplingOnly,
    /// Does not change the ids (caching, output format, bookkeeping).
    Ignored,
    /// A feature not implemented; accepted only at its inert value.
    InertOnly,
    /// Not a generation setting.
    Unknown,
}

fn classify(key: &str) -> Key {
    match key {
        "max_length"
        | "max_new_tokens"
        | "min_length"
        | "min_new_tokens"
        | "num_beams"
        | "length_penalty"
        | "early_stopping"
        | "no_repeat_ngram_size"
        | "forced_bos_token_id"
        | "forced_eos_token_id"
        | "eos_token_id"
        | "pad_token_id"
        | "decoder_start_token_id"
        | "bos_token_id"
        | "do_sample" => Key::Supported,
        "temperature" | "top_k" | "top_p" | "typical_p" | "min_p" | "top_h" | "epsilon_cutoff"
        | "eta_cutoff" => Key::SamplingOnly,
        "use_cache"
        | "cache_implementation"
        | "cache_config"
        | "max_cache_len"
        | "output_attentions"
        | "output_hidden_states"
        | "output_scores"
        | "output_logits"
        | "return_dict_in_generate"
        | "num_assistant_tokens"
        | "num_assistant_tokens_schedule"
        | "assistant_confidence_threshold"
        | "assistant_lookbehind"
        | "target_lookbehind"
        | "is_assistant"
        | "compile_config"
        | "disable_compile"
        | "prefill_chunk_size"
        | "transformers_version"
        | "_from_model_config"
        | "max_matching_ngram_size"
        | "assistant_ensemble_weight"
        | "speculation_type"
        | "continuous_batching_config" => Key::Ignored,
        "repetition_penalty"
        | "encoder_repetition_penalty"
        | "num_return_sequences"
        | "encoder_no_repeat_ngram_size"
        | "bad_words_ids"
        | "suppress_tokens"
        | "begin_suppress_tokens"
        | "sequence_bias"
        | "guidance_scale"
        | "exponential_decay_length_penalty"
        | "renormalize_logits"
        | "remove_invalid_values"
        | "num_beam_groups"
        | "diversity_penalty"
        | "constraints"
        | "force_words_ids"
        | "max_time"
        | "stop_strings"
        | "watermarking_config"
        | "penalty_alpha"
        | "dola_layers"
        | "prompt_lookup_num_tokens"
        | "assistant_early_exit"
        | "use_mtp"
        | "token_healing"
        | "low_memory" => Key::InertOnly,
        _ => Key::Unknown,
    }
}

/// Whether an unsupported feature's value leaves generation as it is.
fn is_inert(key: &str, value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            match key {
                "repetition_penalty"
                | "encoder_repetition_penalty"
                | "num_return_sequences"
                | "num_beam_groups"
                | "guidance_scale" => x == 1.0,
                "encoder_no_repeat_ngram_size" | "diversity_penalty" | "penalty_alpha" => x == 0.0,
                _ => false,
            }
        }
        _ => false,
    }
}

impl GenerationConfig {
    /// The settings transformers 5.24 generates with when it loads a
    /// checkpoint folder and `generate()` gets no generation kwargs.
    ///
    /// With a `generation_config.json`, only that file counts: generation
    /// keys that a transformers-4 `config.json` still holds (`num_beams`,
    /// `min_length`, `forced_bos_token_id`, ...) are dropped when the model
    /// config loads. Without one, the generation keys of `config.json` are
    /// read instead (as `GenerationConfig.from_model_config`), including
    /// the old `force_bos_token_to_be_generated` flag and keys of a nested
    /// `decoder` config. `task_specific_params` never count. Unknown keys
    /// are ignored; a feature this module lacks (sampling, repetition
    /// penalty, ...) set to an active value is an error, since the ids
    /// would differ.
    pub fn from_json(config: &Value, generation_config: Option<&Value>) -> Result<Self> {
        let model = config
            .as_object()
            .ok_or_else(|| Error::config("config.json", "not a JSON object"))?;
        let mut out = Self {
            max_position_embeddings: match model.get("max_position_embeddings") {
                Some(v) => opt("max_position_embeddings", v, count)
                    .map_err(|e| Error::config("config.json", e))?,
                // BartConfig's class default.
                None if model.get("model_type").and_then(Value::as_str) == Some("bart") => {
                    Some(1024)
                }
                None => None,
            },
            ..Self::default()
        };
        let (file, source) = match generation_config {
            Some(g) => ("generation_config.json", g),
            None => ("config.json", config),
        };
        let source = source
            .as_object()
            .ok_or_else(|| Error::config(file, "not a JSON object"))?;
        let from_model_config =
            generation_config.is_none() || source.get("_from_model_config").is_some_and(truthy);
        let mut set = Vec::new();
        for (key, value) in source {
            if out
                .apply(key, value, false)
                .map_err(|e| Error::config(file, e))?
            {
                set.push(key.as_str());
            }
        }
        if generation_config.is_none() {
            // from_model_config fills keys still unset from a nested
            // decoder config.
            let nested = ["decoder", "generator", "text_config"]
                .iter()
                .find_map(|name| model.get(*name).filter(|v| truthy(v)));
            if let Some(Value::Object(decoder)) = nested {
                for (key, value) in decoder {
                    if !set.contains(&key.as_str()) {
                        out.apply(key, value, false)
                            .map_err(|e| Error::config(file, e))?;
                    }
                }
            }
        }
        if from_model_config
            && source
                .get("force_bos_token_to_be_generated")
                .is_some_and(truthy)
        {
            out.forced_bos_token_id = out.bos_token_id;
        }
        out.check().map_err(|e| Error::config(file, e))?;
        Ok(out)
    }

    /// Applies `generate()` kwargs (a JSON object, transformers' names) on
    /// top, as `generate(**kwargs)` does. An unknown key is an error, and
    /// so is `do_sample: true` or another feature this module lacks set to
    /// an active value. `null` puts a setting back to its default.
    pub fn update(&mut self, kwargs: &Value) -> Result<()> {
        let kwargs = kwargs
            .as_object()
            .ok_or_else(|| Error::Generation("kwargs must be a JSON object".into()))?;
        let mut next = self.clone();
        for (key, value) in kwargs {
            next.apply(key, value, true).map_err(Error::Generation)?;
        }
        next.check().map_err(Error::Generation)?;
        *self = next;
        Ok(())
    }

    /// Sets one key; returns whether it was a supported setting with a
    /// value (null counts as unset, as transformers drops it).
    fn apply(&mut self, key: &str, value: &Value, strict: bool) -> Result<bool, String> {
        match classify(key) {
            Key::Supported => {}
            Key::SamplingOnly | Key::Ignored => return Ok(false),
            Key::InertOnly if is_inert(key, value) => return Ok(false),
            Key::InertOnly => return Err(format!("{key} = {value} is not supported")),
            Key::Unknown if strict => return Err(format!("unknown generation setting {key:?}")),
            Key::Unknown => return Ok(false),
        }
        let defaults = Self::default();
        match key {
            "max_length" => self.max_length = opt(key, value, count)?,
            "max_new_tokens" => self.max_new_tokens = opt(key, value, count)?,
            "min_length" => self.min_length = opt(key, value, count)?.unwrap_or(0),
            "min_new_tokens" => self.min_new_tokens = opt(key, value, count)?,
            "num_beams" => self.num_beams = opt(key, value, count)?.unwrap_or(1),
            "length_penalty" => {
                self.length_penalty = match value {
                    Value::Null => defaults.length_penalty,
                    _ => value
                        .as_f64()
                        .ok_or_else(|| format!("length_penalty must be a number, not {value}"))?,
                }
            }
            "early_stopping" => {
                self.early_stopping = match value {
                    Value::Null | Value::Bool(false) => EarlyStopping::False,
                    Value::Bool(true) => EarlyStopping::True,
                    Value::String(s) if s == "never" => EarlyStopping::Never,
                    _ => {
                        return Err(format!(
                            "early_stopping must be true, false or \"never\", not {value}"
                        ));
                    }
                }
            }
            "no_repeat_ngram_size" => {
                self.no_repeat_ngram_size = opt(key, value, count)?.unwrap_or(0)
            }
            "forced_bos_token_id" => self.forced_bos_token_id = opt(key, value, token_id)?,
            "forced_eos_token_id" => {
                self.forced_eos_token_ids = opt(key, value, token_ids)?.unwrap_or_default()
            }
            "eos_token_id" => self.eos_token_ids = opt(key, value, token_ids)?.unwrap_or_default(),
            "pad_token_id" => self.pad_token_id = opt(key, value, token_id)?,
            "decoder_start_token_id" => {
                if value.is_array() {
                    return Err("a decoder_start_token_id per row is not supported".into());
                }
                self.decoder_start_token_id = opt(key, value, token_id)?
            }
            "bos_token_id" => self.bos_token_id = opt(key, value, token_id)?,
            "do_sample" => {
                if value.as_bool() == Some(true) {
                    return Err("sampling is not supported (do_sample = true)".into());
                }
                if !matches!(value, Value::Null | Value::Bool(false)) {
                    return Err(format!("do_sample must be a boolean, not {value}"));
                }
                return Ok(false);
            }
            _ => return Err(format!("unknown generation setting {key:?}")),
        }
        Ok(!value.is_null())
    }

    /// What transformers rejects before generating, and what cannot work.
    fn check(&self) -> Result<(), String> {
        if self.num_beams == 0 {
            return Err("num_beams must be at least 1".into());
        }
        if self.max_new_tokens == Some(0) {
            return Err("max_new_tokens must be greater than 0".into());
        }
        Ok(())
    }

    /// The settings as generation runs them, or why it cannot.
    fn resolve(&self, vocab: usize) -> Result<Plan> {
        self.check().map_err(Error::Generation)?;
        let start = self
            .decoder_start_token_id
            .or(self.bos_token_id)
            .ok_or_else(|| {
                Error::Generation("neither decoder_start_token_id nor bos_token_id is set".into())
            })?;
        let first_eos = *self.eos_token_ids.first().ok_or_else(|| {
            Error::Generation("no eos_token_id is set, so generation could not stop".into())
        })?;
        let pad = self.pad_token_id.unwrap_or(first_eos);
        // The decoder prompt is the start token alone.
        let max_length = match (self.max_new_tokens, self.max_length) {
            (Some(n), _) => n.saturating_add(1),
            (None, Some(m)) => m,
            (None, None) => {
                let default = 20 + 1;
                self.max_position_embeddings
                    .map_or(default, |p| default.min(p))
            }
        };
        if max_length <= 1 {
            return Err(Error::Generation(format!(
                "max_length {max_length} leaves no room after the decoder start token"
            )));
        }
        let min_length = self
            .min_new_tokens
            .map_or(self.min_length, |n| n.saturating_add(1));
        let forced = self
            .forced_bos_token_id
            .iter()
            .chain(&self.forced_eos_token_ids)
            .chain(std::iter::once(&start));
        for &id in forced {
            if id as usize >= vocab {
                return Err(Error::Generation(format!(
                    "token id {id} is outside the model's vocabulary of {vocab}"
                )));
            }
        }
        Ok(Plan {
            start,
            pad,
            eos: self.eos_token_ids.clone(),
            max_length,
            min_length,
            no_repeat: self.no_repeat_ngram_size,
            forced_bos: self.forced_bos_token_id,
            forced_eos: self.forced_eos_token_ids.clone(),
            num_beams: self.num_beams,
            length_penalty: self.length_penalty,
            early_stopping: self.early_stopping,
        })
    }
}

/// Settings resolved for one `generate` call.
#[derive(Debug)]
struct Plan {
    start: u32,
    pad: u32,
    eos: Vec<u32>,
    max_length: usize,
    min_length: usize,
    no_repeat: usize,
    forced_bos: Option<u32>,
    forced_eos: Vec<u32>,
    num_beams: usize,
    length_penalty: f64,
    early_stopping: EarlyStopping,
}

impl Plan {
    /// transformers' logits processors, in the order it builds them, on
    /// the scores of the row whose tokens so far are `seq`.
    fn process(&self, seq: &[u32], scores: &mut [f32]) {
        let len = seq.len();
        let n = self.no_repeat;
        if n > 0 && len >= n {
            let prefix = &seq[len + 1 - n..];
            for window in seq.windows(n) {
                if let Some((last, head)) = window.split_last() {
                    if head == prefix {
                        if let Some(s) = scores.get_mut(*last as usize) {
                            *s = f32::NEG_INFINITY;
                        }
                    }
                }
            }
        }
        // min_new_tokens is folded into min_length: the same test.
        if len < self.min_length {
            for &id in &self.eos {
                if let Some(s) = scores.get_mut(id as usize) {
                    *s = f32::NEG_INFINITY;
                }
            }
        }
        if let Some(bos) = self.forced_bos {
            if len == 1 {
                force(scores, std::slice::from_ref(&bos));
            }
        }
        if !self.forced_eos.is_empty() && len + 1 == self.max_length {
            force(scores, &self.forced_eos);
        }
    }

    fn is_eos(&self, token: u32) -> bool {
        self.eos.contains(&token)
    }
}

fn force(scores: &mut [f32], ids: &[u32]) {
    scores.fill(f32::NEG_INFINITY);
    for &id in ids {
        if let Some(s) = scores.get_mut(id as usize) {
            *s = 0.0;
        }
    }
}

/// Float32 log-softmax. torch sums the exponentials in 16 lanes (its
/// AVX-512 kernel); doing the same keeps most results bit-identical.
fn log_softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut lanes = [0f32; 16];
    for (i, &x) in row.iter().enumerate() {
        lanes[i % 16] += (x - max).exp();
    }
    let mut width = lanes.len();
    while width > 1 {
        width /= 2;
        for i in 0..width {
            lanes[i] += lanes[i + width];
        }
    }
    let lse = lanes[0].ln();
    for x in row.iter_mut() {
        *x = (*x - max) - lse;
    }
}

/// Descending order with NaN first, as torch ranks scores.
fn descending(a: f32, b: f32) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
    }
}

/// Indices of the `k` best scores, best first; ties go to the lower index.
/// (torch.topk leaves tied entries in an order of its selection algorithm;
/// ties that change the result do not arise with real logits.)
fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let cmp = |a: &usize, b: &usize| descending(scores[*a], scores[*b]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_unstable_by(cmp);
    idx
}

/// Index of the first largest score, as torch.argmax.
fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if let Some(&b) = scores.get(best) {
            if descending(s, b) == std::cmp::Ordering::Less {
                best = i;
            }
        }
    }
    best
}

fn logits_rows(logits: &Tensor, rows: usize, vocab: usize) -> Result<Vec<Vec<f32>>> {
    let out: Vec<Vec<f32>> = logits.to_vec2()?;
    if out.len() != rows || out.iter().any(|r| r.len() != vocab) {
        return Err(Error::Generation(format!(
            "the model returned logits of shape {:?}, expected [{rows}, {vocab}]",
            logits.dims()
        )));
    }
    Ok(out)
}

fn ids_tensor(ids: &[u32]) -> Result<Tensor> {
    Ok(Tensor::new(ids, &Device::Cpu)?)
}

/// Generates for each input row, as transformers' `generate` does with the
/// batch right-padded and an attention mask, and returns its output rows
/// without the leading decoder start token (rows padded to one length).
pub(crate) fn generate<M: Seq2Seq>(
    model: &mut M,
    inputs: &[Vec<u32>],
    config: &GenerationConfig,
) -> Result<Vec<Vec<u32>>> {
    if inputs.is_empty() || inputs.iter().any(Vec::is_empty) {
        return Err(Error::EmptyInput);
    }
    let vocab = model.vocab_size();
    let plan = config.resolve(vocab)?;
    let width = inputs.iter().map(Vec::len).max().unwrap_or(0);
    let batch = inputs.len();
    let mut ids = Vec::with_capacity(batch * width);
    let mut mask = Vec::with_capacity(batch * width);
    for row in inputs {
        ids.extend_from_slice(row);
        ids.resize(ids.len() + width - row.len(), plan.pad);
        mask.extend(std::iter::repeat_n(1u32, row.len()));
        mask.resize(mask.len() + width - row.len(), 0);
    }
    let ids = Tensor::from_vec(ids, (batch, width), &Device::Cpu)?;
    let mask = Tensor::from_vec(mask, (batch, width), &Device::Cpu)?;
    model.encode(&ids, &mask)?;
    if plan.num_beams == 1 {
        greedy(model, batch, vocab, &plan)
    } else {
        beam_search(model, batch, vocab, &plan)
    }
}

fn greedy<M: Seq2Seq>(
    model: &mut M,
    batch: usize,
    vocab: usize,
    plan: &Plan,
) -> Result<Vec<Vec<u32>>> {
    let mut seqs = vec![vec![plan.start]; batch];
    let mut unfinished = vec![true; batch];
    let mut last = vec![plan.start; batch];
    loop {
        let logits = model.decode_step(&ids_tensor(&last)?)?;
        let rows = logits_rows(&logits, batch, vocab)?;
        for (((mut scores, seq), open), last) in rows
            .into_iter()
            .zip(&mut seqs)
            .zip(&mut unfinished)
            .zip(&mut last)
        {
            plan.process(seq, &mut scores);
            let token = if *open {
                argmax(&scores) as u32
            } else {
                plan.pad
            };
            seq.push(token);
            *last = token;
            if seq.len() >= plan.max_length || plan.is_eos(token) {
                *open = false;
            }
        }
        if !unfinished.iter().any(|&u| u) {
            break;
        }
    }
    Ok(seqs.into_iter().map(|s| s[1..].to_vec()).collect())
}

/// A running beam or a finished hypothesis.
#[derive(Debug, Clone)]
struct Hyp {
    tokens: Vec<u32>,
    score: f32,
    finished: bool,
}

/// A continuation among the top candidates of one step.
#[derive(Debug)]
struct Candidate {
    beam: usize,
    token: u32,
    score: f32,
    hits_stop: bool,
}

const NEG: f32 = -1.0e9;

fn beam_search<M: Seq2Seq>(
    model: &mut M,
    batch: usize,
    vocab: usize,
    plan: &Plan,
) -> Result<Vec<Vec<u32>>> {
    let nb = plan.num_beams;
    let keep = 2.max(1 + plan.eos.len()) * nb;
    let lp = plan.length_penalty;
    // transformers divides float32 scores by the Python float rounded to
    // float32.
    let norm = |len: usize| (len as f64).powf(lp) as f32;
    let expand: Vec<u32> = (0..batch * nb).map(|i| (i / nb) as u32).collect();
    model.reorder_cache(&ids_tensor(&expand)?)?;

    let start = Hyp {
        tokens: vec![plan.start],
        score: 0.0,
        finished: false,
    };
    let mut running: Vec<Vec<Hyp>> = (0..batch)
        .map(|_| {
            (0..nb)
                .map(|j| Hyp {
                    score: if j == 0 { 0.0 } else { NEG },
                    ..start.clone()
                })
                .collect()
        })
        .collect();
    let mut done: Vec<Vec<Hyp>> = vec![
        vec![
            Hyp {
                score: NEG,
                ..start.clone()
            };
            nb
        ];
        batch
    ];
    let mut unsatisfied = vec![true; batch];
    let mut last = vec![plan.start; batch * nb];
    let mut cur_len = 1;
    loop {
        let logits = model.decode_step(&ids_tensor(&last)?)?;
        let mut rows = logits_rows(&logits, batch * nb, vocab)?;
        let mut all_hit = true;
        let mut order = Vec::with_capacity(batch * nb);
        for b in 0..batch {
            let mut acc = Vec::with_capacity(nb * vocab);
            for (j, beam) in running[b].iter().enumerate() {
                let row = &mut rows[b * nb + j];
                log_softmax(row);
                plan.process(&beam.tokens, row);
                acc.extend(row.iter().map(|&x| x + beam.score));
            }
            let candidates: Vec<Candidate> = top_k(&acc, keep)
                .into_iter()
                .map(|i| {
                    let token = (i % vocab) as u32;
                    Candidate {
                        beam: i / vocab,
                        token,
                        score: acc[i],
                        hits_stop: cur_len + 1 >= plan.max_length || plan.is_eos(token),
                    }
                })
                .collect();
            all_hit &= candidates.iter().all(|c| c.hits_stop);
            let extend = |c: &Candidate| {
                let mut tokens = running[b][c.beam].tokens.clone();
                tokens.push(c.token);
                tokens
            };

            // Next running beams: the best candidates not stopping here.
            let live: Vec<f32> = candidates
                .iter()
                .map(|c| if c.hits_stop { c.score + NEG } else { c.score })
                .collect();
            let picks = top_k(&live, nb);
            order.extend(picks.iter().map(|&i| b * nb + candidates[i].beam));
            let next: Vec<Hyp> = picks
                .into_iter()
                .map(|i| Hyp {
                    tokens: extend(&candidates[i]),
                    score: live[i],
                    finished: false,
                })
                .collect();

            // Finished hypotheses: merge the stopping candidates among the
            // first `num_beams`, length-normalised, with those kept so far.
            let full =
                plan.early_stopping == EarlyStopping::True && done[b].iter().all(|h| h.finished);
            // New tokens, EOS included: (cur_len + 1) minus the start token.
            let denom = norm(cur_len);
            let mut merged_scores: Vec<f32> = done[b].iter().map(|h| h.score).collect();
            for (p, c) in candidates.iter().enumerate() {
                let mut s = c.score / denom;
                if full {
                    s += NEG;
                }
                if !unsatisfied[b] {
                    s += NEG;
                }
                if !(c.hits_stop && p < nb) {
                    s += NEG;
                }
                merged_scores.push(s);
            }
            let kept: Vec<Hyp> = top_k(&merged_scores, nb)
                .into_iter()
                .map(|i| match i.checked_sub(nb) {
                    None => done[b][i].clone(),
                    Some(p) => Hyp {
                        tokens: extend(&candidates[p]),
                        score: merged_scores[i],
                        finished: candidates[p].hits_stop && p < nb,
                    },
                })
                .collect();
            done[b] = kept;
            running[b] = next;
        }
        cur_len += 1;

        for b in 0..batch {
            let hypothetical = if plan.early_stopping == EarlyStopping::Never && lp > 0.0 {
                plan.max_length - 1
            } else {
                cur_len - 1
            };
            let best = running[b][0].score / norm(hypothetical);
            let worst = done[b]
                .iter()
                .map(|h| h.score)
                .fold(f32::INFINITY, f32::min);
            let beatable = done[b]
                .iter()
                .any(|h| best > if h.finished { worst } else { NEG });
            unsatisfied[b] = unsatisfied[b] && beatable;
        }
        let improvement_possible = unsatisfied.iter().any(|&u| u);
        let all_done = done.iter().flatten().all(|h| h.finished);
        let open = !(all_done && plan.early_stopping == EarlyStopping::True);
        if !(improvement_possible && open && !all_hit) {
            break;
        }
        if order.iter().enumerate().any(|(i, &o)| i != o) {
            let order: Vec<u32> = order.iter().map(|&o| o as u32).collect();
            model.reorder_cache(&ids_tensor(&order)?)?;
        }
        for (slot, beam) in last.iter_mut().zip(running.iter().flatten()) {
            *slot = beam.tokens.last().copied().unwrap_or(plan.pad);
        }
    }

    // transformers fills with `pad_token_id or eos_token_id[0]`: a pad id
    // of 0 is falsy there.
    let fill = if plan.pad != 0 {
        plan.pad
    } else {
        plan.eos.first().copied().unwrap_or(plan.pad)
    };
    let best: Vec<&[u32]> = done
        .iter()
        .map(|d| {
            d.first()
                .map_or(&[][..], |h| h.tokens.get(1..).unwrap_or(&[]))
        })
        .collect();
    let width = best.iter().map(|r| r.len()).max().unwrap_or(0);
    Ok(best
        .into_iter()
        .map(|r| {
            let mut row = r.to_vec();
            row.resize(width, fill);
            row
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A model whose logits are a pure function of the unpadded encoder ids
    /// and the decoder ids so far: the same function as `scripted_logits`
    /// in tests/tools/generate_oracle.py.
    #[derive(Debug)]
    struct Scripted {
        vocab: usize,
        boost: Vec<u32>,
        enc: Vec<Vec<u32>>,
        dec: Vec<Vec<u32>>,
        steps: usize,
    }

    impl Scripted {
        fn new(vocab: usize, boost: &[u32]) -> Self {
            Self {
                vocab,
                boost: boost.to_vec(),
                enc: Vec::new(),
                dec: Vec::new(),
                steps: 0,
            }
        }

        fn logits(&self, enc: &[u32], dec: &[u32]) -> Vec<f32> {
            fn mix(h: u32, x: u32) -> u32 {
                (h ^ x).wrapping_mul(16_777_619)
            }
            let mut h = 2_166_136_261u32;
            for &t in enc {
                h = mix(h, t + 1);
            }
            h = mix(h, 0xFFFF);
            for &t in dec {
                h = mix(h, t + 1);
            }
            let generated = dec.len() as u32 - 1;
            (0..self.vocab as u32)
                .map(|v| {
                    let x = mix(mix(h, v + 7), 0xABCD);
                    let mut p = (x >> 16) % 64;
                    if self.boost.contains(&v) {
                        p = (p % 32 + 3 * generated).min(63);
                    }
                    (p * self.vocab as u32 + v) as f32 / 256.0
                })
                .collect()
        }
    }

    impl Seq2Seq for Scripted {
        fn encode(&mut self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<()> {
            let ids: Vec<Vec<u32>> = input_ids.to_vec2()?;
            let mask: Vec<Vec<u32>> = attention_mask.to_vec2()?;
            self.enc = ids
                .iter()
                .zip(&mask)
                .map(|(i, m)| {
                    i.iter()
                        .zip(m)
                        .filter(|(_, m)| **m == 1)
                        .map(|(i, _)| *i)
                        .collect()
                })
                .collect();
            self.dec = vec![Vec::new(); self.enc.len()];
            Ok(())
        }

        fn decode_step(&mut self, tokens: &Tensor) -> Result<Tensor> {
            self.steps += 1;
            let tokens: Vec<u32> = tokens.to_vec1()?;
            assert_eq!(tokens.len(), self.dec.len());
            let mut flat = Vec::new();
            for (row, t) in tokens.into_iter().enumerate() {
                self.dec[row].push(t);
                flat.extend(self.logits(&self.enc[row], &self.dec[row]));
            }
            Ok(Tensor::from_vec(
                flat,
                (self.dec.len(), self.vocab),
                &Device::Cpu,
            )?)
        }

        fn reorder_cache(&mut self, indices: &Tensor) -> Result<()> {
            let indices: Vec<u32> = indices.to_vec1()?;
            self.enc = indices
                .iter()
                .map(|&i| self.enc[i as usize].clone())
                .collect();
            self.dec = indices
                .iter()
                .map(|&i| self.dec[i as usize].clone())
                .collect();
            Ok(())
        }

        fn clear_kv_cache(&mut self) {
            self.dec.clear();
        }

        fn vocab_size(&self) -> usize {
            self.vocab
        }
    }

    fn oracle() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/generate_oracle.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn ids_of(v: &Value) -> Vec<Vec<u32>> {
        serde_json::from_value(v.clone()).unwrap()
    }

    fn replay(case: &Value, config: &GenerationConfig) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
        let boost: Vec<u32> = serde_json::from_value(case["boost"].clone()).unwrap();
        let vocab = case["vocab"].as_u64().unwrap() as usize;
        let mut model = Scripted::new(vocab, &boost);
        let got = generate(&mut model, &ids_of(&case["inputs"]), config).unwrap();
        (got, ids_of(&case["ids"]))
    }

    /// transformers' generate() on the same scripted model, replayed: every
    /// search, processor, length rule and padding rule.
    #[test]
    fn matches_transformers_generate() {
        let doc = oracle();
        let cases = doc["cases"].as_array().unwrap();
        assert!(cases.len() >= 600, "{} cases", cases.len());
        let mut failures = Vec::new();
        for case in cases {
            let name = case["name"].as_str().unwrap();
            let family = name.split('/').next().unwrap();
            let mut config = GenerationConfig::from_json(
                &json!({ "model_type": family }),
                Some(&case["generation"]),
            )
            .unwrap();
            config.update(&case["kwargs"]).unwrap();
            let (got, want) = replay(case, &config);
            if got != want {
                failures.push(format!(
                    "{name} {}: got {got:?}, want {want:?}",
                    case["kwargs"]
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} differ:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    /// Checkpoint folders loaded by transformers (config.json with or
    /// without generation_config.json) and generated with no kwargs.
    #[test]
    fn matches_transformers_config_loading() {
        let doc = oracle();
        let cases = doc["config_cases"].as_array().unwrap();
        assert!(cases.len() >= 30);
        let mut failures = Vec::new();
        for case in cases {
            let generation = case.get("generation_config").filter(|g| !g.is_null());
            let config = GenerationConfig::from_json(&case["config"], generation).unwrap();
            let (got, want) = replay(case, &config);
            if got != want {
                failures.push(format!("{}: got {got:?}, want {want:?}", case["name"]));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    fn plan(config: &GenerationConfig) -> Plan {
        config.resolve(32).unwrap()
    }

    fn tokens_only() -> GenerationConfig {
        GenerationConfig {
            decoder_start_token_id: Some(0),
            eos_token_ids: vec![1],
            pad_token_id: Some(0),
            ..GenerationConfig::default()
        }
    }

    #[test]
    fn no_repeat_ngram_bans_what_would_repeat() {
        let p = plan(&GenerationConfig {
            no_repeat_ngram_size: 2,
            ..tokens_only()
        });
        // Bigrams (0,5) (5,6) (6,5): the suffix 5 was followed by 6.
        let mut s = vec![0.0; 8];
        p.process(&[0, 5, 6, 5], &mut s);
        let banned: Vec<usize> = (0..8).filter(|&i| s[i] == f32::NEG_INFINITY).collect();
        assert_eq!(banned, vec![6]);
        // Too short for a whole n-gram: nothing banned.
        let p3 = plan(&GenerationConfig {
            no_repeat_ngram_size: 3,
            ..tokens_only()
        });
        let mut s = vec![0.0; 8];
        p3.process(&[0, 5], &mut s);
        assert!(s.iter().all(|&x| x == 0.0));
        // The decoder start token is part of the n-grams.
        let mut s = vec![0.0; 8];
        p3.process(&[0, 5, 7, 0, 5], &mut s);
        assert_eq!(s[7], f32::NEG_INFINITY);
        assert_eq!(s.iter().filter(|x| x.is_infinite()).count(), 1);
    }

    #[test]
    fn min_length_counts_the_start_token() {
        let p = plan(&GenerationConfig {
            min_length: 3,
            ..tokens_only()
        });
        let mut s = vec![0.0; 4];
        p.process(&[0, 9], &mut s);
        assert_eq!(s[1], f32::NEG_INFINITY);
        let mut s = vec![0.0; 4];
        p.process(&[0, 9, 9], &mut s);
        assert_eq!(s[1], 0.0);
        // min_new_tokens = n acts as min_length = n + 1, and wins.
        let p = plan(&GenerationConfig {
            min_length: 10,
            min_new_tokens: Some(2),
            ..tokens_only()
        });
        assert_eq!(p.min_length, 3);
    }

    #[test]
    fn forced_tokens_override_bans() {
        let p = plan(&GenerationConfig {
            forced_bos_token_id: Some(4),
            forced_eos_token_ids: vec![1, 2],
            min_length: 50,
            max_length: Some(6),
            ..tokens_only()
        });
        let mut s = vec![0.5; 8];
        p.process(&[0], &mut s);
        assert_eq!(argmax(&s), 4);
        assert_eq!(s.iter().filter(|x| x.is_finite()).count(), 1);
        let mut s = vec![0.5; 8];
        p.process(&[0, 4, 3], &mut s);
        assert_eq!(
            s,
            vec![0.5, f32::NEG_INFINITY, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
        );
        // At max_length - 1 the EOS ids are forced despite min_length.
        let mut s = vec![0.5; 8];
        p.process(&[0, 4, 3, 3, 3], &mut s);
        let kept: Vec<usize> = (0..8).filter(|&i| s[i] == 0.0).collect();
        assert_eq!(kept, vec![1, 2]);
    }

    #[test]
    fn lengths_resolve_like_transformers() {
        let vocab = 32;
        // Default: 20 new tokens, capped by max_position_embeddings.
        assert_eq!(tokens_only().resolve(vocab).unwrap().max_length, 21);
        let capped = GenerationConfig {
            max_position_embeddings: Some(12),
            ..tokens_only()
        };
        assert_eq!(capped.resolve(vocab).unwrap().max_length, 12);
        // An explicit max_length is not capped; max_new_tokens wins over it.
        let explicit = GenerationConfig {
            max_length: Some(40),
            ..capped.clone()
        };
        assert_eq!(explicit.resolve(vocab).unwrap().max_length, 40);
        let new = GenerationConfig {
            max_new_tokens: Some(5),
            ..explicit
        };
        assert_eq!(new.resolve(vocab).unwrap().max_length, 6);
    }

    #[test]
    fn top_k_and_argmax_break_ties_by_index() {
        let s = [
            1.0,
            3.0,
            f32::NEG_INFINITY,
            3.0,
            -1.0e9,
            1.0,
            f32::NEG_INFINITY,
        ];
        assert_eq!(top_k(&s, 4), vec![1, 3, 0, 5]);
        assert_eq!(top_k(&s, 7), vec![1, 3, 0, 5, 4, 2, 6]);
        assert_eq!(top_k(&s, 9).len(), 7);
        assert_eq!(argmax(&s), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), 0);
    }

    #[test]
    fn log_softmax_normalises() {
        let mut row: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.75).collect();
        row[3] = f32::NEG_INFINITY;
        log_softmax(&mut row);
        let total: f64 = row.iter().map(|&x| f64::from(x).exp()).sum();
        assert!((total - 1.0).abs() < 1e-5, "{total}");
        assert_eq!(row[3], f32::NEG_INFINITY);
        assert!(row.iter().all(|&x| x <= 0.0));
    }

    #[test]
    fn beams_expand_then_follow_their_parents() {
        // A model that records the cache reorders it is asked for.
        #[derive(Debug)]
        struct Recorder {
            inner: Scripted,
            orders: Vec<Vec<u32>>,
        }
        impl Seq2Seq for Recorder {
            fn encode(&mut self, ids: &Tensor, mask: &Tensor) -> Result<()> {
                self.inner.encode(ids, mask)
            }
            fn decode_step(&mut self, tokens: &Tensor) -> Result<Tensor> {
                self.inner.decode_step(tokens)
            }
            fn reorder_cache(&mut self, indices: &Tensor) -> Result<()> {
                self.orders.push(indices.to_vec1()?);
                self.inner.reorder_cache(indices)
            }
            fn clear_kv_cache(&mut self) {}
            fn vocab_size(&self) -> usize {
                self.inner.vocab
            }
        }
        let mut model = Recorder {
            inner: Scripted::new(32, &[1]),
            orders: Vec::new(),
        };
        let config = GenerationConfig {
            num_beams: 3,
            max_new_tokens: Some(6),
            ..tokens_only()
        };
        let out = generate(&mut model, &[vec![4, 5, 1], vec![7, 1]], &config).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(model.orders[0], vec![0, 0, 0, 1, 1, 1]);
        // Each later reorder keeps every row within its own input's beams.
        for order in &model.orders[1..] {
            for (i, &o) in order.iter().enumerate() {
                assert_eq!(i / 3, o as usize / 3, "{order:?}");
            }
        }
        // Step 1 leaves only beam 0 alive (the others start at -1e9), so the
        // first reorder after it points every beam at row 0 of its input.
        assert_eq!(model.orders[1], vec![0, 0, 0, 3, 3, 3]);
        assert!(model.inner.steps <= 6);
    }

    #[test]
    fn greedy_pads_finished_rows() {
        let mut model = Scripted::new(32, &[1]);
        let config = GenerationConfig {
            max_new_tokens: Some(40),
            ..tokens_only()
        };
        let out = generate(&mut model, &[vec![5, 9, 13, 1], vec![7, 3, 1]], &config).unwrap();
        assert_eq!(out[0].len(), out[1].len());
        for row in &out {
            let end = row.iter().position(|&t| t == 1).unwrap();
            assert!(row[end + 1..].iter().all(|&t| t == 0));
        }
    }

    #[test]
    fn generate_rejects_what_cannot_run() {
        let mut model = Scripted::new(32, &[1]);
        let ok = tokens_only();
        assert!(matches!(
            generate(&mut model, &[], &ok),
            Err(Error::EmptyInput)
        ));
        assert!(matches!(
            generate(&mut model, &[vec![3], vec![]], &ok),
            Err(Error::EmptyInput)
        ));
        let cases = [
            (
                GenerationConfig {
                    eos_token_ids: vec![],
                    ..ok.clone()
                },
                "eos_token_id",
            ),
            (
                GenerationConfig {
                    decoder_start_token_id: None,
                    ..ok.clone()
                },
                "decoder_start_token_id",
            ),
            (
                GenerationConfig {
                    max_length: Some(1),
                    ..ok.clone()
                },
                "max_length",
            ),
            (
                GenerationConfig {
                    num_beams: 0,
                    ..ok.clone()
                },
                "num_beams",
            ),
            (
                GenerationConfig {
                    forced_bos_token_id: Some(32),
                    ..ok.clone()
                },
                "vocabulary",
            ),
        ];
        for (config, needle) in cases {
            match generate(&mut model, &[vec![3, 1]], &config) {
                Err(Error::Generation(msg)) => assert!(msg.contains(needle), "{msg}"),
                other => panic!("{needle}: {other:?}"),
            }
        }
        // Falls back to bos_token_id for the start and eos for the pad.
        let fallback = GenerationConfig {
            decoder_start_token_id: None,
            bos_token_id: Some(0),
            pad_token_id: None,
            ..ok
        };
        let p = fallback.resolve(32).unwrap();
        assert_eq!((p.start, p.pad), (0, 1));
    }

    #[test]
    fn update_applies_kwargs_by_transformers_names() {
        let mut c = tokens_only();
        c.update(&json!({
            "num_beams": 4, "length_penalty": 2, "early_stopping": "never", "min_length": 5,
            "max_new_tokens": 30, "no_repeat_ngram_size": 3, "forced_bos_token_id": 0,
            "forced_eos_token_id": [1, 2], "eos_token_id": 2, "do_sample": false,
            "temperature": 0.7, "repetition_penalty": 1.0, "use_cache": true
        }))
        .unwrap();
        assert_eq!(c.num_beams, 4);
        assert_eq!(c.length_penalty, 2.0);
        assert_eq!(c.early_stopping, EarlyStopping::Never);
        assert_eq!(c.min_length, 5);
        assert_eq!(c.max_new_tokens, Some(30));
        assert_eq!(c.no_repeat_ngram_size, 3);
        assert_eq!(c.forced_bos_token_id, Some(0));
        assert_eq!(c.forced_eos_token_ids, vec![1, 2]);
        assert_eq!(c.eos_token_ids, vec![2]);
        c.update(&json!({"early_stopping": true, "forced_bos_token_id": null}))
            .unwrap();
        assert_eq!(c.early_stopping, EarlyStopping::True);
        assert_eq!(c.forced_bos_token_id, None);

        let bad = [
            (json!({"num_beam": 4}), "num_beam"),
            (json!({"do_sample": true}), "sampling is not supported"),
            (json!({"repetition_penalty": 1.2}), "repetition_penalty"),
            (json!({"num_return_sequences": 2}), "num_return_sequences"),
            (json!({"early_stopping": "sometimes"}), "early_stopping"),
            (json!({"num_beams": 0}), "num_beams"),
            (json!({"max_new_tokens": 0}), "max_new_tokens"),
            (json!({"eos_token_id": -1}), "eos_token_id"),
            (json!({"min_length": 2.5}), "min_length"),
            (
                json!({"decoder_start_token_id": [0, 0]}),
                "decoder_start_token_id",
            ),
            (json!([1]), "object"),
        ];
        for (kwargs, needle) in bad {
            let before = c.clone();
            match c.update(&kwargs) {
                Err(Error::Generation(msg)) => assert!(msg.contains(needle), "{msg}"),
                other => panic!("{kwargs}: {other:?}"),
            }
            assert_eq!(c, before, "a failed update changes nothing");
        }
    }

    #[test]
    fn t5_small_task_params_do_not_count() {
        let config = json!({
            "model_type": "t5", "decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0,
            "n_positions": 512, "vocab_size": 32128,
            "task_specific_params": {"summarization": {
                "early_stopping": true, "length_penalty": 2.0, "max_length": 200, "min_length": 30,
                "no_repeat_ngram_size": 3, "num_beams": 4, "prefix": "summarize: "}}
        });
        let generation = json!({"_from_model_config": true, "decoder_start_token_id": 0,
            "eos_token_id": 1, "pad_token_id": 0, "transformers_version": "4.27.0.dev0"});
        let want = GenerationConfig {
            decoder_start_token_id: Some(0),
            eos_token_ids: vec![1],
            pad_token_id: Some(0),
            ..GenerationConfig::default()
        };
        assert_eq!(
            GenerationConfig::from_json(&config, Some(&generation)).unwrap(),
            want
        );
        assert_eq!(GenerationConfig::from_json(&config, None).unwrap(), want);
    }

    fn bart_large_cnn_v4_config() -> Value {
        json!({
            "model_type": "bart", "vocab_size": 50264, "max_position_embeddings": 1024,
            "bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 2,
            "early_stopping": true, "force_bos_token_to_be_generated": true,
            "forced_bos_token_id": 0, "forced_eos_token_id": 2, "length_penalty": 2.0,
            "max_length": 142, "min_length": 56, "no_repeat_ngram_size": 3, "num_beams": 4,
            "normalize_before": false, "prefix": " ", "output_past": true, "use_cache": true,
            "task_specific_params": {"summarization": {"num_beams": 4}},
            "transformers_version": "4.7.0.dev0"
        })
    }

    fn bart_large_cnn_settings() -> GenerationConfig {
        GenerationConfig {
            max_length: Some(142),
            min_length: 56,
            num_beams: 4,
            length_penalty: 2.0,
            early_stopping: EarlyStopping::True,
            no_repeat_ngram_size: 3,
            forced_bos_token_id: Some(0),
            forced_eos_token_ids: vec![2],
            eos_token_ids: vec![2],
            pad_token_id: Some(1),
            decoder_start_token_id: Some(2),
            bos_token_id: Some(0),
            max_position_embeddings: Some(1024),
            ..GenerationConfig::default()
        }
    }

    #[test]
    fn bart_large_cnn_v4_and_v5_agree() {
        let v4 = bart_large_cnn_v4_config();
        // transformers 4 wrote the same settings to generation_config.json.
        let v4_generation = json!({
            "_from_model_config": true, "bos_token_id": 0, "decoder_start_token_id": 2,
            "early_stopping": true, "eos_token_id": 2, "forced_bos_token_id": 0,
            "forced_eos_token_id": 2, "length_penalty": 2.0, "max_length": 142, "min_length": 56,
            "no_repeat_ngram_size": 3, "num_beams": 4, "pad_token_id": 1,
            "transformers_version": "4.27.0.dev0"
        });
        let mut v5 = v4.clone();
        for key in [
            "early_stopping",
            "force_bos_token_to_be_generated",
            "forced_bos_token_id",
            "length_penalty",
            "max_length",
            "min_length",
            "no_repeat_ngram_size",
            "num_beams",
            "normalize_before",
        ] {
            v5.as_object_mut().unwrap().remove(key);
        }
        let mut v5_generation = v4_generation.clone();
        v5_generation
            .as_object_mut()
            .unwrap()
            .remove("_from_model_config");
        let want = bart_large_cnn_settings();
        assert_eq!(GenerationConfig::from_json(&v4, None).unwrap(), want);
        assert_eq!(
            GenerationConfig::from_json(&v4, Some(&v4_generation)).unwrap(),
            want
        );
        assert_eq!(
            GenerationConfig::from_json(&v5, Some(&v5_generation)).unwrap(),
            want
        );
        // Without max_position_embeddings, BART's class default applies.
        v5.as_object_mut()
            .unwrap()
            .remove("max_position_embeddings");
        let c = GenerationConfig::from_json(&v5, Some(&v5_generation)).unwrap();
        assert_eq!(c.max_position_embeddings, Some(1024));
    }

    #[test]
    fn generation_config_json_replaces_config_json_entirely() {
        // A v4 config.json full of beam settings, next to a
        // generation_config.json with tokens only: transformers runs greedy.
        let tokens = json!({"bos_token_id": 0, "decoder_start_token_id": 2, "eos_token_id": 2,
            "pad_token_id": 1});
        let c = GenerationConfig::from_json(&bart_large_cnn_v4_config(), Some(&tokens)).unwrap();
        assert_eq!(c.num_beams, 1);
        assert_eq!(c.min_length, 0);
        assert_eq!(c.max_length, None);
        assert_eq!(c.forced_bos_token_id, None);
        assert!(c.forced_eos_token_ids.is_empty());
    }

    #[test]
    fn old_force_bos_flag_and_nested_decoder_keys() {
        let mut config = bart_large_cnn_v4_config();
        config
            .as_object_mut()
            .unwrap()
            .remove("forced_bos_token_id");
        let c = GenerationConfig::from_json(&config, None).unwrap();
        assert_eq!(c.forced_bos_token_id, Some(0));
        // In generation_config.json without _from_model_config the flag is
        // not a generation setting.
        let g = json!({"bos_token_id": 0, "force_bos_token_to_be_generated": true,
            "decoder_start_token_id": 2, "eos_token_id": 2});
        let c = GenerationConfig::from_json(&config, Some(&g)).unwrap();
        assert_eq!(c.forced_bos_token_id, None);
        let nested = json!({"model_type": "x", "eos_token_id": 3,
            "decoder": {"eos_token_id": 9, "num_beams": 2, "decoder_start_token_id": 5}});
        let c = GenerationConfig::from_json(&nested, None).unwrap();
        assert_eq!(
            (
                c.eos_token_ids.clone(),
                c.num_beams,
                c.decoder_start_token_id
            ),
            (vec![3], 2, Some(5))
        );
    }

    #[test]
    fn from_json_rejects_what_would_change_the_ids() {
        let config = json!({"model_type": "bart"});
        let bad = [
            json!({"do_sample": true}),
            json!({"repetition_penalty": 1.3}),
            json!({"early_stopping": "always"}),
            json!({"num_beams": 0}),
            json!({"eos_token_id": "two"}),
        ];
        for g in bad {
            match GenerationConfig::from_json(&config, Some(&g)) {
                Err(Error::Config { file, .. }) => assert_eq!(file, "generation_config.json"),
                other => panic!("{g}: {other:?}"),
            }
        }
        assert!(matches!(
            GenerationConfig::from_json(&json!({"num_beams": -1}), None),
            Err(Error::Config {
                file: "config.json",
                ..
            })
        ));
        assert!(GenerationConfig::from_json(&json!([]), None).is_err());
        // Sampling knobs and unknown keys are ignored, as transformers does.
        let g = json!({"temperature": 0.5, "top_k": 10, "do_sample": false, "foo": 1,
            "eos_token_id": [2, 3]});
        let c = GenerationConfig::from_json(&config, Some(&g)).unwrap();
        assert_eq!(c.eos_token_ids, vec![2, 3]);
    }

    /// The fixture checkpoints: transformers 4 and 5 configs give the same
    /// settings, and every recorded run's kwargs apply.
    #[test]
    fn fixture_checkpoints_load() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
        let read = |path: String| -> Value {
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
        };
        for model in ["t5_v1_0", "t5_v1_1", "bart"] {
            let load = |sub: &str| {
                let config = read(format!("{dir}/{model}{sub}/config.json"));
                let generation = read(format!("{dir}/{model}{sub}/generation_config.json"));
                GenerationConfig::from_json(&config, Some(&generation)).unwrap()
            };
            let v5 = load("");
            assert_eq!(v5, load("/tf4"), "{model}");
            let expected = read(format!("{dir}/{model}/expected.json"));
            let runs = expected["cases"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|c| c["runs"].as_array().unwrap())
                .map(|r| &r["kwargs"])
                .chain(std::iter::once(&expected["batch"]["kwargs"]));
            for kwargs in runs {
                v5.clone().update(kwargs).unwrap();
            }
        }
    }
}
