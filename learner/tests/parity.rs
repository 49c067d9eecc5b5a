//! Every model family against `transformers`: tiny random checkpoints written by
//! `transformers` 5.24 with torch 2.11 — Llama 3.1's shape (`llama3` RoPE scaling,
//! grouped-query attention), SmolLM2's tied embeddings, Llama with attention and MLP biases,
//! Mistral, Qwen2 (q/k/v biases), Qwen3 (explicit head_dim, per-head q/k norms) and OLMo 2
//! (norms after the sublayers, whole-projection q/k norms), every tensor randomised — and
//! what `transformers` computed on them (`scripts/parity-fixtures.py`; the tests need no
//! Python). Per family, within 1e-4 in f32: the logits of a full forward; one training step's
//! loss and gradient norm, plainly, with gradient checkpointing, and under ZeRO-3 (unit by
//! unit); the log-probs of greedy continuations through the shared-prompt RL forward. The
//! engine's prefill and cached decode are checked in `rollout/tests/families.rs`.

mod common;

use std::path::PathBuf;

use rlvr_core::{PolicyBatch, PolicySample, TrainBatch};
use rlvr_learner::checkpoint;
use rlvr_learner::model::CausalLm;
use rlvr_learner::policy::TokenDistribution;
use rlvr_learner::{Learner, LearnerConfig, Objective, Reduction};
use tch::nn::VarStore;
use tch::{Device, Tensor};

const TOL: f64 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/parity")
        .join(name)
}

/// What `transformers` computed on fixture `name`.
struct Expected(Vec<(String, Tensor)>);

impl Expected {
    fn of(name: &str) -> Self {
        Self(checkpoint::read_tensors(&fixture(name).join("expected.safetensors")).unwrap())
    }
    fn get(&self, k: &str) -> Tensor {
        self.0.iter().find(|(n, _)| n == k).unwrap().1.shallow_clone()
    }
    fn ids(&self, k: &str) -> Vec<i64> {
        Vec::try_from(self.get(k).reshape([-1])).unwrap()
    }
    fn floats(&self, k: &str) -> Vec<f64> {
        Vec::try_from(self.get(k).to_kind(tch::Kind::Double).reshape([-1])).unwrap()
    }
}

fn config() -> LearnerConfig {
    LearnerConfig {
        max_grad_norm: None,
        ..LearnerConfig::constant(1e-3, Device::Cpu)
    }
}

fn close(got: f64, want: f64, what: &str) -> f64 {
    assert!((got - want).abs() < TOL, "{what}: {got} vs transformers' {want}");
    (got - want).abs()
}

/// Logits of a full forward pass.
fn check_logits(name: &str) {
    let dir = fixture(name);
    let config = checkpoint::read_config(&dir).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let model = CausalLm::for_loading(&vs.root(), &config);
    checkpoint::load_dir(&vs, &dir).unwrap();
    let expected = Expected::of(name);
    let logits = tch::no_grad(|| model.forward(&expected.get("input_ids")));
    let want = expected.get("logits");
    assert_eq!(logits.size(), want.size());
    let diff = (logits - &want).abs().max().double_value(&[]);
    let scale = want.abs().max().double_value(&[]);
    assert!(
        diff < TOL,
        "{name}: max |ours - transformers| = {diff:e} (logits up to {scale:.2})"
    );
    assert!(scale > 0.5, "{name}: the logits are not trivial ({scale})");
    eprintln!("{name}: logits max |ours - transformers| {diff:.2e} (logits up to {scale:.2})");
}

/// One step's loss and gradient norm: plain, gradient-checkpointed, and unit by unit under
/// ZeRO-3 on one Gloo rank.
fn check_step(name: &str) {
    let expected = Expected::of(name);
    let batch = TrainBatch::from_sequences(&[expected.ids("input_ids")], 0);
    let (loss, norm) = (expected.floats("loss")[0], expected.floats("grad_norm")[0]);
    let objective = Objective::Lm(Reduction::Mean);
    for checkpointing in [false, true] {
        let mut l = Learner::from_pretrained(&fixture(name), config()).unwrap();
        l.set_gradient_checkpointing(checkpointing);
        let m = l.train_step(std::slice::from_ref(&batch), objective).unwrap();
        let what = format!("{name} (checkpointing {checkpointing})");
        let dl = close(m.loss, loss, &format!("{what} loss"));
        let dn = close(m.grad_norm, norm, &format!("{what} grad norm"));
        eprintln!("{what}: |Δ loss| {dl:.2e}, |Δ grad norm| {dn:.2e} (grad norm {norm:.4})");
    }
    let sharded = common::on_ranks(vec![()], |_, (), group| {
        let mut l = Learner::from_pretrained(&fixture(name), config()).unwrap();
        l.set_zero3(group).unwrap();
        l.train_step(std::slice::from_ref(&batch), objective).unwrap()
    });
    let dl = close(sharded[0].loss, loss, &format!("{name} ZeRO-3 loss"));
    let dn = close(sharded[0].grad_norm, norm, &format!("{name} ZeRO-3 grad norm"));
    eprintln!("{name} (ZeRO-3, unit by unit): |Δ loss| {dl:.2e}, |Δ grad norm| {dn:.2e}");
}

/// Log-probs of the greedy continuations through the RL forward, where the two prompts'
/// responses attend to one pass of their prompt.
fn check_shared_prompt_logprobs(name: &str) {
    let expected = Expected::of(name);
    let mut l = Learner::from_pretrained(&fixture(name), config()).unwrap();
    l.freeze_reference().unwrap();
    let samples: Vec<PolicySample> = ["a", "b"]
        .iter()
        .map(|s| PolicySample {
            prompt_ids: expected
                .ids(&format!("prompt_{s}"))
                .iter()
                .map(|&t| t as u32)
                .collect(),
            response_ids: expected
                .ids(&format!("greedy_{s}"))
                .iter()
                .map(|&t| t as u32)
                .collect(),
            logprobs: vec![],
            proximal_logprobs: vec![],
            is_weights: vec![],
            advantages: vec![],
            returns: vec![],
            values: vec![],
        })
        .collect();
    let batch = PolicyBatch::from_samples(&samples, 0);
    let logprobs = l.score(&batch, &TokenDistribution::full(1.0)).unwrap().reference;
    let mut worst = 0f64;
    for (row, s) in ["a", "b"].iter().enumerate() {
        let want = expected.floats(&format!("greedy_logprobs_{s}"));
        for (k, w) in want.iter().enumerate() {
            let got = f64::from(logprobs[row * batch.cols + k]);
            worst = worst.max(close(got, *w, &format!("{name} prompt {s} token {k} log-prob")));
        }
    }
    eprintln!("{name} (shared-prompt RL forward): log-probs per-token max |Δ| {worst:.2e}");
}

macro_rules! family {
    ($($test:ident => $name:literal),* $(,)?) => {$(
        #[test]
        fn $test() {
            check_logits($name);
            check_step($name);
            check_shared_prompt_logprobs($name);
        }
    )*};
}

family! {
    llama31_matches_transformers => "llama31",
    smollm2_matches_transformers => "smollm2",
    llama_with_biases_matches_transformers => "llama_bias",
    mistral_matches_transformers => "mistral",
    qwen2_matches_transformers => "qwen2",
    qwen3_matches_transformers => "qwen3",
    olmo2_matches_transformers => "olmo2",
}

#[test]
fn llama31_reads_transformers_5_rope_parameters() {
    let config = checkpoint::read_config(&fixture("llama31")).unwrap();
    assert_eq!(config.rope_theta, 500000.0);
    assert_eq!(config.rope_scaling.as_ref().unwrap().rope_type, "llama3");
}

#[test]
fn a_value_model_loaded_from_a_reward_model_scores_every_position_as_transformers() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity");
    let cfg = config();
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
        proximal_logprobs: vec![],
        is_weights: vec![],
        advantages: vec![],
        returns: vec![],
        values: vec![],
    };
    let batch = PolicyBatch::from_samples(&[sample], 0);
    let values = learner
        .score(&batch, &TokenDistribution::full(1.0))
        .unwrap()
        .values;
    for k in 0..10 {
        let (got, want) = (values[k], scores[5 + k]);
        assert!((got - want).abs() < 1e-4, "token {k}: {got} vs {want}");
    }
}

#[test]
fn a_reward_model_scores_each_response_after_its_last_token_as_transformers() {
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity");
    let mut learner = Learner::from_pretrained(&fixtures.join("smollm2"), config()).unwrap();
    learner.attach_reward_model(&fixtures.join("rm")).unwrap();
    let expected = checkpoint::read_tensors(&fixtures.join("rm/expected.safetensors")).unwrap();
    let get = |k: &str| expected.iter().find(|(n, _)| n == k).unwrap().1.shallow_clone();
    let ids: Vec<u32> = Vec::<i64>::try_from(get("input_ids").reshape([-1]))
        .unwrap()
        .into_iter()
        .map(|t| t as u32)
        .collect();
    let scores: Vec<f32> = Vec::try_from(get("scores").reshape([-1])).unwrap();
    // One prompt (6 tokens), two responses: all 10 tokens, and the first 4 (padded in the
    // batch). transformers' score at a sequence's last position is its reward.
    let sample = |len: usize| PolicySample {
        prompt_ids: ids[..6].to_vec(),
        response_ids: ids[6..6 + len].to_vec(),
        logprobs: vec![],
        proximal_logprobs: vec![],
        is_weights: vec![],
        advantages: vec![],
        returns: vec![],
        values: vec![],
    };
    let batch = PolicyBatch::from_samples(&[sample(10), sample(4)], 0);
    let rewards = learner
        .score(&batch, &TokenDistribution::full(1.0))
        .unwrap()
        .rewards
        .unwrap();
    for (got, want) in rewards.iter().zip([scores[15], scores[9]]) {
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
    }
    // A reward model must read the policy's vocabulary.
    let shape = rlvr_learner::model::Config::llama(16, 32, 1, 2, 2, 40, 64, true);
    let mut other = Learner::new(&shape, config(), 0);
    let err = other
        .attach_reward_model(&fixtures.join("rm"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("vocabulary"), "{err}");
}
