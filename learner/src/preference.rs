//! Preference-pair objectives as open-instruct's `dpo_utils` defines them (Tülu 3's DPO stage):
//!
//! - `dpo` (Rafailov et al. 2023): `−log σ(β·((π_c − π_r) − (ref_c − ref_r)))` on summed
//!   sequence log-probabilities, with a frozen reference policy's log-probabilities computed
//!   once before training and cached;
//! - `dpo_norm` (Tülu 3): the same on log-probabilities averaged over each sequence's tokens;
//! - `simpo` (Meng et al. 2024): reference-free, `−log σ(β·(π̄_c − π̄_r − γ/β))` on averaged
//!   log-probabilities, with γ/β given as `gamma_beta_ratio`.
//!
//! The implicit rewards are `β·(π − ref)` (`β·π̄` for SimPO); a pair counts as ranked right when
//! the chosen reward exceeds the rejected one. Losses are averaged over pairs. A reward model
//! (Tülu 3's RM stage) trains on the same pairs with the Bradley–Terry loss `−log σ(r_c − r_r)`
//! on the scalar scores of its value head ([`crate::Learner::reward_step`]).

use tch::{Kind, Tensor};

use crate::model::CausalLm;

/// Which preference loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreferenceLossType {
    /// DPO on summed log-probabilities.
    Dpo,
    /// DPO on length-normalised (mean per token) log-probabilities.
    DpoNorm,
    /// SimPO: reference-free, length-normalised, with a target margin.
    Simpo,
}

/// A preference loss with its coefficients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreferenceLoss {
    /// The variant.
    pub kind: PreferenceLossType,
    /// β.
    pub beta: f64,
    /// SimPO's margin γ as a fraction of β.
    pub gamma_beta_ratio: f64,
}

impl PreferenceLoss {
    /// Whether the loss compares against a reference policy (all but SimPO).
    pub fn uses_reference(&self) -> bool {
        self.kind != PreferenceLossType::Simpo
    }

    /// Whether log-probabilities are averaged over tokens rather than summed.
    pub fn length_normalised(&self) -> bool {
        self.kind != PreferenceLossType::Dpo
    }

    /// Per-pair losses and the chosen and rejected implicit rewards (detached), from the
    /// policy's and the reference's log-probabilities of the chosen and rejected sequences —
    /// already averaged when the loss is length-normalised. The reference is ignored by SimPO.
    pub fn losses(
        &self,
        policy_chosen: &Tensor,
        policy_rejected: &Tensor,
        reference_chosen: &Tensor,
        reference_rejected: &Tensor,
    ) -> (Tensor, Tensor, Tensor) {
        let beta = self.beta;
        match self.kind {
            PreferenceLossType::Dpo | PreferenceLossType::DpoNorm => {
                let logits = (policy_chosen - policy_rejected) - (reference_chosen - reference_rejected);
                let losses = -(logits * beta).log_sigmoid();
                let chosen = ((policy_chosen - reference_chosen) * beta).detach();
                let rejected = ((policy_rejected - reference_rejected) * beta).detach();
                (losses, chosen, rejected)
            }
            PreferenceLossType::Simpo => {
                let logits = (policy_chosen - policy_rejected) - self.gamma_beta_ratio;
                let losses = -(logits * beta).log_sigmoid();
                (
                    losses,
                    (policy_chosen * beta).detach(),
                    (policy_rejected * beta).detach(),
                )
            }
        }
    }
}

/// Bradley–Terry losses of a reward model, `−log σ(r_c − r_r)` per pair.
pub(crate) fn bradley_terry(chosen: &Tensor, rejected: &Tensor) -> Tensor {
    -(chosen - rejected).log_sigmoid()
}

/// Each row's summed log-probability of its labelled tokens (labels shifted against the
/// logits as in language modelling; [`rlvr_core::IGNORE`] positions excluded) and how many
/// labelled tokens it has: `[rows]` and `[rows]`.
pub(crate) fn sequence_logps(model: &CausalLm, input_ids: &Tensor, labels: &Tensor) -> (Tensor, Tensor) {
    sequence_logps_of(model, &model.hidden_states(input_ids), labels)
}

/// [`sequence_logps`] from the model's final hidden states (under ZeRO-3 they come from the
/// unit-by-unit pass, with the head gathered).
pub(crate) fn sequence_logps_of(model: &CausalLm, hidden: &Tensor, labels: &Tensor) -> (Tensor, Tensor) {
    let t = hidden.size()[1];
    let logits = model.logits(hidden).narrow(1, 0, t - 1).to_kind(Kind::Float);
    let targets = labels.narrow(1, 1, t - 1);
    let mask = targets.ne(rlvr_core::IGNORE);
    let safe = targets.where_scalarother(&mask, 0);
    let picked = logits
        .log_softmax(-1, Kind::Float)
        .gather(-1, &safe.unsqueeze(-1), false)
        .squeeze_dim(-1);
    let mask = mask.to_kind(Kind::Float);
    (
        (picked * &mask).sum_dim_intlist(-1, false, Kind::Float),
        mask.sum_dim_intlist(-1, false, Kind::Float),
    )
}

/// What one preference step (or evaluation) measured, averaged over its pairs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PreferenceMetrics {
    /// Optimiser steps taken (after this one).
    pub step: u64,
    /// Mean loss.
    pub loss: f64,
    /// Share of pairs whose chosen reward exceeds the rejected one.
    pub accuracy: f64,
    /// Mean implicit reward of the chosen sequences.
    pub chosen_reward: f64,
    /// Mean implicit reward of the rejected sequences.
    pub rejected_reward: f64,
    /// Mean summed log-probability of the chosen sequences under the policy.
    pub chosen_logp: f64,
    /// Mean summed log-probability of the rejected sequences under the policy.
    pub rejected_logp: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens in the step's sequences (both sides, padding excluded).
    pub tokens: u64,
}

impl PreferenceMetrics {
    /// Add one of `n` micro-batches' metrics: its share of each mean, all of its tokens.
    pub(crate) fn add_share(&mut self, m: &Self, n: f64) {
        self.loss += m.loss / n;
        self.accuracy += m.accuracy / n;
        self.chosen_reward += m.chosen_reward / n;
        self.rejected_reward += m.rejected_reward / n;
        self.chosen_logp += m.chosen_logp / n;
        self.rejected_logp += m.rejected_logp / n;
        self.tokens += m.tokens;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f64]) -> Tensor {
        Tensor::from_slice(v)
    }

    fn logsig(x: f64) -> f64 {
        -(1.0 + (-x).exp()).ln()
    }

    #[test]
    fn losses_follow_their_formulas() {
        let (pc, pr, rc, rr) = (
            t(&[-3.0, -5.0]),
            t(&[-4.0, -2.0]),
            t(&[-3.5, -4.0]),
            t(&[-3.5, -3.0]),
        );
        let dpo = PreferenceLoss {
            kind: PreferenceLossType::Dpo,
            beta: 0.1,
            gamma_beta_ratio: 0.3,
        };
        let (l, c, r) = dpo.losses(&pc, &pr, &rc, &rr);
        // pair 0: (−3 − −4) − (−3.5 − −3.5) = 1; pair 1: (−5 − −2) − (−4 − −3) = −2
        let want = [-logsig(0.1), -logsig(-0.2)];
        for (i, w) in want.iter().enumerate() {
            assert!((l.double_value(&[i as i64]) - w).abs() < 1e-12);
        }
        assert!((c.double_value(&[0]) - 0.05).abs() < 1e-12);
        assert!((r.double_value(&[1]) - 0.1).abs() < 1e-12);
        let simpo = PreferenceLoss {
            kind: PreferenceLossType::Simpo,
            beta: 2.0,
            gamma_beta_ratio: 0.5,
        };
        let (l, c, _) = simpo.losses(&pc, &pr, &rc, &rr);
        // pair 0: β·((−3 − −4) − 0.5) = 1.0
        assert!((l.double_value(&[0]) - -logsig(1.0)).abs() < 1e-12);
        assert!((c.double_value(&[1]) - -10.0).abs() < 1e-12);
        assert!(!simpo.uses_reference() && simpo.length_normalised());
        assert!(dpo.uses_reference() && !dpo.length_normalised());
    }
}
