//! Errors of the learner crate.

/// What can go wrong building, training, loading or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum LearnerError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A checkpoint or config file is malformed or does not match the model.
    #[error("{path}: {message}")]
    Checkpoint {
        /// The file.
        path: String,
        /// What is wrong (tensor name, expected and found shapes, field).
        message: String,
    },
    /// A model rlvr does not implement, or a checkpoint that does not match its config: an
    /// unknown `model_type`, a config value not implemented, a tensor missing, extra or
    /// misshapen. The user's input is at fault (the command exits 2).
    #[error("{path}: {message}")]
    Unsupported {
        /// The directory or file.
        path: String,
        /// What is wrong, naming the field or tensor and what is supported.
        message: String,
    },
    /// libtorch reported an error.
    #[error("{context}: {source}")]
    Torch {
        /// What was being done.
        context: String,
        /// libtorch's message.
        source: tch::TchError,
    },
    /// A call that needs a part the learner was not given (a value model, a reference).
    #[error("the learner has no {0}: attach it first")]
    Missing(&'static str),
    /// A call made out of order (bf16 after training started).
    #[error("{0}")]
    Order(&'static str),
    /// A collective between data-parallel ranks failed.
    #[error("data parallelism: {0}")]
    Dist(#[from] rlvr_dist::DistError),
    /// A batch that does not fit the model (token id past the vocabulary, empty batch).
    #[error("bad batch: {0}")]
    Batch(String),
}

impl LearnerError {
    /// Whether the user's input is at fault (a model or checkpoint rlvr refuses), not the run.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, LearnerError::Unsupported { .. })
    }
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, LearnerError>;
