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
    /// Generation settings that cannot work together, or ids the model
    /// cannot run (outside its vocabulary, or a decoder beyond BART's
    /// positions).
    #[error("bad generation settings: {0}")]
    Generation(String),
    /// A tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
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
