//! The `[rlvr]` table: RL settings named after open-instruct's `ppo_vllm_thread_ray_gtrl.py`
//! flags, with Tülu 3's PPO constants as defaults.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ModelConfig;

/// DeepSeek-R1's format, `format_pattern`'s default: reasoning closed by `</think>`, then the
/// answer in `<answer>…</answer>`.
pub const R1_FORMAT_PATTERN: &str = r"(?s).*?</think>\s*<answer>.*?</answer>";

/// RLVR settings, named after open-instruct's `ppo_vllm_thread_ray_gtrl.py` flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RlvrSpec {
    /// The algorithm: `ppo` (Tülu 3), `grpo`, `dapo`, `gspo`, `cispo`, `rloo`, `reinforce_pp`
    /// or `reinforce_pp_baseline` (see [`RlAlgorithm`]).
    pub algorithm: RlAlgorithm,
    /// KL coefficient β.
    pub beta: f64,
    /// KL estimator: `kl1` (log-ratio), `kl2` (half its square) or `kl3` (Schulman's
    /// unbiased, non-negative form).
    pub kl_estimator: String,
    /// Put the KL penalty in the reward (−β·KL on every token) rather than in the loss.
    /// Unset: the algorithm's own place (in the reward for `ppo` and `reinforce_pp`, in the loss
    /// for the others).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kl_in_reward: Option<bool>,
    /// New tokens per response.
    pub response_length: u64,
    /// Longest tokenised row kept (open-instruct's dataset filter): prompts longer than the
    /// smaller of this and `max_prompt_token_length` are dropped.
    pub max_token_length: u64,
    /// Prompt limit; longer prompts are dropped.
    pub max_prompt_token_length: u64,
    /// Sampling temperature.
    pub temperature: f64,
    /// Training rollouts keep the `top_k` most likely tokens (0: all). The engine reports, and
    /// the learner recomputes, log-probs renormalised over what is kept.
    pub top_k: u64,
    /// Training rollouts keep the smallest set of tokens whose probability reaches `top_p`
    /// (1: all); log-probs renormalised as for `top_k`.
    pub top_p: f64,
    /// Replace the score with `penalty_reward_value` when a response has no EOS.
    pub non_stop_penalty: bool,
    /// Score given to responses without EOS.
    pub penalty_reward_value: f64,
    /// Score given to a verified response.
    pub verified_reward: f64,
    /// Add the verifiable reward (`verified_reward` × the verdict's score). With it off, the
    /// reward model must score (`reward_model_multiplier` ≠ 0).
    pub apply_verifiable_reward: bool,
    /// Weight of the reward model's score in the reward (0: the reward model does not score;
    /// Tülu 3's RLVR value). Needs `reward_model_path`; the learner scores each response.
    pub reward_model_multiplier: f64,
    /// Reward model: a `…ForSequenceClassification` directory with one label and the policy's
    /// vocabulary. Scores responses when `reward_model_multiplier` ≠ 0, and initialises the PPO
    /// value model.
    pub reward_model_path: String,
    /// DeepSeek-R1's format reward: check each response against `format_pattern`.
    pub apply_r1_style_format_reward: bool,
    /// The format reward added to a formatted response (with `additive_format_reward`).
    pub r1_style_format_reward: f64,
    /// Add the format reward to formatted responses (true), or keep the verifiable reward of
    /// formatted responses only (false, open-instruct's default).
    pub additive_format_reward: bool,
    /// The format (a regular expression, matched from the response's start). Default: R1's,
    /// reasoning closed by `</think>` then `<answer>…</answer>`.
    pub format_pattern: String,
    /// Length penalty: a response of n tokens loses `length_penalty × n / response_length`
    /// (0: off).
    pub length_penalty: f64,
    /// Shape of the value model when it differs from the policy (the 70B and 405B runs use the
    /// 8B reward model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_model_config: Option<ModelConfig>,
    /// Responses sampled over the whole run.
    pub total_episodes: u64,
    /// Prompts per learner GPU per rollout.
    pub local_rollout_batch_size: u64,
    /// Sequences per learner GPU per PPO minibatch.
    pub local_mini_batch_size: u64,
    /// Sequences per forward pass when scoring rollouts.
    pub local_rollout_forward_batch_size: u64,
    /// Learner GPUs on each node.
    pub actor_num_gpus_per_node: Vec<u64>,
    /// Inference engines.
    pub vllm_num_engines: u64,
    /// GPUs per inference engine.
    pub vllm_tensor_parallel_size: u64,
    /// Samples per prompt (GRPO groups; 1 for Tülu PPO).
    pub num_samples_per_prompt: u64,
    /// PPO epochs over each batch.
    pub num_epochs: u64,
    /// Mini-batches (optimiser steps per epoch) a step's responses make: must be
    /// ⌈local_rollout_batch_size × num_samples_per_prompt / local_mini_batch_size⌉, which is
    /// what the loop takes.
    pub num_mini_batches: u64,
    /// Discount γ.
    pub gamma: f64,
    /// GAE λ.
    pub lam: f64,
    /// Policy-ratio clip ε (both sides unless `cliprange_low` / `cliprange_high` say otherwise).
    pub cliprange: f64,
    /// Lower clip: ratios below `1 − cliprange_low` are clipped. Unset: `cliprange`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cliprange_low: Option<f64>,
    /// Upper clip: ratios above `1 + cliprange_high` are clipped (DAPO's clip-higher: 0.28).
    /// Unset: `cliprange`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cliprange_high: Option<f64>,
    /// DAPO's dynamic sampling: drop the groups whose responses all got the same reward and
    /// refill the step from new prompts. Unset: on for `dapo`, off for the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dynamic_sampling: Option<bool>,
    /// Dynamic sampling: most rollout rounds per step (the first included); a step still short
    /// of groups after them trains on the groups it has.
    pub max_sampling_rounds: u64,
    /// DAPO's overlong reward shaping: responses longer than `response_length −
    /// overlong_buffer_length` tokens lose up to `overlong_penalty_factor`, linearly over the
    /// buffer (0: off).
    pub overlong_buffer_length: u64,
    /// Overlong reward shaping: the penalty at `response_length` tokens.
    pub overlong_penalty_factor: f64,
    /// Leave responses cut at `response_length` out of the loss (DAPO's overlong filtering).
    pub mask_truncated_completions: bool,
    /// Off-policy correction between the rollout's log-probs and the learner's: `none`, `tis`
    /// (truncated importance sampling, weight `min(ρ, is_cap)`), `icepop` (weight ρ inside
    /// `is_bounds`, token masked outside) or `sequence_mask` (a response whose geometric-mean ρ
    /// is outside `is_bounds` is masked).
    pub off_policy_correction: OffPolicyCorrection,
    /// Truncated importance sampling's cap C.
    pub is_cap: f64,
    /// IcePop's and sequence masking's `[low, high]` bounds on ρ.
    pub is_bounds: [f64; 2],
    /// Value clip.
    pub cliprange_value: f64,
    /// Value-loss coefficient.
    pub vf_coef: f64,
    /// Whiten advantages per batch.
    pub whiten_advantages: bool,
    /// Where responses end: `eos` (the model's end-of-sequence ids) is the one rlvr runs;
    /// open-instruct's `period` is refused (use `stop_strings = ["."]`).
    pub stop_token: String,
    /// Strings that also end a response (it keeps the string), beside the model's
    /// end-of-sequence ids.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop_strings: Vec<String>,
    /// Overlap generation of step t+1 with learning of step t.
    pub async_mode: bool,
    /// Let rollouts run up to this many policy versions behind the learner: the rollouts of
    /// later steps run while one learns, and engines take new weights between decode steps
    /// (in flight), so a long completion may span versions. Unset: `async_mode` alone (one step
    /// ahead, new weights between jobs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_staleness: Option<u64>,
    /// Held-out evaluations over the run, at least 1 (1: at the start and the end).
    pub num_evals: u64,
    /// Save every N steps.
    pub save_freq: u64,
    /// Verifier rules.
    pub verifier_mode: VerifierMode,
    /// How the policy loss is averaged: `token` (over every response token of the step),
    /// `sequence` (over each response's tokens, then over responses: the GRPO paper) or
    /// `dr_grpo` (summed, over responses × `response_length`: Dr. GRPO's constant).
    pub loss_aggregation: LossAggregation,
    /// GRPO: divide each group's centred rewards by their standard deviation (false: Dr. GRPO).
    pub scale_rewards: bool,
    /// Verifier for each value of the data's `dataset` column, when it is not the verifier's
    /// own name (e.g. `MATH = "math"`, or a custom data set to a plug-in).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub dataset_verifiers: std::collections::BTreeMap<String, String>,
    /// Verifiers the recipe declares, by name (`[rlvr.verifiers.NAME]`): plug-ins (external
    /// commands speaking the JSON-lines protocol of `rlvr_verifiers::plugin`) and weighted sums
    /// of verifiers; route data sets to them with `dataset_verifiers`.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub verifiers: std::collections::BTreeMap<String, VerifierSpec>,
}

/// A verifier a recipe declares: a plug-in (`command`) or a weighted sum (`sum`), one of the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifierSpec {
    /// A plug-in: program and arguments (relative paths from where `rlvr` runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// A weighted sum: verifier names (built-in or declared plug-ins) and their weights. Each
    /// scores the response against the row's ground truth; the score is the weighted sum.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sum: std::collections::BTreeMap<String, f64>,
    /// A plug-in's processes serving calls concurrently (the calls come from the verifier
    /// pool's workers, `rollout.verifier_workers`).
    #[serde(default = "one")]
    pub workers: u64,
    /// Longest one plug-in call may take before it fails with the reason.
    #[serde(default = "ten")]
    pub timeout_s: f64,
}

fn one() -> u64 {
    1
}

fn ten() -> f64 {
    10.0
}

impl Default for RlvrSpec {
    fn default() -> Self {
        // The PPO constants are Tülu 3's (DESIGN.md); the rest are neutral small values that
        // every shipped recipe sets explicitly.
        Self {
            algorithm: RlAlgorithm::Ppo,
            beta: 0.05,
            kl_estimator: "kl1".to_string(),
            response_length: 53,
            max_token_length: 512,
            max_prompt_token_length: 256,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            kl_in_reward: None,
            non_stop_penalty: false,
            penalty_reward_value: -1.0,
            verified_reward: 10.0,
            apply_verifiable_reward: true,
            reward_model_multiplier: 0.0,
            reward_model_path: String::new(),
            apply_r1_style_format_reward: false,
            r1_style_format_reward: 1.0,
            additive_format_reward: false,
            format_pattern: R1_FORMAT_PATTERN.to_string(),
            length_penalty: 0.0,
            value_model_config: None,
            total_episodes: 100_000,
            local_rollout_batch_size: 64,
            local_mini_batch_size: 64,
            local_rollout_forward_batch_size: 64,
            actor_num_gpus_per_node: vec![1],
            vllm_num_engines: 1,
            vllm_tensor_parallel_size: 1,
            num_samples_per_prompt: 1,
            num_epochs: 4,
            num_mini_batches: 1,
            gamma: 1.0,
            lam: 0.95,
            cliprange: 0.2,
            cliprange_low: None,
            cliprange_high: None,
            dynamic_sampling: None,
            max_sampling_rounds: 10,
            overlong_buffer_length: 0,
            overlong_penalty_factor: 1.0,
            mask_truncated_completions: false,
            off_policy_correction: OffPolicyCorrection::None,
            is_cap: 2.0,
            is_bounds: [0.5, 5.0],
            cliprange_value: 0.2,
            vf_coef: 0.1,
            whiten_advantages: true,
            stop_token: "eos".to_string(),
            stop_strings: Vec::new(),
            async_mode: true,
            max_staleness: None,
            num_evals: 4,
            save_freq: 100_000,
            verifier_mode: VerifierMode::Default,
            loss_aggregation: LossAggregation::Token,
            scale_rewards: true,
            dataset_verifiers: std::collections::BTreeMap::new(),
            verifiers: std::collections::BTreeMap::new(),
        }
    }
}

/// RL algorithms: an advantage estimator and a surrogate objective each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RlAlgorithm {
    /// PPO with a value model and GAE (Tülu 3).
    Ppo,
    /// Group-relative advantages, PPO's clipped surrogate, no value model.
    Grpo,
    /// GRPO's advantages with DAPO's dynamic sampling (on unless `dynamic_sampling = false`);
    /// clip-higher, token-level loss and overlong shaping are their own keys.
    Dapo,
    /// GRPO's advantages, GSPO's sequence-level ratio and clip.
    Gspo,
    /// GRPO's advantages, CISPO's clipped stop-gradient importance weight.
    Cispo,
    /// Leave-one-out baseline, PPO's clipped surrogate.
    Rloo,
    /// REINFORCE++: returns with the KL in the reward, normalised over the batch.
    ReinforcePp,
    /// REINFORCE++-baseline: group-mean baseline, then normalised over the batch.
    ReinforcePpBaseline,
}

/// Off-policy corrections between the behaviour (rollout) and proximal (learner) policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OffPolicyCorrection {
    /// The ratio is taken to the rollout's log-probs.
    None,
    /// Truncated importance sampling.
    Tis,
    /// IcePop's token mask.
    Icepop,
    /// Sequence-level masking.
    SequenceMask,
}

/// How the policy-gradient loss is averaged over a step's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LossAggregation {
    /// Mean over every response token of the step (open-instruct's PPO, DAPO).
    Token,
    /// Mean over each response's tokens, then over responses (the GRPO paper).
    Sequence,
    /// Sum over tokens divided by responses × the response-length budget (Dr. GRPO).
    DrGrpo,
}

/// Which rules the verifiers follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VerifierMode {
    /// Correct checking.
    Default,
    /// The Tülu 3 release's rules, defects included.
    Tulu3,
}
