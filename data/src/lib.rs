//! # rlvr-data
//!
//! Data for every stage: tokenizers (HF `tokenizer.json` through the `tokenizers` crate) and
//! the built-in synthetic arithmetic problems of the tiny recipes ([`arith`]), which need no
//! download, RL prompts from JSON lines in the Tülu 3 RLVR format ([`read_rlvr_jsonl`]), and
//! chat templates ([`ChatTemplate`]: a model's Jinja template or the built-in `tulu` and
//! `chatml`), with the assistant turns' spans that SFT trains on.

pub mod arith;
mod builtin;
mod chat;
mod lm_jsonl;
mod rlvr_jsonl;
mod tokenizer;

pub use builtin::{Builtin, Example, Pair, PromptRow};
pub use chat::{ChatTemplate, Message, RenderedChat, BUILTIN_TEMPLATES};
pub use lm_jsonl::read_lm_jsonl;
pub use rlvr_jsonl::{read_rlvr_jsonl, rlvr_sample};

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
    /// A data file row that cannot be used.
    #[error("{path}:{line}: field `{field}`: {message}")]
    Row {
        /// The file.
        path: String,
        /// 1-based line (0: the file itself).
        line: usize,
        /// The field at fault (empty when the line is not JSON).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A chat template that does not compile or render.
    #[error("chat template {origin}: {message}")]
    Template {
        /// Where the template came from (a built-in name or a file).
        origin: String,
        /// What went wrong.
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
