//! The engine on every model family against `transformers` (the fixtures of
//! `learner/tests/parity.rs`, made by `scripts/parity-fixtures.py`): two prompts of different
//! lengths generated greedily in one batch — a prefill, then cached decode steps whose rows sit
//! at different positions — give `transformers`' greedy tokens, each with its log-probability
//! within 1e-4 (per-token maximum, f32 on the CPU). Once with the kernel's few-row path (a
//! batch of 2), once through the batched products (rows past the few-row limit).

use std::path::PathBuf;

use rlvr_core::{GenerationRequest, SamplingParams};
use rlvr_learner::checkpoint;
use rlvr_rollout::{Engine, NativeEngine};
use tch::{Device, Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../learner/tests/fixtures/parity")
        .join(name)
}

fn check(name: &str) {
    let dir = fixture(name);
    let expected = checkpoint::read_tensors(&dir.join("expected.safetensors")).unwrap();
    let get = |k: &str| -> Tensor { expected.iter().find(|(n, _)| n == k).unwrap().1.shallow_clone() };
    let ids = |k: &str| -> Vec<u32> {
        Vec::<i64>::try_from(get(k))
            .unwrap()
            .iter()
            .map(|&t| t as u32)
            .collect()
    };
    let logprobs = |k: &str| -> Vec<f32> { Vec::try_from(get(k)).unwrap() };
    // 40 copies of each prompt put 80 rows in the batch: above the CPU's few-row path.
    for copies in [1, 40] {
        let mut engine = NativeEngine::from_pretrained(&dir, Device::Cpu, Kind::Float, 2 * copies).unwrap();
        let requests: Vec<GenerationRequest> = ["a", "b"]
            .iter()
            .enumerate()
            .map(|(i, s)| GenerationRequest {
                id: i as u64,
                prompt_ids: ids(&format!("prompt_{s}")),
                n: copies,
                seed: 0,
            })
            .collect();
        let params = SamplingParams {
            temperature: 0.0,
            max_new_tokens: 8,
            stop_token_ids: vec![],
            ..SamplingParams::default()
        };
        let completions = engine.generate(&requests, &params).unwrap();
        assert_eq!(completions.len(), 2 * copies);
        let mut worst = 0f32;
        for c in &completions {
            let s = ["a", "b"][c.request_id as usize];
            assert_eq!(
                c.token_ids,
                ids(&format!("greedy_{s}")),
                "{name}: greedy tokens of prompt {s} ({copies} copies)"
            );
            for (got, want) in c.logprobs.iter().zip(logprobs(&format!("greedy_logprobs_{s}"))) {
                worst = worst.max((got - want).abs());
            }
        }
        assert!(
            worst < 1e-4,
            "{name} ({copies} copies): log-probs differ by up to {worst:e}"
        );
        eprintln!(
            "{name} engine, {} rows: greedy tokens equal, log-probs per-token max |Δ| {worst:.2e}",
            2 * copies
        );
    }
}

macro_rules! family {
    ($($test:ident => $name:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            check($name);
        }
    )*};
}

family! {
    llama31_generates_as_transformers => "llama31",
    smollm2_generates_as_transformers => "smollm2",
    llama_with_biases_generates_as_transformers => "llama_bias",
    mistral_generates_as_transformers => "mistral",
    qwen2_generates_as_transformers => "qwen2",
    qwen3_generates_as_transformers => "qwen3",
    olmo2_generates_as_transformers => "olmo2",
}
