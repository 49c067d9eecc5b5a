//! Errors of the collectives.

/// What went wrong in a collective or a rendezvous.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// libtorch's c10d raised this (rendezvous timeout, connection lost, unsupported op).
    #[error("c10d: {0}")]
    C10d(String),
    /// Tensors that do not fit the collective (element counts, types, devices).
    #[error("{op}: {message}")]
    Shape {
        /// The collective.
        op: &'static str,
        /// What does not fit.
        message: String,
    },
    /// Capturing or replaying a CUDA graph failed, or this build has none.
    #[error("CUDA graph: {0}")]
    CudaGraph(String),
    /// A torchrun variable is missing or malformed.
    #[error("environment variable {name}: {message}")]
    Env {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        message: String,
    },
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, DistError>;
