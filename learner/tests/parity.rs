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
    checkpoint::load_into(&vs, &checkpoint::read_weights(&dir).unwrap(), &dir).unwrap();
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
