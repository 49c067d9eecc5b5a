//! What the engine's test files share: a tiny Llama, a learner holding its weights, an engine
//! loaded from the learner, and the learner's log-probs of a completion from one full forward.
//! Each test file uses some of them.
#![allow(dead_code)]

use rlvr_learner::model::Config;
use rlvr_learner::{Learner, LearnerConfig};
use rlvr_rollout::{Engine, NativeEngine};
use tch::{Device, Kind, Tensor};

/// A two-layer Llama with grouped-query attention and 64 positions.
pub fn config() -> Config {
    serde_json::from_value(serde_json::json!({
        "model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 60,
        "max_position_embeddings": 64, "tie_word_embeddings": true
    }))
    .unwrap()
}

/// A learner on the CPU with seeded weights.
pub fn learner() -> Learner {
    learner_of(&config())
}

/// A learner of the model `model` on the CPU with seeded weights.
pub fn learner_of(model: &Config) -> Learner {
    let cfg = LearnerConfig {
        max_grad_norm: None,
        ..LearnerConfig::constant(1e-3, Device::Cpu)
    };
    Learner::new(model, cfg, 11)
}

/// An engine holding the learner's weights, loaded through `load_weights`.
pub fn engine(l: &Learner, max_batch: usize) -> NativeEngine {
    engine_of(&config(), l, max_batch)
}

/// An engine of the model `model` holding the learner's weights.
pub fn engine_of(model: &Config, l: &Learner, max_batch: usize) -> NativeEngine {
    let mut e = NativeEngine::new(model, Device::Cpu, Kind::Float, max_batch, 99);
    e.load_weights(&l.export_weights(7).unwrap(), 7).unwrap();
    e
}

/// Log-probs of `tokens` after `prompt` from one full forward pass of the learner's model.
pub fn learner_logprobs(l: &Learner, prompt: &[u32], tokens: &[u32], temperature: f64) -> Vec<f32> {
    let all: Vec<i64> = prompt.iter().chain(tokens).map(|&t| i64::from(t)).collect();
    let n = all.len() as i64;
    let input = Tensor::from_slice(&all[..all.len() - 1]).view([1, n - 1]);
    let logits = tch::no_grad(|| l.model().forward(&input)) / temperature;
    let logp = logits.log_softmax(-1, Kind::Float).squeeze_dim(0);
    let p = prompt.len() as i64;
    (0..tokens.len() as i64)
        .map(|i| logp.double_value(&[p - 1 + i, i64::from(tokens[i as usize])]) as f32)
        .collect()
}

/// The largest difference between two aligned runs of log-probs.
pub fn worst(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
