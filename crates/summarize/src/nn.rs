//! The few layers both families share, with an optional int8 path.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Module, Tensor};

use crate::error::Result;
use crate::weights::Weights;

/// How the weights of the linear layers are held in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Precision {
    /// 32-bit floats, as transformers computes: logits agree to about 1e-5.
    #[default]
    F32,
    /// The linear layers that decoder steps run (self- and cross-attention
    /// projections, feed-forward, output head) quantized to 8 bits in
    /// blocks of 32 (ggml's Q8_0): they read every weight per token, so
    /// fewer bytes make steps faster. The encoder and the cross-attention
    /// keys and values stay f32 (batched products, where candle's int8 is
    /// slower), as do embeddings, norms and layers whose input width is
    /// not a multiple of 32.
    ///
    /// The cost is agreement: logits move by up to about 0.07 on
    /// t5-small-sized models, so greedy tokens can differ from f32 where
    /// the top two are close.
    Int8,
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
    Q8(QMatMul),
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
            Precision::Int8 if in_dim % GgmlDType::Q8_0.block_size() == 0 => Weight::Q8(
                QMatMul::from_qtensor(QTensor::quantize(&weight, GgmlDType::Q8_0)?)?,
            ),
            _ => Weight::F32 {
                blocks: row_blocks(&weight)?,
                full: weight,
            },
        };
        Ok(Self { weight, bias })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            Weight::F32 { full, blocks } => {
                let in_dim = full.dim(1)?;
                let rows = x.elem_count() / in_dim.max(1);
                if blocks.is_empty() || rows > SPLIT_MAX_ROWS {
                    x.broadcast_matmul(&full.t()?)?
                } else {
                    split_matmul(x, blocks, in_dim)?
                }
            }
            Weight::Q8(q) => q.forward(x)?,
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
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
