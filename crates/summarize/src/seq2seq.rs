//! What generation needs from a model: the interface between the search
//! and the two families.

use candle_core::Tensor;

use crate::error::Result;
use crate::head::LmHead;

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
    /// position, and returns the decoder's output there, `[batch, d]`
    /// (f32): what [`head`](Self::head) turns into logits.
    fn decode_hidden(&mut self, tokens: &Tensor) -> Result<Tensor>;

    /// The output projection.
    fn head(&self) -> &LmHead;

    /// As [`decode_hidden`](Self::decode_hidden), and returns the logits
    /// for the position after it, `[batch, vocab]` (f32), exactly as
    /// transformers computes them.
    fn decode_step(&mut self, tokens: &Tensor) -> Result<Tensor> {
        let hidden = self.decode_hidden(tokens)?;
        self.head().forward(&hidden)
    }

    /// Keeps the rows `indices` (u32) of every cache, in that order (rows
    /// may repeat): expands a batch into beams, and follows beams as they
    /// are reordered.
    fn reorder_cache(&mut self, indices: &Tensor) -> Result<()>;

    /// Drops every cache.
    fn clear_kv_cache(&mut self);

    /// Width of the logits.
    fn vocab_size(&self) -> usize;
}
