use std::path::PathBuf;

/// Everything that can go wrong while loading a checkpoint or summarizing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file of the checkpoint could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A checkpoint file that is required is not there.
    #[error("checkpoint has no {}", path.display())]
    MissingFile {
        /// The file that was looked for.
        path: PathBuf,
    },
    /// `config.json` or `generation_config.json` is not what a T5 or BART
    /// checkpoint holds.
    #[error("bad {file}: {reason}")]
    Config {
        /// Which file.
        file: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The checkpoint is of a model family this crate does not run.
    #[error("unsupported model_type {0:?} (expected \"t5\" or \"bart\")")]
    UnsupportedModel(String),
    /// `model.safetensors` is malformed or truncated.
    #[error("bad model.safetensors: {0}")]
    Safetensors(String),
    /// A weight that the configuration needs is missing.
    #[error("model.safetensors has no tensor {0:?}")]
    MissingTensor(String),
    /// A weight has a shape other than the configuration implies.
    #[error("tensor {name:?} has shape {actual:?}, the config implies {expected:?}")]
    Shape {
        /// The tensor.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape in the file.
        actual: Vec<usize>,
    },
    /// A weight is stored in a dtype that is not supported.
    #[error("tensor {name:?} has unsupported dtype {dtype}")]
    DType {
        /// The tensor.
        name: String,
        /// Its dtype, as safetensors names it.
        dtype: String,
    },
    /// `tokenizer.json` could not be loaded, or text could not be encoded
    /// or decoded.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The input text is empty (or only whitespace).
    #[error("input text is empty")]
    EmptyInput,
    /// The input has more tokens than the model's window and chunking is
    /// off.
    #[error("input has {tokens} tokens, more than the model's window of {window}; enable chunking")]
    InputTooLong {
        /// Tokens in the input.
        tokens: usize,
        /// The window.
        window: usize,
    },
    /// An input so long that a prefix of it is already over the model's
    /// window, with chunking off. Refused before the rest is tokenized
    /// (a 100 MB text would take minutes and gigabytes to count).
    #[error(
        "input of {bytes} bytes is too long: its first {prefix_bytes} bytes alone are {prefix_tokens} tokens, more than the model's window of {window}; enable chunking"
    )]
    InputTooLongPrefix {
        /// Bytes in the input.
        bytes: usize,
        /// Bytes of the prefix that was tokenized.
        prefix_bytes: usize,
        /// Tokens in that prefix (special tokens included); the whole
        /// input has at least as many.
        prefix_tokens: usize,
        /// The window.
        window: usize,
    },
    /// A generation setting that is out of range, or that contradicts
    /// another; checked before any work.
    #[error("bad generation setting")]
    Setting(#[from] SettingError),
    /// The tokenizer does not belong to the model (say, a BART
    /// `tokenizer.json` in a T5 checkpoint): the ids it gives would mean
    /// other words to the model, and the summary would be noise or empty.
    #[error("tokenizer.json does not fit the model")]
    TokenizerMismatch(#[from] TokenizerMismatch),
    /// Generation settings that cannot work together, or ids the model
    /// cannot run (outside its vocabulary, or a decoder beyond BART's
    /// positions).
    #[error("bad generation settings: {0}")]
    Generation(String),
    /// A tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// An int8 product was given operands that do not fit.
    #[error("int8 product failed: {0}")]
    Int8(#[from] confsum_i8gemm::Error),
}

/// A generation setting that cannot be used; see [`Error::Setting`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingError {
    /// A number that must be finite is NaN or infinite.
    #[error("{setting} is {value}, not a finite number")]
    NotFinite {
        /// The setting, by transformers' name (`length_penalty`).
        setting: &'static str,
        /// Its value.
        value: f64,
    },
    /// A lower bound is above its upper bound.
    #[error("{min_setting} ({min}) is greater than {max_setting} ({max})")]
    MinAboveMax {
        /// The lower bound's name (`min_new_tokens`, `min_length`).
        min_setting: &'static str,
        /// Its value.
        min: usize,
        /// The upper bound's name (`max_new_tokens`, `max_length`).
        max_setting: &'static str,
        /// Its value.
        max: usize,
    },
    /// More new tokens than the model can generate: BART's decoder has
    /// `max_position_embeddings` positions; T5's relative positions have no
    /// such end, and the limit there is the checkpoint's window.
    #[error("{requested} new tokens asked for; this model generates at most {limit}")]
    TooManyNewTokens {
        /// New tokens the settings allow (`max_new_tokens`, or
        /// `max_length` less the decoder start token).
        requested: usize,
        /// The model's limit.
        limit: usize,
    },
}

/// How a tokenizer and a model disagree; see [`Error::TokenizerMismatch`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerMismatch {
    /// The tokenizer has more tokens than the model has embeddings.
    #[error("the tokenizer has {tokenizer} tokens, the model's vocabulary only {model}")]
    VocabTooLarge {
        /// Tokens in `tokenizer.json`, added tokens included.
        tokenizer: usize,
        /// The model's `vocab_size`.
        model: usize,
    },
    /// A special token id of the model's configuration is outside its
    /// vocabulary.
    #[error("{name} {id} is outside the model's vocabulary of {vocab}")]
    IdOutsideVocab {
        /// The setting (`eos_token_id`, `pad_token_id`, ...).
        name: &'static str,
        /// Its id.
        id: u32,
        /// The model's `vocab_size`.
        vocab: usize,
    },
    /// A special token id of the model's configuration is no token of the
    /// tokenizer.
    #[error("{name} {id} is not a token of the tokenizer")]
    IdNotInTokenizer {
        /// The setting.
        name: &'static str,
        /// Its id.
        id: u32,
    },
    /// The tokenizer ends every input with a token that is not one of the
    /// model's end tokens.
    #[error("the tokenizer ends inputs with token {tokenizer}, the model's end token is {model:?}")]
    EndToken {
        /// The id the tokenizer appends.
        tokenizer: u32,
        /// The model's `eos_token_id`s.
        model: Vec<u32>,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(file: &'static str, reason: impl Into<String>) -> Self {
        Self::Config {
            file,
            reason: reason.into(),
        }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
