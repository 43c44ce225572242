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
    /// Linear-layer weights quantized to 8 bits in blocks of 32 (ggml's
    /// Q8_0). Faster and smaller, at a cost in agreement with f32.
    /// Layers whose input width is not a multiple of 32 stay in f32;
    /// embeddings and norms always do.
    Int8,
}

#[derive(Debug, Clone)]
enum Weight {
    /// `[out, in]`, as stored.
    F32(Tensor),
    Q8(QMatMul),
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
            _ => Weight::F32(weight),
        };
        Ok(Self { weight, bias })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            Weight::F32(w) => x.broadcast_matmul(&w.t()?)?,
            Weight::Q8(q) => q.forward(x)?,
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}
