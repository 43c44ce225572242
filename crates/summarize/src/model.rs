//! The model a checkpoint holds, T5 or BART, behind one [`Seq2Seq`].

use candle_core::Tensor;

use crate::error::Result;
use crate::head::LmHead;
use crate::seq2seq::Seq2Seq;

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

    fn decode_hidden(&mut self, tokens: &Tensor) -> Result<Tensor> {
        match self {
            Self::T5(m) => m.decode_hidden(tokens),
            Self::Bart(m) => m.decode_hidden(tokens),
        }
    }

    fn head(&self) -> &LmHead {
        match self {
            Self::T5(m) => m.head(),
            Self::Bart(m) => m.head(),
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
