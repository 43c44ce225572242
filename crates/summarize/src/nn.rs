//! The few layers both families share, with an optional int8 path.

use candle_core::quantized::GgmlType;
use candle_core::quantized::k_quants::BlockQ8_0;
use candle_core::{Device, Tensor};

use crate::error::Result;
use crate::weights::Weights;

/// How the weights of the linear layers are held in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Precision {
    /// 32-bit floats, as transformers computes: logits agree to about 1e-5.
    ///
    /// Greedy search on CPUs with AVX-512 VNNI finds each token through
    /// an int8 copy of the output projection, then computes again from
    /// the f32 weight the few logits that can still be the largest: the
    /// same tokens, provably, for a quarter of the head's bytes per step.
    /// The copy takes `vocab × d_model` more bytes of memory (51 MB on
    /// bart-large). Beam search and [`Summarizer::logits`] use the f32
    /// logits.
    ///
    /// [`Summarizer::logits`]: crate::Summarizer::logits
    #[default]
    F32,
    /// Linear layers quantized to 8 bits. Embeddings, norms and attention
    /// itself stay f32.
    ///
    /// On CPUs with AVX-512 VNNI, the layers that decoder steps run, and
    /// BART's encoder too, run on `confsum-i8gemm`: weights with one
    /// scale per output row, inputs quantized per row (asymmetric, 256
    /// levels) as they arrive. T5's encoder stays f32 (its activations
    /// have outliers that one scale per row cannot hold). Elsewhere only
    /// the decoder's layers are quantized, in ggml's Q8_0 blocks of 32,
    /// and only where the input width is a multiple of 32: candle's int8
    /// would be slower than f32 on the encoder's batched products.
    ///
    /// The cost is agreement: logits move by up to about 0.2 on
    /// t5-small-sized models, so greedy tokens can differ from f32 where
    /// the top two are close.
    Int8,
}

impl Precision {
    /// The precision for layers that only ever see many rows (the
    /// encoder), whose widest input is `in_dim`: int8 only where the
    /// VNNI kernel runs all of them, since [`Q8Weight`] is slower than
    /// f32 there.
    pub(crate) fn batched(self, in_dim: usize) -> Self {
        match self {
            Self::Int8 if confsum_i8gemm::accelerated() && in_dim <= confsum_i8gemm::MAX_IN_DIM => {
                Self::Int8
            }
            _ => Self::F32,
        }
    }
}

#[derive(Debug, Clone)]
enum Weight {
    F32 {
        /// `[out, in]`, as stored.
        full: Tensor,
        /// Views of `full`, one block of rows per thread. gemm multiplies
        /// a one-row input with a single-threaded matrix-vector kernel,
        /// and a decoder step is nothing but such products: splitting the
        /// output rows across threads lets them all stream weights.
        blocks: Vec<Tensor>,
    },
    /// `[in, out]`, contiguous: for layers that only ever see many rows
    /// (the encoder, the cross-attention keys and values). gemm packs a
    /// row-major `[out, in]` weight for such products one float at a time
    /// (about a third of t5-small's encoder in perf); this layout it
    /// reads in whole vectors.
    F32T(Tensor),
    Q8(Q8Weight),
    /// Per-row int8 products on AVX-512 VNNI (`confsum-i8gemm`), for
    /// every int8 layer where the CPU has it; holds its own bias.
    I8(I8Linear),
}

/// Weights in ggml's Q8_0 blocks (32 values, one f16 scale), multiplied
/// here rather than by candle's `QMatMul`: the int8 path of CPUs without
/// AVX-512 VNNI.
///
/// candle 0.11.1 runs quantized products on its own pool, whose caller
/// spin-waits for the workers (`BarrierGuard::drop`): on a loaded 2-core
/// machine that spinning took about half of int8 generation time, and
/// the pool's size can only be set through the environment. Here the
/// output columns are split across rayon's pool, which sleeps instead of
/// spinning, and small products stay on the calling thread. The dot
/// products are candle's own (`vec_dot`, AVX2 when the CPU has it) on
/// inputs quantized to Q8_0 as candle's generic path does, so results are
/// bit for bit `QMatMul`'s where it takes that path.
///
/// (On VNNI CPUs `QMatMul` packs tiles for `vpdpbusd` instead, but only
/// for one row at a time on its spin-waiting pool; `confsum-i8gemm`
/// replaced it there, for decoder steps and encoder alike.)
#[derive(Debug, Clone)]
struct Q8Weight {
    /// `[out][in / 32]` blocks, row after row.
    blocks: Vec<BlockQ8_0>,
    out_dim: usize,
    in_dim: usize,
}

/// Int8 products with fewer multiply-adds than this (out × in × rows)
/// run on one thread: waking another costs more than it saves.
const INT8_PARALLEL_MIN: usize = 1 << 18;

impl Q8Weight {
    const BLOCK: usize = 32;

    fn quantize(weight: &Tensor) -> Result<Self> {
        let (out_dim, in_dim) = weight.dims2()?;
        let values = weight.flatten_all()?.to_vec1::<f32>()?;
        let per_row = in_dim / Self::BLOCK;
        let mut blocks = vec![BlockQ8_0::zeros(); out_dim * per_row];
        for (row, out) in values.chunks(in_dim).zip(blocks.chunks_mut(per_row)) {
            BlockQ8_0::from_float(row, out);
        }
        Ok(Self {
            blocks,
            out_dim,
            in_dim,
        })
    }

    /// `x·Wᵀ` for `x` of `[.., in]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        use rayon::prelude::*;

        let mut dims = x.dims().to_vec();
        let x = x.reshape(((), self.in_dim))?;
        let rows = x.dim(0)?;
        if let Some(last) = dims.last_mut() {
            *last = self.out_dim;
        }
        if rows == 0 {
            return Ok(Tensor::zeros(dims, candle_core::DType::F32, &Device::Cpu)?);
        }
        let per_row = self.in_dim / Self::BLOCK;
        let values = x.flatten_all()?.to_vec1::<f32>()?;
        let mut xq = vec![BlockQ8_0::zeros(); rows * per_row];
        for (row, out) in values.chunks(self.in_dim).zip(xq.chunks_mut(per_row)) {
            BlockQ8_0::from_float(row, out);
        }
        // Each part holds a run of output columns, column-major: `[col][row]`.
        let column = |col: usize, out: &mut [f32]| {
            let w = &self.blocks[col * per_row..(col + 1) * per_row];
            for (y, xr) in out.iter_mut().zip(xq.chunks(per_row)) {
                *y = BlockQ8_0::vec_dot(self.in_dim, w, xr);
            }
        };
        let mut cols = vec![0f32; self.out_dim * rows];
        let threads = rayon::current_num_threads();
        if threads < 2 || self.out_dim * self.in_dim * rows < INT8_PARALLEL_MIN {
            for (col, out) in cols.chunks_mut(rows).enumerate() {
                column(col, out);
            }
        } else {
            let per_part = self.out_dim.div_ceil(threads);
            cols.par_chunks_mut(per_part * rows)
                .enumerate()
                .for_each(|(part, out)| {
                    for (i, out) in out.chunks_mut(rows).enumerate() {
                        column(part * per_part + i, out);
                    }
                });
        }
        let y = Tensor::from_vec(cols, (self.out_dim, rows), &Device::Cpu)?;
        let y = if rows == 1 {
            y.reshape((1, self.out_dim))?
        } else {
            y.t()?.contiguous()?
        };
        Ok(y.reshape(dims)?)
    }
}

/// Inputs of at most this many rows (decoder steps, beams included) take
/// the row-split path.
const SPLIT_MAX_ROWS: usize = 8;
/// Blocks smaller than this are not worth a thread.
const SPLIT_MIN_BLOCK: usize = 256;

fn row_blocks(full: &Tensor) -> Result<Vec<Tensor>> {
    let out = full.dim(0)?;
    let n = rayon::current_num_threads().min(out / SPLIT_MIN_BLOCK);
    if n < 2 {
        return Ok(Vec::new());
    }
    let step = out.div_ceil(n);
    (0..out)
        .step_by(step)
        .map(|start| Ok(full.narrow(0, start, step.min(out - start))?))
        .collect()
}

/// `y = x·Wᵀ (+ b)`.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads `{prefix}.weight` (and `{prefix}.bias` when `bias`), checking
    /// it is `[out_dim, in_dim]`.
    pub(crate) fn load(
        weights: &Weights,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        precision: Precision,
    ) -> Result<Self> {
        let w = weights.load(&format!("{prefix}.weight"), &[out_dim, in_dim])?;
        let bias = if bias {
            Some(weights.load(&format!("{prefix}.bias"), &[out_dim])?)
        } else {
            None
        };
        Self::from_weight(w, bias, precision)
    }

    /// Wraps an already loaded `[out, in]` weight (a tied embedding, say).
    pub(crate) fn from_weight(
        weight: Tensor,
        bias: Option<Tensor>,
        precision: Precision,
    ) -> Result<Self> {
        let in_dim = weight.dim(1)?;
        let weight = match precision {
            Precision::Int8
                if confsum_i8gemm::accelerated() && in_dim <= confsum_i8gemm::MAX_IN_DIM =>
            {
                return Ok(Self {
                    weight: Weight::I8(I8Linear::new(&weight, bias.as_ref())?),
                    bias: None,
                });
            }
            Precision::Int8 if in_dim > 0 && in_dim % Q8Weight::BLOCK == 0 => {
                Weight::Q8(Q8Weight::quantize(&weight)?)
            }
            _ => Weight::F32 {
                blocks: row_blocks(&weight)?,
                full: weight,
            },
        };
        Ok(Self { weight, bias })
    }

    /// The same layer laid out for inputs of many rows (see
    /// [`Weight::F32T`]); int8 weights stay as they are.
    pub(crate) fn into_batched(self) -> Result<Self> {
        let weight = match self.weight {
            Weight::F32 { full, .. } => Weight::F32T(full.t()?.contiguous()?),
            other => other,
        };
        Ok(Self {
            weight,
            bias: self.bias,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            Weight::F32T(t) => x.broadcast_matmul(t)?,
            Weight::F32 { full, blocks } => {
                let in_dim = full.dim(1)?;
                let rows = x.elem_count() / in_dim.max(1);
                // `blocks` is empty for layers of under 512 outputs: there,
                // and for inputs narrower than 256, gemm's own path was
                // the fastest at any row count (the tiny fixtures).
                let wide = !blocks.is_empty() && in_dim >= 256;
                if !blocks.is_empty() && rows <= SPLIT_MAX_ROWS {
                    split_matmul(x, blocks, in_dim)?
                } else if wide && rows <= NARROW_MAX_ROWS {
                    narrow_matmul(x, full, in_dim)?
                } else {
                    x.broadcast_matmul(&full.t()?)?
                }
            }
            Weight::Q8(q) => q.forward(x)?,
            Weight::I8(w) => w.forward(x)?,
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// Products of at least this many rows split their rows between threads,
/// each quantizing and multiplying its own; smaller ones (decoder steps,
/// where reading the weight is the cost) split the weight's panels.
const I8_ROW_SPLIT_MIN: usize = 16;

/// An int8 layer: the weight for `confsum-i8gemm`, and the bias, added as
/// each row is written.
#[derive(Debug, Clone)]
struct I8Linear {
    weight: confsum_i8gemm::I8Weight,
    bias: Option<Vec<f32>>,
}

impl I8Linear {
    fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Self> {
        let (out_dim, in_dim) = weight.dims2()?;
        let values = weight.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self {
            weight: confsum_i8gemm::I8Weight::quantize(&values, out_dim, in_dim)?,
            bias: bias.map(|b| b.to_vec1::<f32>()).transpose()?,
        })
    }

    /// `x·Wᵀ + b` for `x` of `[.., in]`, read in place.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.contiguous()?.apply_op1_no_bwd(self)?)
    }

    /// `y` `[rows, out]` from `x` `[rows, in]`, on rayon's pool.
    fn product(&self, x: &[f32], y: &mut [f32]) -> std::result::Result<(), confsum_i8gemm::Error> {
        use confsum_i8gemm::I8Rows;
        use rayon::prelude::*;

        let w = &self.weight;
        let (in_dim, out_dim, panels) = (w.in_dim(), w.out_dim(), w.panels());
        let rows = y.len() / out_dim.max(1);
        let threads = rayon::current_num_threads();
        if threads < 2 || out_dim * in_dim * rows < INT8_PARALLEL_MIN {
            let q = I8Rows::quantize(x, in_dim)?;
            w.matmul(&q, 0..rows, 0..panels, y)?;
        } else if rows >= I8_ROW_SPLIT_MIN {
            let per_part = rows.div_ceil(threads);
            y.par_chunks_mut(per_part * out_dim)
                .zip(x.par_chunks(per_part * in_dim))
                .try_for_each(|(y, x)| {
                    let q = I8Rows::quantize(x, in_dim)?;
                    w.matmul(&q, 0..q.rows(), 0..panels, y)
                })?;
        } else {
            by_panels(w, &I8Rows::quantize(x, in_dim)?, y)?;
        }
        if let Some(bias) = &self.bias {
            add_bias(y, bias);
        }
        Ok(())
    }
}

/// `y += bias` on every row of `y`.
pub(crate) fn add_bias(y: &mut [f32], bias: &[f32]) {
    for row in y.chunks_mut(bias.len().max(1)) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

/// `y` `[rows, out]` = `q·Wᵀ`, the weight's panels split across rayon's
/// threads: for products of a few rows, where reading the weight is the
/// cost.
pub(crate) fn by_panels(
    w: &confsum_i8gemm::I8Weight,
    q: &confsum_i8gemm::I8Rows,
    y: &mut [f32],
) -> std::result::Result<(), confsum_i8gemm::Error> {
    use rayon::prelude::*;

    let (out_dim, panels, rows) = (w.out_dim(), w.panels(), q.rows());
    let per_part = panels.div_ceil(rayon::current_num_threads()).max(1);
    let parts = (0..panels)
        .step_by(per_part)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|start| {
            let range = start..(start + per_part).min(panels);
            let mut part = vec![0f32; rows * w.columns(range.clone()).len()];
            w.matmul(q, 0..rows, range, &mut part).map(|()| part)
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // Each part is `[rows, its columns]`: lay them side by side.
    let mut at = 0;
    for part in &parts {
        let width = part.len() / rows.max(1);
        for (dst, src) in y.chunks_mut(out_dim.max(1)).zip(part.chunks(width.max(1))) {
            if let Some(dst) = dst.get_mut(at..at + width) {
                dst.copy_from_slice(src);
            }
        }
        at += width;
    }
    Ok(())
}

impl candle_core::CustomOp1 for I8Linear {
    fn name(&self) -> &'static str {
        "i8-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        let x = crate::storage::contiguous_f32(self.name(), storage, layout)?;
        let mut dims = layout.shape().dims().to_vec();
        if dims.last() != Some(&self.weight.in_dim()) {
            candle_core::bail!(
                "int8 linear of width {} given {dims:?}",
                self.weight.in_dim()
            )
        }
        if let Some(last) = dims.last_mut() {
            *last = self.weight.out_dim();
        }
        let rows = x.len() / self.weight.in_dim().max(1);
        let mut y = vec![0f32; rows * self.weight.out_dim()];
        self.product(x, &mut y)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        Ok((candle_core::CpuStorage::F32(y), dims.into()))
    }
}

/// Inputs of at most this many rows (and more than [`SPLIT_MAX_ROWS`]:
/// a batch's decoder steps) take [`narrow_matmul`].
const NARROW_MAX_ROWS: usize = 64;

/// `x·Wᵀ` computed as `(W·xᵀ)ᵀ`. gemm multiplies a few rows by a
/// transposed weight 2–4× slower than the weight, as stored, by the
/// transposed rows (16 rows × 1024 → 4096 on 2 threads: 2.4 against
/// 0.95 ms; 32 rows × 4096 → 1024: 5.9 against 1.7 ms). The two meet
/// near 128 rows.
fn narrow_matmul(x: &Tensor, full: &Tensor, in_dim: usize) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let x2 = x.reshape(((), in_dim))?;
    let y = full.matmul(&x2.t()?)?.t()?.contiguous()?;
    if let Some(last) = dims.last_mut() {
        *last = y.dim(1)?;
    }
    Ok(y.reshape(dims)?)
}

/// `x·Wᵀ` with the rows of `W` in `blocks`, one thread each.
fn split_matmul(x: &Tensor, blocks: &[Tensor], in_dim: usize) -> Result<Tensor> {
    use rayon::prelude::*;

    let mut dims = x.dims().to_vec();
    let x2 = x.reshape(((), in_dim))?;
    let parts = blocks
        .par_iter()
        .map(|w| x2.matmul(&w.t()?))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let y = Tensor::cat(&parts, 1)?;
    if let Some(last) = dims.last_mut() {
        *last = y.dim(1)?;
    }
    Ok(y.reshape(dims)?)
}

/// A feed-forward activation, by the names transformers' `ACT2FN` gives
/// them (T5's `feed_forward_proj` without `gated-`, BART's
/// `activation_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    Relu,
    Relu2,
    Relu6,
    /// `gelu`, `gelu_python`: the exact (erf) form.
    Gelu,
    /// `gelu_10`: erf GELU clipped to [-10, 10].
    Gelu10,
    /// `gelu_new`, `gelu_fast`, `gelu_pytorch_tanh`, `gelu_python_tanh`,
    /// `gelu_accurate`: the tanh approximation.
    GeluTanh,
    QuickGelu,
    /// `silu`, `swish`.
    Silu,
    Tanh,
    Sigmoid,
    Linear,
}

impl Activation {
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "relu" => Self::Relu,
            "relu2" => Self::Relu2,
            "relu6" => Self::Relu6,
            "gelu" | "gelu_python" => Self::Gelu,
            "gelu_10" => Self::Gelu10,
            "gelu_new" | "gelu_fast" | "gelu_pytorch_tanh" | "gelu_python_tanh"
            | "gelu_accurate" => Self::GeluTanh,
            "quick_gelu" => Self::QuickGelu,
            "silu" | "swish" => Self::Silu,
            "tanh" => Self::Tanh,
            "sigmoid" => Self::Sigmoid,
            "linear" => Self::Linear,
            _ => return None,
        })
    }

    /// As [`apply`](Self::apply), on a tensor nothing else shares (fresh
    /// from a product), which this consumes: the erf GELU runs in its
    /// storage, the rest as `apply` does.
    pub(crate) fn apply_owned(self, x: Tensor) -> Result<Tensor> {
        match self {
            Self::Gelu if x.dtype() == candle_core::DType::F32 => {
                crate::storage::in_place(x, &GeluErf)
            }
            _ => self.apply(&x),
        }
    }

    pub(crate) fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Relu => x.relu()?,
            Self::Relu2 => x.relu()?.sqr()?,
            Self::Relu6 => x.clamp(0f32, 6f32)?,
            Self::Gelu => x.gelu_erf()?,
            Self::Gelu10 => x.gelu_erf()?.clamp(-10f32, 10f32)?,
            Self::GeluTanh => x.gelu()?,
            Self::QuickGelu => (x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?,
            Self::Silu => x.silu()?,
            Self::Tanh => x.tanh()?,
            Self::Sigmoid => candle_nn::ops::sigmoid(x)?,
            Self::Linear => x.clone(),
        })
    }
}

/// `x · Φ(x)`, the exact GELU: Φ from erfc by Numerical Recipes'
/// Chebyshev fit (`erfc(z) = t · exp(-z² + P(t))`, `t = 1 / (1 + z/2)`,
/// fractional error under 1.2e-7 for every z), on the vectorizable exp of
/// `softmax`. candle's `gelu_erf` calls libm's `erff` per value and writes
/// a new tensor: on bart-large's 512-token encoder (25 M values) that took
/// 50-90 ms of an fp32 encode.
#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    const C: [f32; 9] = [
        1.000_023_7,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_204,
        1.488_515_9,
        -0.822_152_2,
        0.170_872_77,
    ];
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut p = 0f32;
    for c in C.iter().rev() {
        p = (p + c) * t;
    }
    // At z = 0 the exponent is 3e-8 above zero, where the exp still holds.
    let erfc = t * crate::softmax::exp_nonpositive(-z * z - 1.265_512_2 + p);
    let cdf = if x >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    };
    x * cdf
}

/// [`gelu_erf`] over a tensor's storage.
struct GeluErf;

impl candle_core::InplaceOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "gelu-erf"
    }

    fn cpu_fwd(
        &self,
        storage: &mut candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        use rayon::prelude::*;

        let x = crate::storage::contiguous_f32_mut(self.name(), storage, layout)?;
        x.par_chunks_mut(1 << 14)
            .for_each(|part| part.iter_mut().for_each(|v| *v = gelu_erf(*v)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{DType, Device, Module, Tensor};

    use confsum_testkit::det_floats as values;

    use super::{INT8_PARALLEL_MIN, Q8Weight};

    /// Batched layers are int8 only where the VNNI kernel takes every
    /// one of them: never Q8_0, which is slower than f32 on many rows.
    #[test]
    fn batched_int8_only_on_the_kernel() {
        use super::Precision;
        let max = confsum_i8gemm::MAX_IN_DIM;
        let on = confsum_i8gemm::accelerated();
        let int8_if = |yes: bool| if yes { Precision::Int8 } else { Precision::F32 };
        assert_eq!(Precision::Int8.batched(4096), int8_if(on));
        assert_eq!(Precision::Int8.batched(max), int8_if(on));
        assert_eq!(Precision::Int8.batched(max + 1), Precision::F32);
        assert_eq!(Precision::F32.batched(4096), Precision::F32);
    }

    /// The in-place erf GELU against candle's (libm's `erff`), from far
    /// negative to far positive, NaN and infinities included: within
    /// 3e-7 relative, plus the rounding of candle's own form.
    #[test]
    fn gelu_erf_matches_candle() {
        let mut values: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 6e-4).collect();
        values.extend([
            -1e4,
            1e4,
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        let x = Tensor::from_vec(values.clone(), values.len(), &Device::Cpu).unwrap();
        let want = x.gelu_erf().unwrap().to_vec1::<f32>().unwrap();
        let got = super::Activation::Gelu
            .apply_owned(x.copy().unwrap())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for ((g, w), x) in got.iter().zip(&want).zip(&values) {
            if w.is_nan() || w.is_infinite() {
                assert_eq!(g.to_bits(), w.to_bits(), "gelu({x})");
            } else {
                // candle's `1 + erf` loses its low bits for negative x
                // (up to about |x| · 2⁻²⁴); this form does not.
                let bound = 3e-7 * w.abs() + 6e-8 * x.abs();
                assert!((g - w).abs() <= bound, "gelu({x}): {g} against {w}");
            }
        }
    }

    /// The kernel here must give exactly what candle's `QMatMul` gives for
    /// the same Q8_0 weights: one row (decode), a few (beams), many
    /// (a batch), on one thread and split across threads.
    #[test]
    fn q8_matches_candle_qmatmul_bit_for_bit() {
        for (out_dim, in_dim) in [(36, 64), (1030, 512)] {
            assert_eq!(
                out_dim * in_dim >= INT8_PARALLEL_MIN,
                out_dim > 1000,
                "one shape per path"
            );
            let w = Tensor::from_vec(values(out_dim * in_dim, 7), (out_dim, in_dim), &Device::Cpu)
                .unwrap();
            let ours = Q8Weight::quantize(&w).unwrap();
            let theirs =
                QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q8_0).unwrap()).unwrap();
            for shape in [vec![1, in_dim], vec![1, 3, in_dim], vec![2, 17, in_dim]] {
                let n = shape.iter().product();
                let x = Tensor::from_vec(values(n, 11), shape.as_slice(), &Device::Cpu).unwrap();
                let a = ours.forward(&x).unwrap();
                let b = theirs.forward(&x).unwrap();
                assert_eq!(a.dims(), b.dims(), "{shape:?}");
                let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert!(
                    a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{out_dim}x{in_dim} {shape:?}"
                );
                // And it is a product, not noise: near the f32 one.
                let f = x
                    .broadcast_matmul(&w.t().unwrap())
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let err = a
                    .iter()
                    .zip(&f)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                assert!(err < 0.05 * (in_dim as f32).sqrt(), "{err}");
            }
        }
        let empty = Tensor::zeros((0, 64), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::from_vec(values(36 * 64, 3), (36, 64), &Device::Cpu).unwrap();
        let y = Q8Weight::quantize(&w).unwrap().forward(&empty).unwrap();
        assert_eq!(y.dims(), &[0, 36]);
    }
}
