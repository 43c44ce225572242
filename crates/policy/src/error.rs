//! The crate's one error type.

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    // --- check (policy-check branch) ---
    /// regorus refused a module of the policy or of the framework.
    #[error("regorus cannot load {module}")]
    Rego {
        /// The module's file name (`policy.rego` for the policy).
        module: String,
        /// regorus's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The Rego is not a policy: its package is not `policy`.
    #[error("the policy must be `package policy`, not `package {package}`")]
    NotAPolicy {
        /// The package it declares.
        package: String,
    },
    /// The document holds no usable policy.
    #[error(transparent)]
    Document(#[from] crate::check::DocumentError),
    /// A start-up sequence is not a JSON list of steps.
    #[error("the steps are not a JSON list of {{\"rule\", \"input\"}} objects")]
    Steps {
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A step of a start-up sequence is malformed.
    #[error("step {index} is malformed")]
    Step {
        /// Its position, from 1.
        index: usize,
        /// What is wrong.
        #[source]
        source: crate::check::RequestError,
    },
    // --- end check ---
}
