//! Generation as transformers 5.24's `generate()` runs it for
//! encoder-decoders: [`config`] holds the settings, read the way
//! transformers reads a checkpoint folder, and [`search`] runs greedy and
//! beam search with transformers' logits processors over any
//! [`Seq2Seq`](crate::seq2seq::Seq2Seq) model.

mod config;
mod search;

pub use self::config::{EarlyStopping, GenerationConfig};
pub(crate) use self::search::generate;
