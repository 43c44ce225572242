//! What generation needs from a model, and the two families behind it.

use candle_core::Tensor;

use crate::error::Result;

/// An encoder-decoder that generates one token at a time.
///
/// The model owns its caches: `encode` keeps the encoder's output and the
/// cross-attention keys and values of every decoder layer (computed once
/// per input, not per step); `decode_step` appends to the self-attention
/// caches.
pub(crate) trait Seq2Seq {
    /// Runs the encoder over `input_ids` `[batch, len]` (u32) with
    /// `attention_mask` `[batch, len]` (u32: 1 for a token, 0 for padding),
    /// dropping every cache from before.
    fn encode(&mut self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<()>;

    /// Feeds one token per row, `tokens` `[batch]` (u32), at the next
    /// position, and returns the logits for the position after it,
    /// `[batch, vocab]` (f32), exactly as transformers computes them.
    fn decode_step(&mut self, tokens: &Tensor) -> Result<Tensor>;

    /// Keeps the rows `indices` (u32) of every cache, in that order (rows
    /// may repeat): expands a batch into beams, and follows beams as they
    /// are reordered.
    fn reorder_cache(&mut self, indices: &Tensor) -> Result<()>;

    /// Drops every cache.
    fn clear_kv_cache(&mut self);

    /// Width of the logits.
    fn vocab_size(&self) -> usize;
}

/// The model a checkpoint holds, whichever family it is.
pub(crate) enum Model {
    T5(crate::t5::T5),
    Bart(crate::bart::Bart),
}

impl Model {
    /// Builds the model of `checkpoint`, reading its weights.
    pub(crate) fn load(
        checkpoint: &crate::checkpoint::Checkpoint,
        precision: crate::nn::Precision,
    ) -> Result<Self> {
        use crate::checkpoint::ModelConfig;
        Ok(match &checkpoint.model_config {
            ModelConfig::T5(c) => Self::T5(crate::t5::T5::load(c, &checkpoint.weights, precision)?),
            ModelConfig::Bart(c) => {
                Self::Bart(crate::bart::Bart::load(c, &checkpoint.weights, precision)?)
            }
        })
    }
}

impl Seq2Seq for Model {
    fn encode(&mut self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<()> {
        match self {
            Self::T5(m) => m.encode(input_ids, attention_mask),
            Self::Bart(m) => m.encode(input_ids, attention_mask),
        }
    }

    fn decode_step(&mut self, tokens: &Tensor) -> Result<Tensor> {
        match self {
            Self::T5(m) => m.decode_step(tokens),
            Self::Bart(m) => m.decode_step(tokens),
        }
    }

    fn reorder_cache(&mut self, indices: &Tensor) -> Result<()> {
        match self {
            Self::T5(m) => m.reorder_cache(indices),
            Self::Bart(m) => m.reorder_cache(indices),
        }
    }

    fn clear_kv_cache(&mut self) {
        match self {
            Self::T5(m) => m.clear_kv_cache(),
            Self::Bart(m) => m.clear_kv_cache(),
        }
    }

    fn vocab_size(&self) -> usize {
        match self {
            Self::T5(m) => m.vocab_size(),
            Self::Bart(m) => m.vocab_size(),
        }
    }
}
