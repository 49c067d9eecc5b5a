//! The RL policy step: a fresh reference has zero KL, log-probs recomputed at the sampling
//! temperature give ratio 1 on the first step, a positive advantage makes its tokens more likely
//! and a negative one less, and β pulls the policy back toward the reference.

use rlvr_core::{PolicyBatch, PolicySample};
use rlvr_learner::model::Config;
use rlvr_learner::policy::{Aggregation, KlEstimator, PolicyLoss, Surrogate, TokenDistribution};
use rlvr_learner::{Learner, LearnerConfig};
use tch::{Device, Kind, Tensor};

fn learner(lr: f64) -> Learner {
    let config: Config = serde_json::from_value(serde_json::json!({
        "model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 40,
        "tie_word_embeddings": true
    }))
    .unwrap();
    let cfg = LearnerConfig::constant(lr, Device::Cpu);
    Learner::new(&config, cfg, 5)
}

const TEMPERATURE: f64 = 0.7;

/// Log-probs of `response` after `prompt` at `TEMPERATURE`, from a full forward pass.
fn logprobs(l: &Learner, prompt: &[u32], response: &[u32]) -> Vec<f32> {
    let ids: Vec<i64> = prompt.iter().chain(response).map(|&t| i64::from(t)).collect();
    let input = Tensor::from_slice(&ids).view([1, -1]);
    let logits = tch::no_grad(|| l.model().forward(&input)) / TEMPERATURE;
    let lp = logits.log_softmax(-1, Kind::Float);
    (0..response.len())
        .map(|k| {
            let pos = (prompt.len() + k - 1) as i64;
            lp.double_value(&[0, pos, i64::from(response[k])]) as f32
        })
        .collect()
}

fn sample(l: &Learner, response: &[u32], advantage: f32) -> PolicySample {
    let prompt = vec![1u32, 4, 9];
    PolicySample {
        logprobs: logprobs(l, &prompt, response),
        proximal_logprobs: vec![],
        is_weights: vec![],
        advantages: vec![advantage; response.len()],
        prompt_ids: prompt,
        response_ids: response.to_vec(),
        returns: vec![],
        values: vec![],
    }
}

fn loss(beta: f64) -> PolicyLoss {
    PolicyLoss {
        surrogate: Surrogate::TokenClip,
        clip_low: 0.2,
        clip_high: 0.2,
        beta,
        kl: KlEstimator::K3,
        distribution: TokenDistribution::full(TEMPERATURE),
        vf_coef: 0.1,
        value_clip: 0.2,
        aggregation: Aggregation::Token,
    }
}

fn sum(v: &[f32]) -> f32 {
    v.iter().sum()
}

#[test]
fn positive_advantages_raise_their_tokens_and_negative_ones_lower_them() {
    tch::set_num_threads(1);
    let mut l = learner(1e-2);
    l.freeze_reference().unwrap();
    let (good, bad) = ([7u32, 8, 2], [11u32, 12, 13, 2]);
    let batch = PolicyBatch::from_samples(&[sample(&l, &good, 1.0), sample(&l, &bad, -1.0)], 0);
    let before = (logprobs(&l, &[1, 4, 9], &good), logprobs(&l, &[1, 4, 9], &bad));
    let first = l.policy_step(std::slice::from_ref(&batch), &loss(0.1)).unwrap();
    assert!((first.ratio - 1.0).abs() < 1e-5, "ratio {}", first.ratio);
    assert!(first.kl.abs() < 1e-6, "kl to a fresh reference {}", first.kl);
    assert_eq!(first.clipfrac, 0.0);
    assert_eq!(first.tokens, 7);
    for _ in 0..5 {
        l.policy_step(std::slice::from_ref(&batch), &loss(0.1)).unwrap();
    }
    let after = (logprobs(&l, &[1, 4, 9], &good), logprobs(&l, &[1, 4, 9], &bad));
    assert!(sum(&after.0) > sum(&before.0), "{:?} -> {:?}", before.0, after.0);
    assert!(sum(&after.1) < sum(&before.1), "{:?} -> {:?}", before.1, after.1);
    let last = l.policy_step(&[batch], &loss(0.1)).unwrap();
    assert!(last.kl > 0.0, "the policy moved away from the reference");
    assert!(
        last.clipfrac > 0.0,
        "old log-probs are stale by now: some ratios clip"
    );
}

#[test]
fn the_kl_penalty_alone_pulls_the_policy_back_to_the_reference() {
    tch::set_num_threads(1);
    let mut l = learner(1e-2);
    l.freeze_reference().unwrap();
    let response = [7u32, 8, 2];
    let push = PolicyBatch::from_samples(&[sample(&l, &response, 1.0)], 0);
    for _ in 0..5 {
        l.policy_step(std::slice::from_ref(&push), &loss(0.0)).unwrap();
    }
    // Zero advantage: only β·KL drives the update.
    let hold = PolicyBatch::from_samples(&[sample(&l, &response, 0.0)], 0);
    let kl_start = l.policy_step(std::slice::from_ref(&hold), &loss(1.0)).unwrap().kl;
    let mut kl_end = kl_start;
    for _ in 0..20 {
        kl_end = l.policy_step(std::slice::from_ref(&hold), &loss(1.0)).unwrap().kl;
    }
    assert!(kl_start > 1e-4, "{kl_start}");
    assert!(kl_end < kl_start * 0.5, "KL {kl_start} -> {kl_end}");
}

#[test]
fn a_batch_without_response_tokens_or_with_bad_ids_is_an_error() {
    let mut l = learner(1e-3);
    let empty = PolicyBatch::from_samples(
        &[PolicySample {
            prompt_ids: vec![1, 2],
            response_ids: vec![],
            logprobs: vec![],
            proximal_logprobs: vec![],
            is_weights: vec![],
            advantages: vec![],
            returns: vec![],
            values: vec![],
        }],
        0,
    );
    assert!(l.policy_step(&[empty], &loss(0.0)).is_err());
    let mut s = sample(&l, &[7, 8], 1.0);
    s.response_ids[1] = 400;
    let err = l
        .policy_step(&[PolicyBatch::from_samples(&[s], 0)], &loss(0.0))
        .unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
}

#[test]
fn the_value_model_starts_at_zero_and_learns_the_returns() {
    tch::set_num_threads(1);
    let mut l = learner(1e-2);
    l.attach_critic().unwrap();
    let response = [7u32, 8, 2];
    let mut s = sample(&l, &response, 0.0);
    let batch = PolicyBatch::from_samples(std::slice::from_ref(&s), 0);
    let scores = l.score(&batch, &TokenDistribution::full(TEMPERATURE)).unwrap();
    let (reference, values) = (scores.reference, scores.values);
    assert!(values.iter().all(|&v| v == 0.0), "zero head: {values:?}");
    assert!(reference.iter().all(|&r| r == 0.0), "no reference frozen");
    s.returns = vec![1.0, 1.0, 1.0];
    s.values = vec![0.0; 3];
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..30 {
        let batch = PolicyBatch::from_samples(std::slice::from_ref(&s), 0);
        let m = l.policy_step(&[batch], &loss(0.0)).unwrap();
        first.get_or_insert(m.vf_loss);
        last = m.vf_loss;
        // Keep the clip window moving with the estimates, as PPO's next rollout would.
        let scored = PolicyBatch::from_samples(std::slice::from_ref(&s), 0);
        let v = l
            .score(&scored, &TokenDistribution::full(TEMPERATURE))
            .unwrap()
            .values;
        s.values = v[..3].to_vec();
    }
    let first = first.unwrap();
    assert!((first - 0.5).abs() < 1e-6, "½·(0 − 1)² = {first}");
    assert!(last < 0.1 * first, "value loss {first} -> {last}");
}

#[test]
fn shared_prompts_give_the_log_probs_of_a_full_forward_pass() {
    tch::set_num_threads(1);
    let mut l = learner(1e-3);
    l.freeze_reference().unwrap();
    // Two groups with prompts of different lengths, responses of different lengths.
    let groups: [(&[u32], &[&[u32]]); 2] = [
        (&[1, 4, 9], &[&[7, 8, 2], &[11, 2], &[7, 30, 31, 32, 2]]),
        (&[1, 5, 6, 7, 8, 9, 10], &[&[3], &[12, 13]]),
    ];
    let mut samples = Vec::new();
    for (prompt, responses) in groups {
        for r in responses {
            samples.push(PolicySample {
                prompt_ids: prompt.to_vec(),
                response_ids: r.to_vec(),
                logprobs: vec![],
                proximal_logprobs: vec![],
                is_weights: vec![],
                advantages: vec![],
                returns: vec![],
                values: vec![],
            });
        }
    }
    let batch = PolicyBatch::from_samples(&samples, 0);
    assert_eq!(batch.groups, 2, "each prompt is stored once");
    let reference = l
        .score(&batch, &TokenDistribution::full(TEMPERATURE))
        .unwrap()
        .reference;
    for (row, s) in samples.iter().enumerate() {
        let want = logprobs(&l, &s.prompt_ids, &s.response_ids);
        let got = &reference[row * batch.cols..row * batch.cols + s.response_ids.len()];
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "row {row}: {got:?} vs {want:?}");
        }
    }
}

#[test]
fn aggregation_sets_how_much_each_response_counts() {
    // Token weights: every token of the step alike; per response; Dr. GRPO's constant.
    assert_eq!(Aggregation::Token.weight(1, 2, 5), 0.2);
    assert_eq!(Aggregation::Sequence.weight(1, 2, 5), 0.5);
    assert_eq!(Aggregation::Sequence.weight(4, 2, 5), 0.125);
    assert_eq!(Aggregation::DrGrpo { max_tokens: 8 }.weight(1, 2, 5), 1.0 / 16.0);
    // A one-token answer beside a four-token one, both rewarded: averaged per response, the
    // short answer's token moves further than when every token counts alike.
    tch::set_num_threads(1);
    let moved = |aggregation: Aggregation| {
        let mut l = learner(1e-2);
        let (short, long) = ([7u32], [11u32, 12, 13, 14]);
        let batch = PolicyBatch::from_samples(&[sample(&l, &short, 1.0), sample(&l, &long, 1.0)], 0);
        let before = sum(&logprobs(&l, &[1, 4, 9], &short));
        let m = l
            .policy_step(
                &[batch],
                &PolicyLoss {
                    aggregation,
                    ..loss(0.0)
                },
            )
            .unwrap();
        assert_eq!(m.tokens, 5);
        sum(&logprobs(&l, &[1, 4, 9], &short)) - before
    };
    let (token, sequence) = (moved(Aggregation::Token), moved(Aggregation::Sequence));
    assert!(
        token > 0.0 && sequence > token,
        "token {token}, sequence {sequence}"
    );
}
