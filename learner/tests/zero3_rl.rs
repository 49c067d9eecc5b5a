//! RL on ZeRO-3 over a real Gloo group on 127.0.0.1: two ranks, each holding half of every
//! model and stepping on half of the responses, take the steps one unsharded learner takes on
//! all of them — GRPO-style policy steps (also with gradient checkpointing on one learner), and
//! PPO with its frozen reference, value model (from the policy or a reward model) and a frozen
//! reward model all sharded, with and without the optimiser offloaded to host memory: their
//! scores of each response, the policy and value steps, and a resume from a sharded checkpoint.

mod common;

use rlvr_core::{PolicyBatch, PolicySample, PreferenceBatch, WeightChunk, IGNORE};
use rlvr_dist::ProcessGroup;
use rlvr_learner::policy::{Aggregation, KlEstimator, PolicyLoss, Surrogate, TokenDistribution};
use rlvr_learner::{BatchScores, Learner, LearnerConfig};
use tch::Device;

use common::{zero3_learner as learner, zero3_ranks as ranks};

fn assert_same(got: &[WeightChunk], want: &[WeightChunk], what: &str) {
    common::assert_same_weights(got, want, 1e-5, what);
}

/// [`ranks`] of tied models, with learners whose ZeRO-3 shards keep their optimiser state in
/// host memory when `offload`.
fn maybe_offloaded<T: Send>(
    world: usize,
    offload: bool,
    f: impl Fn(usize, Learner, ProcessGroup) -> T + Sync,
) -> Vec<T> {
    let config = LearnerConfig {
        offload_optimizer: offload,
        ..LearnerConfig::constant(3e-3, Device::Cpu)
    };
    let learners = (0..world)
        .map(|_| Learner::new(&common::tiny(3, 41, true), config, 5))
        .collect();
    common::on_ranks(learners, f)
}

/// Two micro-batches of responses to different prompts (left-padded prompts of different
/// lengths, responses of different lengths), with advantages of both signs and rollout
/// log-probs a little off the policy's, so ratios move and some clip; value estimates and
/// returns for PPO's value loss.
fn policy_halves() -> [PolicyBatch; 2] {
    let sample = |prompt: Vec<u32>, response: Vec<u32>, advantage: f32| PolicySample {
        logprobs: response.iter().map(|&t| -2.5 - 0.01 * t as f32).collect(),
        proximal_logprobs: vec![],
        is_weights: vec![],
        advantages: response
            .iter()
            .map(|&t| advantage * (1.0 + 0.1 * t as f32))
            .collect(),
        returns: response.iter().map(|&t| advantage + 0.05 * t as f32).collect(),
        values: response.iter().map(|&t| 0.1 - 0.02 * t as f32).collect(),
        prompt_ids: prompt,
        response_ids: response,
    };
    let a = [
        sample(vec![1, 4, 9], vec![5, 6, 7, 8], 1.0),
        sample(vec![1, 4, 9], vec![10, 2], -0.5),
        sample(vec![3, 3, 7, 20, 11], vec![12, 13, 14], 0.7),
    ];
    let b = [
        sample(vec![2, 30], vec![15, 16, 17, 18, 19], -1.0),
        sample(vec![2, 30], vec![21], 0.3),
    ];
    [PolicyBatch::from_samples(&a, 0), PolicyBatch::from_samples(&b, 0)]
}

fn policy_loss(aggregation: Aggregation, beta: f64) -> PolicyLoss {
    PolicyLoss {
        surrogate: Surrogate::TokenClip,
        clip_low: 0.2,
        clip_high: 0.28,
        beta,
        kl: KlEstimator::K3,
        distribution: TokenDistribution::full(0.7),
        vf_coef: 0.1,
        value_clip: 0.2,
        aggregation,
    }
}

#[test]
fn two_sharded_ranks_and_gradient_checkpointing_take_the_policy_steps_of_one_learner() {
    // β > 0: the KL to a frozen reference in the loss, the reference sharded like the policy.
    for (aggregation, beta) in [
        (Aggregation::Token, 0.0),
        (Aggregation::Sequence, 0.0),
        (Aggregation::Token, 0.1),
    ] {
        let loss = policy_loss(aggregation, beta);
        let [a, b] = policy_halves();
        let with_reference = |l: &mut Learner| {
            if beta > 0.0 {
                l.freeze_reference().unwrap();
            }
        };
        let mut one = learner(true);
        with_reference(&mut one);
        let want: Vec<(f64, f64, f64)> = (0..4)
            .map(|_| {
                let m = one.policy_step(&[a.clone(), b.clone()], &loss).unwrap();
                (m.loss, m.pg_loss, m.grad_norm)
            })
            .collect();
        let want_logprobs = one.logprobs(&a, &loss.distribution).unwrap();
        let want_weights = one.export_weights(0).unwrap();

        let mut checkpointed = learner(true);
        with_reference(&mut checkpointed);
        checkpointed.set_gradient_checkpointing(true);
        for (step, want) in want.iter().enumerate() {
            let m = checkpointed.policy_step(&[a.clone(), b.clone()], &loss).unwrap();
            let got = (m.loss, m.pg_loss, m.grad_norm);
            assert!(
                (got.0 - want.0).abs() < 1e-5
                    && (got.1 - want.1).abs() < 1e-5
                    && (got.2 - want.2).abs() < 1e-4,
                "{aggregation:?} β {beta} checkpointed step {step}: {got:?} vs {want:?}"
            );
        }
        assert_same(
            &checkpointed.export_weights(0).unwrap(),
            &want_weights,
            "checkpointed",
        );

        let results = ranks(2, true, |rank, mut l, group| {
            l.set_zero3(group).unwrap();
            with_reference(&mut l);
            let half = if rank == 0 { &a } else { &b };
            let metrics: Vec<(f64, f64, f64)> = (0..4)
                .map(|_| {
                    let m = l.policy_step(std::slice::from_ref(half), &loss).unwrap();
                    (m.loss, m.pg_loss, m.grad_norm)
                })
                .collect();
            let logprobs = l.logprobs(&a, &loss.distribution).unwrap();
            (metrics, logprobs, l.export_weights(0).unwrap())
        });
        for (rank, (metrics, logprobs, weights)) in results.iter().enumerate() {
            for (step, (got, want)) in metrics.iter().zip(&want).enumerate() {
                assert!(
                    (got.0 - want.0).abs() < 1e-5
                        && (got.1 - want.1).abs() < 1e-5
                        && (got.2 - want.2).abs() < 1e-4,
                    "{aggregation:?} β {beta} rank {rank} step {step}: {got:?} vs {want:?}"
                );
            }
            // Padding's log-probs are nobody's: compare the response tokens'.
            let worst = logprobs
                .iter()
                .zip(&want_logprobs)
                .zip(&a.mask)
                .filter(|(_, &m)| m > 0.0)
                .map(|((x, y), _)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "rank {rank}: log-probs differ by {worst}");
            common::assert_rank_export(
                rank,
                weights,
                &want_weights,
                1e-5,
                &format!("{aggregation:?} rank {rank}"),
            );
        }
    }
}

/// The largest difference between `got` and `want` over the response tokens of `b` (padding
/// is nobody's).
fn worst(got: &[f32], want: &[f32], b: &PolicyBatch) -> f32 {
    got.iter()
        .zip(want)
        .zip(&b.mask)
        .filter(|(_, &m)| m > 0.0)
        .map(|((x, y), _)| (x - y).abs())
        .fold(0f32, f32::max)
}

fn assert_same_scores(got: &BatchScores, want: &BatchScores, b: &PolicyBatch, what: &str) {
    let reference = worst(&got.reference, &want.reference, b);
    let values = worst(&got.values, &want.values, b);
    let rewards = worst(
        got.rewards.as_deref().unwrap(),
        want.rewards.as_deref().unwrap(),
        b,
    );
    assert!(
        reference < 1e-5 && values < 1e-5 && rewards < 1e-5,
        "{what}: reference log-probs differ by {reference}, values by {values}, rewards by {rewards}"
    );
    assert!(
        got.rewards.as_ref().unwrap().iter().any(|&r| r.abs() > 1e-3),
        "{what}: a reward model that scores 0"
    );
}

/// A reward model trained for a few steps on preference pairs (so its head is not zero),
/// saved as `LlamaForSequenceClassification` in `dir`.
fn reward_model(dir: &std::path::Path) {
    let encode = |prompt: &[i64], answer: &[i64]| {
        let ids: Vec<i64> = prompt.iter().chain(answer).copied().collect();
        let labels = (0..ids.len())
            .map(|i| if i < prompt.len() { IGNORE } else { ids[i] })
            .collect();
        (ids, labels)
    };
    let pairs: Vec<_> = (0..4)
        .map(|k| {
            let prompt = [1, 5 + k, 10 + k];
            (
                encode(&prompt, &[10 + k, 2]),
                encode(&prompt, &[30 - k, 7 + k, 9, 2]),
            )
        })
        .collect();
    let pairs = PreferenceBatch::from_pairs(&pairs, 0);
    let mut rm = common::learner_of(&common::tiny(3, 41, true), 3e-2, 9);
    rm.attach_critic().unwrap();
    for _ in 0..3 {
        rm.reward_step(std::slice::from_ref(&pairs)).unwrap();
    }
    rm.save_reward_model(dir).unwrap();
}

/// The step metrics PPO's steps are compared by: loss, policy-gradient loss, value loss, grad
/// norm.
fn ppo_metrics(l: &mut Learner, micro: &[PolicyBatch], loss: &PolicyLoss) -> [f64; 4] {
    let m = l.policy_step(micro, loss).unwrap();
    [m.loss, m.pg_loss, m.vf_loss, m.grad_norm]
}

fn assert_close(got: &[f64; 4], want: &[f64; 4], what: &str) {
    let close = got
        .iter()
        .zip(want)
        .enumerate()
        .all(|(i, (g, w))| (g - w).abs() < if i == 3 { 1e-4 } else { 1e-5 });
    assert!(close, "{what}: {got:?} vs {want:?}");
}

#[test]
fn ppo_with_every_model_sharded_scores_and_steps_as_one_learner_and_resumes() {
    let dir = std::env::temp_dir().join(format!("rlvr-zero3-ppo-{}", std::process::id()));
    let (rm, checkpoint) = (dir.join("rm"), dir.join("checkpoint"));
    reward_model(&rm);
    let loss = policy_loss(Aggregation::Token, 0.05);
    let [a, b] = policy_halves();
    for (value_from_rm, offload) in [(false, false), (true, true), (false, true)] {
        // Tülu 3's PPO: a frozen reference, a value model (from the reward model or the
        // policy) and the reward model scoring responses.
        let attach = |l: &mut Learner| {
            l.freeze_reference().unwrap();
            match value_from_rm {
                true => l.attach_critic_from(&rm).unwrap(),
                false => l.attach_critic().unwrap(),
            }
            l.attach_reward_model(&rm).unwrap();
        };
        let what = |rank: usize| {
            format!(
                "value model from the {} rank {rank}",
                if value_from_rm { "reward model" } else { "policy" }
            )
        };
        let mut one = learner(true);
        attach(&mut one);
        let want_scores = [&a, &b].map(|h| one.score(h, &loss.distribution).unwrap());
        let want: Vec<[f64; 4]> = (0..3)
            .map(|_| ppo_metrics(&mut one, &[a.clone(), b.clone()], &loss))
            .collect();
        let want_after = [&a, &b].map(|h| one.score(h, &loss.distribution).unwrap());
        let want_weights = one.export_weights(0).unwrap();

        // Two ranks: scores of each half before and after, three steps, a checkpoint after two.
        let _ = std::fs::remove_dir_all(&checkpoint);
        let results = maybe_offloaded(2, offload, |rank, mut l, group| {
            l.set_zero3(group).unwrap();
            attach(&mut l);
            let memory = l.shard_memory().unwrap();
            assert_eq!(memory.offloaded > 0, offload, "{memory:?}");
            let half = if rank == 0 { &a } else { &b };
            let before = l.score(half, &loss.distribution).unwrap();
            let mut metrics = Vec::new();
            for step in 0..3 {
                if step == 2 {
                    l.save_checkpoint(&checkpoint).unwrap();
                }
                metrics.push(ppo_metrics(&mut l, std::slice::from_ref(half), &loss));
            }
            let after = l.score(half, &loss.distribution).unwrap();
            (before, metrics, after, l.export_weights(0).unwrap())
        });
        for (rank, (before, metrics, after, weights)) in results.iter().enumerate() {
            let half = if rank == 0 { &a } else { &b };
            assert_same_scores(
                before,
                &want_scores[rank],
                half,
                &format!("{} before", what(rank)),
            );
            for (step, (got, want)) in metrics.iter().zip(&want).enumerate() {
                assert_close(got, want, &format!("{} step {step}", what(rank)));
            }
            assert_same_scores(after, &want_after[rank], half, &format!("{} after", what(rank)));
            common::assert_rank_export(rank, weights, &want_weights, 1e-5, &what(rank));
        }

        // Fresh ranks resume from the step-2 checkpoint: the third step and the value model's
        // estimates after it are the same.
        let resumed = maybe_offloaded(2, offload, |rank, mut l, group| {
            l.set_zero3(group).unwrap();
            attach(&mut l);
            l.load_checkpoint(&checkpoint, 2).unwrap();
            let half = if rank == 0 { &a } else { &b };
            let m = ppo_metrics(&mut l, std::slice::from_ref(half), &loss);
            (m, l.score(half, &loss.distribution).unwrap())
        });
        for (rank, (m, after)) in resumed.iter().enumerate() {
            let half = if rank == 0 { &a } else { &b };
            assert_close(m, &want[2], &format!("{} resumed", what(rank)));
            assert_same_scores(after, &want_after[rank], half, &format!("{} resumed", what(rank)));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
