//! # rlvr-recipes
//!
//! The named recipes `rlvr` ships — the Tülu 3 pipelines (SFT → DPO → RLVR on Llama 3.1
//! 8B/70B/405B, plus the 8B reward model), the SmolLM2 pipelines (pretraining → SFT → DPO on
//! 135M/360M/1.7B) and tiny CPU recipes — as TOML files embedded in the binary.
//!
//! - [`spec`]: the typed recipe; unknown keys are errors.
//! - [`load()`]: catalogue name or path, one `extends` per file, `--set key=value` overrides
//!   through the same typed path, validation. Errors name the file, key and line.
//! - [`plan`]: per-GPU memory and step counts before launch.
//! - [`explain()`]: what a key means, from the spec's doc comments.
//! - [`rehearse`]: a recipe's dress rehearsal on one CPU (its topology, a tiny model).

pub mod catalog;
mod error;
mod explain;
mod load;
pub mod plan;
pub mod rehearse;
pub mod spec;

pub use error::{RecipeError, Result};
pub use explain::{explain, KeyDoc};
pub use load::{load, load_resolved, validate, Pipeline, Resolved};
pub use spec::Recipe;
