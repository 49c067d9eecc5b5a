//! What `[rlvr]` asks of the loop and the loss: the recipe's algorithm and its keys turned into
//! the learner's advantage estimator, surrogate and off-policy correction and the loop's
//! sampling settings, with the values rlvr does not run refused by name.

use anyhow::{bail, Result};
use rlvr_learner::advantage::Estimator;
use rlvr_learner::off_policy::Correction;
use rlvr_learner::policy::{Aggregation, KlEstimator, PolicyLoss, Surrogate, TokenDistribution};
use rlvr_recipes::spec::{LossAggregation, OffPolicyCorrection, RlAlgorithm, RlvrSpec};

use crate::graph::controller::KlPenalty;
use crate::UsageError;

/// Everything the algorithm decides, as data for the learner and the loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Algorithm {
    /// How advantages are made.
    pub estimator: Estimator,
    /// The policy loss (β is 0 when the KL penalty is in the reward).
    pub loss: PolicyLoss,
    /// The KL penalty when it is in the reward.
    pub kl_in_reward: Option<KlPenalty>,
    /// Off-policy correction.
    pub correction: Correction,
    /// Dynamic sampling's round cap, when it is on.
    pub dynamic_sampling: Option<u64>,
    /// Leave truncated responses out of the loss.
    pub mask_truncated: bool,
}

impl Algorithm {
    /// Read `rl` for stage `stage`; a value out of range is a usage error naming its key.
    pub(crate) fn from_spec(stage: &str, rl: &RlvrSpec) -> Result<Self> {
        let refuse = |key: &str, message: String| -> Result<Self> {
            bail!(UsageError(format!("stage `{stage}`: rlvr.{key}: {message}")))
        };
        let Some(kl) = KlEstimator::parse(&rl.kl_estimator) else {
            return refuse(
                "kl_estimator",
                format!("{:?}: expected kl1, kl2 or kl3", rl.kl_estimator),
            );
        };
        if rl.stop_token != "eos" {
            return refuse(
                "stop_token",
                format!(
                    "{:?}: responses end at the model's end-of-sequence ids (\"eos\"); for other \
                     ends use rlvr.stop_strings, e.g. [\".\"] for open-instruct's \"period\"",
                    rl.stop_token
                ),
            );
        }
        let responses = rl.local_rollout_batch_size * rl.num_samples_per_prompt;
        let mini_batches = responses.div_ceil(rl.local_mini_batch_size.max(1));
        if rl.num_mini_batches != mini_batches {
            return refuse(
                "num_mini_batches",
                format!(
                    "{}, but the {responses} responses of a step (local_rollout_batch_size {} x \
                     num_samples_per_prompt {}) make {mini_batches} of local_mini_batch_size = {}",
                    rl.num_mini_batches,
                    rl.local_rollout_batch_size,
                    rl.num_samples_per_prompt,
                    rl.local_mini_batch_size
                ),
            );
        }
        let clip_low = rl.cliprange_low.unwrap_or(rl.cliprange);
        let clip_high = rl.cliprange_high.unwrap_or(rl.cliprange);
        for (key, v) in [
            ("cliprange", rl.cliprange),
            ("cliprange_low", clip_low),
            ("cliprange_high", clip_high),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return refuse(key, format!("{v}: must be a finite number >= 0"));
            }
        }
        if !(rl.top_p > 0.0 && rl.top_p <= 1.0) {
            return refuse("top_p", format!("{}: must be within (0, 1]", rl.top_p));
        }
        if rl.temperature <= 0.0 {
            return refuse(
                "temperature",
                format!("{}: RL samples its responses, so it must be > 0", rl.temperature),
            );
        }
        let [low, high] = rl.is_bounds;
        let correction = match rl.off_policy_correction {
            OffPolicyCorrection::None => Correction::None,
            OffPolicyCorrection::Tis if rl.is_cap > 0.0 => Correction::Tis { cap: rl.is_cap },
            OffPolicyCorrection::Tis => return refuse("is_cap", format!("{}: must be > 0", rl.is_cap)),
            _ if !(0.0 <= low && low < high) => {
                return refuse("is_bounds", format!("{:?}: need 0 <= low < high", rl.is_bounds))
            }
            OffPolicyCorrection::Icepop => Correction::IcePop { low, high },
            OffPolicyCorrection::SequenceMask => Correction::SequenceMask { low, high },
        };
        let dynamic = rl.dynamic_sampling.unwrap_or(rl.algorithm == RlAlgorithm::Dapo);
        if dynamic && rl.num_samples_per_prompt < 2 {
            return refuse(
                "dynamic_sampling",
                "needs num_samples_per_prompt >= 2: a group of one response always scores alike".into(),
            );
        }
        if dynamic && rl.max_sampling_rounds == 0 {
            return refuse("max_sampling_rounds", "must be >= 1".into());
        }
        let estimator = match rl.algorithm {
            RlAlgorithm::Ppo => Estimator::Gae {
                gamma: rl.gamma,
                lam: rl.lam,
                whiten: rl.whiten_advantages,
            },
            RlAlgorithm::Grpo | RlAlgorithm::Dapo | RlAlgorithm::Gspo | RlAlgorithm::Cispo => {
                Estimator::Grpo {
                    scale: rl.scale_rewards,
                }
            }
            RlAlgorithm::Rloo => Estimator::Rloo,
            RlAlgorithm::ReinforcePp => Estimator::ReinforcePp { gamma: rl.gamma },
            RlAlgorithm::ReinforcePpBaseline => Estimator::ReinforcePpBaseline,
        };
        let surrogate = match rl.algorithm {
            RlAlgorithm::Gspo => Surrogate::SequenceClip,
            RlAlgorithm::Cispo => Surrogate::Cispo,
            _ => Surrogate::TokenClip,
        };
        let kl_in_reward = rl.kl_in_reward.unwrap_or(matches!(
            rl.algorithm,
            RlAlgorithm::Ppo | RlAlgorithm::ReinforcePp
        ));
        let loss = PolicyLoss {
            surrogate,
            clip_low,
            clip_high,
            beta: if kl_in_reward { 0.0 } else { rl.beta },
            kl,
            distribution: TokenDistribution {
                temperature: rl.temperature,
                top_k: rl.top_k as usize,
                top_p: rl.top_p,
            },
            vf_coef: rl.vf_coef,
            value_clip: rl.cliprange_value,
            aggregation: match rl.loss_aggregation {
                LossAggregation::Token => Aggregation::Token,
                LossAggregation::Sequence => Aggregation::Sequence,
                LossAggregation::DrGrpo => Aggregation::DrGrpo {
                    max_tokens: rl.response_length as usize,
                },
            },
        };
        Ok(Self {
            estimator,
            loss,
            kl_in_reward: (kl_in_reward && rl.beta > 0.0).then_some(KlPenalty { beta: rl.beta, kl }),
            correction,
            dynamic_sampling: dynamic.then_some(rl.max_sampling_rounds),
            mask_truncated: rl.mask_truncated_completions,
        })
    }

    /// How far rollouts run ahead of the learner: the steps rolled out while one learns, and
    /// whether engines take new weights in flight. `versions_per_step` is the optimiser steps
    /// one RL step takes; `rlvr.max_staleness` counts policy versions, so it must cover at
    /// least one step's.
    pub(crate) fn staleness(stage: &str, rl: &RlvrSpec, versions_per_step: u64) -> Result<(usize, bool)> {
        let Some(k) = rl.max_staleness else {
            return Ok((usize::from(rl.async_mode), false));
        };
        if !rl.async_mode {
            bail!(UsageError(format!(
                "stage `{stage}`: rlvr.max_staleness = {k} with rlvr.async_mode = false: \
                 staleness needs async mode (or leave max_staleness unset to stay on-policy)"
            )));
        }
        let ahead = k / versions_per_step.max(1);
        if ahead == 0 {
            bail!(UsageError(format!(
                "stage `{stage}`: rlvr.max_staleness = {k} is less than the {versions_per_step} policy \
                 versions one step takes (num_epochs x mini-batches): no rollout could run ahead"
            )));
        }
        Ok((ahead as usize, true))
    }

    /// The algorithm's name as the start-up line shows it.
    pub(crate) fn describe(rl: &RlvrSpec) -> String {
        serde_json::to_value(rl.algorithm)
            .ok()
            .and_then(|v| v.as_str().map(str::to_uppercase))
            .unwrap_or_default()
    }
}
