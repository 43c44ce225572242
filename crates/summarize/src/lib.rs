//! T5 and BART summarization on candle (CPU), giving the same token ids as
//! Hugging Face transformers 5.24's `generate` for the same checkpoint and
//! generation settings.
//!
//! A [`Summarizer`] loads a checkpoint folder (`config.json`,
//! `model.safetensors`, `tokenizer.json` and, when present,
//! `generation_config.json`) and turns text into a [`Summary`]. Its
//! [`GenerationConfig`] starts as the checkpoint's and takes
//! transformers' `generate` keyword arguments on top.
//!
//! ```
//! use std::path::Path;
//! use confsum_summarize::{LoadOptions, Summarizer};
//!
//! # fn main() -> Result<(), confsum_summarize::Error> {
//! // A tiny random T5 from the tests: the words are noise, the ids are
//! // transformers'.
//! let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/t5_v1_0"));
//! let mut summarizer = Summarizer::load(dir, &LoadOptions::default())?;
//! summarizer.generation_config_mut().max_new_tokens = Some(8);
//! let summary = summarizer.summarize("The council approved the budget on Tuesday.")?;
//! assert!(!summary.ids.is_empty() && summary.ids.len() <= 8);
//! # Ok(())
//! # }
//! ```
//!
//! # Threads
//!
//! candle 0.11.1 sizes its thread pools once, when first used, from the
//! environment: `RAYON_NUM_THREADS` (matrix products), and
//! `CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`, for element-wise
//! kernels on large tensors (this crate's int8 products run on rayon's
//! pool); without them, one thread per physical core.
//! It has no call to resize them, and changing the environment of a
//! running process takes `unsafe` code, which this crate forbids. So a
//! program that takes a thread count sets [`thread_env`] for itself
//! before it starts (a command-line tool can start itself again with the
//! variables set, as `examples/bench_generate.rs` does), and
//! [`threads_configured`] tells whether it holds.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod attention;
mod bart;
mod checkpoint;
mod error;
mod generation;
mod head;
mod json;
mod model;
mod nn;
mod seq2seq;
mod softmax;
mod storage;
mod summarizer;
mod t5;
mod weights;

pub use crate::{
    checkpoint::{Checkpoint, Family},
    error::{Error, Result, SettingError, TokenizerMismatch},
    generation::{EarlyStopping, GenerationConfig},
    nn::Precision,
    summarizer::{ChunkProgress, LoadOptions, Summarizer, Summary},
};

/// The environment variables candle sizes its thread pools from, once,
/// when it first computes; see the crate's doc, "Threads".
pub const THREAD_ENV_VARS: [&str; 2] = ["RAYON_NUM_THREADS", "CANDLE_NUM_THREADS"];

/// The environment under which candle computes with `n` threads:
/// [`THREAD_ENV_VARS`], each set to `n`.
///
/// (Int8 used to want candle's own pool at one thread, for candle's VNNI
/// kernels; `confsum-i8gemm` runs on rayon's pool instead.)
pub fn thread_env(n: usize) -> [(&'static str, String); 2] {
    THREAD_ENV_VARS.map(|name| (name, n.to_string()))
}

/// Whether this process's environment is [`thread_env`]`(n)`.
///
/// A program that takes a thread count and finds this false starts itself
/// again with that environment.
pub fn threads_configured(n: usize) -> bool {
    n > 0
        && thread_env(n).iter().all(|(name, want)| {
            std::env::var(name).is_ok_and(|s| s.trim().parse::<usize>().ok() == want.parse().ok())
        })
}
