//! Generation settings, named and read as transformers 5.24 names and
//! reads them: from a checkpoint folder ([`GenerationConfig::from_json`])
//! and from `generate()` keyword arguments ([`GenerationConfig::update`]).

use serde_json::Value;

use crate::{
    error::{Error, Result},
    json::{count, opt, token_id, token_ids, truthy},
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
    pub(super) fn check(&self) -> Result<(), String> {
        if self.num_beams == 0 {
            return Err("num_beams must be at least 1".into());
        }
        if self.max_new_tokens == Some(0) {
            return Err("max_new_tokens must be greater than 0".into());
        }
        Ok(())
    }
}
