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

use crate::error::{Error, Result};
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

/// `Σ a·b`, in eight lanes so the compiler can vectorize it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for ((l, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *l += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `softmax(q·kᵀ + bias)·v` for one query per row and head, the shape of
/// every decoder step. candle's matmul would make one small gemm call per
/// head, whose fixed cost is many times this arithmetic.
struct OneQueryAttention<'a> {
    /// `[batch · len]` additive mask over the keys.
    bias: Option<&'a [f32]>,
}

fn contiguous_f32<'s>(
    storage: &'s candle_core::CpuStorage,
    layout: &candle_core::Layout,
) -> candle_core::Result<&'s [f32]> {
    let candle_core::CpuStorage::F32(data) = storage else {
        candle_core::bail!("one-query attention takes f32")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("one-query attention takes contiguous tensors")
    };
    data.get(start..end)
        .ok_or_else(|| candle_core::Error::Msg("layout outside its storage".to_owned()))
}

impl candle_core::CustomOp3 for OneQueryAttention<'_> {
    fn name(&self) -> &'static str {
        "bart-one-query-attention"
    }

    /// `q` `[b, h, 1, d]`, `k` and `v` `[b, h, len, d]`, all contiguous.
    fn cpu_fwd(
        &self,
        q_storage: &candle_core::CpuStorage,
        q_layout: &candle_core::Layout,
        k_storage: &candle_core::CpuStorage,
        k_layout: &candle_core::Layout,
        v_storage: &candle_core::CpuStorage,
        v_layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let (b, h, one, d) = q_layout.shape().dims4()?;
        let (kb, kh, len, kd) = k_layout.shape().dims4()?;
        if one != 1 || (kb, kh, kd) != (b, h, d) || v_layout.shape() != k_layout.shape() {
            candle_core::bail!(
                "one-query attention shapes {:?} {:?} {:?}",
                q_layout.shape(),
                k_layout.shape(),
                v_layout.shape()
            )
        }
        if d == 0 || len == 0 {
            candle_core::bail!("one-query attention over nothing")
        }
        let q = contiguous_f32(q_storage, q_layout)?;
        let k = contiguous_f32(k_storage, k_layout)?;
        let v = contiguous_f32(v_storage, v_layout)?;
        if let Some(bias) = self.bias
            && bias.len() != b * len
        {
            candle_core::bail!("one-query attention bias of {} for {b}×{len}", bias.len())
        }
        let mut out = vec![0f32; b * h * d];
        let mut scores = vec![0f32; len];
        let blocks = q
            .chunks_exact(d)
            .zip(k.chunks_exact(len * d))
            .zip(v.chunks_exact(len * d))
            .zip(out.chunks_exact_mut(d));
        for (i, (((q, k), v), out)) in blocks.enumerate() {
            let row = i / h;
            let bias = self
                .bias
                .and_then(|bias| bias.get(row * len..(row + 1) * len));
            for (s, key) in scores.iter_mut().zip(k.chunks_exact(d)) {
                *s = dot(q, key);
            }
            if let Some(bias) = bias {
                for (s, b) in scores.iter_mut().zip(bias) {
                    *s += b;
                }
            }
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut total = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                total += *s;
            }
            for (s, value) in scores.iter().zip(v.chunks_exact(d)) {
                let w = s / total;
                for (o, x) in out.iter_mut().zip(value) {
                    *o += w * x;
                }
            }
        }
        Ok((candle_core::CpuStorage::F32(out), (b, h, 1, d).into()))
    }
}

/// `softmax(q·kᵀ + bias)·v` for the single-token query of a decoder step:
/// `q` `[b, h, 1, d]`, `k`, `v` `[b, h, len, d]`.
fn attend_one(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&[f32]>) -> Result<Tensor> {
    Ok(q.contiguous()?
        .apply_op3_no_bwd(k, v, &OneQueryAttention { bias })?)
}

/// `softmax(q·kᵀ + bias)·v` over `[batch, heads, len, head_dim]`.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let scores = q.matmul(&k.t()?)?;
    let scores = match bias {
        Some(bias) => scores.broadcast_add(bias)?,
        None => scores,
    };
    Ok(candle_nn::ops::softmax_last_dim(&scores)?.matmul(v)?)
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
            out: Linear::load(
                weights,
                &format!("{prefix}.out_proj"),
                d_model,
                d_model,
                true,
                precision,
            )?,
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
            )?,
            out: Linear::load(
                weights,
                &format!("{prefix}.out_proj"),
                d_model,
                d_model,
                true,
                precision,
            )?,
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
            .forward(&self.activation.apply(&self.fc1.forward(x)?)?)
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
    lm_head: Linear,
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
        let lm_head = Linear::from_weight(lm_weight, Some(final_logits_bias), precision)?;
        drop(shared);

        let positions = [config.max_position_embeddings + POSITION_OFFSET, d];
        let encoder = (0..config.encoder_layers)
            .map(|i| {
                // int8 pays only in the one-token decoder steps; the
                // encoder is a batched product, where candle's int8
                // kernels are slower than f32.
                EncoderLayer::load(
                    weights,
                    &format!("model.encoder.layers.{i}"),
                    config,
                    Precision::F32,
                )
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
        let x = self
            .embed(&self.encoder_embed, &ids)?
            .reshape((b, s, self.d_model))?;
        let positions = self.encoder_positions.narrow(0, POSITION_OFFSET, s)?;
        let mut x = self
            .encoder_layernorm_embedding
            .forward(&x.broadcast_add(&positions)?)?;
        let bias = encoder_bias(attention_mask)?;
        for layer in &self.encoder {
            x = layer.forward(&x, bias.as_ref())?;
        }
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

    fn decode_step(&mut self, tokens: &Tensor) -> Result<Tensor> {
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
        self.lm_head.forward(&x.reshape((b, self.d_model))?)
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
            let len = bias.len() / state.batch;
            let mut rows = Vec::with_capacity(n * len);
            for i in indices.to_vec1::<u32>()? {
                let i = i as usize;
                let row = bias
                    .get(i * len..(i + 1) * len)
                    .ok_or_else(|| Error::Generation(format!("cache row {i} does not exist")))?;
                rows.extend_from_slice(row);
            }
            state.encoder_bias = Some(rows);
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
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use candle_core::{DType, Device, Tensor};
    use serde_json::Value;

    use super::{Activation, Bart, BartConfig};
    use crate::error::Error;
    use crate::nn::Precision;
    use crate::seq2seq::Seq2Seq;
    use crate::weights::Weights;

    fn json(path: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn load(dir: &Path, config: &Path, precision: Precision) -> Bart {
        let config = BartConfig::from_json(&json(config)).unwrap();
        let weights = Weights::open(&dir.join("model.safetensors"), &Device::Cpu).unwrap();
        Bart::load(&config, &weights, precision).unwrap()
    }

    fn ids_of(v: &Value) -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| u32::try_from(x.as_u64().unwrap()).unwrap())
            .collect()
    }

    fn floats_of(v: &Value) -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    }

    fn encode(model: &mut Bart, ids: &[u32]) {
        let input = Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mask = input.ones_like().unwrap();
        model.encode(&input, &mask).unwrap();
    }

    fn step(model: &mut Bart, tokens: &[u32]) -> Vec<Vec<f32>> {
        let tokens = Tensor::new(tokens, &Device::Cpu).unwrap();
        model.decode_step(&tokens).unwrap().to_vec2().unwrap()
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    fn argmax(row: &[f32]) -> u32 {
        let mut best = 0;
        for (i, &x) in row.iter().enumerate() {
            // The first of equal maxima, as torch.argmax picks.
            if x > row[best] {
                best = i;
            }
        }
        u32::try_from(best).unwrap()
    }

    fn tiny_config() -> Value {
        serde_json::json!({
            "model_type": "bart",
            "vocab_size": 50,
            "d_model": 32,
            "encoder_layers": 2,
            "decoder_layers": 1,
            "encoder_attention_heads": 4,
            "decoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 48,
            "max_position_embeddings": 12,
            "activation_function": "gelu",
            "scale_embedding": false,
            "tie_word_embeddings": true
        })
    }

    /// Every tensor `Bart::load` reads for `tiny_config`, as transformers 5
    /// saves them.
    fn tiny_tensors() -> Vec<(String, Vec<usize>)> {
        let (v, d, p) = (50, 32, 14);
        let mut t: Vec<(String, Vec<usize>)> = vec![
            ("model.shared.weight".into(), vec![v, d]),
            ("final_logits_bias".into(), vec![1, v]),
        ];
        for (side, layers, ffn) in [("encoder", 2, 64), ("decoder", 1, 48)] {
            t.push((format!("model.{side}.embed_positions.weight"), vec![p, d]));
            for part in ["weight", "bias"] {
                t.push((format!("model.{side}.layernorm_embedding.{part}"), vec![d]));
            }
            for i in 0..layers {
                let prefix = format!("model.{side}.layers.{i}");
                let mut attns = vec!["self_attn"];
                let mut norms = vec!["self_attn_layer_norm", "final_layer_norm"];
                if side == "decoder" {
                    attns.push("encoder_attn");
                    norms.push("encoder_attn_layer_norm");
                }
                for attn in attns {
                    for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                        t.push((format!("{prefix}.{attn}.{proj}.weight"), vec![d, d]));
                        t.push((format!("{prefix}.{attn}.{proj}.bias"), vec![d]));
                    }
                }
                for norm in norms {
                    t.push((format!("{prefix}.{norm}.weight"), vec![d]));
                    t.push((format!("{prefix}.{norm}.bias"), vec![d]));
                }
                t.push((format!("{prefix}.fc1.weight"), vec![ffn, d]));
                t.push((format!("{prefix}.fc1.bias"), vec![ffn]));
                t.push((format!("{prefix}.fc2.weight"), vec![d, ffn]));
                t.push((format!("{prefix}.fc2.bias"), vec![d]));
            }
        }
        t
    }

    /// Writes random weights for `tiny_config` into `dir`, letting `edit`
    /// drop, reshape or add tensors first.
    fn write_tiny(dir: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> Bart {
        let mut tensors: HashMap<String, Tensor> = tiny_tensors()
            .into_iter()
            .map(|(name, shape)| {
                let t = Tensor::randn(0f32, 0.5, shape, &Device::Cpu).unwrap();
                (name, t)
            })
            .collect();
        edit(&mut tensors);
        let path = dir.join("model.safetensors");
        candle_core::safetensors::save(&tensors, &path).unwrap();
        let config = BartConfig::from_json(&tiny_config()).unwrap();
        let weights = Weights::open(&path, &Device::Cpu).unwrap();
        Bart::load(&config, &weights, Precision::F32).unwrap()
    }

    fn try_tiny(edit: impl FnOnce(&mut HashMap<String, Tensor>)) -> crate::Result<Bart> {
        let dir = tempfile::tempdir().unwrap();
        let mut tensors: HashMap<String, Tensor> = tiny_tensors()
            .into_iter()
            .map(|(name, shape)| {
                (
                    name,
                    Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap(),
                )
            })
            .collect();
        edit(&mut tensors);
        let path = dir.path().join("model.safetensors");
        candle_core::safetensors::save(&tensors, &path).unwrap();
        let config = BartConfig::from_json(&tiny_config()).unwrap();
        let weights = Weights::open(&path, &Device::Cpu).unwrap();
        Bart::load(&config, &weights, Precision::F32)
    }

    /// The decoder-step kernel against the general matmul path, with a
    /// head width that is not a multiple of its eight lanes and a mask.
    #[test]
    fn one_query_attention_matches_matmul() {
        let (b, h, len, d) = (2, 3, 7, 13);
        let q = Tensor::randn(0f32, 1.0, (b, h, 1, d), &Device::Cpu).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b, h, len, d), &Device::Cpu).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, h, len, d), &Device::Cpu).unwrap();
        let mut mask = vec![1u32; b * len];
        mask[len + 2] = 0;
        mask[2 * len - 1] = 0;
        let mask = Tensor::from_vec(mask, (b, len), &Device::Cpu).unwrap();
        let bias = super::encoder_bias(&mask).unwrap().unwrap();
        let rows: Vec<f32> = bias.flatten_all().unwrap().to_vec1().unwrap();
        for (bias, rows) in [(None, None), (Some(&bias), Some(rows.as_slice()))] {
            let want = super::attend(&q, &k, &v, bias).unwrap();
            let got = super::attend_one(&q, &k, &v, rows).unwrap();
            let diff: f32 = (want - got)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap();
            assert!(diff < 1e-5, "{diff}");
        }
        // The mask matters: masking changes the rows it touches.
        let open = super::attend_one(&q, &k, &v, None).unwrap();
        let masked = super::attend_one(&q, &k, &v, Some(&rows)).unwrap();
        let diff: f32 = (open - masked)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(diff > 1e-3);
    }

    #[test]
    fn config_v4_and_v5_agree() {
        let v5 = tiny_config();
        let mut v4 = v5.clone();
        v4["normalize_before"] = false.into();
        v4["add_final_layer_norm"] = false.into();
        v4["add_bias_logits"] = false.into();
        v4["forced_bos_token_id"] = 0.into();
        v4.as_object_mut().unwrap().remove("tie_word_embeddings");
        let a = BartConfig::from_json(&v5).unwrap();
        assert_eq!(BartConfig::from_json(&v4).unwrap(), a);
        assert_eq!(a.activation, Activation::Gelu);
        assert!(a.tie_word_embeddings && !a.scale_embedding);
        assert_eq!(
            (a.d_model, a.encoder_ffn_dim, a.decoder_ffn_dim),
            (32, 64, 48)
        );
    }

    #[test]
    fn config_errors_are_clear() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("d_model", Value::Null, "d_model is missing"),
            (
                "d_model",
                "x".into(),
                "d_model must be a non-negative integer",
            ),
            (
                "encoder_attention_heads",
                0.into(),
                "encoder_attention_heads must be at least 1",
            ),
            (
                "decoder_attention_heads",
                5.into(),
                "not a multiple of decoder_attention_heads 5",
            ),
            ("normalize_before", true.into(), "pre-layer-norm"),
            ("add_final_layer_norm", true.into(), "pre-layer-norm"),
            (
                "activation_function",
                "mish".into(),
                "\"mish\" is not supported",
            ),
            (
                "scale_embedding",
                "yes".into(),
                "scale_embedding must be true or false",
            ),
            (
                "vocab_size",
                1.5.into(),
                "vocab_size must be a non-negative integer",
            ),
            ("model_type", 5.into(), "model_type must be a string"),
        ];
        for (key, value, want) in cases {
            let mut config = tiny_config();
            if value.is_null() {
                config.as_object_mut().unwrap().remove(key);
            } else {
                config[key] = value;
            }
            let err = BartConfig::from_json(&config).unwrap_err().to_string();
            assert!(err.contains(want), "{key}: {err}");
        }
        let mut config = tiny_config();
        config["model_type"] = "mbart".into();
        assert!(matches!(
            BartConfig::from_json(&config),
            Err(Error::UnsupportedModel(kind)) if kind == "mbart"
        ));
    }

    #[test]
    fn activations_by_name() {
        for (name, want) in [
            ("gelu", Activation::Gelu),
            ("gelu_new", Activation::GeluTanh),
            ("gelu_pytorch_tanh", Activation::GeluTanh),
            ("relu", Activation::Relu),
            ("silu", Activation::Silu),
            ("swish", Activation::Silu),
            ("tanh", Activation::Tanh),
        ] {
            let mut config = tiny_config();
            config["activation_function"] = name.into();
            assert_eq!(BartConfig::from_json(&config).unwrap().activation, want);
        }
        // The exact GELU, not the tanh one: they differ by ~2e-4 at 1.5.
        let x = Tensor::new(&[1.5f32, -0.5], &Device::Cpu).unwrap();
        let y: Vec<f32> = Activation::Gelu.apply(&x).unwrap().to_vec1().unwrap();
        assert!(
            (y[0] - 1.399_789_1).abs() < 1e-6 && (y[1] + 0.154_268_77).abs() < 1e-6,
            "{y:?}"
        );
    }

    #[test]
    fn missing_tensor_is_named() {
        let name = "model.decoder.layers.0.encoder_attn.v_proj.bias";
        let err = try_tiny(|t| {
            t.remove(name);
        })
        .unwrap_err();
        assert!(
            matches!(&err, Error::MissingTensor(n) if n == name),
            "{err}"
        );
        // No copy of the embedding at all.
        let err = try_tiny(|t| {
            t.remove("model.shared.weight");
        })
        .unwrap_err();
        assert!(
            matches!(&err, Error::MissingTensor(n) if n == "model.shared.weight"),
            "{err}"
        );
    }

    #[test]
    fn wrong_shape_is_named() {
        let name = "model.encoder.layers.1.fc2.weight";
        let err = try_tiny(|t| {
            t.insert(
                name.into(),
                Tensor::zeros((32, 63), DType::F32, &Device::Cpu).unwrap(),
            );
        })
        .unwrap_err();
        assert!(
            matches!(&err, Error::Shape { name: n, expected, actual } if n == name && expected == &[32, 64] && actual == &[32, 63]),
            "{err}"
        );
        let err = try_tiny(|t| {
            let p = Tensor::zeros((12, 32), DType::F32, &Device::Cpu).unwrap();
            t.insert("model.decoder.embed_positions.weight".into(), p);
        })
        .unwrap_err();
        assert!(
            matches!(&err, Error::Shape { expected, .. } if expected == &[14, 32]),
            "{err}"
        );
    }

    #[test]
    fn input_beyond_the_window_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = write_tiny(dir.path(), |_| {});
        let ids: Vec<u32> = (3..16).collect();
        let input = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let err = model
            .encode(&input, &input.ones_like().unwrap())
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InputTooLong {
                    tokens: 13,
                    window: 12
                }
            ),
            "{err}"
        );
        // The full window works, and decoding stops at its end.
        encode(&mut model, &ids[..12]);
        for _ in 0..12 {
            step(&mut model, &[2]);
        }
        let err = model
            .decode_step(&Tensor::new(&[2u32], &Device::Cpu).unwrap())
            .unwrap_err();
        assert!(
            err.to_string().contains("past the model's 12 positions"),
            "{err}"
        );
    }

    #[test]
    fn bad_calls_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = write_tiny(dir.path(), |_| {});
        let one = Tensor::new(&[2u32], &Device::Cpu).unwrap();
        assert!(model.decode_step(&one).is_err());
        let input = Tensor::new(&[[0u32, 50, 2]], &Device::Cpu).unwrap();
        let err = model
            .encode(&input, &input.ones_like().unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("token id 50"), "{err}");
        let input = Tensor::new(&[[0u32, u32::MAX, 2]], &Device::Cpu).unwrap();
        assert!(model.encode(&input, &input.ones_like().unwrap()).is_err());
        let empty = Tensor::zeros((1, 0), DType::U32, &Device::Cpu).unwrap();
        assert!(matches!(
            model.encode(&empty, &empty),
            Err(Error::EmptyInput)
        ));
        encode(&mut model, &[0, 5, 2]);
        assert!(
            model
                .decode_step(&Tensor::new(&[2u32, 2], &Device::Cpu).unwrap())
                .is_err()
        );
        assert!(
            model
                .reorder_cache(&Tensor::new(&[1u32], &Device::Cpu).unwrap())
                .is_err()
        );
        model.clear_kv_cache();
        assert!(model.decode_step(&one).is_err());
        assert_eq!(model.vocab_size(), 50);
    }

    /// Two inputs of different lengths, padded into one batch, then
    /// expanded and shuffled like beams: every row must match the input
    /// run alone.
    #[test]
    fn batch_padding_and_reorder_match_single_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = write_tiny(dir.path(), |_| {});
        let a = [0u32, 7, 9, 11, 13, 2];
        let b = [0u32, 21, 4, 2];
        let steps = [2u32, 0, 17, 33];
        let alone = |model: &mut Bart, ids: &[u32]| {
            encode(model, ids);
            steps
                .iter()
                .map(|&t| step(model, &[t]).remove(0))
                .collect::<Vec<_>>()
        };
        let want_a = alone(&mut model, &a);
        let want_b = alone(&mut model, &b);

        let input = Tensor::new(&[a, [0, 21, 4, 2, 1, 1]], &Device::Cpu).unwrap();
        let mask = Tensor::new(&[[1u32; 6], [1, 1, 1, 1, 0, 0]], &Device::Cpu).unwrap();
        model.encode(&input, &mask).unwrap();
        let first = step(&mut model, &[steps[0], steps[0]]);
        assert!(max_abs_diff(&first[0], &want_a[0]) < 1e-5);
        assert!(max_abs_diff(&first[1], &want_b[0]) < 1e-5);
        // Rows become [b, a, b].
        let order = Tensor::new(&[1u32, 0, 1], &Device::Cpu).unwrap();
        model.reorder_cache(&order).unwrap();
        for (i, &t) in steps.iter().enumerate().skip(1) {
            let rows = step(&mut model, &[t, t, t]);
            assert!(max_abs_diff(&rows[0], &want_b[i]) < 1e-5);
            assert!(max_abs_diff(&rows[1], &want_a[i]) < 1e-5);
            assert!(max_abs_diff(&rows[2], &want_b[i]) < 1e-5);
        }
        // Without the mask the padding would change row b.
        model.encode(&input, &input.ones_like().unwrap()).unwrap();
        let unmasked = step(&mut model, &[steps[0], steps[0]]);
        assert!(max_abs_diff(&unmasked[1], &want_b[0]) > 1e-3);
    }

    /// Files may carry the tied copies transformers 4 wrote; equal copies
    /// change nothing, a different `lm_head.weight` is used as saved.
    #[test]
    fn tied_copies() {
        let dir = tempfile::tempdir().unwrap();
        let logits = |model: &mut Bart| {
            encode(model, &[0, 8, 3, 2]);
            step(model, &[2]).remove(0)
        };
        let mut shared_only = write_tiny(dir.path(), |_| {});
        let base = logits(&mut shared_only);
        let tensors =
            candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu)
                .unwrap();
        let shared = tensors["model.shared.weight"].clone();

        let d2 = tempfile::tempdir().unwrap();
        let keep = tensors.clone();
        let mut all_copies = write_tiny(d2.path(), |t| {
            *t = keep;
            for name in [super::ENCODER_EMBED, super::DECODER_EMBED, super::LM_HEAD] {
                t.insert(name.into(), shared.clone());
            }
        });
        assert_eq!(logits(&mut all_copies), base);

        // Only a copy, no `model.shared.weight`.
        let keep = tensors.clone();
        let mut copy_only = write_tiny(d2.path(), |t| {
            *t = keep;
            let s = t.remove("model.shared.weight").unwrap();
            t.insert(super::DECODER_EMBED.into(), s);
        });
        assert_eq!(logits(&mut copy_only), base);

        let keep = tensors.clone();
        let mut own_head = write_tiny(d2.path(), |t| {
            *t = keep;
            t.insert(super::LM_HEAD.into(), (&shared * 2.0).unwrap());
        });
        let doubled = logits(&mut own_head);
        let bias: Vec<f32> = tensors["final_logits_bias"]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for ((x, y), c) in doubled.iter().zip(&base).zip(&bias) {
            assert!((x - c - 2.0 * (y - c)).abs() < 1e-4);
        }
    }

    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/bart")
    }

    /// The logits processors transformers' greedy search runs for the
    /// settings a run records as `effective`.
    struct Rules {
        max_new: usize,
        min_length: usize,
        no_repeat_ngram: usize,
        forced_bos: Option<u32>,
        forced_eos: Option<u32>,
        eos: u32,
        pad: u32,
        start: u32,
    }

    impl Rules {
        fn from_effective(e: &Value) -> Self {
            let num = |k: &str| e[k].as_u64().map(|n| usize::try_from(n).unwrap());
            let id = |k: &str| e[k].as_u64().map(|n| u32::try_from(n).unwrap());
            assert_eq!(num("num_beams"), Some(1));
            assert_ne!(e["do_sample"], Value::Bool(true));
            Self {
                // max_length counts the decoder start token.
                max_new: num("max_new_tokens").unwrap_or_else(|| num("max_length").unwrap() - 1),
                min_length: num("min_length").unwrap_or(0),
                no_repeat_ngram: num("no_repeat_ngram_size").unwrap_or(0),
                forced_bos: id("forced_bos_token_id"),
                forced_eos: id("forced_eos_token_id"),
                eos: id("eos_token_id").unwrap(),
                pad: id("pad_token_id").unwrap(),
                start: id("decoder_start_token_id").unwrap(),
            }
        }

        /// The next token of `seq` (start token included) from `logits`.
        fn pick(&self, seq: &[u32], logits: &[f32]) -> u32 {
            let len = seq.len();
            if len == 1
                && let Some(bos) = self.forced_bos
            {
                return bos;
            }
            if len == self.max_new
                && let Some(eos) = self.forced_eos
            {
                return eos;
            }
            let mut logits = logits.to_vec();
            if len < self.min_length {
                logits[self.eos as usize] = f32::NEG_INFINITY;
            }
            let n = self.no_repeat_ngram;
            if n > 0 && len + 1 >= n {
                let tail = &seq[len + 1 - n..];
                for gram in seq.windows(n) {
                    if gram[..n - 1] == *tail {
                        logits[gram[n - 1] as usize] = f32::NEG_INFINITY;
                    }
                }
            }
            argmax(&logits)
        }

        /// Greedy search over a (padded) batch, rows as `generate` returns
        /// them minus the start column.
        fn greedy(&self, model: &mut Bart, input: &Tensor, mask: &Tensor) -> Vec<Vec<u32>> {
            model.encode(input, mask).unwrap();
            let rows = input.dim(0).unwrap();
            let mut seqs = vec![vec![self.start]; rows];
            let mut done = vec![false; rows];
            while seqs[0].len() <= self.max_new && done.iter().any(|d| !d) {
                let last: Vec<u32> = seqs.iter().map(|s| *s.last().unwrap()).collect();
                let logits = step(model, &last);
                for ((seq, row), done) in seqs.iter_mut().zip(&logits).zip(&mut done) {
                    let token = if *done { self.pad } else { self.pick(seq, row) };
                    *done |= token == self.eos;
                    seq.push(token);
                }
            }
            seqs.into_iter().map(|s| s[1..].to_vec()).collect()
        }
    }

    fn one_row(ids: &[u32]) -> (Tensor, Tensor) {
        let input = Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let mask = input.ones_like().unwrap();
        (input, mask)
    }

    /// First-step logits and every greedy run of the recorded fixture, for
    /// the transformers 5 and the transformers 4 config.
    #[test]
    fn matches_transformers() {
        let dir = fixture();
        let expected = json(&dir.join("expected.json"));
        for config in ["config.json", "tf4/config.json"] {
            let mut model = load(&dir, &dir.join(config), Precision::F32);
            let mut greedy_runs = 0;
            for case in expected["cases"].as_array().unwrap() {
                let ids = ids_of(&case["input_ids"]);
                encode(&mut model, &ids);
                let logits = step(&mut model, &[2]).remove(0);
                let err = max_abs_diff(&logits, &floats_of(&case["first_step_logits"]));
                println!(
                    "{config} {}: max first-step logit error {err:e}",
                    case["name"]
                );
                assert!(err < 1e-4, "{err}");
                for run in case["runs"].as_array().unwrap() {
                    if run["effective"]["num_beams"] != 1 {
                        continue;
                    }
                    let rules = Rules::from_effective(&run["effective"]);
                    let (input, mask) = one_row(&ids);
                    let got = rules.greedy(&mut model, &input, &mask).remove(0);
                    assert_eq!(got, ids_of(&run["ids"]), "{} {}", case["name"], run["name"]);
                    greedy_runs += 1;
                }
            }
            assert!(greedy_runs >= 3);
            // A padded batch.
            let batch = &expected["batch"];
            let rows = |k: &str| -> Vec<Vec<u32>> {
                batch[k].as_array().unwrap().iter().map(ids_of).collect()
            };
            let input = Tensor::new(rows("input_ids"), &Device::Cpu).unwrap();
            let mask = Tensor::new(rows("attention_mask"), &Device::Cpu).unwrap();
            let rules = Rules::from_effective(&batch["effective"]);
            assert_eq!(rules.greedy(&mut model, &input, &mask), rows("ids"));
        }
    }

    /// Int8 must stay usable: finite logits near f32's (this random model
    /// has large weights, so quantization moves it more than a trained
    /// one), and greedy agreement is reported.
    #[test]
    fn int8_stays_close() {
        let dir = fixture();
        let expected = json(&dir.join("expected.json"));
        let mut model = load(&dir, &dir.join("config.json"), Precision::Int8);
        let (mut same, mut total) = (0, 0);
        for case in expected["cases"].as_array().unwrap() {
            let ids = ids_of(&case["input_ids"]);
            encode(&mut model, &ids);
            let logits = step(&mut model, &[2]).remove(0);
            let want = floats_of(&case["first_step_logits"]);
            assert!(logits.iter().all(|x| x.is_finite()));
            let err = max_abs_diff(&logits, &want);
            let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
            println!(
                "int8 {}: max first-step logit error {err:e} (largest logit {scale})",
                case["name"]
            );
            // Quantized for real, yet not far off.
            assert!(err > 1e-4 && err < 0.5 * scale, "{err}");
            for run in case["runs"].as_array().unwrap() {
                if run["effective"]["num_beams"] != 1 {
                    continue;
                }
                let (input, mask) = one_row(&ids);
                let got = Rules::from_effective(&run["effective"])
                    .greedy(&mut model, &input, &mask)
                    .remove(0);
                let want = ids_of(&run["ids"]);
                same += got.iter().zip(&want).filter(|(a, b)| a == b).count();
                total += want.len().max(got.len());
            }
        }
        println!("int8: greedy tokens agreeing with transformers f32: {same}/{total}");
        assert!(total > 0);
    }
}
