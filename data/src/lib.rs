//! # rlvr-data
//!
//! Data for every stage: tokenizers (HF `tokenizer.json` through the `tokenizers` crate) and
//! the built-in synthetic arithmetic problems of the tiny recipes ([`arith`]), which need no
//! download.

pub mod arith;
mod builtin;
mod tokenizer;

pub use builtin::{Builtin, Example};

pub use tokenizer::{Tokenizer, CHARS, SPECIALS};

/// Errors of this crate; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A tokenizer file could not be read or written.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A recipe names a data set that does not exist.
    #[error("unknown data set `{name}`; built-in data sets: {}", known.join(", "))]
    UnknownDataset {
        /// The name given.
        name: String,
        /// The names that exist.
        known: Vec<String>,
    },
}

mod sampler;
pub use sampler::Sampler;
