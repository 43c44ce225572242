//! T5 (v1.0 with ReLU and tied embeddings, v1.1 / flan-t5 with gated GELU
//! and a separate head), computed as transformers 5 computes it.
//!
//! The encoder's relative position bias and the cross-attention keys and
//! values are computed once per `encode`; a decode step then costs one
//! token's worth of projections plus attention over the caches.

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::attention::{
    ROW_ENCODE_MIN_WORK, attend_one, encode_each_row, pick_bias_rows, right_padded_lengths,
};
use crate::error::{Error, Result};
use crate::head::LmHead;
use crate::json::{Fields, flag, string};
use crate::nn::{Activation, Linear, Precision};
use crate::seq2seq::Seq2Seq;
use crate::weights::Weights;

const CONFIG: &str = "config.json";

/// The parts of a T5 `config.json` the network needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct T5Config {
    pub(crate) vocab_size: usize,
    pub(crate) d_model: usize,
    pub(crate) d_kv: usize,
    pub(crate) d_ff: usize,
    pub(crate) num_heads: usize,
    pub(crate) num_layers: usize,
    pub(crate) num_decoder_layers: usize,
    pub(crate) relative_attention_num_buckets: usize,
    pub(crate) relative_attention_max_distance: usize,
    pub(crate) layer_norm_epsilon: f64,
    pub(crate) activation: Activation,
    /// `gated-{act}`: `act(wi_0·x) * (wi_1·x)` instead of `act(wi·x)`.
    pub(crate) gated: bool,
    /// Multiply the decoder output by `d_model^-0.5` before the head (v1.0).
    pub(crate) scale_decoder_outputs: bool,
}

impl T5Config {
    /// Reads a T5 `config.json` as transformers 4 or 5 writes it.
    ///
    /// The sizes of the network are required; the rest default as in
    /// transformers' `T5Config`.
    pub(crate) fn from_json(v: &Value) -> Result<Self> {
        let v = Fields::new(CONFIG, v)?;
        let vocab_size = v.positive("vocab_size", None)?;
        let d_model = v.positive("d_model", None)?;
        let d_kv = v.positive("d_kv", None)?;
        let d_ff = v.positive("d_ff", None)?;
        let num_heads = v.positive("num_heads", None)?;
        let num_layers = v.positive("num_layers", None)?;
        let num_decoder_layers = v.positive("num_decoder_layers", Some(num_layers))?;
        let buckets = v.positive("relative_attention_num_buckets", Some(32))?;
        let max_distance = v.positive("relative_attention_max_distance", Some(128))?;
        if num_heads.checked_mul(d_kv).is_none() {
            return Err(v.error(format!("num_heads {num_heads} × d_kv {d_kv} overflows")));
        }
        // Bidirectional buckets give a quarter of them to exact offsets; the
        // log-spaced rest needs at least one exact bucket and a distance
        // beyond the exact range, or the bucket formula divides by zero.
        if buckets < 4 {
            return Err(v.error(format!(
                "relative_attention_num_buckets is {buckets}, at least 4 are needed"
            )));
        }
        if max_distance <= buckets / 2 {
            return Err(v.error(
                format!(
                    "relative_attention_max_distance {max_distance} must exceed half of relative_attention_num_buckets ({buckets})"
                ),
            ));
        }
        let layer_norm_epsilon = v.opt("layer_norm_epsilon", epsilon)?.unwrap_or(1e-6);
        let proj = v.opt("feed_forward_proj", string)?.unwrap_or("relu");
        let (gated, act) = match proj.split('-').collect::<Vec<_>>().as_slice() {
            [act] => (false, *act),
            ["gated", act] => (true, *act),
            _ => {
                return Err(v.error(format!(
                    "feed_forward_proj {proj:?} is neither \"{{act}}\" nor \"gated-{{act}}\""
                )));
            }
        };
        // transformers keeps "gated-gelu" meaning the tanh GELU of T5 v1.1.
        let act = if proj == "gated-gelu" {
            "gelu_new"
        } else {
            act
        };
        let activation = Activation::from_name(act).ok_or_else(|| {
            v.error(format!(
                "feed_forward_proj {proj:?}: unsupported activation {act:?}"
            ))
        })?;
        // transformers 5 writes `scale_decoder_outputs` and forces
        // `tie_word_embeddings` to true; configs from transformers 4 carry
        // only `tie_word_embeddings`, false for v1.1 (which does not scale).
        // A null flag reads as false in transformers, a null tie as absent.
        let scale_decoder_outputs = if v.has("scale_decoder_outputs") {
            v.opt("scale_decoder_outputs", flag)?.unwrap_or(false)
        } else {
            v.opt("tie_word_embeddings", flag)? != Some(false)
        };
        Ok(Self {
            vocab_size,
            d_model,
            d_kv,
            d_ff,
            num_heads,
            num_layers,
            num_decoder_layers,
            relative_attention_num_buckets: buckets,
            relative_attention_max_distance: max_distance,
            layer_norm_epsilon,
            activation,
            gated,
            scale_decoder_outputs,
        })
    }

    fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }
}

fn epsilon(key: &str, value: &Value) -> Result<f64, String> {
    value
        .as_f64()
        .filter(|e| e.is_finite() && *e >= 0.0)
        .ok_or_else(|| format!("{key} must be a non-negative number, not {value}"))
}

/// The bucket of `relative_position` (memory minus query position), with
/// the same f32 arithmetic as transformers so that boundaries agree.
fn relative_bucket(
    relative_position: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> u32 {
    let mut buckets = num_buckets as i64;
    let mut bucket = 0i64;
    let distance = if bidirectional {
        buckets /= 2;
        if relative_position > 0 {
            bucket += buckets;
        }
        relative_position.abs()
    } else {
        (-relative_position).max(0)
    };
    let max_exact = buckets / 2;
    if distance < max_exact {
        bucket += distance;
    } else {
        let log_ratio = ((max_distance as f64) / (max_exact as f64)).ln() as f32;
        let scaled =
            (distance as f32 / max_exact as f32).ln() / log_ratio * (buckets - max_exact) as f32;
        bucket += (max_exact + scaled as i64).min(buckets - 1);
    }
    bucket as u32
}

/// T5's layer norm: RMS only, no mean, no bias.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn load(weights: &Weights, name: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: weights.load(name, &[dim])?,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(x, &self.weight, self.eps)?)
    }
}

/// Loads `{prefix}.{name}.weight` for each name, each `[out_dim, in_dim]`,
/// as one stacked projection: one pass over the input instead of several.
fn stacked(
    weights: &Weights,
    prefix: &str,
    names: &[&str],
    (in_dim, out_dim): (usize, usize),
    precision: Precision,
) -> Result<Linear> {
    let parts = names
        .iter()
        .map(|n| weights.load(&format!("{prefix}.{n}.weight"), &[out_dim, in_dim]))
        .collect::<Result<Vec<_>>>()?;
    Linear::from_weight(Tensor::cat(&parts, 0)?, None, precision)
}

/// Projections of one attention layer. `input` is `[q; k; v]` stacked for
/// self-attention, `[q]` for cross-attention, whose `[k; v]` (`memory`)
/// run once per encoder output.
#[derive(Debug, Clone)]
struct Attention {
    input: Linear,
    memory: Option<Linear>,
    o: Linear,
    heads: usize,
    d_kv: usize,
}

impl Attention {
    fn load(
        weights: &Weights,
        prefix: &str,
        cross: bool,
        cfg: &T5Config,
        precision: Precision,
    ) -> Result<Self> {
        let (d, inner) = (cfg.d_model, cfg.inner_dim());
        let (input, memory) = if cross {
            (
                stacked(weights, prefix, &["q"], (d, inner), precision)?,
                // Run once per input over every encoder position: a
                // batched product, where int8 is slower than f32.
                Some(
                    stacked(weights, prefix, &["k", "v"], (d, inner), Precision::F32)?
                        .into_batched()?,
                ),
            )
        } else {
            (
                stacked(weights, prefix, &["q", "k", "v"], (d, inner), precision)?,
                None,
            )
        };
        Ok(Self {
            input,
            memory,
            o: Linear::load(weights, &format!("{prefix}.o"), inner, d, false, precision)?,
            heads: cfg.num_heads,
            d_kv: cfg.d_kv,
        })
    }

    /// The encoder's layout: every product has all input rows.
    fn into_batched(self) -> Result<Self> {
        Ok(Self {
            input: self.input.into_batched()?,
            o: self.o.into_batched()?,
            ..self
        })
    }

    /// Projects `x` `[b, s, d_model]` with `proj` (n stacked projections)
    /// into n tensors `[b, h, s, d_kv]`.
    fn project(&self, proj: &Linear, x: &Tensor, n: usize) -> Result<Vec<Tensor>> {
        let (b, s, _) = x.dims3()?;
        let y = proj.forward(x)?.reshape((b, s, n, self.heads, self.d_kv))?;
        (0..n)
            .map(|j| {
                let t = y.narrow(2, j, 1)?.squeeze(2)?.transpose(1, 2)?;
                // Batched matmul takes these strided views as they are for
                // a single row; a batch needs them laid out per head.
                Ok(if b > 1 { t.contiguous()? } else { t })
            })
            .collect()
    }

    /// `[b, h, s, d]` → `[b, s, h·d]` → output projection.
    fn merge_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, s, _) = x.dims4()?;
        let x = x.transpose(1, 2)?.reshape((b, s, self.heads * self.d_kv))?;
        self.o.forward(&x)
    }
}

fn array<const N: usize>(v: Vec<Tensor>) -> Result<[Tensor; N]> {
    v.try_into().map_err(|_| {
        Error::Generation("projection split into the wrong number of parts".to_owned())
    })
}

fn qkv(v: Vec<Tensor>) -> Result<[Tensor; 3]> {
    array(v)
}

fn pair(v: Vec<Tensor>) -> Result<[Tensor; 2]> {
    array(v)
}

fn one(v: Vec<Tensor>) -> Result<[Tensor; 1]> {
    array(v)
}

/// Queries attended at once: the `[b, h, rows, s]` scores of a 512-token
/// encoder would otherwise hold tens of MB at the peak, a sixth of
/// t5-small's weights.
const QUERY_CHUNK: usize = 128;

/// softmax(q·kᵀ + bias)·v; T5 does not scale the scores.
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let rows = q.dim(2)?;
    if rows <= QUERY_CHUNK {
        return attend_rows(q, k, v, bias);
    }
    // Each row's softmax is independent: chunks give the same numbers.
    let parts = (0..rows)
        .step_by(QUERY_CHUNK)
        .map(|start| {
            let n = QUERY_CHUNK.min(rows - start);
            let bias = match bias {
                Some(b) if b.dim(2)? == rows => Some(b.narrow(2, start, n)?),
                other => other.cloned(),
            };
            attend_rows(&q.narrow(2, start, n)?, k, v, bias.as_ref())
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 2)?)
}

fn attend_rows(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let scores = q.matmul(&k.t()?)?;
    let scores = match bias {
        Some(bias) => scores.broadcast_add(bias)?,
        None => scores,
    };
    let probs = crate::softmax::softmax_last_dim(scores)?;
    Ok(probs.matmul(v)?)
}

#[derive(Debug, Clone)]
struct Ff {
    norm: RmsNorm,
    /// `wi`, or `[wi_0; wi_1]` stacked when gated.
    wi: Linear,
    wo: Linear,
    gated: bool,
    d_ff: usize,
    activation: Activation,
}

impl Ff {
    fn load(weights: &Weights, prefix: &str, cfg: &T5Config, precision: Precision) -> Result<Self> {
        let (d, f) = (cfg.d_model, cfg.d_ff);
        let p = format!("{prefix}.DenseReluDense");
        let wi_names: &[&str] = if cfg.gated {
            &["wi_0", "wi_1"]
        } else {
            &["wi"]
        };
        Ok(Self {
            norm: RmsNorm::load(
                weights,
                &format!("{prefix}.layer_norm.weight"),
                d,
                cfg.layer_norm_epsilon,
            )?,
            wi: stacked(weights, &p, wi_names, (d, f), precision)?,
            wo: Linear::load(weights, &format!("{p}.wo"), f, d, false, precision)?,
            gated: cfg.gated,
            d_ff: f,
            activation: cfg.activation,
        })
    }

    /// The encoder's layout: every product has all input rows.
    fn into_batched(self) -> Result<Self> {
        Ok(Self {
            wi: self.wi.into_batched()?,
            wo: self.wo.into_batched()?,
            ..self
        })
    }

    /// `x + FF(norm(x))`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.wi.forward(&self.norm.forward(x)?)?;
        let h = if self.gated {
            let gate = self.activation.apply(&h.narrow(2, 0, self.d_ff)?)?;
            (gate * h.narrow(2, self.d_ff, self.d_ff)?)?
        } else {
            self.activation.apply(&h)?
        };
        Ok((x + self.wo.forward(&h)?)?)
    }
}

#[derive(Debug, Clone)]
struct EncoderBlock {
    norm: RmsNorm,
    attn: Attention,
    ff: Ff,
}

#[derive(Debug, Clone)]
struct DecoderBlock {
    self_norm: RmsNorm,
    self_attn: Attention,
    cross_norm: RmsNorm,
    cross_attn: Attention,
    ff: Ff,
}

/// Per-input state: what `encode` leaves for the decode steps.
#[derive(Debug, Clone)]
struct State {
    batch: usize,
    /// `[b · s]`: 0 for tokens, f32::MIN for padding; None when nothing
    /// is padded.
    encoder_mask: Option<Vec<f32>>,
    /// Per decoder layer, `[b, h, s, d]` keys and values of the encoder
    /// output.
    cross: Vec<(Tensor, Tensor)>,
    /// Per decoder layer, `[b, h, t, d]` keys and values of the tokens fed
    /// so far (empty before the first step).
    past: Vec<(Tensor, Tensor)>,
    /// Tokens fed so far.
    len: usize,
}

/// A T5 encoder-decoder with a language-modelling head.
#[derive(Debug, Clone)]
pub(crate) struct T5 {
    encoder_embed: Tensor,
    decoder_embed: Tensor,
    /// `[buckets, heads]`, row-major, from block 0 of each stack.
    encoder_rel_bias: Vec<f32>,
    decoder_rel_bias: Vec<f32>,
    encoder: Vec<EncoderBlock>,
    encoder_norm: RmsNorm,
    decoder: Vec<DecoderBlock>,
    decoder_norm: RmsNorm,
    lm_head: LmHead,
    vocab_size: usize,
    heads: usize,
    buckets: usize,
    max_distance: usize,
    /// `d_model^-0.5` when the config scales the decoder output.
    output_scale: Option<f64>,
    state: Option<State>,
}

impl T5 {
    /// Builds the network from `weights`, checking every tensor's shape
    /// against `config`.
    pub(crate) fn load(config: &T5Config, weights: &Weights, precision: Precision) -> Result<Self> {
        let cfg = config;
        let (d, v, h) = (cfg.d_model, cfg.vocab_size, cfg.num_heads);
        let embed_dims = [v, d];
        // transformers 5 fills `shared` from whichever tied copy is saved.
        let shared_name = [
            "shared.weight",
            "encoder.embed_tokens.weight",
            "decoder.embed_tokens.weight",
            "lm_head.weight",
        ]
        .into_iter()
        .find(|n| weights.contains(n))
        .unwrap_or("shared.weight");
        let shared = weights.load(shared_name, &embed_dims)?;
        let encoder_embed = weights.tied("encoder.embed_tokens.weight", &shared, &embed_dims)?;
        let decoder_embed = weights.tied("decoder.embed_tokens.weight", &shared, &embed_dims)?;
        let head = weights.tied("lm_head.weight", &shared, &embed_dims)?;
        let lm_head = LmHead::new(head, None, precision)?;

        let rel_bias = |stack: &str| -> Result<Vec<f32>> {
            let name =
                format!("{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight");
            Ok(weights
                .load(&name, &[cfg.relative_attention_num_buckets, h])?
                .flatten_all()?
                .to_vec1::<f32>()?)
        };
        let norm = |name: String| RmsNorm::load(weights, &name, d, cfg.layer_norm_epsilon);

        // int8 pays most in the one-token decoder steps, which read every
        // weight per token. The encoder stays f32 even where BART's takes
        // `confsum-i8gemm`: T5's activations have outliers that one scale
        // per row cannot hold (on the random t5_v1_1 fixture an int8
        // encoder took teacher-forced agreement from 40/43 to 29/43), and
        // t5-small's int8 is ahead of ONNX Runtime's without it.
        let encoder_precision = Precision::F32;
        let mut encoder = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("encoder.block.{i}.layer");
            encoder.push(EncoderBlock {
                norm: norm(format!("{p}.0.layer_norm.weight"))?,
                attn: Attention::load(
                    weights,
                    &format!("{p}.0.SelfAttention"),
                    false,
                    cfg,
                    encoder_precision,
                )?
                .into_batched()?,
                ff: Ff::load(weights, &format!("{p}.1"), cfg, encoder_precision)?.into_batched()?,
            });
        }
        let mut decoder = Vec::with_capacity(cfg.num_decoder_layers);
        for i in 0..cfg.num_decoder_layers {
            let p = format!("decoder.block.{i}.layer");
            decoder.push(DecoderBlock {
                self_norm: norm(format!("{p}.0.layer_norm.weight"))?,
                self_attn: Attention::load(
                    weights,
                    &format!("{p}.0.SelfAttention"),
                    false,
                    cfg,
                    precision,
                )?,
                cross_norm: norm(format!("{p}.1.layer_norm.weight"))?,
                cross_attn: Attention::load(
                    weights,
                    &format!("{p}.1.EncDecAttention"),
                    true,
                    cfg,
                    precision,
                )?,
                ff: Ff::load(weights, &format!("{p}.2"), cfg, precision)?,
            });
        }
        Ok(Self {
            encoder_embed,
            decoder_embed,
            encoder_rel_bias: rel_bias("encoder")?,
            decoder_rel_bias: rel_bias("decoder")?,
            encoder,
            encoder_norm: norm("encoder.final_layer_norm.weight".to_owned())?,
            decoder,
            decoder_norm: norm("decoder.final_layer_norm.weight".to_owned())?,
            lm_head,
            vocab_size: v,
            heads: h,
            buckets: cfg.relative_attention_num_buckets,
            max_distance: cfg.relative_attention_max_distance,
            output_scale: cfg.scale_decoder_outputs.then(|| (d as f64).powf(-0.5)),
            state: None,
        })
    }

    fn device(&self) -> &Device {
        self.encoder_embed.device()
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().find(|&&t| t as usize >= self.vocab_size) {
            Some(t) => Err(Error::Generation(format!(
                "token id {t} is outside the vocabulary of {}",
                self.vocab_size
            ))),
            None => Ok(()),
        }
    }

    /// `[1, h, q, k]` bias for queries at `q_start..q_start + q` over keys
    /// `0..k`.
    fn position_bias(
        &self,
        table: &[f32],
        bidirectional: bool,
        q_start: usize,
        q: usize,
        k: usize,
    ) -> Result<Tensor> {
        let h = self.heads;
        // One bucket per distinct relative position (key minus query),
        // from `lowest` up to k - 1; then a plain gather.
        let lowest = 1 - (q_start + q) as i64;
        let rows: Vec<&[f32]> = (lowest..k as i64)
            .map(|r| {
                let bucket = relative_bucket(r, bidirectional, self.buckets, self.max_distance);
                let start = bucket as usize * h;
                table.get(start..start + h).unwrap_or(&[])
            })
            .collect();
        let mut out = vec![0f32; h * q * k];
        for (head, plane) in out.chunks_exact_mut(q * k).enumerate() {
            for (i, row) in plane.chunks_exact_mut(k).enumerate() {
                // Key 0 is at relative position -(q_start + i).
                let first = q - 1 - i;
                for (cell, bias) in row.iter_mut().zip(rows.iter().skip(first)) {
                    *cell = bias.get(head).copied().unwrap_or(0.0);
                }
            }
        }
        Ok(Tensor::from_vec(out, (1, h, q, k), self.device())?)
    }
}

impl Seq2Seq for T5 {
    fn encode(&mut self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<()> {
        self.state = None;
        let (b, s) = input_ids.dims2()?;
        if attention_mask.dims2()? != (b, s) {
            return Err(Error::Generation(format!(
                "attention mask {:?} does not match input ids {:?}",
                attention_mask.dims(),
                input_ids.dims()
            )));
        }
        if b == 0 || s == 0 {
            return Err(Error::EmptyInput);
        }
        let ids = input_ids.to_dtype(DType::U32)?.flatten_all()?;
        self.check_ids(&ids.to_vec1::<u32>()?)?;
        let mask = attention_mask
            .to_dtype(DType::U32)?
            .flatten_all()?
            .to_vec1::<u32>()?;
        let encoder_mask: Option<Vec<f32>> = mask.contains(&0).then(|| {
            mask.iter()
                .map(|&m| if m == 0 { f32::MIN } else { 0.0 })
                .collect()
        });

        let out = match right_padded_lengths(&mask, s) {
            Some(lengths)
                if b > 1
                    && encoder_mask.is_some()
                    && s * self.encoder_embed.dim(1)? >= ROW_ENCODE_MIN_WORK =>
            {
                encode_each_row(&ids, &lengths, s, |row, n| {
                    self.run_encoder(row, 1, n, None)
                })?
            }
            _ => self.run_encoder(&ids, b, s, encoder_mask.as_deref())?,
        };

        let mut cross = Vec::with_capacity(self.decoder.len());
        for block in &self.decoder {
            let a = &block.cross_attn;
            let memory = a
                .memory
                .as_ref()
                .ok_or_else(|| Error::Generation("cross-attention without memory".to_owned()))?;
            let [k, v] = pair(a.project(memory, &out, 2)?)?;
            // Laid out per head once, as every step reads them whole.
            cross.push((k.contiguous()?, v.contiguous()?));
        }
        self.state = Some(State {
            batch: b,
            encoder_mask,
            cross,
            past: Vec::new(),
            len: 0,
        });
        Ok(())
    }

    fn decode_hidden(&mut self, tokens: &Tensor) -> Result<Tensor> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| Error::Generation("decode_step before encode".to_owned()))?;
        // The caches change only once the whole step has succeeded.
        let (hidden, past) = self.step(state, tokens)?;
        if let Some(state) = self.state.as_mut() {
            state.past = past;
            state.len += 1;
        }
        Ok(hidden)
    }

    fn head(&self) -> &LmHead {
        &self.lm_head
    }

    fn reorder_cache(&mut self, indices: &Tensor) -> Result<()> {
        let Some(state) = self.state.as_mut() else {
            return Ok(());
        };
        let idx = indices.to_dtype(DType::U32)?;
        let n = idx.dims1()?;
        if n == 0 {
            return Err(Error::Generation("reorder_cache to no rows".to_owned()));
        }
        let rows = idx.to_vec1::<u32>()?;
        if let Some(&bad) = rows.iter().find(|&&i| i as usize >= state.batch) {
            return Err(Error::Generation(format!(
                "cache row {bad} does not exist in a batch of {}",
                state.batch
            )));
        }
        let pick = |t: &Tensor| t.index_select(&idx, 0);
        if let Some(m) = &state.encoder_mask {
            state.encoder_mask = Some(pick_bias_rows(m, state.batch, &rows)?);
        }
        for (k, v) in state.cross.iter_mut().chain(state.past.iter_mut()) {
            *k = pick(k)?;
            *v = pick(v)?;
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

impl T5 {
    /// The encoder stack over `ids` (`[b · s]`, u32) with the additive
    /// key mask `[b · s]`, if any: its output `[b, s, d]`.
    fn run_encoder(
        &self,
        ids: &Tensor,
        b: usize,
        s: usize,
        mask: Option<&[f32]>,
    ) -> Result<Tensor> {
        let mut x =
            self.encoder_embed
                .index_select(ids, 0)?
                .reshape((b, s, self.encoder_embed.dim(1)?))?;
        let pos = self.position_bias(&self.encoder_rel_bias, true, 0, s, s)?;
        // transformers puts f32::MIN at padded keys; adding it to the small
        // position bias rounds to the same value.
        let bias = match mask {
            Some(m) => pos.broadcast_add(&Tensor::from_slice(m, (b, 1, 1, s), self.device())?)?,
            None => pos,
        };
        for block in &self.encoder {
            let a = &block.attn;
            let h = block.norm.forward(&x)?;
            let [q, k, v] = qkv(a.project(&a.input, &h, 3)?)?;
            let o = a.merge_heads(&attend(&q, &k, &v, Some(&bias))?)?;
            x = block.ff.forward(&(x + o)?)?;
        }
        self.encoder_norm.forward(&x)
    }

    /// One decoder step: the output `[batch, d]` (scaled as the head
    /// takes it), and the self-attention caches with this token appended.
    fn step(&self, state: &State, tokens: &Tensor) -> Result<(Tensor, Vec<(Tensor, Tensor)>)> {
        let b = tokens.dims1()?;
        if b != state.batch {
            return Err(Error::Generation(format!(
                "{b} tokens fed to a batch of {}",
                state.batch
            )));
        }
        let tokens = tokens.to_dtype(DType::U32)?;
        self.check_ids(&tokens.to_vec1::<u32>()?)?;
        let d = self.decoder_embed.dim(1)?;
        let mut x = self
            .decoder_embed
            .index_select(&tokens, 0)?
            .reshape((b, 1, d))?;
        let pos = state.len;
        // Decoder self-attention looks back only: unidirectional buckets.
        let bias = self
            .position_bias(&self.decoder_rel_bias, false, pos, 1, pos + 1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut past = Vec::with_capacity(self.decoder.len());
        for (i, block) in self.decoder.iter().enumerate() {
            let a = &block.self_attn;
            let h = block.self_norm.forward(&x)?;
            let [q, k, v] = qkv(a.project(&a.input, &h, 3)?)?;
            let (k, v) = match state.past.get(i) {
                Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
                None if pos == 0 => (k.contiguous()?, v.contiguous()?),
                None => return Err(Error::Generation("decoder cache out of step".to_owned())),
            };
            let o = a.merge_heads(&attend_one(&q, &k, &v, None, Some(&bias))?)?;
            past.push((k, v));
            x = (x + o)?;

            let c = &block.cross_attn;
            let (ck, cv) = state
                .cross
                .get(i)
                .ok_or_else(|| Error::Generation("cross-attention cache missing".to_owned()))?;
            let h = block.cross_norm.forward(&x)?;
            let [q] = one(c.project(&c.input, &h, 1)?)?;
            let o = c.merge_heads(&attend_one(
                &q,
                ck,
                cv,
                state.encoder_mask.as_deref(),
                None,
            )?)?;
            x = block.ff.forward(&(x + o)?)?;
        }
        let mut out = self.decoder_norm.forward(&x)?;
        if let Some(scale) = self.output_scale {
            out = (out * scale)?;
        }
        Ok((out.reshape((b, ()))?, past))
    }
}

#[cfg(test)]
mod tests;
