//! # rlvr-data
//!
//! Data for every stage, in the formats users already have:
//!
//! - tokenizers (HF `tokenizer.json` through the `tokenizers` crate) and chat templates
//!   ([`ChatTemplate`]: a model's Jinja template, or the built-in `tulu` and `chatml`);
//! - data files — JSON lines, JSON, Parquet ([`RowFile`]) — from a local path or the Hugging
//!   Face hub ([`Hub`]), mixed with open-instruct's semantics ([`mix`]);
//! - the rows each stage reads, with open-instruct's columns: SFT `messages` and pretraining
//!   `text` ([`lm_row`]), preference `chosen`/`rejected` ([`preference_row`]), RL prompts in the
//!   Tülu 3 RLVR format or straight from GSM8K and MATH ([`rlvr_row`]);
//! - the standard evaluation sets, embedded, and the prompts that ask them ([`evals`]);
//! - sequence packing for SFT and pretraining ([`pack`]);
//! - GGUF files turned into Hugging Face model directories ([`gguf`]), for a real model where
//!   the hub cannot be reached;
//! - the built-in synthetic arithmetic problems of the tiny recipes ([`arith`], [`Builtin`]),
//!   which need no download.

pub mod arith;
mod builtin;
mod chat;
pub mod constraints;
pub mod evals;
mod files;
pub mod gguf;
mod hub;
mod lm_rows;
pub mod mix;
pub mod pack;
mod parquet;
mod preference_rows;
mod rlvr_rows;
mod sampler;
mod tokenizer;

pub use builtin::{Builtin, Example, Pair, PromptRow};
pub use chat::{ChatTemplate, Message, RenderedChat, BUILTIN_TEMPLATES};
pub use files::{At, RowFile, RowRead, DATA_EXTENSIONS};
pub use hub::{split_files, Hub};
pub use lm_rows::lm_row;
pub use preference_rows::preference_row;
pub use rlvr_rows::{gsm8k_question, math_question, rlvr_row, PromptFormat, GSM8K_FEW_SHOT, MATH_FEW_SHOT};
pub use sampler::Sampler;
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
    /// The hub could not provide a data set or model.
    #[error("hub repository {id}: {message}")]
    Hub {
        /// The repository id.
        id: String,
        /// What went wrong.
        message: String,
    },
    /// A mix entry that cannot be resolved.
    #[error("mix entry {entry}: {message}")]
    Mix {
        /// 0-based position in the mix.
        entry: usize,
        /// What is wrong.
        message: String,
    },
    /// A GGUF file that cannot be converted.
    #[error("GGUF {path}: {message}")]
    Gguf {
        /// The file.
        path: String,
        /// What is wrong, and what is supported.
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
