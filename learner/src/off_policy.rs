//! Off-policy correction, on plain numbers. A response is sampled by the behaviour policy μ (the
//! rollout engine: its weights, which may be versions behind, and its kernels); the learner
//! trains the proximal policy π_old (its own weights when the step began). The per-token ratio
//! `ρ = π_old / μ` is what the PPO ratio to μ would have to carry; a [`Correction`] turns it into
//! a bounded weight on each token's loss, and [`Mismatch`] measures how far apart the two are.

use serde::Serialize;

use crate::policy::PolicyMetrics;

/// How the behaviour/proximal ratio `ρ` of each token weighs its loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Correction {
    /// No correction: the PPO ratio is taken to the behaviour log-probs (today's Tülu 3 and
    /// GRPO form, exact when the engine and the learner agree).
    None,
    /// Truncated importance sampling: weight `min(ρ, cap)` (Yao et al., "Your efficient RL
    /// framework secretly brings you off-policy RL training").
    Tis {
        /// The cap C.
        cap: f64,
    },
    /// IcePop: weight `ρ` where `low ≤ ρ ≤ high`, 0 (the token masked) elsewhere.
    IcePop {
        /// Lower bound a.
        low: f64,
        /// Upper bound b.
        high: f64,
    },
    /// Sequence-level masking: a response whose geometric-mean ratio `exp(mean_t log ρ_t)`
    /// falls outside `[low, high]` is masked whole; the others weigh 1.
    SequenceMask {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
    },
}

impl Correction {
    /// Each token's weight for one response, from its proximal and behaviour log-probs.
    pub fn weights(self, proximal: &[f32], behaviour: &[f32]) -> Vec<f32> {
        let log_ratio = proximal
            .iter()
            .zip(behaviour)
            .map(|(&p, &b)| f64::from(p) - f64::from(b));
        match self {
            Self::None => vec![1.0; proximal.len()],
            Self::Tis { cap } => log_ratio.map(|l| l.exp().min(cap) as f32).collect(),
            Self::IcePop { low, high } => log_ratio
                .map(|l| {
                    let rho = l.exp();
                    if (low..=high).contains(&rho) {
                        rho as f32
                    } else {
                        0.0
                    }
                })
                .collect(),
            Self::SequenceMask { low, high } => {
                let n = proximal.len().max(1) as f64;
                let geometric = (log_ratio.sum::<f64>() / n).exp();
                let keep = (low..=high).contains(&geometric);
                vec![f32::from(u8::from(keep)); proximal.len()]
            }
        }
    }

    /// True when the correction uses the proximal policy (the learner's own log-probs).
    pub fn is_active(self) -> bool {
        self != Self::None
    }
}

/// How far the learner's policy is from the one that sampled, over a step's response tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Mismatch {
    /// Largest `|log π_old − log μ|` of any token.
    pub max_abs_logprob_diff: f64,
    /// Mean `|log π_old − log μ|` per token.
    pub mean_abs_logprob_diff: f64,
    /// KL(μ ‖ π_old) per token, estimated on μ's samples with Schulman's non-negative `k3`
    /// form `ρ − 1 − log ρ`.
    pub kl: f64,
    /// Share of tokens whose weight is not their ratio ρ: capped (TIS) or masked (IcePop,
    /// sequence masking). 0 without a correction.
    pub corrected_fraction: f64,
    /// Tokens measured.
    pub tokens: u64,
}

impl Mismatch {
    /// Measure one step's responses: `(proximal, behaviour)` log-probs of each, and the weights
    /// `correction` gave them.
    pub fn measure<'a>(
        responses: impl IntoIterator<Item = (&'a [f32], &'a [f32])>,
        correction: Correction,
    ) -> Self {
        let mut m = Self::default();
        let (mut abs_sum, mut kl_sum, mut corrected) = (0.0, 0.0, 0u64);
        for (proximal, behaviour) in responses {
            let weights = correction.weights(proximal, behaviour);
            for ((&p, &b), &w) in proximal.iter().zip(behaviour).zip(&weights) {
                let log_ratio = f64::from(p) - f64::from(b);
                m.max_abs_logprob_diff = m.max_abs_logprob_diff.max(log_ratio.abs());
                abs_sum += log_ratio.abs();
                kl_sum += log_ratio.exp() - 1.0 - log_ratio;
                let rho = log_ratio.exp() as f32;
                if correction.is_active() && (w - rho).abs() > f32::EPSILON * rho.abs().max(1.0) {
                    corrected += 1;
                }
                m.tokens += 1;
            }
        }
        let n = m.tokens.max(1) as f64;
        m.mean_abs_logprob_diff = abs_sum / n;
        m.kl = kl_sum / n;
        m.corrected_fraction = corrected as f64 / n;
        m
    }
}

impl Mismatch {
    /// The mismatch as the first optimiser step of an RL step saw it, when its ratio was taken
    /// to the behaviour log-probs (no correction): before that step's update the policy is the
    /// proximal one, so its log-ratio statistics are the mismatch, over its mini-batch, at no
    /// extra forward pass.
    pub fn from_first_step(first: &PolicyMetrics) -> Self {
        Self {
            max_abs_logprob_diff: first.max_abs_log_ratio,
            mean_abs_logprob_diff: first.mean_abs_log_ratio,
            kl: first.approx_kl,
            corrected_fraction: 0.0,
            tokens: first.tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ln(x: f64) -> f32 {
        x.ln() as f32
    }

    #[test]
    fn each_correction_follows_its_formula() {
        // ρ = 0.25, 1, 3 on three tokens (behaviour log-probs 0, proximal ln ρ).
        let proximal = [ln(0.25), 0.0, ln(3.0)];
        let behaviour = [0.0f32; 3];
        let close = |got: Vec<f32>, want: [f64; 3]| {
            for (g, w) in got.iter().zip(want) {
                assert!((f64::from(*g) - w).abs() < 1e-6, "{got:?} vs {want:?}");
            }
        };
        close(Correction::None.weights(&proximal, &behaviour), [1.0, 1.0, 1.0]);
        close(
            Correction::Tis { cap: 2.0 }.weights(&proximal, &behaviour),
            [0.25, 1.0, 2.0],
        );
        let icepop = Correction::IcePop { low: 0.5, high: 2.0 };
        close(icepop.weights(&proximal, &behaviour), [0.0, 1.0, 0.0]);
        // Geometric mean (0.25 · 1 · 3)^(1/3) = 0.909: kept by [0.5, 2], masked by [0.95, 2].
        let kept = Correction::SequenceMask { low: 0.5, high: 2.0 };
        close(kept.weights(&proximal, &behaviour), [1.0, 1.0, 1.0]);
        let masked = Correction::SequenceMask { low: 0.95, high: 2.0 };
        close(masked.weights(&proximal, &behaviour), [0.0, 0.0, 0.0]);
    }

    #[test]
    fn mismatch_reports_the_per_token_maximum_the_mean_the_kl_and_what_was_corrected() {
        let (p1, b1) = ([ln(0.25), 0.0], [0.0f32, 0.0]);
        let (p2, b2) = ([ln(3.0)], [0.0f32]);
        let responses = [(&p1[..], &b1[..]), (&p2[..], &b2[..])];
        let m = Mismatch::measure(responses, Correction::Tis { cap: 2.0 });
        assert_eq!(m.tokens, 3);
        assert!((m.max_abs_logprob_diff - 4f64.ln()).abs() < 1e-6);
        assert!((m.mean_abs_logprob_diff - (4f64.ln() + 3f64.ln()) / 3.0).abs() < 1e-6);
        let kl = (0.25 - 1.0 - 0.25f64.ln()) + (3.0 - 1.0 - 3f64.ln());
        assert!((m.kl - kl / 3.0).abs() < 1e-6, "{m:?}");
        // Only ρ = 3 is capped.
        assert!((m.corrected_fraction - 1.0 / 3.0).abs() < 1e-9);
        let none = Mismatch::measure(responses, Correction::None);
        assert_eq!(none.corrected_fraction, 0.0);
        // Identical policies: no mismatch at all.
        let same = Mismatch::measure([(&p1[..], &p1[..])], Correction::IcePop { low: 0.5, high: 2.0 });
        assert_eq!(
            (same.max_abs_logprob_diff, same.kl, same.corrected_fraction),
            (0.0, 0.0, 0.0)
        );
    }
}
