//! Errors of the rollout crate.

/// What can go wrong generating or updating weights.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// A request that cannot be served (empty prompt, prompt longer than the model allows).
    #[error("request {id}: {message}")]
    Request {
        /// The request's id.
        id: u64,
        /// What is wrong.
        message: String,
    },
    /// A weight update that does not match the model.
    #[error("weight `{name}`: {message}")]
    Weights {
        /// Tensor name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor-parallel engine asked for what it cannot do (a model that does not split, the
    /// whole model from one rank's share).
    #[error("tensor parallelism: {0}")]
    TensorParallel(String),
    /// Weights asked of a source that does not hold them.
    #[error("weights of policy version {version}: {message}")]
    Unavailable {
        /// The version asked for.
        version: u64,
        /// Why they are not there.
        message: String,
    },
    /// A KV cache that cannot be set up as asked.
    #[error("KV cache: {0}")]
    Cache(String),
    /// A decode mode this engine cannot run, or a CUDA graph that failed.
    #[error("decode steps: {0}")]
    Decode(String),
    /// Loading the model failed.
    #[error(transparent)]
    Model(#[from] rlvr_learner::LearnerError),
    /// Loading the tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] rlvr_data::DataError),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, RolloutError>;
