//! The native engine against the learner: same log-probs, same greedy tokens as a full forward
//! pass, reproducible sampling whatever the batch, stop conditions and weight updates.

use rlvr_core::{FinishReason, GenerationRequest, SamplingParams};
use rlvr_data::Tokenizer;
use rlvr_learner::model::Config;
use rlvr_learner::{Learner, LearnerConfig};
use rlvr_rollout::{Engine, NativeEngine};
use tch::{Device, Kind, Tensor};

fn config() -> Config {
    serde_json::from_value(serde_json::json!({
        "model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 60,
        "max_position_embeddings": 64, "tie_word_embeddings": true
    }))
    .unwrap()
}

fn learner() -> Learner {
    let cfg = LearnerConfig {
        max_grad_norm: None,
        ..LearnerConfig::constant(1e-3, Device::Cpu)
    };
    Learner::new(&config(), cfg, 11)
}

/// An engine holding the learner's weights, loaded through `load_weights`.
fn engine(l: &Learner, max_batch: usize) -> NativeEngine {
    let mut e = NativeEngine::new(&config(), Device::Cpu, Kind::Float, max_batch, 99);
    e.load_weights(&l.export_weights(7).unwrap(), 7).unwrap();
    e
}

fn requests() -> Vec<GenerationRequest> {
    vec![
        GenerationRequest {
            id: 10,
            prompt_ids: vec![1, 5, 9],
            n: 3,
            seed: 1,
        },
        GenerationRequest {
            id: 11,
            prompt_ids: vec![1, 7, 7, 7, 2, 40, 41],
            n: 1,
            seed: 2,
        },
        GenerationRequest {
            id: 12,
            prompt_ids: vec![3],
            n: 2,
            seed: 3,
        },
    ]
}

/// Log-probs of `tokens` after `prompt` from one full forward pass of the learner's model.
fn learner_logprobs(l: &Learner, prompt: &[u32], tokens: &[u32], temperature: f64) -> Vec<f32> {
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

#[test]
fn logprobs_equal_the_learners_recomputed_logprobs() {
    let l = learner();
    let params = SamplingParams {
        temperature: 0.7,
        max_new_tokens: 20,
        ..Default::default()
    };
    let reqs = requests();
    // 2 slots: one prompt prefilled at a time, slots refilled as completions end; 6 slots:
    // prompts of different lengths prefilled together, right-padded.
    let out: Vec<_> = [2, 6]
        .iter()
        .flat_map(|&slots| engine(&l, slots).generate(&reqs, &params).unwrap())
        .collect();
    assert_eq!(out.len(), 12);
    let mut worst = 0f32;
    for c in &out {
        assert_eq!(c.policy_version, 7);
        assert_eq!(c.token_ids.len(), 20);
        assert_eq!(c.finish_reason, FinishReason::Length);
        let prompt = &reqs.iter().find(|r| r.id == c.request_id).unwrap().prompt_ids;
        let want = learner_logprobs(&l, prompt, &c.token_ids, 0.7);
        for (a, b) in c.logprobs.iter().zip(&want) {
            worst = worst.max((a - b).abs());
        }
    }
    assert!(worst < 1e-5, "largest log-prob difference {worst}");
}

#[test]
fn greedy_tokens_match_a_full_forward_pass_each_step() {
    let l = learner();
    let mut e = engine(&l, 4);
    let params = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 15,
        ..Default::default()
    };
    let out = e.generate(&requests(), &params).unwrap();
    for c in out {
        let prompt = &requests()
            .into_iter()
            .find(|r| r.id == c.request_id)
            .unwrap()
            .prompt_ids;
        let mut seq: Vec<i64> = prompt.iter().map(|&t| i64::from(t)).collect();
        for &got in &c.token_ids {
            let n = seq.len() as i64;
            let logits = tch::no_grad(|| l.model().forward(&Tensor::from_slice(&seq).view([1, n])));
            let want = logits.select(1, n - 1).argmax(-1, false).int64_value(&[0]);
            assert_eq!(i64::from(got), want);
            seq.push(want);
        }
    }
}

#[test]
fn sampling_reproduces_whatever_the_batch() {
    let l = learner();
    let params = SamplingParams {
        temperature: 1.0,
        top_p: 0.9,
        top_k: 20,
        max_new_tokens: 12,
        ..Default::default()
    };
    let together = engine(&l, 3).generate(&requests(), &params).unwrap();
    let alone = engine(&l, 1).generate(&requests()[..1], &params).unwrap();
    assert_eq!(alone.len(), 3);
    for (a, b) in alone.iter().zip(&together) {
        assert_eq!((a.request_id, a.index), (b.request_id, b.index));
        assert_eq!(a.token_ids, b.token_ids);
    }
    assert_ne!(
        together[0].token_ids, together[1].token_ids,
        "the n completions differ"
    );
    let again = engine(&l, 3).generate(&requests(), &params).unwrap();
    assert_eq!(again, together);
}

#[test]
fn stop_tokens_stop_strings_and_limits() {
    let l = learner();
    let mut e = engine(&l, 2);
    let greedy = SamplingParams {
        temperature: 0.0,
        max_new_tokens: 10,
        ..Default::default()
    };
    let free = e.generate(&requests()[1..2], &greedy).unwrap();
    let third = free[0].token_ids[2];
    let stop = SamplingParams {
        stop_token_ids: vec![third],
        ..greedy.clone()
    };
    let stopped = e.generate(&requests()[1..2], &stop).unwrap();
    let first_at = free[0].token_ids.iter().position(|&t| t == third).unwrap();
    assert_eq!(stopped[0].token_ids, free[0].token_ids[..=first_at]);
    assert_eq!(stopped[0].finish_reason, FinishReason::Stop);

    // Stop strings need a tokenizer: the built-in character tokenizer (vocabulary 52 < 60).
    e.set_tokenizer(Tokenizer::builtin_chars());
    let tok = Tokenizer::builtin_chars();
    let text = tok.decode(&free[0].token_ids[..4]);
    let needle: String = text.chars().skip(2).take(2).collect();
    if !needle.is_empty() {
        let by_string = SamplingParams {
            stop: vec![needle.clone()],
            ..greedy
        };
        let s = e.generate(&requests()[1..2], &by_string).unwrap();
        assert_eq!(s[0].finish_reason, FinishReason::Stop);
        assert!(tok.decode(&s[0].token_ids).contains(&needle));
        assert!(s[0].token_ids.len() <= 4);
    }
}

#[test]
fn weight_updates_are_checked_and_versioned() {
    let l = learner();
    let mut e = engine(&l, 2);
    assert_eq!(e.policy_version(), 7);
    let mut chunks = l.export_weights(8).unwrap();
    chunks[0].shape = vec![1, 2, 3];
    let err = e.load_weights(&chunks, 8).unwrap_err().to_string();
    assert!(err.contains(&chunks[0].name) && err.contains("shape"), "{err}");
    let mut chunks = l.export_weights(8).unwrap();
    chunks[0].name = "model.nope.weight".into();
    assert!(e.load_weights(&chunks, 8).is_err());
    e.load_weights(&l.export_weights(9).unwrap(), 9).unwrap();
    assert_eq!(e.policy_version(), 9);
    let bad = GenerationRequest {
        id: 1,
        prompt_ids: vec![],
        n: 1,
        seed: 0,
    };
    assert!(e.generate(&[bad], &SamplingParams::default()).is_err());
    let oov = GenerationRequest {
        id: 2,
        prompt_ids: vec![600],
        n: 1,
        seed: 0,
    };
    assert!(e.generate(&[oov], &SamplingParams::default()).is_err());
}
