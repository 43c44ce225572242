//! BART (bart-large-cnn, distilbart-cnn) as transformers'
//! `BartForConditionalGeneration` computes it: learned positions offset by
//! 2, `layernorm_embedding`, post-LN layers, `final_logits_bias`, and an
//! output projection tied to the shared embedding.
//!
//! `encode` runs the encoder once and keeps, per decoder layer, the
//! cross-attention keys and values; `decode_step` then only projects the
//! new token and appends to the self-attention caches.

use candle_core::{DType, Tensor};
use serde_json::Value;

use crate::attention::{
    ROW_ENCODE_MIN_WORK, encode_each_row, pick_bias_rows, right_padded_lengths,
};
use crate::error::{Error, Result};
use crate::head::LmHead;
use crate::json::{Fields, count, flag, string};
use crate::nn::{Activation, Linear, Precision};
use crate::seq2seq::Seq2Seq;
use crate::weights::Weights;

const CONFIG: &str = "config.json";
/// transformers builds every BART norm as `nn.LayerNorm(d_model)`, whose
/// default epsilon this is.
const LAYER_NORM_EPS: f32 = 1e-5;
/// Learned position `p` lives in row `p + 2` (a fairseq leftover).
const POSITION_OFFSET: usize = 2;

/// The parts of a BART `config.json` that shape the network, as written by
/// transformers 4.x or 5.x.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BartConfig {
    /// Rows of the shared embedding and width of the logits.
    pub(crate) vocab_size: usize,
    /// Hidden width.
    pub(crate) d_model: usize,
    /// Encoder layers.
    pub(crate) encoder_layers: usize,
    /// Decoder layers.
    pub(crate) decoder_layers: usize,
    /// Heads of encoder self-attention.
    pub(crate) encoder_attention_heads: usize,
    /// Heads of decoder self- and cross-attention.
    pub(crate) decoder_attention_heads: usize,
    /// Inner width of the encoder feed-forward blocks.
    pub(crate) encoder_ffn_dim: usize,
    /// Inner width of the decoder feed-forward blocks.
    pub(crate) decoder_ffn_dim: usize,
    /// Longest input (and output) in tokens.
    pub(crate) max_position_embeddings: usize,
    /// Feed-forward activation.
    pub(crate) activation: Activation,
    /// Whether token embeddings are multiplied by √d_model.
    pub(crate) scale_embedding: bool,
    /// Whether the output projection is the shared embedding.
    pub(crate) tie_word_embeddings: bool,
}

impl BartConfig {
    /// Reads a parsed `config.json`. Sizes must be present; flags default
    /// as transformers' `BartConfig` defaults them. Token ids are left to
    /// the generation settings.
    pub(crate) fn from_json(v: &Value) -> Result<Self> {
        let v = Fields::new(CONFIG, v)?;
        match v.opt("model_type", string)? {
            None | Some("bart") => {}
            Some(kind) => return Err(Error::UnsupportedModel(kind.to_owned())),
        }
        // transformers 4 kept these from fairseq; a pre-LN (mBART-style)
        // network would need other weights and another order of norms.
        for key in ["normalize_before", "add_final_layer_norm"] {
            if v.opt(key, flag)? == Some(true) {
                return Err(v.error(format!(
                    "{key} is true: pre-layer-norm (mBART-style) BART is not supported"
                )));
            }
        }
        let activation_name = v.opt("activation_function", string)?.unwrap_or("gelu");
        let activation = Activation::from_name(activation_name).ok_or_else(|| {
            v.error(format!(
                "activation_function {activation_name:?} is not supported"
            ))
        })?;
        let config = Self {
            vocab_size: v.positive("vocab_size", None)?,
            d_model: v.positive("d_model", None)?,
            encoder_layers: v.required("encoder_layers", count)?,
            decoder_layers: v.required("decoder_layers", count)?,
            encoder_attention_heads: v.positive("encoder_attention_heads", None)?,
            decoder_attention_heads: v.positive("decoder_attention_heads", None)?,
            encoder_ffn_dim: v.positive("encoder_ffn_dim", None)?,
            decoder_ffn_dim: v.positive("decoder_ffn_dim", None)?,
            max_position_embeddings: v.positive("max_position_embeddings", None)?,
            activation,
            scale_embedding: v.opt("scale_embedding", flag)?.unwrap_or(false),
            tie_word_embeddings: v.opt("tie_word_embeddings", flag)?.unwrap_or(true),
        };
        for (key, heads) in [
            ("encoder_attention_heads", config.encoder_attention_heads),
            ("decoder_attention_heads", config.decoder_attention_heads),
        ] {
            if config.d_model % heads != 0 {
                return Err(v.error(format!(
                    "d_model {} is not a multiple of {key} {heads}",
                    config.d_model
                )));
            }
        }
        if config
            .max_position_embeddings
            .checked_add(POSITION_OFFSET)
            .is_none()
        {
            return Err(v.error("max_position_embeddings is too large"));
        }
        Ok(config)
    }
}

#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn load(weights: &Weights, prefix: &str, dim: usize) -> Result<Self> {
        Ok(Self {
            weight: weights.load(&format!("{prefix}.weight"), &[dim])?,
            bias: weights.load(&format!("{prefix}.bias"), &[dim])?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::layer_norm(
            x,
            &self.weight,
            &self.bias,
            LAYER_NORM_EPS,
        )?)
    }
}

/// One query per row and head, with a mask per row: every decoder step.
fn attend_one(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&[f32]>) -> Result<Tensor> {
    crate::attention::attend_one(q, k, v, bias, None)
}

fn attend(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let scores = q.matmul(&k.t()?)?;
    let scores = match bias {
        Some(bias) => scores.broadcast_add(bias)?,
        None => scores,
    };
    Ok(crate::softmax::softmax_last_dim(scores)?.matmul(v)?)
}

/// Head layout of one attention block.
#[derive(Debug, Clone, Copy)]
struct Heads {
    heads: usize,
    head_dim: usize,
}

impl Heads {
    /// Splits the fused projection `y` `[b, s, parts·d]` into `parts`
    /// tensors `[b, heads, s, head_dim]`. They stay views of `y` where
    /// matmul can read them (one row); otherwise they are copied.
    fn split(self, y: &Tensor, parts: usize) -> Result<Vec<Tensor>> {
        let (b, s, _) = y.dims3()?;
        let y = y.reshape((b, s, parts, self.heads, self.head_dim))?;
        (0..parts)
            .map(|i| {
                let t = y.narrow(2, i, 1)?.squeeze(2)?.transpose(1, 2)?;
                Ok(if b == 1 { t } else { t.contiguous()? })
            })
            .collect()
    }

    /// `[b, heads, s, head_dim]` → `[b, s, d]`.
    fn merge(self, x: &Tensor) -> Result<Tensor> {
        let (b, _, s, _) = x.dims4()?;
        let d = self.heads * self.head_dim;
        Ok(if s == 1 {
            x.reshape((b, 1, d))?
        } else {
            x.transpose(1, 2)?.reshape((b, s, d))?
        })
    }
}

/// The `[d, d]` weights and `[d]` biases of `{prefix}.{name}` for each
/// name, stacked into one `[n·d, d]` layer; `q_proj` is pre-multiplied by
/// head_dim^-0.5, where transformers scales the scores.
fn fused(
    weights: &Weights,
    prefix: &str,
    names: &[&str],
    d_model: usize,
    heads: Heads,
    precision: Precision,
) -> Result<Linear> {
    let scaling = (heads.head_dim as f64).powf(-0.5);
    let mut ws = Vec::with_capacity(names.len());
    let mut bs = Vec::with_capacity(names.len());
    for name in names {
        let w = weights.load(&format!("{prefix}.{name}.weight"), &[d_model, d_model])?;
        let b = weights.load(&format!("{prefix}.{name}.bias"), &[d_model])?;
        let (w, b) = if *name == "q_proj" {
            ((w * scaling)?, (b * scaling)?)
        } else {
            (w, b)
        };
        ws.push(w);
        bs.push(b);
    }
    Linear::from_weight(Tensor::cat(&ws, 0)?, Some(Tensor::cat(&bs, 0)?), precision)
}

/// The `[d, d]` output projection `{prefix}.out_proj` of an attention
/// block.
fn out_proj(
    weights: &Weights,
    prefix: &str,
    d_model: usize,
    precision: Precision,
) -> Result<Linear> {
    Linear::load(
        weights,
        &format!("{prefix}.out_proj"),
        d_model,
        d_model,
        true,
        precision,
    )
}

fn heads_of(d_model: usize, heads: usize) -> Heads {
    Heads {
        heads,
        head_dim: d_model / heads,
    }
}

/// Self-attention with its query, key and value projections fused into one
/// layer.
#[derive(Debug)]
struct SelfAttention {
    qkv: Linear,
    out: Linear,
    heads: Heads,
}

impl SelfAttention {
    fn load(
        weights: &Weights,
        prefix: &str,
        d_model: usize,
        heads: usize,
        precision: Precision,
    ) -> Result<Self> {
        let heads = heads_of(d_model, heads);
        Ok(Self {
            qkv: fused(
                weights,
                prefix,
                &["q_proj", "k_proj", "v_proj"],
                d_model,
                heads,
                precision,
            )?,
            out: out_proj(weights, prefix, d_model, precision)?,
            heads,
        })
    }

    /// Attention over all of `x` (the encoder).
    fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let parts = self.heads.split(&self.qkv.forward(x)?, 3)?;
        let [q, k, v] = parts.as_slice() else {
            return Err(Error::Generation("attention split failed".to_owned()));
        };
        self.out
            .forward(&self.heads.merge(&attend(q, k, v, bias)?)?)
    }

    /// One decoder token `[b, 1, d]` attending to its cached predecessors,
    /// which it joins.
    fn step(&self, x: &Tensor, cache: &mut Option<(Tensor, Tensor)>) -> Result<Tensor> {
        let parts = self.heads.split(&self.qkv.forward(x)?, 3)?;
        let [q, k, v] = parts.as_slice() else {
            return Err(Error::Generation("attention split failed".to_owned()));
        };
        let (k, v) = match cache.take() {
            Some((past_k, past_v)) => (
                Tensor::cat(&[&past_k, k], 2)?,
                Tensor::cat(&[&past_v, v], 2)?,
            ),
            None => (k.contiguous()?, v.contiguous()?),
        };
        let out = attend_one(q, &k, &v, None)?;
        *cache = Some((k, v));
        self.out.forward(&self.heads.merge(&out)?)
    }
}

/// Decoder attention to the encoder output, whose keys and values are
/// projected once per input.
#[derive(Debug)]
struct CrossAttention {
    q: Linear,
    kv: Linear,
    out: Linear,
    heads: Heads,
}

impl CrossAttention {
    fn load(
        weights: &Weights,
        prefix: &str,
        d_model: usize,
        heads: usize,
        precision: Precision,
    ) -> Result<Self> {
        let heads = heads_of(d_model, heads);
        Ok(Self {
            q: fused(weights, prefix, &["q_proj"], d_model, heads, precision)?,
            // Run once per input over every encoder position: a batched
            // product, where int8 is slower than f32.
            kv: fused(
                weights,
                prefix,
                &["k_proj", "v_proj"],
                d_model,
                heads,
                Precision::F32,
            )?
            .into_batched()?,
            out: out_proj(weights, prefix, d_model, precision)?,
            heads,
        })
    }

    /// Keys and values of the encoder output, contiguous so that caches
    /// can be reordered.
    fn keys_values(&self, encoded: &Tensor) -> Result<(Tensor, Tensor)> {
        let parts = self.heads.split(&self.kv.forward(encoded)?, 2)?;
        let [k, v] = parts.as_slice() else {
            return Err(Error::Generation("attention split failed".to_owned()));
        };
        Ok((k.contiguous()?, v.contiguous()?))
    }

    fn step(&self, x: &Tensor, kv: &(Tensor, Tensor), bias: Option<&[f32]>) -> Result<Tensor> {
        let q = self.heads.split(&self.q.forward(x)?, 1)?;
        let Some(q) = q.first() else {
            return Err(Error::Generation("attention split failed".to_owned()));
        };
        self.out
            .forward(&self.heads.merge(&attend_one(q, &kv.0, &kv.1, bias)?)?)
    }
}

#[derive(Debug)]
struct FeedForward {
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl FeedForward {
    fn load(
        weights: &Weights,
        prefix: &str,
        d_model: usize,
        ffn_dim: usize,
        activation: Activation,
        precision: Precision,
    ) -> Result<Self> {
        Ok(Self {
            fc1: Linear::load(
                weights,
                &format!("{prefix}.fc1"),
                d_model,
                ffn_dim,
                true,
                precision,
            )?,
            fc2: Linear::load(
                weights,
                &format!("{prefix}.fc2"),
                ffn_dim,
                d_model,
                true,
                precision,
            )?,
            activation,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2
            .forward(&self.activation.apply_owned(self.fc1.forward(x)?)?)
    }
}

#[derive(Debug)]
struct EncoderLayer {
    self_attn: SelfAttention,
    self_attn_layer_norm: LayerNorm,
    ffn: FeedForward,
    final_layer_norm: LayerNorm,
}

impl EncoderLayer {
    fn load(
        weights: &Weights,
        prefix: &str,
        config: &BartConfig,
        precision: Precision,
    ) -> Result<Self> {
        let d = config.d_model;
        Ok(Self {
            self_attn: SelfAttention::load(
                weights,
                &format!("{prefix}.self_attn"),
                d,
                config.encoder_attention_heads,
                precision,
            )?,
            self_attn_layer_norm: LayerNorm::load(
                weights,
                &format!("{prefix}.self_attn_layer_norm"),
                d,
            )?,
            ffn: FeedForward::load(
                weights,
                prefix,
                d,
                config.encoder_ffn_dim,
                config.activation,
                precision,
            )?,
            final_layer_norm: LayerNorm::load(weights, &format!("{prefix}.final_layer_norm"), d)?,
        })
    }

    /// Every product here has all input rows: the layout for that.
    fn into_batched(self) -> Result<Self> {
        Ok(Self {
            self_attn: SelfAttention {
                qkv: self.self_attn.qkv.into_batched()?,
                out: self.self_attn.out.into_batched()?,
                heads: self.self_attn.heads,
            },
            ffn: FeedForward {
                fc1: self.ffn.fc1.into_batched()?,
                fc2: self.ffn.fc2.into_batched()?,
                activation: self.ffn.activation,
            },
            ..self
        })
    }

    fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let h = self.self_attn.forward(x, bias)?;
        let x = self.self_attn_layer_norm.forward(&(x + h)?)?;
        let h = self.ffn.forward(&x)?;
        self.final_layer_norm.forward(&(x + h)?)
    }
}

#[derive(Debug)]
struct DecoderLayer {
    self_attn: SelfAttention,
    self_attn_layer_norm: LayerNorm,
    encoder_attn: CrossAttention,
    encoder_attn_layer_norm: LayerNorm,
    ffn: FeedForward,
    final_layer_norm: LayerNorm,
}

impl DecoderLayer {
    fn load(
        weights: &Weights,
        prefix: &str,
        config: &BartConfig,
        precision: Precision,
    ) -> Result<Self> {
        let d = config.d_model;
        let heads = config.decoder_attention_heads;
        Ok(Self {
            self_attn: SelfAttention::load(
                weights,
                &format!("{prefix}.self_attn"),
                d,
                heads,
                precision,
            )?,
            self_attn_layer_norm: LayerNorm::load(
                weights,
                &format!("{prefix}.self_attn_layer_norm"),
                d,
            )?,
            encoder_attn: CrossAttention::load(
                weights,
                &format!("{prefix}.encoder_attn"),
                d,
                heads,
                precision,
            )?,
            encoder_attn_layer_norm: LayerNorm::load(
                weights,
                &format!("{prefix}.encoder_attn_layer_norm"),
                d,
            )?,
            ffn: FeedForward::load(
                weights,
                prefix,
                d,
                config.decoder_ffn_dim,
                config.activation,
                precision,
            )?,
            final_layer_norm: LayerNorm::load(weights, &format!("{prefix}.final_layer_norm"), d)?,
        })
    }

    fn step(&self, x: &Tensor, cache: &mut LayerCache, bias: Option<&[f32]>) -> Result<Tensor> {
        let h = self.self_attn.step(x, &mut cache.self_kv)?;
        let x = self.self_attn_layer_norm.forward(&(x + h)?)?;
        let h = self.encoder_attn.step(&x, &cache.cross_kv, bias)?;
        let x = self.encoder_attn_layer_norm.forward(&(x + h)?)?;
        let h = self.ffn.forward(&x)?;
        self.final_layer_norm.forward(&(x + h)?)
    }
}

/// What one decoder layer keeps between steps.
#[derive(Debug)]
struct LayerCache {
    /// `[b, heads, steps, head_dim]` each, once a step has run.
    self_kv: Option<(Tensor, Tensor)>,
    /// `[b, heads, input_len, head_dim]` each, from `encode`.
    cross_kv: (Tensor, Tensor),
}

#[derive(Debug)]
struct State {
    batch: usize,
    /// Tokens decoded so far, the position of the next.
    steps: usize,
    /// `[b · input_len]`: 0 for tokens, f32::MIN for padding; absent when
    /// nothing is padded.
    encoder_bias: Option<Vec<f32>>,
    layers: Vec<LayerCache>,
}

/// A loaded `BartForConditionalGeneration` with its caches.
#[derive(Debug)]
pub(crate) struct Bart {
    encoder_embed: Tensor,
    decoder_embed: Tensor,
    embed_scale: Option<f64>,
    encoder_positions: Tensor,
    decoder_positions: Tensor,
    encoder_layernorm_embedding: LayerNorm,
    decoder_layernorm_embedding: LayerNorm,
    encoder: Vec<EncoderLayer>,
    decoder: Vec<DecoderLayer>,
    /// The output projection, `final_logits_bias` as its bias.
    lm_head: LmHead,
    vocab_size: usize,
    d_model: usize,
    max_positions: usize,
    state: Option<State>,
}

const SHARED: &str = "model.shared.weight";
const ENCODER_EMBED: &str = "model.encoder.embed_tokens.weight";
const DECODER_EMBED: &str = "model.decoder.embed_tokens.weight";
const LM_HEAD: &str = "lm_head.weight";

impl Bart {
    /// Builds the network from `weights`, checking every tensor's shape
    /// against `config`.
    pub(crate) fn load(
        config: &BartConfig,
        weights: &Weights,
        precision: Precision,
    ) -> Result<Self> {
        let d = config.d_model;
        let vocab = config.vocab_size;
        let embed_dims = [vocab, d];
        // transformers 5 saves only `model.shared.weight`; older or
        // hand-made files may hold any of the tied copies instead.
        let mut sources = vec![SHARED, DECODER_EMBED, ENCODER_EMBED];
        if config.tie_word_embeddings {
            sources.push(LM_HEAD);
        }
        let source = sources
            .into_iter()
            .find(|name| weights.contains(name))
            .ok_or_else(|| Error::MissingTensor(SHARED.to_owned()))?;
        let shared = weights.load(source, &embed_dims)?;
        let encoder_embed = weights.tied(ENCODER_EMBED, &shared, &embed_dims)?;
        let decoder_embed = weights.tied(DECODER_EMBED, &shared, &embed_dims)?;
        let lm_weight = if config.tie_word_embeddings {
            weights.tied(LM_HEAD, &shared, &embed_dims)?
        } else {
            weights.load(LM_HEAD, &embed_dims)?
        };
        // A missing bias is zeros in transformers too.
        let bias_name = "final_logits_bias";
        let final_logits_bias = if weights.contains(bias_name) {
            weights.load(bias_name, &[1, vocab])?.reshape(vocab)?
        } else {
            Tensor::zeros(vocab, DType::F32, shared.device())?
        };
        let lm_head = LmHead::new(lm_weight, Some(final_logits_bias), precision)?;
        drop(shared);

        let positions = [config.max_position_embeddings + POSITION_OFFSET, d];
        let encoder = (0..config.encoder_layers)
            .map(|i| {
                EncoderLayer::load(
                    weights,
                    &format!("model.encoder.layers.{i}"),
                    config,
                    precision.batched(d.max(config.encoder_ffn_dim)),
                )?
                .into_batched()
            })
            .collect::<Result<Vec<_>>>()?;
        let decoder = (0..config.decoder_layers)
            .map(|i| {
                DecoderLayer::load(
                    weights,
                    &format!("model.decoder.layers.{i}"),
                    config,
                    precision,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            encoder_embed,
            decoder_embed,
            embed_scale: config.scale_embedding.then(|| (d as f64).sqrt()),
            encoder_positions: weights.load("model.encoder.embed_positions.weight", &positions)?,
            decoder_positions: weights.load("model.decoder.embed_positions.weight", &positions)?,
            encoder_layernorm_embedding: LayerNorm::load(
                weights,
                "model.encoder.layernorm_embedding",
                d,
            )?,
            decoder_layernorm_embedding: LayerNorm::load(
                weights,
                "model.decoder.layernorm_embedding",
                d,
            )?,
            encoder,
            decoder,
            lm_head,
            vocab_size: vocab,
            d_model: d,
            max_positions: config.max_position_embeddings,
            state: None,
        })
    }

    fn check_ids(&self, ids: &Tensor) -> Result<()> {
        let max = ids.max_all()?.to_scalar::<u32>()?;
        if max as usize >= self.vocab_size {
            return Err(Error::Generation(format!(
                "token id {max} is outside the vocabulary of {}",
                self.vocab_size
            )));
        }
        Ok(())
    }

    /// Token embeddings of flat `ids`, `[n, d]`, scaled if the config says so.
    fn embed(&self, table: &Tensor, ids: &Tensor) -> Result<Tensor> {
        let x = table.index_select(ids, 0)?;
        Ok(match self.embed_scale {
            Some(scale) => (x * scale)?,
            None => x,
        })
    }
}

/// The additive mask transformers' eager attention builds: 0 where the
/// mask is set, the lowest f32 where it is not. `None` when nothing is
/// masked, which softmax cannot tell apart.
fn encoder_bias(mask: &Tensor) -> Result<Option<Tensor>> {
    let (b, s) = mask.dims2()?;
    let keep = mask.ne(0u32)?.to_dtype(DType::F32)?;
    if keep.min_all()?.to_scalar::<f32>()? == 1.0 {
        return Ok(None);
    }
    let max = f64::from(f32::MAX);
    Ok(Some(keep.affine(max, -max)?.reshape((b, 1, 1, s))?))
}

impl Bart {
    /// The encoder stack over `ids` (`[b · s]`) with the additive key
    /// mask `[b, 1, 1, s]`, if any: its output `[b, s, d]`.
    fn run_encoder(
        &self,
        ids: &Tensor,
        b: usize,
        s: usize,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        let x = self
            .embed(&self.encoder_embed, ids)?
            .reshape((b, s, self.d_model))?;
        let positions = self.encoder_positions.narrow(0, POSITION_OFFSET, s)?;
        let mut x = self
            .encoder_layernorm_embedding
            .forward(&x.broadcast_add(&positions)?)?;
        for layer in &self.encoder {
            x = layer.forward(&x, bias)?;
        }
        Ok(x)
    }
}

impl Seq2Seq for Bart {
    fn encode(&mut self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<()> {
        self.state = None;
        let (b, s) = input_ids.dims2()?;
        if attention_mask.dims() != input_ids.dims() {
            return Err(Error::Generation(format!(
                "attention mask {:?} does not match input ids {:?}",
                attention_mask.dims(),
                input_ids.dims()
            )));
        }
        if b == 0 || s == 0 {
            return Err(Error::EmptyInput);
        }
        if s > self.max_positions {
            return Err(Error::InputTooLong {
                tokens: s,
                window: self.max_positions,
            });
        }
        let ids = input_ids.flatten_all()?;
        self.check_ids(&ids)?;
        let bias = encoder_bias(attention_mask)?;
        let mask = attention_mask
            .to_dtype(DType::U32)?
            .flatten_all()?
            .to_vec1::<u32>()?;
        let x = match right_padded_lengths(&mask, s) {
            Some(lengths) if b > 1 && bias.is_some() && s * self.d_model >= ROW_ENCODE_MIN_WORK => {
                encode_each_row(&ids, &lengths, s, |row, n| {
                    self.run_encoder(row, 1, n, None)
                })?
            }
            _ => self.run_encoder(&ids, b, s, bias.as_ref())?,
        };
        let layers = self
            .decoder
            .iter()
            .map(|layer| {
                Ok(LayerCache {
                    self_kv: None,
                    cross_kv: layer.encoder_attn.keys_values(&x)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.state = Some(State {
            batch: b,
            steps: 0,
            encoder_bias: match bias {
                Some(bias) => Some(bias.flatten_all()?.to_vec1()?),
                None => None,
            },
            layers,
        });
        Ok(())
    }

    fn decode_hidden(&mut self, tokens: &Tensor) -> Result<Tensor> {
        let b = tokens.dims1()?;
        let step = match &self.state {
            None => return Err(Error::Generation("decode_step before encode".to_owned())),
            Some(state) if state.batch != b => {
                return Err(Error::Generation(format!(
                    "{b} tokens for a batch of {}",
                    state.batch
                )));
            }
            Some(state) => state.steps,
        };
        if step >= self.max_positions {
            return Err(Error::Generation(format!(
                "cannot decode past the model's {} positions",
                self.max_positions
            )));
        }
        self.check_ids(tokens)?;
        let x = self.embed(&self.decoder_embed, tokens)?;
        let position = self
            .decoder_positions
            .narrow(0, step + POSITION_OFFSET, 1)?;
        let mut x = self
            .decoder_layernorm_embedding
            .forward(&x.broadcast_add(&position)?)?
            .reshape((b, 1, self.d_model))?;
        let Some(state) = self.state.as_mut() else {
            return Err(Error::Generation("decode_step before encode".to_owned()));
        };
        for (layer, cache) in self.decoder.iter().zip(state.layers.iter_mut()) {
            x = layer.step(&x, cache, state.encoder_bias.as_deref())?;
        }
        state.steps += 1;
        Ok(x.reshape((b, self.d_model))?)
    }

    fn head(&self) -> &LmHead {
        &self.lm_head
    }

    fn reorder_cache(&mut self, indices: &Tensor) -> Result<()> {
        let Some(state) = self.state.as_mut() else {
            return Err(Error::Generation("reorder_cache before encode".to_owned()));
        };
        let n = indices.dims1()?;
        if n == 0 {
            return Err(Error::Generation("reorder_cache with no rows".to_owned()));
        }
        let max = indices.max_all()?.to_scalar::<u32>()?;
        if max as usize >= state.batch {
            return Err(Error::Generation(format!(
                "cache row {max} does not exist in a batch of {}",
                state.batch
            )));
        }
        let pick = |t: &Tensor| t.index_select(indices, 0);
        for cache in &mut state.layers {
            if let Some((k, v)) = &cache.self_kv {
                cache.self_kv = Some((pick(k)?, pick(v)?));
            }
            let (k, v) = &cache.cross_kv;
            cache.cross_kv = (pick(k)?, pick(v)?);
        }
        if let Some(bias) = &state.encoder_bias {
            let rows = indices.to_vec1::<u32>()?;
            state.encoder_bias = Some(pick_bias_rows(bias, state.batch, &rows)?);
        }
        state.batch = n;
        Ok(())
    }

    fn clear_kv_cache(&mut self) {
        self.state = None;
    }

    fn vocab_size(&self) -> usize {
        self.vocab_size
    }
}

#[cfg(test)]
mod tests;
