//! T5 (v1.0 with ReLU and tied embeddings, v1.1 / flan-t5 with gated GELU
//! and a separate head), computed as transformers 5 computes it.
//!
//! The encoder's relative position bias and the cross-attention keys and
//! values are computed once per `encode`; a decode step then costs one
//! token's worth of projections plus attention over the caches.

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::error::{Error, Result};
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
                Some(stacked(
                    weights,
                    prefix,
                    &["k", "v"],
                    (d, inner),
                    Precision::F32,
                )?),
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
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
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
    /// `[b, 1, 1, s]`: 0 for tokens, f32::MIN for padding; None when
    /// nothing is padded.
    encoder_mask: Option<Tensor>,
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
    lm_head: Linear,
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
        let lm_head = Linear::from_weight(head, None, precision)?;

        let rel_bias = |stack: &str| -> Result<Vec<f32>> {
            let name =
                format!("{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight");
            Ok(weights
                .load(&name, &[cfg.relative_attention_num_buckets, h])?
                .flatten_all()?
                .to_vec1::<f32>()?)
        };
        let norm = |name: String| RmsNorm::load(weights, &name, d, cfg.layer_norm_epsilon);

        // int8 pays only in the one-token decoder steps, which read every
        // weight per token; the encoder is a batched product, where
        // candle's int8 kernels are slower than f32 and would only cost
        // agreement.
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
                )?,
                ff: Ff::load(weights, &format!("{p}.1"), cfg, encoder_precision)?,
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
        let encoder_mask = if mask.contains(&0) {
            let add: Vec<f32> = mask
                .iter()
                .map(|&m| if m == 0 { f32::MIN } else { 0.0 })
                .collect();
            Some(Tensor::from_vec(add, (b, 1, 1, s), self.device())?)
        } else {
            None
        };

        let mut x = self.encoder_embed.index_select(&ids, 0)?.reshape((
            b,
            s,
            self.encoder_embed.dim(1)?,
        ))?;
        let pos = self.position_bias(&self.encoder_rel_bias, true, 0, s, s)?;
        // transformers puts f32::MIN at padded keys; adding it to the small
        // position bias rounds to the same value.
        let bias = match &encoder_mask {
            Some(m) => pos.broadcast_add(m)?,
            None => pos,
        };
        for block in &self.encoder {
            let a = &block.attn;
            let h = block.norm.forward(&x)?;
            let [q, k, v] = qkv(a.project(&a.input, &h, 3)?)?;
            let o = a.merge_heads(&attend(&q, &k, &v, Some(&bias))?)?;
            x = block.ff.forward(&(x + o)?)?;
        }
        let out = self.encoder_norm.forward(&x)?;

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

    fn decode_step(&mut self, tokens: &Tensor) -> Result<Tensor> {
        let state = self
            .state
            .as_ref()
            .ok_or_else(|| Error::Generation("decode_step before encode".to_owned()))?;
        // The caches change only once the whole step has succeeded.
        let (logits, past) = self.step(state, tokens)?;
        if let Some(state) = self.state.as_mut() {
            state.past = past;
            state.len += 1;
        }
        Ok(logits)
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
        if let Some(&bad) = idx
            .to_vec1::<u32>()?
            .iter()
            .find(|&&i| i as usize >= state.batch)
        {
            return Err(Error::Generation(format!(
                "cache row {bad} does not exist in a batch of {}",
                state.batch
            )));
        }
        let pick = |t: &Tensor| t.index_select(&idx, 0);
        if let Some(m) = &state.encoder_mask {
            state.encoder_mask = Some(pick(m)?);
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
    /// One decoder step: the logits, and the self-attention caches with
    /// this token appended.
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
        let bias = self.position_bias(&self.decoder_rel_bias, false, pos, 1, pos + 1)?;
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
            let o = a.merge_heads(&attend(&q, &k, &v, Some(&bias))?)?;
            past.push((k, v));
            x = (x + o)?;

            let c = &block.cross_attn;
            let (ck, cv) = state
                .cross
                .get(i)
                .ok_or_else(|| Error::Generation("cross-attention cache missing".to_owned()))?;
            let h = block.cross_norm.forward(&x)?;
            let [q] = one(c.project(&c.input, &h, 1)?)?;
            let o = c.merge_heads(&attend(&q, ck, cv, state.encoder_mask.as_ref())?)?;
            x = block.ff.forward(&(x + o)?)?;
        }
        let mut out = self.decoder_norm.forward(&x)?;
        if let Some(scale) = self.output_scale {
            out = (out * scale)?;
        }
        let logits = self.lm_head.forward(&out)?.reshape((b, self.vocab_size))?;
        Ok((logits, past))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    use candle_core::{DType, Device, Tensor};
    use serde_json::{Value, json};

    use super::{Activation, T5, T5Config, relative_bucket};
    use crate::error::Error;
    use crate::nn::Precision;
    use crate::seq2seq::Seq2Seq;
    use crate::weights::Weights;

    const EOS: u32 = 1;
    const PAD: u32 = 0;
    const START: u32 = 0;

    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(name)
    }

    fn read_json(path: &Path) -> Value {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    fn load(dir: &Path, config: &Path, precision: Precision) -> T5 {
        load_json(dir, &read_json(config), precision)
    }

    fn load_json(dir: &Path, config: &Value, precision: Precision) -> T5 {
        let cfg = T5Config::from_json(config).unwrap();
        let weights = Weights::open(&dir.join("model.safetensors"), &Device::Cpu).unwrap();
        T5::load(&cfg, &weights, precision).unwrap()
    }

    /// The config as transformers 4 writes it for a checkpoint that never
    /// went through transformers 5: no `scale_decoder_outputs`, and
    /// `tie_word_embeddings: false` on v1.1 (absent on v1.0).
    fn pure_v4_config(dir: &Path) -> Value {
        let mut v = read_json(&dir.join("tf4").join("config.json"));
        let scale = v["scale_decoder_outputs"].as_bool();
        let obj = v.as_object_mut().unwrap();
        obj.remove("scale_decoder_outputs");
        if scale == Some(false) {
            obj.insert("tie_word_embeddings".into(), json!(false));
        }
        v
    }

    fn ids(v: &Value) -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| u32::try_from(x.as_u64().unwrap()).unwrap())
            .collect()
    }

    fn row(ids: &[u32]) -> (Tensor, Tensor) {
        let n = ids.len();
        (
            Tensor::from_slice(ids, (1, n), &Device::Cpu).unwrap(),
            Tensor::ones((1, n), DType::U32, &Device::Cpu).unwrap(),
        )
    }

    fn argmax(logits: &[f32]) -> u32 {
        // First maximum, like torch.argmax.
        let mut best = 0;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] {
                best = i;
            }
        }
        best as u32
    }

    fn first_logits(model: &mut T5, input: &[u32]) -> Vec<f32> {
        let (x, m) = row(input);
        model.encode(&x, &m).unwrap();
        let start = Tensor::new(&[START], &Device::Cpu).unwrap();
        model
            .decode_step(&start)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Greedy search as transformers runs it with no logits processors:
    /// finished rows are fed (and emit) padding; stops when every row has
    /// produced EOS or after `max_new` tokens.
    fn greedy(model: &mut T5, input: &Tensor, mask: &Tensor, max_new: usize) -> Vec<Vec<u32>> {
        model.encode(input, mask).unwrap();
        let b = input.dim(0).unwrap();
        let mut out = vec![Vec::new(); b];
        let mut done = vec![false; b];
        let mut feed = vec![START; b];
        for _ in 0..max_new {
            let logits = model
                .decode_step(&Tensor::new(feed.as_slice(), &Device::Cpu).unwrap())
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for i in 0..b {
                let next = if done[i] { PAD } else { argmax(&logits[i]) };
                out[i].push(next);
                feed[i] = next;
                done[i] |= next == EOS;
            }
            if done.iter().all(|&d| d) {
                break;
            }
        }
        out
    }

    fn max_new_tokens(run: &Value) -> usize {
        run["kwargs"]["max_new_tokens"].as_u64().unwrap() as usize
    }

    fn max_err(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// First-step logits and greedy ids against transformers, for the v5
    /// config and the transformers 4 one.
    fn check_fixture(name: &str) {
        let dir = testdata(name);
        let expected = read_json(&dir.join("expected.json"));
        let mut v5 = load(&dir, &dir.join("config.json"), Precision::F32);
        let mut v4 = load(&dir, &dir.join("tf4").join("config.json"), Precision::F32);
        let mut pure_v4 = load_json(&dir, &pure_v4_config(&dir), Precision::F32);
        let cases = expected["cases"].as_array().unwrap();
        assert!(!cases.is_empty());
        for case in cases {
            let input = ids(&case["input_ids"]);
            let want: Vec<f32> = case["first_step_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let got = first_logits(&mut v5, &input);
            let err = max_err(&got, &want);
            println!("{name} {}: max |logit error| {err:.3e}", case["name"]);
            assert!(err < 1e-4, "{name} {}: logits off by {err}", case["name"]);
            assert_eq!(first_logits(&mut v4, &input), got, "tf4 config differs");
            assert_eq!(
                first_logits(&mut pure_v4, &input),
                got,
                "v4-style config differs"
            );

            let run = case["runs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == "greedy")
                .unwrap();
            let (x, m) = row(&input);
            let got = greedy(&mut v5, &x, &m, max_new_tokens(run));
            assert_eq!(got[0], ids(&run["ids"]), "{name} {} greedy", case["name"]);
            assert_eq!(greedy(&mut v4, &x, &m, max_new_tokens(run)), got);
        }

        // A padded batch: each row must come out as transformers gave it.
        let batch = &expected["batch"];
        let rows: Vec<Vec<u32>> = batch["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(ids)
            .collect();
        let masks: Vec<Vec<u32>> = batch["attention_mask"]
            .as_array()
            .unwrap()
            .iter()
            .map(ids)
            .collect();
        assert!(
            masks.iter().flatten().any(|&m| m == 0),
            "batch has no padding"
        );
        let (b, s) = (rows.len(), rows[0].len());
        let x = Tensor::from_vec(rows.concat(), (b, s), &Device::Cpu).unwrap();
        let m = Tensor::from_vec(masks.concat(), (b, s), &Device::Cpu).unwrap();
        let got = greedy(&mut v5, &x, &m, max_new_tokens(batch));
        let want: Vec<Vec<u32>> = batch["ids"].as_array().unwrap().iter().map(ids).collect();
        let width = want[0].len();
        let got: Vec<Vec<u32>> = got
            .into_iter()
            .map(|mut r| {
                r.resize(width, PAD);
                r
            })
            .collect();
        assert_eq!(got, want, "{name} batch");
    }

    #[test]
    fn t5_v1_0_matches_transformers() {
        check_fixture("t5_v1_0");
    }

    #[test]
    fn t5_v1_1_matches_transformers() {
        check_fixture("t5_v1_1");
    }

    /// Int8: finite logits, and teacher-forced greedy choices that mostly
    /// agree with transformers' f32 ones.
    fn check_int8(name: &str) -> (usize, usize) {
        let dir = testdata(name);
        let expected = read_json(&dir.join("expected.json"));
        let mut q = load(&dir, &dir.join("config.json"), Precision::Int8);
        let (mut agree, mut total) = (0, 0);
        let mut worst = 0f32;
        for case in expected["cases"].as_array().unwrap() {
            let input = ids(&case["input_ids"]);
            let want: Vec<f32> = case["first_step_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            let got = first_logits(&mut q, &input);
            assert!(got.iter().all(|x| x.is_finite()));
            worst = worst.max(max_err(&got, &want));
            let run = case["runs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == "greedy")
                .unwrap();
            let target = ids(&run["ids"]);
            let (x, m) = row(&input);
            q.encode(&x, &m).unwrap();
            let mut feed = START;
            for &next in &target {
                let logits = q
                    .decode_step(&Tensor::new(&[feed], &Device::Cpu).unwrap())
                    .unwrap()
                    .squeeze(0)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                assert!(logits.iter().all(|x| x.is_finite()));
                agree += usize::from(argmax(&logits) == next);
                total += 1;
                feed = next;
            }
        }
        println!(
            "{name} int8: {agree}/{total} greedy steps agree ({:.1}%), first-step max |logit error| {worst:.3e}",
            100.0 * agree as f64 / total as f64
        );
        (agree, total)
    }

    #[test]
    fn int8_mostly_agrees_with_f32() {
        for name in ["t5_v1_0", "t5_v1_1"] {
            let (agree, total) = check_int8(name);
            assert!(
                total > 0 && agree * 10 >= total * 8,
                "{name}: {agree}/{total}"
            );
        }
    }

    /// Bucket boundaries as transformers 5.24 computes them (recorded with
    /// `T5Attention._relative_position_bucket` over -5000..=5000): each
    /// pair is (first relative position of a run, its bucket).
    #[test]
    fn buckets_match_transformers() {
        #[rustfmt::skip]
        type Runs = &'static [(i64, u32)];
        let cases: [(usize, usize, bool, Runs); 6] = [
            (
                32,
                128,
                true,
                &[
                    (-5000, 15),
                    (-90, 14),
                    (-63, 13),
                    (-45, 12),
                    (-31, 11),
                    (-22, 10),
                    (-15, 9),
                    (-11, 8),
                    (-7, 7),
                    (-6, 6),
                    (-5, 5),
                    (-4, 4),
                    (-3, 3),
                    (-2, 2),
                    (-1, 1),
                    (0, 0),
                    (1, 17),
                    (2, 18),
                    (3, 19),
                    (4, 20),
                    (5, 21),
                    (6, 22),
                    (7, 23),
                    (8, 24),
                    (12, 25),
                    (16, 26),
                    (23, 27),
                    (32, 28),
                    (46, 29),
                    (64, 30),
                    (91, 31),
                ],
            ),
            (
                32,
                128,
                false,
                &[
                    (-5000, 31),
                    (-112, 30),
                    (-98, 29),
                    (-86, 28),
                    (-76, 27),
                    (-66, 26),
                    (-58, 25),
                    (-51, 24),
                    (-45, 23),
                    (-39, 22),
                    (-34, 21),
                    (-30, 20),
                    (-26, 19),
                    (-23, 18),
                    (-20, 17),
                    (-18, 16),
                    (-15, 15),
                    (-14, 14),
                    (-13, 13),
                    (-12, 12),
                    (-11, 11),
                    (-10, 10),
                    (-9, 9),
                    (-8, 8),
                    (-7, 7),
                    (-6, 6),
                    (-5, 5),
                    (-4, 4),
                    (-3, 3),
                    (-2, 2),
                    (-1, 1),
                    (0, 0),
                ],
            ),
            (
                32,
                64,
                true,
                &[
                    (-5000, 15),
                    (-49, 14),
                    (-38, 13),
                    (-29, 12),
                    (-22, 11),
                    (-17, 10),
                    (-13, 9),
                    (-10, 8),
                    (-7, 7),
                    (-6, 6),
                    (-5, 5),
                    (-4, 4),
                    (-3, 3),
                    (-2, 2),
                    (-1, 1),
                    (0, 0),
                    (1, 17),
                    (2, 18),
                    (3, 19),
                    (4, 20),
                    (5, 21),
                    (6, 22),
                    (7, 23),
                    (8, 24),
                    (11, 25),
                    (14, 26),
                    (18, 27),
                    (23, 28),
                    (30, 29),
                    (39, 30),
                    (50, 31),
                ],
            ),
            (
                32,
                64,
                false,
                &[
                    (-5000, 31),
                    (-58, 30),
                    (-53, 29),
                    (-49, 28),
                    (-45, 27),
                    (-41, 26),
                    (-38, 25),
                    (-34, 24),
                    (-31, 23),
                    (-29, 22),
                    (-26, 21),
                    (-24, 20),
                    (-22, 19),
                    (-20, 18),
                    (-19, 17),
                    (-17, 16),
                    (-15, 15),
                    (-14, 14),
                    (-13, 13),
                    (-12, 12),
                    (-11, 11),
                    (-10, 10),
                    (-9, 9),
                    (-8, 8),
                    (-7, 7),
                    (-6, 6),
                    (-5, 5),
                    (-4, 4),
                    (-3, 3),
                    (-2, 2),
                    (-1, 1),
                    (0, 0),
                ],
            ),
            (
                8,
                20,
                true,
                &[(-5000, 3), (-6, 2), (-1, 1), (0, 0), (1, 5), (2, 6), (7, 7)],
            ),
            (
                8,
                20,
                false,
                &[
                    (-5000, 7),
                    (-13, 6),
                    (-8, 5),
                    (-5, 4),
                    (-3, 3),
                    (-2, 2),
                    (-1, 1),
                    (0, 0),
                ],
            ),
        ];
        for (buckets, max_distance, bidirectional, runs) in cases {
            let end = if bidirectional { 5000 } else { 0 };
            for (i, &(start, bucket)) in runs.iter().enumerate() {
                let stop = runs.get(i + 1).map_or(end, |r| r.0 - 1);
                for r in start..=stop {
                    assert_eq!(
                        relative_bucket(r, bidirectional, buckets, max_distance),
                        bucket,
                        "{buckets}/{max_distance}/{bidirectional} at {r}"
                    );
                }
            }
        }
    }

    fn base_config() -> Value {
        json!({
            "vocab_size": 40, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_heads": 4,
            "num_layers": 2, "num_decoder_layers": 1, "relative_attention_num_buckets": 8,
            "relative_attention_max_distance": 20, "layer_norm_epsilon": 1e-6,
            "feed_forward_proj": "relu"
        })
    }

    fn with(mut v: Value, key: &str, x: Value) -> Value {
        v[key] = x;
        v
    }

    fn without(mut v: Value, key: &str) -> Value {
        v.as_object_mut().unwrap().remove(key);
        v
    }

    #[test]
    fn config_scaling_and_activation_rules() {
        let c = |v: Value| T5Config::from_json(&v).unwrap();
        // transformers 4: scaling follows tie_word_embeddings, absent = tied.
        assert!(c(base_config()).scale_decoder_outputs);
        assert!(!c(with(base_config(), "tie_word_embeddings", json!(false))).scale_decoder_outputs);
        assert!(c(with(base_config(), "tie_word_embeddings", json!(null))).scale_decoder_outputs);
        // transformers 5: the explicit flag wins over the (always true) tie.
        let v5 = with(base_config(), "tie_word_embeddings", json!(true));
        assert!(!c(with(v5.clone(), "scale_decoder_outputs", json!(false))).scale_decoder_outputs);
        assert!(c(with(v5.clone(), "scale_decoder_outputs", json!(true))).scale_decoder_outputs);
        let untied = with(base_config(), "tie_word_embeddings", json!(false));
        assert!(c(with(untied, "scale_decoder_outputs", json!(true))).scale_decoder_outputs);
        assert!(!c(with(v5, "scale_decoder_outputs", json!(null))).scale_decoder_outputs);

        let act = |p: &str| {
            let cfg = c(with(base_config(), "feed_forward_proj", json!(p)));
            (cfg.gated, cfg.activation)
        };
        assert_eq!(act("relu"), (false, Activation::Relu));
        assert_eq!(act("gated-gelu"), (true, Activation::GeluTanh));
        assert_eq!(act("gelu"), (false, Activation::Gelu));
        assert_eq!(act("gated-gelu_new"), (true, Activation::GeluTanh));
        assert_eq!(act("gated-silu"), (true, Activation::Silu));
        assert_eq!(
            c(without(base_config(), "feed_forward_proj")).activation,
            Activation::Relu
        );

        let d = c(without(
            without(base_config(), "num_decoder_layers"),
            "relative_attention_max_distance",
        ));
        assert_eq!(
            (d.num_decoder_layers, d.relative_attention_max_distance),
            (2, 128)
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        let bad = |v: Value, needle: &str| match T5Config::from_json(&v) {
            Err(Error::Config {
                file: "config.json",
                reason,
            }) => {
                assert!(reason.contains(needle), "{reason:?} lacks {needle:?}");
            }
            other => panic!("expected a config error about {needle}, got {other:?}"),
        };
        bad(without(base_config(), "d_model"), "d_model is missing");
        bad(with(base_config(), "num_heads", json!(0)), "num_heads");
        bad(with(base_config(), "d_kv", json!(-8)), "d_kv");
        bad(with(base_config(), "d_ff", json!("64")), "d_ff");
        bad(with(base_config(), "d_kv", json!(u64::MAX)), "overflows");
        bad(
            with(base_config(), "feed_forward_proj", json!("gated-gelu-new")),
            "feed_forward_proj",
        );
        bad(
            with(base_config(), "feed_forward_proj", json!("swiglu")),
            "swiglu",
        );
        bad(
            with(base_config(), "relative_attention_num_buckets", json!(2)),
            "buckets",
        );
        bad(
            with(base_config(), "relative_attention_max_distance", json!(4)),
            "max_distance",
        );
        bad(
            with(base_config(), "layer_norm_epsilon", json!("x")),
            "layer_norm_epsilon",
        );
        bad(
            with(base_config(), "scale_decoder_outputs", json!(1)),
            "scale_decoder_outputs",
        );
        bad(json!([1, 2]), "object");
    }

    /// A random checkpoint of `config` in transformers' tensor names.
    fn random_tensors(cfg: &T5Config, gated: bool) -> HashMap<String, Tensor> {
        let dev = Device::Cpu;
        let (d, f, inner) = (cfg.d_model, cfg.d_ff, cfg.num_heads * cfg.d_kv);
        let mut t = HashMap::new();
        let mut put = |name: String, dims: &[usize]| {
            t.insert(name, Tensor::randn(0f32, 0.5, dims, &dev).unwrap());
        };
        put("shared.weight".into(), &[cfg.vocab_size, d]);
        for (stack, layers) in [
            ("encoder", cfg.num_layers),
            ("decoder", cfg.num_decoder_layers),
        ] {
            put(format!("{stack}.final_layer_norm.weight"), &[d]);
            for i in 0..layers {
                let p = format!("{stack}.block.{i}.layer");
                let mut attns = vec![(format!("{p}.0"), "SelfAttention")];
                if stack == "decoder" {
                    attns.push((format!("{p}.1"), "EncDecAttention"));
                }
                for (l, kind) in &attns {
                    put(format!("{l}.layer_norm.weight"), &[d]);
                    for w in ["q", "k", "v"] {
                        put(format!("{l}.{kind}.{w}.weight"), &[inner, d]);
                    }
                    put(format!("{l}.{kind}.o.weight"), &[d, inner]);
                }
                if i == 0 {
                    put(
                        format!("{p}.0.SelfAttention.relative_attention_bias.weight"),
                        &[cfg.relative_attention_num_buckets, cfg.num_heads],
                    );
                }
                let ff = format!("{p}.{}", attns.len());
                put(format!("{ff}.layer_norm.weight"), &[d]);
                let wis: &[&str] = if gated { &["wi_0", "wi_1"] } else { &["wi"] };
                for w in wis {
                    put(format!("{ff}.DenseReluDense.{w}.weight"), &[f, d]);
                }
                put(format!("{ff}.DenseReluDense.wo.weight"), &[d, f]);
            }
        }
        t
    }

    fn save(dir: &Path, tensors: &HashMap<String, Tensor>) -> Weights {
        let path = dir.join("model.safetensors");
        candle_core::safetensors::save(tensors, &path).unwrap();
        Weights::open(&path, &Device::Cpu).unwrap()
    }

    #[test]
    fn missing_or_misshapen_tensors_are_named() {
        let cfg = T5Config::from_json(&base_config()).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let good = random_tensors(&cfg, false);
        assert!(T5::load(&cfg, &save(tmp.path(), &good), Precision::F32).is_ok());

        for name in [
            "decoder.block.0.layer.1.EncDecAttention.k.weight",
            "encoder.block.1.layer.1.DenseReluDense.wo.weight",
            "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
            "shared.weight",
        ] {
            let mut t = good.clone();
            t.remove(name);
            match T5::load(&cfg, &save(tmp.path(), &t), Precision::F32) {
                Err(Error::MissingTensor(n)) => assert_eq!(n, name),
                other => panic!("{name}: expected MissingTensor, got {other:?}"),
            }
        }
        let name = "encoder.block.1.layer.0.SelfAttention.q.weight";
        let mut t = good.clone();
        t.insert(
            name.into(),
            Tensor::zeros((32, 33), DType::F32, &Device::Cpu).unwrap(),
        );
        match T5::load(&cfg, &save(tmp.path(), &t), Precision::F32) {
            Err(Error::Shape {
                name: n,
                expected,
                actual,
            }) => {
                assert_eq!(
                    (n.as_str(), expected, actual),
                    (name, vec![32, 32], vec![32, 33])
                );
            }
            other => panic!("expected a Shape error, got {other:?}"),
        }
        // A gated config needs wi_0 / wi_1.
        let gated = T5Config::from_json(&with(
            base_config(),
            "feed_forward_proj",
            json!("gated-gelu"),
        ))
        .unwrap();
        match T5::load(&gated, &save(tmp.path(), &good), Precision::F32) {
            Err(Error::MissingTensor(n)) => {
                assert!(n.ends_with("DenseReluDense.wi_0.weight"), "{n}")
            }
            other => panic!("expected MissingTensor, got {other:?}"),
        }
    }

    /// Padding a row must not change its logits, and reorder_cache must
    /// move rows of every cache together.
    #[test]
    fn padding_and_reordering_keep_rows_apart() {
        let cfg = T5Config::from_json(&with(
            base_config(),
            "feed_forward_proj",
            json!("gated-gelu"),
        ))
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let weights = save(tmp.path(), &random_tensors(&cfg, true));
        let mut model = T5::load(&cfg, &weights, Precision::F32).unwrap();
        let dev = Device::Cpu;
        let a: Vec<u32> = (0..12).map(|i| 2 + (i * 7) % 37).collect();
        let b: Vec<u32> = vec![5, 9, 13, 1];
        let steps: [[u32; 2]; 4] = [[START, START], [7, 3], [11, 30], [1, 8]];

        let alone = |model: &mut T5, input: &[u32]| -> Vec<Vec<f32>> {
            let (x, m) = row(input);
            model.encode(&x, &m).unwrap();
            let col = usize::from(input.len() != a.len());
            steps
                .iter()
                .map(|s| {
                    let t = Tensor::new(&[s[col]], &dev).unwrap();
                    model
                        .decode_step(&t)
                        .unwrap()
                        .squeeze(0)
                        .unwrap()
                        .to_vec1()
                        .unwrap()
                })
                .collect()
        };
        let ra = alone(&mut model, &a);
        let rb = alone(&mut model, &b);

        let mut padded = b.clone();
        padded.resize(a.len(), PAD);
        let x = Tensor::from_vec([a.clone(), padded].concat(), (2, a.len()), &dev).unwrap();
        let mask: Vec<u32> = (0..2 * a.len())
            .map(|i| u32::from(i < a.len() + b.len()))
            .collect();
        let m = Tensor::from_vec(mask, (2, a.len()), &dev).unwrap();
        model.encode(&x, &m).unwrap();
        for (i, s) in steps.iter().enumerate().take(2) {
            let out = model
                .decode_step(&Tensor::new(s, &dev).unwrap())
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            assert!(
                max_err(&out[0], &ra[i]) < 1e-5 && max_err(&out[1], &rb[i]) < 1e-5,
                "step {i}"
            );
        }
        // Rows become [b, a, a]; feed each its own continuation.
        model
            .reorder_cache(&Tensor::new(&[1u32, 0, 0], &dev).unwrap())
            .unwrap();
        for (i, s) in steps.iter().enumerate().skip(2) {
            let feed = [s[1], s[0], s[0]];
            let out = model
                .decode_step(&Tensor::new(&feed, &dev).unwrap())
                .unwrap();
            assert_eq!(out.dims(), &[3, cfg.vocab_size]);
            let out = out.to_vec2::<f32>().unwrap();
            assert!(max_err(&out[0], &rb[i]) < 1e-5, "step {i}");
            assert!(
                max_err(&out[1], &ra[i]) < 1e-5 && max_err(&out[2], &ra[i]) < 1e-5,
                "step {i}"
            );
        }
        assert!(
            model
                .decode_step(&Tensor::new(&[1u32, 1], &dev).unwrap())
                .is_err()
        );

        // One row, expanded to two after its first step.
        let (x, m) = row(&a);
        model.encode(&x, &m).unwrap();
        let first = model
            .decode_step(&Tensor::new(&[START], &dev).unwrap())
            .unwrap();
        assert_eq!(first.squeeze(0).unwrap().to_vec1::<f32>().unwrap(), ra[0]);
        model
            .reorder_cache(&Tensor::new(&[0u32, 0], &dev).unwrap())
            .unwrap();
        for (i, s) in steps.iter().enumerate().skip(1) {
            let out = model
                .decode_step(&Tensor::new(&[s[0], s[0]], &dev).unwrap())
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            assert!(
                max_err(&out[0], &ra[i]) < 1e-5 && max_err(&out[1], &ra[i]) < 1e-5,
                "step {i}"
            );
        }
        assert!(
            model
                .reorder_cache(&Tensor::new(&[3u32], &dev).unwrap())
                .is_err()
        );
        model.clear_kv_cache();
        assert!(
            model
                .decode_step(&Tensor::new(&[START], &dev).unwrap())
                .is_err()
        );
        let (x, m) = row(&[cfg.vocab_size as u32]);
        assert!(model.encode(&x, &m).is_err());
    }
}
