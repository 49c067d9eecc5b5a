//! Our Llama against `transformers`: tiny random checkpoints written by `transformers` 5.24 with
//! torch 2.11 (Llama 3.1's shape with `llama3` RoPE scaling and grouped-query attention;
//! SmolLM2's tied embeddings), and the logits `transformers` computed for a fixed input. Made by
//! `scripts/parity-fixtures.py`; the test needs no Python.

use std::path::PathBuf;

use rlvr_learner::checkpoint;
use rlvr_learner::llama::Llama;
use tch::nn::VarStore;
use tch::Device;

fn check(name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity")
        .join(name);
    let config = checkpoint::read_config(&dir).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let model = Llama::new(&vs.root(), &config);
    checkpoint::load_dir(&vs, &dir).unwrap();
    let expected = checkpoint::read_tensors(&dir.join("expected.safetensors")).unwrap();
    let get = |k: &str| expected.iter().find(|(n, _)| n == k).unwrap().1.shallow_clone();
    let logits = tch::no_grad(|| model.forward(&get("input_ids")));
    let want = get("logits");
    assert_eq!(logits.size(), want.size());
    let diff = (logits - &want).abs().max().double_value(&[]);
    let scale = want.abs().max().double_value(&[]);
    assert!(
        diff < 1e-4,
        "{name}: max |ours - transformers| = {diff:e} (logits up to {scale:.2})"
    );
}

#[test]
fn llama31_logits_match_transformers() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity/llama31");
    let config = checkpoint::read_config(&dir).unwrap();
    assert_eq!(
        config.rope_theta, 500000.0,
        "read from transformers 5's rope_parameters"
    );
    assert_eq!(config.rope_scaling.as_ref().unwrap().rope_type, "llama3");
    check("llama31");
}

#[test]
fn smollm2_logits_match_transformers() {
    check("smollm2");
}

#[test]
fn the_fixtures_are_not_trivial() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity/llama31");
    let expected = checkpoint::read_tensors(&dir.join("expected.safetensors")).unwrap();
    let logits = &expected.iter().find(|(n, _)| n == "logits").unwrap().1;
    let spread: f64 = logits.std(true).double_value(&[]);
    assert!(spread > 0.1, "logits vary: std {spread}");
}

#[test]
fn a_value_model_loaded_from_a_reward_model_scores_every_position_as_transformers() {
    use rlvr_core::{PolicyBatch, PolicySample};
    use rlvr_learner::{Learner, LearnerConfig};

    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity");
    let cfg = LearnerConfig {
        max_grad_norm: None,
        ..LearnerConfig::constant(1e-3, Device::Cpu)
    };
    // The policy (SmolLM2-shaped) and the reward model (Llama-3.1-shaped) differ, as 70B and 8B.
    let mut learner = Learner::from_pretrained(&fixtures.join("smollm2"), cfg).unwrap();
    learner.attach_critic_from(&fixtures.join("rm")).unwrap();
    let expected = checkpoint::read_tensors(&fixtures.join("rm/expected.safetensors")).unwrap();
    let get = |k: &str| expected.iter().find(|(n, _)| n == k).unwrap().1.shallow_clone();
    let ids: Vec<i64> = Vec::try_from(get("input_ids").reshape([-1])).unwrap();
    let scores: Vec<f32> = Vec::try_from(get("scores").reshape([-1])).unwrap();
    // Prompt = the first 6 tokens, response = the other 10: the value of response token k is
    // the score at position 5 + k.
    let tokens: Vec<u32> = ids.iter().map(|&t| t as u32).collect();
    let sample = PolicySample {
        prompt_ids: tokens[..6].to_vec(),
        response_ids: tokens[6..].to_vec(),
        logprobs: vec![],
        advantages: vec![],
        returns: vec![],
        values: vec![],
    };
    let batch = PolicyBatch::from_samples(&[sample], 0);
    let (_, values) = learner.score(&batch, 1.0).unwrap();
    for k in 0..10 {
        let (got, want) = (values[k], scores[5 + k]);
        assert!((got - want).abs() < 1e-4, "token {k}: {got} vs {want}");
    }
}
