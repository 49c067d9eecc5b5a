//! The policy-gradient objectives of RLVR, one per [`Surrogate`]: PPO's clipped surrogate on
//! per-token ratios with DAPO's decoupled clip range, GSPO's sequence-level ratio and CISPO's
//! clipped, stop-gradient importance weight; with an optional KL penalty to a frozen reference
//! policy inside the loss (GRPO, as DeepSeekMath and open-instruct's `grpo_fast`), per-token
//! off-policy weights (see [`crate::off_policy`]), and PPO's clipped value loss for the value
//! model. Log-probabilities are recomputed from `logits / (temperature + 1e-7)`, as Tülu 3 did,
//! over the same top-k/top-p support the sampler drew from ([`TokenDistribution`]), so they
//! match what the rollout engine reports.

use rlvr_core::PolicyBatch;
use tch::{Device, Kind, Tensor};

mod flat;

pub(crate) use flat::Flat;

use crate::model::CausalLm;

/// How the KL divergence to the reference policy is estimated per token (Schulman, "Approximating
/// KL divergence").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KlEstimator {
    /// `log π − log π_ref`: unbiased, can be negative (Tülu 3 PPO's reward penalty).
    K1,
    /// `½ (log π − log π_ref)²`: biased, low variance, never negative (OpenRLHF's `k2`).
    K2,
    /// `r − 1 − log r` with `r = π_ref / π`: unbiased and never negative (GRPO's loss term).
    K3,
}

impl KlEstimator {
    /// Parse a recipe's `kl_estimator` (`kl1`, `kl2` or `kl3`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "kl1" | "k1" => Some(Self::K1),
            "kl2" | "k2" => Some(Self::K2),
            "kl3" | "k3" => Some(Self::K3),
            _ => None,
        }
    }

    /// The estimate for one token, from its policy and reference log-probabilities.
    pub fn per_token(self, logprob: f64, ref_logprob: f64) -> f64 {
        let log_ratio = logprob - ref_logprob;
        match self {
            Self::K1 => log_ratio,
            Self::K2 => 0.5 * log_ratio * log_ratio,
            Self::K3 => (-log_ratio).exp() - 1.0 + log_ratio,
        }
    }

    /// Per-token estimate from policy and reference log-probabilities.
    pub fn estimate(self, logprobs: &Tensor, ref_logprobs: &Tensor) -> Tensor {
        let log_ratio = logprobs - ref_logprobs;
        match self {
            Self::K1 => log_ratio,
            Self::K2 => log_ratio.square() * 0.5,
            Self::K3 => (-&log_ratio).exp() - 1.0 + log_ratio,
        }
    }
}

/// The distribution a response token was drawn from: the policy's logits over the temperature,
/// cut to the `top_k` most likely tokens and then to the smallest prefix of them whose
/// probability reaches `top_p`, renormalised over what is kept. The rollout engine reports
/// log-probabilities of this distribution and the learner recomputes the same one, so their
/// ratio carries no `log S` bias from the mass `S` the cut removed (TRL #6789).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenDistribution {
    /// Sampling temperature.
    pub temperature: f64,
    /// Keep the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1: all).
    pub top_p: f64,
}

impl TokenDistribution {
    /// The full distribution at `temperature` (no top-k/top-p cut).
    pub fn full(temperature: f64) -> Self {
        Self {
            temperature,
            top_k: 0,
            top_p: 1.0,
        }
    }

    /// True when top-k or top-p cuts the support.
    pub fn truncates(&self) -> bool {
        self.top_k > 0 || self.top_p < 1.0
    }
}

/// The policy-gradient surrogate, on the ratio `r = π_θ / π_old` of each response token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surrogate {
    /// PPO: `max(−A·r, −A·clip(r, 1 − ε_low, 1 + ε_high))` per token (PPO, GRPO, DAPO).
    TokenClip,
    /// GSPO: the same clipped form on the sequence's ratio `s = exp(mean_t log r_t)`, with the
    /// token-level gradient form `s_t = sg[s] · π_θ(y_t) / sg[π_θ(y_t)]`.
    SequenceClip,
    /// CISPO: `−sg[clip(r, 1 − ε_low, 1 + ε_high)] · A · log π_θ`: the importance weight is
    /// clipped, never the gradient, so no token drops out of the update.
    Cispo,
}

/// Settings of the policy loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyLoss {
    /// The surrogate objective.
    pub surrogate: Surrogate,
    /// Lower clip ε_low: ratios below `1 − ε_low` are clipped.
    pub clip_low: f64,
    /// Upper clip ε_high: ratios above `1 + ε_high` are clipped (DAPO's clip-higher when it
    /// exceeds ε_low).
    pub clip_high: f64,
    /// KL coefficient β of the penalty inside the loss (0: no reference policy is consulted).
    pub beta: f64,
    /// KL estimator of the penalty.
    pub kl: KlEstimator,
    /// The distribution log-probabilities are taken of.
    pub distribution: TokenDistribution,
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
    /// Largest `|log π_θ − log π_old|` of any token, before the update.
    pub max_abs_log_ratio: f64,
    /// Mean `|log π_θ − log π_old|` per token, before the update.
    pub mean_abs_log_ratio: f64,
    /// KL(π_old ‖ π_θ) per token, `r − 1 − log r` on the old policy's samples (PPO's
    /// `approx_kl`), before the update.
    pub approx_kl: f64,
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

/// The hidden state after each response's last token, `[rows, hidden]` (`lens` `[rows]`: each
/// response's token count, at least 1).
pub(crate) fn final_states(model: &CausalLm, t: &Tokens, lens: &Tensor) -> Tensor {
    let (_, hr) = model.hidden_shared(&t.prompts, &t.prompt_real, &t.responses, &t.group_of);
    let hidden = hr.size()[2];
    let at = (lens - 1).view([-1, 1, 1]).expand([-1, 1, hidden], false);
    hr.gather(1, &at, false).squeeze_dim(1)
}

/// Log-probabilities `[rows, cols]` of each response token under `model`, of `distribution`
/// (temperature, then the top-k/top-p support renormalised), and the entropy of the
/// temperature-scaled distribution each was drawn from.
pub(crate) fn token_logprobs(
    model: &CausalLm,
    t: &Tokens,
    distribution: &TokenDistribution,
) -> (Tensor, Tensor) {
    logprobs_of_states(model, &response_states(model, t), &t.responses, distribution)
}

/// [`token_logprobs`] from the hidden states `[rows, cols, hidden]` each token of `responses`
/// `[rows, cols]` was generated from.
pub(crate) fn logprobs_of_states(
    model: &CausalLm,
    states: &Tensor,
    responses: &Tensor,
    distribution: &TokenDistribution,
) -> (Tensor, Tensor) {
    let logits = model.logits(states).to_kind(Kind::Float) / (distribution.temperature + 1e-7);
    let log_probs = logits.log_softmax(-1, Kind::Float);
    let picked = picked_logprobs(&log_probs, responses, distribution);
    let entropy = -(log_probs.exp() * &log_probs).sum_dim_intlist(-1, false, Kind::Float);
    (picked, entropy.detach())
}

/// The log-probability of each `chosen` token (`[..]`) in `distribution`, from the full
/// temperature-scaled `log_probs` (`[.., vocab]`): renormalised over the kept support when
/// top-k/top-p cuts it.
fn picked_logprobs(log_probs: &Tensor, chosen: &Tensor, distribution: &TokenDistribution) -> Tensor {
    let chosen = chosen.unsqueeze(-1);
    let picked = log_probs.gather(-1, &chosen, false).squeeze_dim(-1);
    if !distribution.truncates() {
        return picked;
    }
    let kept = tch::no_grad(|| kept_support(log_probs, &chosen, distribution));
    let log_mass = log_probs
        .masked_fill(&kept.logical_not(), f64::NEG_INFINITY)
        .logsumexp([-1], false);
    picked - log_mass
}

/// Which tokens the sampler could draw (`[.., vocab]`, bool): the `top_k` most likely, then
/// those whose more likely predecessors hold less than `top_p` of the probability, as
/// `rlvr_rollout`'s sampler cuts them; the token actually drawn (`chosen`, `[.., 1]`) is always
/// in, so a tie at the boundary rounded the other way cannot drop it.
fn kept_support(log_probs: &Tensor, chosen: &Tensor, d: &TokenDistribution) -> Tensor {
    let vocab = log_probs.size()[log_probs.dim() - 1];
    let (sorted, order) = log_probs.sort(-1, true);
    let probs = sorted.exp();
    let before = probs.cumsum(-1, Kind::Float) - &probs;
    let mut keep = before.lt(d.top_p);
    if d.top_k > 0 && (d.top_k as i64) < vocab {
        let rank = Tensor::arange(vocab, (Kind::Int64, log_probs.device()));
        keep = keep.logical_and(&rank.lt(d.top_k as i64));
    }
    let kept = keep.zeros_like().scatter(-1, &order, &keep);
    kept.scatter_value(-1, chosen, 1)
}

/// Per-token statistics of one micro-batch, summed over response tokens.
#[derive(Debug, Default)]
pub(crate) struct Sums {
    pub pg_loss: f64,
    pub kl: f64,
    pub clipped: f64,
    pub ratio: f64,
    pub entropy: f64,
    pub abs_log_ratio: f64,
    pub max_abs_log_ratio: f64,
    pub approx_kl: f64,
}

impl Sums {
    /// Add another micro-batch's sums (the maximum stays a maximum).
    pub(crate) fn add(&mut self, o: &Sums) {
        self.pg_loss += o.pg_loss;
        self.kl += o.kl;
        self.clipped += o.clipped;
        self.ratio += o.ratio;
        self.entropy += o.entropy;
        self.abs_log_ratio += o.abs_log_ratio;
        self.max_abs_log_ratio = self.max_abs_log_ratio.max(o.max_abs_log_ratio);
        self.approx_kl += o.approx_kl;
    }
}

/// One micro-batch's per-token tensors, `[rows, cols]`, as the surrogate reads them.
pub(crate) struct LossInputs<'a> {
    /// Log-probabilities under the policy being trained (with gradient).
    pub logprobs: &'a Tensor,
    /// Entropy of each token's distribution.
    pub entropy: &'a Tensor,
    /// Log-probabilities the ratio is taken to.
    pub old_logprobs: &'a Tensor,
    /// Advantages.
    pub advantages: &'a Tensor,
    /// 1 on response tokens.
    pub mask: &'a Tensor,
    /// Each token's [`Aggregation`] weight, 0 off the response.
    pub weights: &'a Tensor,
    /// Off-policy correction weights.
    pub is_weights: &'a Tensor,
    /// Reference log-probabilities, when the KL penalty is in the loss.
    pub ref_logprobs: Option<&'a Tensor>,
}

/// The loss of one micro-batch: each response token's surrogate loss times its off-policy
/// weight, plus β·KL, times its aggregation weight, summed; with statistics summed over the
/// response tokens. Returns the loss and the statistics.
pub(crate) fn surrogate(x: &LossInputs, cfg: &PolicyLoss) -> (Tensor, Sums) {
    let (low, high) = (1.0 - cfg.clip_low, 1.0 + cfg.clip_high);
    let log_ratio = x.logprobs - x.old_logprobs;
    let (ratio, pg, took_clip) = match cfg.surrogate {
        Surrogate::TokenClip => {
            let ratio = log_ratio.exp();
            let (pg, took) = clipped_objective(&ratio, x.advantages, low, high);
            (ratio, pg, took)
        }
        Surrogate::SequenceClip => {
            let tokens = x.mask.sum_dim_intlist(1, true, Kind::Float).clamp_min(1.0);
            let sequence = (&log_ratio * x.mask).sum_dim_intlist(1, true, Kind::Float) / tokens;
            let ratio = (sequence.detach() + x.logprobs - x.logprobs.detach()).exp();
            let (pg, took) = clipped_objective(&ratio, x.advantages, low, high);
            (ratio, pg, took)
        }
        Surrogate::Cispo => {
            let ratio = log_ratio.exp();
            let weight = ratio.clamp(low, high).detach();
            let took = ratio.lt(low).logical_or(&ratio.gt(high)).to_kind(Kind::Float);
            (ratio, -(x.advantages * weight * x.logprobs), took)
        }
    };
    let pg = pg * x.is_weights;
    let sum = |t: &Tensor| (t * x.mask).sum(Kind::Float);
    let weighted = |t: &Tensor| (t * x.weights).sum(Kind::Float);
    let (loss, kl) = match x.ref_logprobs {
        Some(r) if cfg.beta > 0.0 => {
            let per_token = cfg.kl.estimate(x.logprobs, r);
            let kl_sum = tch::no_grad(|| sum(&per_token)).double_value(&[]);
            (weighted(&pg) + weighted(&per_token) * cfg.beta, kl_sum)
        }
        _ => (weighted(&pg), 0.0),
    };
    let stats = tch::no_grad(|| {
        let abs_log_ratio = log_ratio.abs() * x.mask;
        Sums {
            pg_loss: sum(&pg).double_value(&[]),
            kl,
            clipped: sum(&took_clip).double_value(&[]),
            ratio: sum(&ratio).double_value(&[]),
            entropy: sum(x.entropy).double_value(&[]),
            abs_log_ratio: abs_log_ratio.sum(Kind::Float).double_value(&[]),
            max_abs_log_ratio: abs_log_ratio.max().double_value(&[]),
            approx_kl: sum(&(log_ratio.exp() - 1.0 - &log_ratio)).double_value(&[]),
        }
    });
    (loss, stats)
}

/// PPO's clipped objective on `ratio`: `max(−A·r, −A·clip(r, low, high))` per token, and 1
/// where the clipped term was taken.
fn clipped_objective(ratio: &Tensor, advantages: &Tensor, low: f64, high: f64) -> (Tensor, Tensor) {
    let unclipped = -advantages * ratio;
    let clipped = -advantages * ratio.clamp(low, high);
    let took = clipped.gt_tensor(&unclipped).to_kind(Kind::Float);
    (unclipped.maximum(&clipped), took)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v).view([1, -1])
    }

    fn loss(surrogate: Surrogate) -> PolicyLoss {
        PolicyLoss {
            surrogate,
            clip_low: 0.2,
            clip_high: 0.28,
            beta: 0.0,
            kl: KlEstimator::K3,
            distribution: TokenDistribution::full(1.0),
            vf_coef: 0.0,
            value_clip: 0.2,
            aggregation: Aggregation::Token,
        }
    }

    /// The loss and its gradient with respect to each token's log-prob, for ratios `ratio`
    /// (old log-probs 0), advantages `adv` and off-policy weights `is_weights`.
    fn loss_and_grad(
        surrogate: Surrogate,
        ratio: &[f32],
        adv: &[f32],
        is_weights: &[f32],
    ) -> (f64, Vec<f64>) {
        let lp = t(&ratio.iter().map(|r| r.ln()).collect::<Vec<_>>()).set_requires_grad(true);
        let ones = t(&vec![1.0; ratio.len()]);
        let inputs = LossInputs {
            logprobs: &lp,
            entropy: &ones.zeros_like(),
            old_logprobs: &ones.zeros_like(),
            advantages: &t(adv),
            mask: &ones,
            weights: &ones,
            is_weights: &t(is_weights),
            ref_logprobs: None,
        };
        let (l, _) = surrogate_fn(&inputs, &loss(surrogate));
        l.backward();
        let grad = Vec::<f32>::try_from(lp.grad().view([-1])).unwrap();
        (l.double_value(&[]), grad.into_iter().map(f64::from).collect())
    }

    use super::surrogate as surrogate_fn;

    fn close(got: &[f64], want: &[f64]) {
        assert!(
            got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-5),
            "{got:?} vs {want:?}"
        );
    }

    #[test]
    fn token_clip_uses_the_decoupled_range() {
        // r = 0.5 (A = +1: below 1 − 0.2, but the unclipped term is the larger), r = 1.0
        // (A = −1), r = 1.5 (A = +1: clipped at 1 + 0.28, no gradient), r = 0.7 (A = −1:
        // clipped at 0.8, no gradient).
        let (l, g) = loss_and_grad(
            Surrogate::TokenClip,
            &[0.5, 1.0, 1.5, 0.7],
            &[1.0, -1.0, 1.0, -1.0],
            &[1.0; 4],
        );
        assert!((l - (-0.5 + 1.0 - 1.28 + 0.8)).abs() < 1e-5, "{l}");
        // d(−A·r)/d log π = −A·r where the unclipped term is taken, else 0.
        close(&g, &[-0.5, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn sequence_clip_uses_the_geometric_mean_ratio() {
        // One response, ratios 0.9 and 1.2: s = sqrt(1.08); A = 1; inside [0.8, 1.28].
        let s = 1.08f64.sqrt();
        let (l, g) = loss_and_grad(Surrogate::SequenceClip, &[0.9, 1.2], &[1.0, 1.0], &[1.0; 2]);
        assert!((l - 2.0 * -s).abs() < 1e-5, "{l}");
        // Each token's term is −A·s_t with s_t = sg[s]·π/sg[π]: gradient −A·s on every token.
        close(&g, &[-s, -s]);
        // Ratios 1.5 and 1.5: s = 1.5 is clipped for A > 0: no gradient anywhere.
        let (_, g) = loss_and_grad(Surrogate::SequenceClip, &[1.5, 1.5], &[1.0, 1.0], &[1.0; 2]);
        close(&g, &[0.0, 0.0]);
    }

    #[test]
    fn cispo_clips_the_weight_and_keeps_every_gradient() {
        // Loss −sg[clip(r, 0.8, 1.28)]·A·log π: ratios 1.5 and 0.5 are clipped in the weight
        // only; both tokens keep a gradient −clip(r)·A.
        let (l, g) = loss_and_grad(Surrogate::Cispo, &[1.5, 0.5], &[1.0, 2.0], &[1.0; 2]);
        let want = -(1.28 * 1.5f64.ln()) - 0.8 * 2.0 * 0.5f64.ln();
        assert!((l - want).abs() < 1e-5, "{l} vs {want}");
        close(&g, &[-1.28, -1.6]);
    }

    #[test]
    fn off_policy_weights_scale_each_tokens_term() {
        let (_, g) = loss_and_grad(Surrogate::TokenClip, &[1.0, 1.0], &[1.0, 1.0], &[0.5, 0.0]);
        close(&g, &[-0.5, 0.0]);
    }

    #[test]
    fn the_kl_estimators_follow_their_formulas() {
        let (lp, r) = (-1.0f64, -1.5f64);
        assert!((KlEstimator::K1.per_token(lp, r) - 0.5).abs() < 1e-12);
        assert!((KlEstimator::K2.per_token(lp, r) - 0.125).abs() < 1e-12);
        assert!((KlEstimator::K3.per_token(lp, r) - ((-0.5f64).exp() - 1.0 + 0.5)).abs() < 1e-12);
        let k2 = KlEstimator::K2.estimate(&t(&[-1.0]), &t(&[-1.5]));
        assert!((k2.double_value(&[0, 0]) - 0.125).abs() < 1e-7);
    }

    #[test]
    fn top_k_and_top_p_renormalise_over_what_the_sampler_kept() {
        // Probabilities 0.5, 0.3, 0.15, 0.05.
        let probs = [0.5f64, 0.3, 0.15, 0.05];
        let log_probs = Tensor::from_slice(&probs.map(|p| p.ln() as f32)).view([1, 4]);
        let pick = |token: i64, top_k: usize, top_p: f64| {
            let d = TokenDistribution {
                temperature: 1.0,
                top_k,
                top_p,
            };
            picked_logprobs(&log_probs, &Tensor::from_slice(&[token]), &d).double_value(&[0])
        };
        // Full: the token's own log-prob.
        assert!((pick(1, 0, 1.0) - 0.3f64.ln()).abs() < 1e-6);
        // top_k 2: over {0, 1}, mass 0.8.
        assert!((pick(1, 2, 1.0) - (0.3f64 / 0.8).ln()).abs() < 1e-6);
        // top_p 0.7: 0.5 alone is short of it, {0, 1} reaches it: mass 0.8.
        assert!((pick(0, 0, 0.7) - (0.5f64 / 0.8).ln()).abs() < 1e-6);
        // top_p 0.9 keeps {0, 1, 2} (0.8 before token 2 is below 0.9): mass 0.95.
        assert!((pick(2, 0, 0.9) - (0.15f64 / 0.95).ln()).abs() < 1e-6);
        // A token outside the cut that was drawn anyway stays in the support.
        assert!((pick(3, 1, 1.0) - (0.05f64 / 0.55).ln()).abs() < 1e-6);
    }
}
