//! # rlvr-rollout
//!
//! The inference engine rollout workers generate with, behind one trait ([`Engine`]) so more
//! backends can follow. It knows nothing of actors or verifiers: requests in, completions out,
//! weights replaced in place between calls with a policy version — or, given a [`WeightFeed`],
//! between decode steps, each token tagged with the version that produced it.
//!
//! The first backend, [`NativeEngine`], runs the learner's own model code on libtorch with a
//! paged KV cache (completions share their prompt's blocks, prompts their common prefix) and
//! continuous batching, so the log-probs it reports are the ones the
//! learner recomputes, and a weight update is a copy. On a GPU its decode steps replay CUDA
//! graphs ([`DecodeMode`]).

mod error;
mod native;
pub mod sampling;

pub use error::{Result, RolloutError};
pub use native::{DecodeMode, NativeEngine, DEFAULT_BLOCK_SIZE};
use rlvr_core::{Completion, GenerationRequest, SamplingParams, WeightChunk};
use rlvr_data::Tokenizer;
use rlvr_learner::model::Config;
use tch::Tensor;

/// Every token id generation from a model stops on: its tokenizer's EOS and the
/// `eos_token_id`s of its `generation_config.json` ([`Tokenizer::stop_ids`]) and of its
/// `config.json` (Llama 3.1 Instruct lists three).
pub fn stop_token_ids(tok: &Tokenizer, config: &Config) -> Vec<u32> {
    let mut ids = tok.stop_ids.clone();
    for id in config.eos_token_ids.iter().filter_map(|&e| u32::try_from(e).ok()) {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// Weights as an engine takes them: host bytes (what travels between processes), or tensors on
/// any device (a learner's snapshot), copied device to device without passing through host
/// memory.
#[derive(Debug, Clone, Copy)]
pub enum WeightSource<'a> {
    /// Every parameter as host bytes.
    Chunks(&'a [WeightChunk]),
    /// Every parameter as a named tensor.
    Tensors(&'a [(String, Tensor)]),
}

/// Where an engine looks for newer weights between decode steps (in-flight weight updates):
/// a long completion then spans policy versions, its cached keys and values computed by the
/// weights of their time, and each token records the version that produced it.
pub trait WeightFeed: Send + Sync {
    /// Call `load` with the newest weights and their version when they are newer than
    /// `version`; do nothing otherwise.
    fn load_newer(
        &self,
        version: u64,
        load: &mut dyn FnMut(WeightSource<'_>, u64) -> Result<()>,
    ) -> Result<()>;
}

/// A generation backend.
pub trait Engine {
    /// Complete every request `n` times; completions come back in request order, then index.
    fn generate(
        &mut self,
        requests: &[GenerationRequest],
        params: &SamplingParams,
    ) -> Result<Vec<Completion>>;

    /// Replace parameters in place from `chunks`, and tag what follows with `version`.
    fn load_weights(&mut self, chunks: &[WeightChunk], version: u64) -> Result<()>;

    /// Version of the weights in use.
    fn policy_version(&self) -> u64;
}
