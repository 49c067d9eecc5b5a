//! Held-out answer accuracy of a saved model: greedy completions of RL prompts scored by their
//! verifiers — the figure the RLVR stage logs as `eval_accuracy`, for stages that train without
//! generating (DPO).

use std::path::Path;

use anyhow::{Context, Result};
use rlvr_core::{GenerationRequest, SamplingParams};
use rlvr_rollout::{Engine, NativeEngine};
use tch::Kind;

use crate::graph::data::Prompt;

/// Greedy accuracy of the model in `model_dir` on `prompts`, answers cut at `max_new_tokens`.
pub(super) fn greedy_accuracy(model_dir: &Path, prompts: &[Prompt], max_new_tokens: usize) -> Result<f64> {
    let device = rlvr_learner::runtime::default_device();
    let mut engine =
        NativeEngine::from_pretrained(model_dir, device, Kind::Float, prompts.len().clamp(1, 256))
            .with_context(|| format!("loading {} for evaluation", model_dir.display()))?;
    let tok = engine
        .tokenizer()
        .cloned()
        .with_context(|| format!("{}: no tokenizer", model_dir.display()))?;
    let requests: Vec<GenerationRequest> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| GenerationRequest {
            id: i as u64,
            prompt_ids: p.prompt_ids.clone(),
            n: 1,
            seed: 0,
        })
        .collect();
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens,
        stop_token_ids: rlvr_rollout::stop_token_ids(&tok, engine.config()),
        ..SamplingParams::default()
    };
    let completions = engine.generate(&requests, &params)?;
    let hits = completions
        .iter()
        .zip(prompts)
        .filter(|(c, p)| {
            p.verifier
                .verify_score(&tok.decode(&c.token_ids), &p.truth)
                .verified
        })
        .count();
    Ok(hits as f64 / prompts.len().max(1) as f64)
}
