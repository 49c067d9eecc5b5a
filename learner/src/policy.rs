//! The policy-gradient objective of RLVR: PPO's clipped surrogate on per-token advantages, with
//! an optional KL penalty to a frozen reference policy inside the loss (GRPO, as DeepSeekMath
//! and open-instruct's `grpo_fast`), and PPO's clipped value loss for the value model. Log-probabilities are recomputed from
//! `logits / (temperature + 1e-7)`, as Tülu 3 did, so they match what the sampler used.

use rlvr_core::PolicyBatch;
use tch::{Device, Kind, Tensor};

use crate::model::CausalLm;

/// How the KL divergence to the reference policy is estimated per token (Schulman, "Approximating
/// KL divergence").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KlEstimator {
    /// `log π − log π_ref`: unbiased, can be negative (Tülu 3 PPO's reward penalty).
    K1,
    /// `r − 1 − log r` with `r = π_ref / π`: unbiased and never negative (GRPO's loss term).
    K3,
}

impl KlEstimator {
    /// Parse a recipe's `kl_estimator` (`kl1` or `kl3`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "kl1" | "k1" => Some(Self::K1),
            "kl3" | "k3" => Some(Self::K3),
            _ => None,
        }
    }

    /// The estimate for one token, from its policy and reference log-probabilities.
    pub fn per_token(self, logprob: f64, ref_logprob: f64) -> f64 {
        let log_ratio = logprob - ref_logprob;
        match self {
            Self::K1 => log_ratio,
            Self::K3 => (-log_ratio).exp() - 1.0 + log_ratio,
        }
    }

    /// Per-token estimate from policy and reference log-probabilities.
    pub fn estimate(self, logprobs: &Tensor, ref_logprobs: &Tensor) -> Tensor {
        let log_ratio = logprobs - ref_logprobs;
        match self {
            Self::K1 => log_ratio,
            Self::K3 => (-&log_ratio).exp() - 1.0 + log_ratio,
        }
    }
}

/// Settings of the policy loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyLoss {
    /// Ratio clip ε: the surrogate uses `clamp(ratio, 1 − ε, 1 + ε)`.
    pub clip: f64,
    /// KL coefficient β of the penalty inside the loss (0: no reference policy is consulted).
    pub beta: f64,
    /// KL estimator of the penalty.
    pub kl: KlEstimator,
    /// Sampling temperature the log-probabilities are taken at.
    pub temperature: f64,
    /// Value-loss coefficient (PPO; used when a value model is attached).
    pub vf_coef: f64,
    /// Value clip: new estimates stay within this of the old ones in the clipped term.
    pub value_clip: f64,
    /// How the per-token loss is averaged over the step.
    pub aggregation: Aggregation,
}

/// How the per-token policy loss is averaged over a step's responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// Every response token of the step weighs the same.
    Token,
    /// Each response weighs the same, its tokens sharing its weight (the GRPO paper).
    Sequence,
    /// Summed over tokens and divided by responses × `max_tokens`, a constant: Dr. GRPO's
    /// normaliser, which does not favour short wrong answers or long right ones.
    DrGrpo {
        /// The response-length budget.
        max_tokens: usize,
    },
}

impl Aggregation {
    /// Each token's weight in the step's loss, for a response of `len` tokens among `rows`
    /// responses with `tokens` response tokens in all.
    pub fn weight(self, len: usize, rows: usize, tokens: usize) -> f64 {
        let rows = rows.max(1) as f64;
        match self {
            Aggregation::Token => 1.0 / tokens.max(1) as f64,
            Aggregation::Sequence => 1.0 / (len.max(1) as f64 * rows),
            Aggregation::DrGrpo { max_tokens } => 1.0 / (max_tokens.max(1) as f64 * rows),
        }
    }
}

/// What one policy-gradient step reports; token means over the step's response tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct PolicyMetrics {
    /// Optimiser steps taken so far.
    pub step: u64,
    /// Total loss (surrogate + β·KL).
    pub loss: f64,
    /// Clipped surrogate loss.
    pub pg_loss: f64,
    /// KL to the reference policy (0 when β = 0).
    pub kl: f64,
    /// Share of tokens whose ratio was clipped.
    pub clipfrac: f64,
    /// Mean probability ratio new/old.
    pub ratio: f64,
    /// Mean entropy of the policy's next-token distribution.
    pub entropy: f64,
    /// Clipped value loss (0 without a value model).
    pub vf_loss: f64,
    /// Share of tokens whose clipped value term was the larger.
    pub vf_clipfrac: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Response tokens trained on.
    pub tokens: u64,
}

/// A [`PolicyBatch`]'s token tensors on a device.
pub(crate) struct Tokens {
    prompts: Tensor,
    prompt_real: Tensor,
    responses: Tensor,
    group_of: Tensor,
}

impl Tokens {
    pub(crate) fn new(b: &PolicyBatch, device: Device) -> Self {
        let on = |t: Tensor| t.to_device(device);
        let prompt_shape = [b.groups as i64, b.prompt_cols as i64];
        Self {
            prompts: on(Tensor::from_slice(&b.prompt_ids).view(prompt_shape)),
            prompt_real: on(Tensor::from_slice(&b.prompt_real).view(prompt_shape)),
            responses: on(Tensor::from_slice(&b.response_ids).view([b.rows as i64, b.cols as i64])),
            group_of: on(Tensor::from_slice(&b.group_of)),
        }
    }
}

/// The hidden state each response token is generated from, `[rows, cols, hidden]`: the
/// prompt's last for the first token, the previous response token's for the others.
pub(crate) fn response_states(model: &CausalLm, t: &Tokens) -> Tensor {
    let (hp, hr) = model.hidden_shared(&t.prompts, &t.prompt_real, &t.responses, &t.group_of);
    let last = hp
        .select(1, hp.size()[1] - 1)
        .index_select(0, &t.group_of)
        .unsqueeze(1);
    let r = hr.size()[1];
    Tensor::cat(&[last, hr.narrow(1, 0, r - 1)], 1)
}

/// Log-probabilities `[rows, cols]` of each response token under `model` at `temperature`, and
/// the entropy of the distribution each was drawn from.
pub(crate) fn token_logprobs(model: &CausalLm, t: &Tokens, temperature: f64) -> (Tensor, Tensor) {
    let logits = model.logits(&response_states(model, t)).to_kind(Kind::Float) / (temperature + 1e-7);
    let log_probs = logits.log_softmax(-1, Kind::Float);
    let picked = log_probs
        .gather(-1, &t.responses.unsqueeze(-1), false)
        .squeeze_dim(-1);
    let entropy = -(log_probs.exp() * &log_probs).sum_dim_intlist(-1, false, Kind::Float);
    (picked, entropy.detach())
}

/// Per-token statistics of one micro-batch, summed over response tokens.
#[derive(Debug, Default)]
pub(crate) struct Sums {
    pub pg_loss: f64,
    pub kl: f64,
    pub clipped: f64,
    pub ratio: f64,
    pub entropy: f64,
}

/// The loss of one micro-batch: each response token's loss times its `weights` entry (its
/// [`Aggregation`] weight, 0 off the response), summed; with its statistics summed over the
/// response tokens (`mask`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn surrogate(
    logprobs: &Tensor,
    entropy: &Tensor,
    old_logprobs: &Tensor,
    advantages: &Tensor,
    mask: &Tensor,
    weights: &Tensor,
    ref_logprobs: Option<&Tensor>,
    cfg: &PolicyLoss,
) -> (Tensor, Sums) {
    let ratio = (logprobs - old_logprobs).exp();
    let unclipped = -advantages * &ratio;
    let clipped = -advantages * ratio.clamp(1.0 - cfg.clip, 1.0 + cfg.clip);
    let pg = unclipped.maximum(&clipped);
    let sum = |x: &Tensor| (x * mask).sum(Kind::Float);
    let weighted = |x: &Tensor| (x * weights).sum(Kind::Float);
    let pg_sum = sum(&pg);
    let (loss, kl) = match ref_logprobs {
        Some(r) if cfg.beta > 0.0 => {
            let per_token = cfg.kl.estimate(logprobs, r);
            let kl_sum = tch::no_grad(|| sum(&per_token)).double_value(&[]);
            (weighted(&pg) + weighted(&per_token) * cfg.beta, kl_sum)
        }
        _ => (weighted(&pg), 0.0),
    };
    let stats = tch::no_grad(|| Sums {
        pg_loss: pg_sum.double_value(&[]),
        kl,
        clipped: sum(&clipped.gt_tensor(&unclipped).to_kind(Kind::Float)).double_value(&[]),
        ratio: sum(&ratio).double_value(&[]),
        entropy: sum(entropy).double_value(&[]),
    });
    (loss, stats)
}

/// PPO's clipped value loss `½·max((V − R)², (clip(V, V_old ± ε) − R)²)` summed over response
/// tokens, and how many tokens took the clipped term.
pub(crate) fn value_loss(
    values: &Tensor,
    old: &Tensor,
    returns: &Tensor,
    mask: &Tensor,
    clip: f64,
) -> (Tensor, f64) {
    let clipped = old + (values - old).clamp(-clip, clip);
    let a = (values - returns).square();
    let b = (&clipped - returns).square();
    let loss = (a.maximum(&b) * mask).sum(Kind::Float) * 0.5;
    let took = tch::no_grad(|| {
        (b.gt_tensor(&a).to_kind(Kind::Float) * mask)
            .sum(Kind::Float)
            .double_value(&[])
    });
    (loss, took)
}
