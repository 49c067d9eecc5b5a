//! RL on the learner: scoring responses (the frozen reference's log-probs, the value model's
//! estimates, a reward model's score), the policy's own log-probs, and policy-gradient steps.
//! Policy steps and log-probs also run over ZeRO-3 shards, where the model runs unit by unit
//! on one full sequence per response ([`Flat`]); gradient checkpointing uses the same layout.
//! Over several ranks (ZeRO-3 or data-parallel) each rank steps on its own responses, and the
//! step's response and token counts, which weigh each token in the loss, are the group's.

use rlvr_core::PolicyBatch;
use rlvr_dist::ReduceOp;
use tch::Tensor;

use std::cell::RefCell;

use super::parallel::sums_over;
use super::{host_f32s, Learner, Reference};
use crate::error::{LearnerError, Result};
use crate::model::CausalLm;
use crate::policy::{self, Flat, LossInputs, PolicyLoss, PolicyMetrics, Sums, TokenDistribution, Tokens};
use crate::zero::Zero3;

/// What [`Learner::score`] says of a batch of responses.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchScores {
    /// Log-probs under the frozen reference, `[rows, cols]` row-major (zeros without one).
    pub reference: Vec<f32>,
    /// The value model's estimates, `[rows, cols]` (zeros without one).
    pub values: Vec<f32>,
    /// The reward model's score of each row, when one is attached.
    pub rewards: Option<Vec<f32>>,
}

/// One micro-batch's part of a policy step.
#[derive(Default)]
struct MicroStep {
    loss: f64,
    sums: Sums,
    vf_loss: f64,
    vf_clipped: f64,
}

impl Learner {
    /// For each row of `batch`: the frozen reference's log-probs of `distribution` (zeros
    /// without a reference) and the value model's estimates (zeros without one), aligned with
    /// its tokens; and the reward model's score of the whole response, when one is attached.
    /// What per-token rewards with a KL term, PPO's advantages and a learned reward are built
    /// from. Under ZeRO-3 a collective: every rank calls it, each with its own batch.
    pub fn score(&self, batch: &PolicyBatch, distribution: &TokenDistribution) -> Result<BatchScores> {
        self.check_policy_batch(batch)?;
        let device = self.config.device;
        let zeros = || vec![0.0; batch.rows * batch.cols];
        let lens: Vec<i64> = batch
            .mask
            .chunks(batch.cols)
            .map(|row| row.iter().filter(|&&m| m > 0.0).count().max(1) as i64)
            .collect();
        let lens = Tensor::from_slice(&lens).to_device(device);
        if self.zero.is_some() {
            let flat = Flat::new(batch, device);
            let reference = match &self.reference {
                Some(r) => host_f32s(logprobs_by_unit(&r.model, &flat, distribution, r.shards()?)?)?,
                None => zeros(),
            };
            let values = match &self.critic {
                Some(c) => host_f32s(c.model.values_by_unit(&flat)?)?,
                None => zeros(),
            };
            let rewards = match &self.reward_model {
                Some(m) => Some(host_f32s(m.response_scores_by_unit(&flat, &lens)?)?),
                None => None,
            };
            return Ok(BatchScores {
                reference,
                values,
                rewards,
            });
        }
        let tokens = Tokens::new(batch, device);
        tch::no_grad(|| {
            let reference = match &self.reference {
                Some(r) => host_f32s(policy::token_logprobs(&r.model, &tokens, distribution).0)?,
                None => zeros(),
            };
            let values = match &self.critic {
                Some(c) => host_f32s(c.model.values(&tokens))?,
                None => zeros(),
            };
            let rewards = match &self.reward_model {
                Some(m) => Some(host_f32s(m.response_scores(&tokens, &lens))?),
                None => None,
            };
            Ok(BatchScores {
                reference,
                values,
                rewards,
            })
        })
    }

    /// Log-probs of `distribution` of each response token of `batch` under the policy as it
    /// stands (no gradient), row by row aligned with its tokens: the proximal policy of an
    /// off-policy correction, and what the train/rollout mismatch is measured against. Under
    /// ZeRO-3 a collective (every rank calls it, each with its own batch).
    pub fn logprobs(&self, batch: &PolicyBatch, distribution: &TokenDistribution) -> Result<Vec<f32>> {
        self.check_policy_batch(batch)?;
        let Some(cell) = &self.zero else {
            let tokens = Tokens::new(batch, self.config.device);
            return tch::no_grad(|| host_f32s(policy::token_logprobs(&self.model, &tokens, distribution).0));
        };
        let flat = Flat::new(batch, self.config.device);
        host_f32s(logprobs_by_unit(&self.model, &flat, distribution, cell)?)
    }

    pub(super) fn check_policy_batch(&self, b: &PolicyBatch) -> Result<()> {
        if b.groups == 0 || b.prompt_cols == 0 || b.cols == 0 {
            return Err(LearnerError::Batch(format!(
                "{} prompts of {} positions, {} responses of {}: need prompts and response tokens",
                b.groups, b.prompt_cols, b.rows, b.cols
            )));
        }
        let sizes_match = b.prompt_ids.len() == b.groups * b.prompt_cols
            && b.prompt_real.len() == b.prompt_ids.len()
            && b.response_ids.len() == b.rows * b.cols
            && b.mask.len() == b.response_ids.len()
            && b.group_of.len() == b.rows
            && b.group_of.iter().all(|&g| g >= 0 && (g as usize) < b.groups);
        if !sizes_match {
            return Err(LearnerError::Batch(
                "policy batch arrays do not match its shape".into(),
            ));
        }
        self.check_vocab(&b.prompt_ids)?;
        self.check_vocab(&b.response_ids)
    }

    /// One policy-gradient optimiser step over `micro_batches`: the loss's surrogate weighted
    /// by each token's off-policy weight (and β·KL to the reference, when one is frozen and
    /// β > 0), aggregated as the loss says, then clip and AdamW as in [`Learner::train_step`].
    /// Over several ranks a collective: each rank brings its own micro-batches, and the step
    /// is the one a single learner takes on all of them.
    pub fn policy_step(&mut self, micro_batches: &[PolicyBatch], loss: &PolicyLoss) -> Result<PolicyMetrics> {
        self.check_offload()?;
        for b in micro_batches {
            self.check_policy_batch(b)?;
        }
        let local_rows: usize = micro_batches.iter().map(|b| b.rows).sum();
        let local_tokens: usize = micro_batches.iter().map(PolicyBatch::response_tokens).sum();
        let world = self.with_group(|g| g.world_size()).unwrap_or(1);
        let counts = self.summed(&[local_rows as f64, local_tokens as f64])?;
        let (rows, tokens) = (counts[0] as usize, counts[1] as usize);
        if tokens == 0 {
            return Err(LearnerError::Batch("a policy step needs response tokens".into()));
        }
        match &self.zero {
            Some(z) => z.borrow_mut().zero_grad(),
            None => self.opt.zero_grad(),
        }
        if let Some(c) = &mut self.critic {
            c.zero_grad();
        }
        let mut total = MicroStep::default();
        for b in micro_batches {
            // The gradients are averaged over the ranks; each rank's share is scaled up so
            // the average is the whole step's sum.
            let m = self.policy_micro_step(b, loss, rows, tokens, world as f64)?;
            total.loss += m.loss;
            total.vf_loss += m.vf_loss;
            total.vf_clipped += m.vf_clipped;
            total.sums.add(&m.sums);
        }
        let s = &total.sums;
        let summed = self.summed(&[
            total.loss,
            s.pg_loss,
            s.kl,
            s.clipped,
            s.ratio,
            s.entropy,
            s.abs_log_ratio,
            s.approx_kl,
            total.vf_loss,
            total.vf_clipped,
        ])?;
        let max_abs_log_ratio = self.max_over_ranks(s.max_abs_log_ratio)?;
        let (step, grad_norm, lr) = match &self.zero {
            Some(cell) => {
                let mut z = cell.borrow_mut();
                let grad_norm = z.clip_grad_norm(self.config.max_grad_norm)?;
                let lr = self.config.schedule.lr(z.steps_taken());
                z.step(lr)?;
                (z.steps_taken(), grad_norm, lr)
            }
            None => {
                self.average_grads()?;
                let grad_norm = self.opt.clip_grad_norm(self.config.max_grad_norm);
                let lr = self.config.schedule.lr(self.opt.steps_taken());
                self.opt.step(lr);
                (self.opt.steps_taken(), grad_norm, lr)
            }
        };
        if let Some(c) = &mut self.critic {
            c.step(self.config.max_grad_norm, lr)?;
        }
        let n = tokens as f64;
        // The sums of the statistics over the step's tokens, as means. The loss is the step's
        // already (each token weighed by the aggregation), each rank's scaled by the world
        // size for its gradients.
        let per = |i: usize| summed[i] / n;
        Ok(PolicyMetrics {
            step,
            loss: summed[0] / world as f64,
            pg_loss: per(1),
            kl: per(2),
            clipfrac: per(3),
            ratio: per(4),
            max_abs_log_ratio,
            mean_abs_log_ratio: per(6),
            approx_kl: per(7),
            entropy: per(5),
            vf_loss: per(8),
            vf_clipfrac: per(9),
            grad_norm,
            lr,
            tokens: tokens as u64,
        })
    }

    /// The sums of `values` over the ranks the learner trains over (the values themselves on
    /// one rank).
    fn summed(&self, values: &[f64]) -> Result<Vec<f64>> {
        let device = self.config.device;
        self.with_group(|g| sums_over(Some(g), device, values))
            .unwrap_or_else(|| Ok(values.to_vec()))
    }

    /// The largest `value` over the ranks.
    fn max_over_ranks(&self, value: f64) -> Result<f64> {
        let mut t = Tensor::from_slice(&[value]).to_device(self.config.device);
        if let Some(reduced) = self.with_group(|g| g.all_reduce(&mut t, ReduceOp::Max)) {
            reduced?;
        }
        Ok(t.double_value(&[0]))
    }

    /// Forward and backward of one micro-batch of a policy step whose `rows` responses hold
    /// `tokens` response tokens over all ranks, its loss scaled by `scale`.
    fn policy_micro_step(
        &self,
        b: &PolicyBatch,
        loss: &PolicyLoss,
        rows: usize,
        tokens: usize,
        scale: f64,
    ) -> Result<MicroStep> {
        let shape = [b.rows as i64, b.cols as i64];
        let dev = self.config.device;
        let f32s = |v: &[f32]| Tensor::from_slice(v).view(shape).to_device(dev);
        // Each response token's weight in the step's loss.
        let weights: Vec<f32> = b
            .mask
            .chunks(b.cols.max(1))
            .flat_map(|row| {
                let len = row.iter().filter(|&&m| m > 0.0).count();
                let w = loss.aggregation.weight(len, rows, tokens) as f32;
                row.iter().map(move |&m| m * w)
            })
            .collect();
        let input = Tokens::new(b, dev);
        let flat = (self.zero.is_some() || self.gradient_checkpointing).then(|| Flat::new(b, dev));
        let reference = match (&self.reference, &flat) {
            _ if loss.beta <= 0.0 => None,
            (
                Some(Reference {
                    model,
                    shards: Some(cell),
                }),
                Some(flat),
            ) => Some(logprobs_by_unit(model, flat, &loss.distribution, cell)?),
            (Some(r), _) => Some(tch::no_grad(|| {
                policy::token_logprobs(&r.model, &input, &loss.distribution).0
            })),
            (None, _) => None,
        };
        let (old_logprobs, advantages, mask) = (f32s(&b.old_logprobs), f32s(&b.advantages), f32s(&b.mask));
        let (weights, is_weights) = (f32s(&weights), f32s(&b.is_weights));
        let mut out = MicroStep::default();
        let mut surrogate = |logprobs: &Tensor, entropy: &Tensor| {
            let inputs = LossInputs {
                logprobs,
                entropy,
                old_logprobs: &old_logprobs,
                advantages: &advantages,
                mask: &mask,
                weights: &weights,
                is_weights: &is_weights,
                ref_logprobs: reference.as_ref(),
            };
            let (l, sums) = policy::surrogate(&inputs, loss);
            out.sums = sums;
            l * scale
        };
        // The loss from the final hidden states of the flat layout.
        let mut flat_loss = |flat: &Flat, h: &Tensor| {
            let states = flat.response_states(h);
            let (lp, entropy) =
                policy::logprobs_of_states(&self.model, &states, flat.responses(), &loss.distribution);
            surrogate(&lp, &entropy)
        };
        let pg = match (&self.zero, &flat) {
            (Some(cell), Some(flat)) => self.model.backward_by_unit(
                flat.input_ids(),
                Some(flat.documents()),
                |h| flat_loss(flat, h),
                &mut *cell.borrow_mut(),
            )?,
            (None, Some(flat)) => {
                self.model
                    .backward_checkpointed(flat.input_ids(), Some(flat.documents()), |h| flat_loss(flat, h))
            }
            (_, None) => {
                let (lp, entropy) = policy::token_logprobs(&self.model, &input, &loss.distribution);
                let l = surrogate(&lp, &entropy);
                l.backward();
                l.detach()
            }
        };
        out.loss = pg.double_value(&[]);
        if let Some(c) = &self.critic {
            let (old_values, returns) = (f32s(&b.old_values), f32s(&b.returns));
            // The value loss is a mean over the step's response tokens.
            let coef = loss.vf_coef / tokens as f64 * scale;
            let mut value_loss = |values: &Tensor| {
                let (vf, took) = policy::value_loss(values, &old_values, &returns, &mask, loss.value_clip);
                out.vf_loss = vf.double_value(&[]);
                out.vf_clipped = took;
                vf * coef
            };
            let l = match (&c.model.shards, &flat) {
                (Some(_), Some(flat)) => c.model.backward_values_by_unit(flat, value_loss)?,
                _ => {
                    let l = value_loss(&c.model.values(&input));
                    l.backward();
                    l.detach()
                }
            };
            out.loss += l.double_value(&[]);
        }
        Ok(out)
    }
}

/// Log-probs `[rows, cols]` of `distribution` of each response token of `flat` under `model`,
/// run unit by unit over its ZeRO-3 `shards` (a collective; no gradient).
fn logprobs_by_unit(
    model: &CausalLm,
    flat: &Flat,
    distribution: &TokenDistribution,
    shards: &RefCell<Zero3>,
) -> Result<Tensor> {
    model.forward_by_unit(
        flat.input_ids(),
        Some(flat.documents()),
        |h| policy::logprobs_of_states(model, &flat.response_states(h), flat.responses(), distribution).0,
        &mut *shards.borrow_mut(),
    )
}
