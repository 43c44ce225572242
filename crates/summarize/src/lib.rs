//! T5 and BART summarization on candle, giving the same tokens as
//! Hugging Face transformers.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod model;
mod nn;
mod weights;

pub use crate::{
    error::{Error, Result},
    nn::Precision,
};
