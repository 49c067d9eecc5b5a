//! The learner's preference-pair steps: DPO-family losses on the policy
//! ([`Learner::preference_step`], with the reference pass [`Learner::sequence_logps`]) and
//! Bradley–Terry training of the value model as a reward model ([`Learner::reward_step`]).

use std::path::Path;

use rlvr_core::{PreferenceBatch, TrainBatch, IGNORE};
use tch::{Kind, Tensor};

use super::Learner;
use crate::error::{LearnerError, Result};
use crate::preference::{self, PreferenceLoss, PreferenceMetrics};

impl Learner {
    /// Each sequence's summed log-probability of its labelled tokens under the current weights,
    /// without gradients: the reference pass of DPO, run once over the data before training
    /// (under ZeRO-3 a collective: every rank calls it, on its own rows).
    pub fn sequence_logps(&self, batch: &TrainBatch) -> Result<Vec<f64>> {
        self.check_tokens(&batch.input_ids, batch.rows, batch.cols)?;
        let input = self.tensor(&batch.input_ids, batch);
        let labels = self.tensor(&batch.labels, batch);
        let sums = match &self.zero {
            Some(cell) => self.model.forward_by_unit(
                &input,
                None,
                |h| preference::sequence_logps_of(&self.model, h, &labels).0,
                &mut *cell.borrow_mut(),
            )?,
            None => tch::no_grad(|| preference::sequence_logps(&self.model, &input, &labels).0),
        };
        Vec::<f64>::try_from(sums.to_kind(Kind::Double)).map_err(|source| LearnerError::Torch {
            context: "reading sequence log-probabilities".into(),
            source,
        })
    }

    /// Check a micro-batch of pairs for `loss`; returns its number of pairs.
    pub(super) fn check_pairs(&self, pb: &PreferenceBatch, loss: &PreferenceLoss) -> Result<usize> {
        let b = &pb.batch;
        self.check_tokens(&b.input_ids, b.rows, b.cols)?;
        let n = pb.pairs();
        if b.rows != 2 * n || n == 0 {
            return Err(LearnerError::Batch(format!(
                "a preference batch needs an even, non-zero number of rows, got {}",
                b.rows
            )));
        }
        if loss.uses_reference() && (pb.reference_chosen.len() != n || pb.reference_rejected.len() != n) {
            return Err(LearnerError::Batch(format!(
                "{n} pairs but {} and {} reference log-probabilities",
                pb.reference_chosen.len(),
                pb.reference_rejected.len()
            )));
        }
        Ok(n)
    }

    /// Loss (mean over pairs) and statistics of a checked micro-batch of pairs, from the
    /// policy's summed log-probabilities and labelled-token counts of its rows.
    pub(super) fn preference_from(
        &self,
        sums: &Tensor,
        counts: &Tensor,
        pb: &PreferenceBatch,
        loss: &PreferenceLoss,
    ) -> (Tensor, PreferenceMetrics) {
        let n = pb.pairs();
        let device = self.config.device;
        let reference =
            Tensor::from_slice(&[pb.reference_chosen.as_slice(), pb.reference_rejected.as_slice()].concat())
                .to_kind(Kind::Float)
                .to_device(device);
        let (policy, reference) = if loss.length_normalised() {
            let counts = counts.clamp_min(1.0);
            let reference = if loss.uses_reference() {
                reference / &counts
            } else {
                reference
            };
            (sums / &counts, reference)
        } else {
            (sums.shallow_clone(), reference)
        };
        let side = |t: &Tensor, i: i64| t.narrow(0, i * n as i64, n as i64);
        let (rc, rr) = if loss.uses_reference() {
            (side(&reference, 0), side(&reference, 1))
        } else {
            let zeros = Tensor::zeros([n as i64], (Kind::Float, device));
            (zeros.shallow_clone(), zeros)
        };
        let (losses, chosen, rejected) = loss.losses(&side(&policy, 0), &side(&policy, 1), &rc, &rr);
        let mean = |t: &Tensor| t.mean(Kind::Double).double_value(&[]);
        let metrics = PreferenceMetrics {
            loss: mean(&losses),
            accuracy: mean(&chosen.gt_tensor(&rejected).to_kind(Kind::Double)),
            chosen_reward: mean(&chosen),
            rejected_reward: mean(&rejected),
            chosen_logp: mean(&side(sums, 0).detach()),
            rejected_logp: mean(&side(sums, 1).detach()),
            tokens: counts.sum(Kind::Double).double_value(&[]) as u64,
            ..PreferenceMetrics::default()
        };
        (losses.mean(Kind::Float), metrics)
    }

    /// Loss of one micro-batch of pairs (mean over pairs) with its statistics.
    fn preference_loss(
        &self,
        pb: &PreferenceBatch,
        loss: &PreferenceLoss,
    ) -> Result<(Tensor, PreferenceMetrics)> {
        self.check_pairs(pb, loss)?;
        let b = &pb.batch;
        let (sums, counts) = preference::sequence_logps(
            &self.model,
            &self.tensor(&b.input_ids, b),
            &self.tensor(&b.labels, b),
        );
        Ok(self.preference_from(&sums, &counts, pb, loss))
    }

    /// One optimiser step on preference pairs (gradient accumulation over `micro_batches`, each
    /// checkpointed layer by layer when gradient checkpointing is on); metrics are averaged
    /// over the micro-batches and, over several ranks (data-parallel or ZeRO-3, each stepping
    /// on its own pairs), over the ranks.
    pub fn preference_step(
        &mut self,
        micro_batches: &[PreferenceBatch],
        loss: &PreferenceLoss,
    ) -> Result<PreferenceMetrics> {
        self.check_offload()?;
        if self.zero.is_some() {
            return self.sharded_preference_step(micro_batches, loss);
        }
        let n = micro_batches.len().max(1) as f64;
        self.opt.zero_grad();
        let mut sum = PreferenceMetrics::default();
        for b in micro_batches {
            if self.gradient_checkpointing {
                self.check_pairs(b, loss)?;
                let mut m = PreferenceMetrics::default();
                let input = self.tensor(&b.batch.input_ids, &b.batch);
                let pair_loss = self.pair_loss(b, loss, n, &mut m);
                let _loss = self.model.backward_checkpointed(&input, None, pair_loss);
                sum.add_share(&m, n);
                continue;
            }
            let (l, m) = self.preference_loss(b, loss)?;
            (l / n).backward();
            sum.add_share(&m, n);
        }
        self.average_grads()?;
        let mut sum = super::parallel::preference_over(self.group.as_ref(), self.config.device, sum)?;
        sum.grad_norm = self.opt.clip_grad_norm(self.config.max_grad_norm);
        sum.lr = self.config.schedule.lr(self.opt.steps_taken());
        self.opt.step(sum.lr);
        sum.step = self.opt.steps_taken();
        Ok(sum)
    }

    /// Preference metrics of `batch` without updating anything (held-out pairs).
    pub fn preference_eval(
        &self,
        batch: &PreferenceBatch,
        loss: &PreferenceLoss,
    ) -> Result<PreferenceMetrics> {
        if self.zero.is_some() {
            return self.sharded_preference_eval(batch, loss);
        }
        tch::no_grad(|| self.preference_loss(batch, loss).map(|(_, m)| m))
    }

    /// The value model's reward for the chosen and the rejected side of each pair, the
    /// Bradley–Terry loss `−log σ(r_c − r_r)` (mean over pairs) and its statistics. Under
    /// ZeRO-3 a collective, without gradients.
    fn reward_loss(&self, pb: &PreferenceBatch) -> Result<(Tensor, PreferenceMetrics)> {
        let critic = self.critic.as_ref().ok_or(LearnerError::Missing("value model"))?;
        let last = self.reward_rows(pb)?;
        let input = self.tensor(&pb.batch.input_ids, &pb.batch);
        let scores = match &critic.model.shards {
            Some(_) => critic.model.sequence_scores_by_unit(&input, &last)?,
            None => critic.model.sequence_scores(&input, &last),
        };
        Ok(reward_from_scores(&scores, pb))
    }

    /// Check a batch of pairs for the reward model; each row's last labelled position (the
    /// EOS that ends the answer), where it is scored.
    fn reward_rows(&self, pb: &PreferenceBatch) -> Result<Tensor> {
        let b = &pb.batch;
        self.check_tokens(&b.input_ids, b.rows, b.cols)?;
        let n = pb.pairs();
        if b.rows != 2 * n || n == 0 {
            return Err(LearnerError::Batch(format!(
                "a preference batch needs an even, non-zero number of rows, got {}",
                b.rows
            )));
        }
        let last: Vec<i64> = b
            .labels
            .chunks(b.cols)
            .map(|row| row.iter().rposition(|&l| l != IGNORE).unwrap_or(b.cols - 1) as i64)
            .collect();
        Ok(Tensor::from_slice(&last).to_device(self.config.device))
    }

    /// One optimiser step of the value model as a reward model on preference pairs
    /// (Bradley–Terry; gradient accumulation over `micro_batches`, each checkpointed layer by
    /// layer when gradient checkpointing is on), at the policy's schedule.
    /// Needs [`Learner::attach_critic`] first.
    pub fn reward_step(&mut self, micro_batches: &[PreferenceBatch]) -> Result<PreferenceMetrics> {
        self.check_offload()?;
        let n = micro_batches.len().max(1) as f64;
        let critic = self.critic.as_mut().ok_or(LearnerError::Missing("value model"))?;
        critic.zero_grad();
        let mut sum = PreferenceMetrics::default();
        for b in micro_batches {
            let m = match (&self.critic, self.gradient_checkpointing) {
                // Unit by unit over ZeRO-3 shards, or layer by layer with checkpointing.
                (Some(critic), checkpointed) if checkpointed || critic.model.shards.is_some() => {
                    let last = self.reward_rows(b)?;
                    let mut m = PreferenceMetrics::default();
                    let input = self.tensor(&b.batch.input_ids, &b.batch);
                    let mut loss = |scores: &Tensor| {
                        let (l, metrics) = reward_from_scores(scores, b);
                        m = metrics;
                        l / n
                    };
                    let _loss = match &critic.model.shards {
                        Some(_) => critic.model.backward_scores_by_unit(&input, &last, loss)?,
                        None => critic
                            .model
                            .backward_checkpointed(&input, |h| loss(&critic.model.scores_at(h, &last))),
                    };
                    m
                }
                _ => {
                    let (l, m) = self.reward_loss(b)?;
                    (l / n).backward();
                    m
                }
            };
            sum.loss += m.loss / n;
            sum.accuracy += m.accuracy / n;
            sum.chosen_reward += m.chosen_reward / n;
            sum.rejected_reward += m.rejected_reward / n;
            sum.tokens += m.tokens;
        }
        let (max_norm, schedule, device) = (
            self.config.max_grad_norm,
            self.config.schedule,
            self.config.device,
        );
        let mut sum = match self.with_group(|g| super::parallel::preference_over(Some(g), device, sum)) {
            Some(over_ranks) => over_ranks?,
            None => sum,
        };
        let critic = self.critic.as_mut().ok_or(LearnerError::Missing("value model"))?;
        // Only the value model trains here: its gradients alone are averaged over
        // data-parallel ranks (ZeRO-3 averaged them as it reduced them).
        if let Some(group) = &self.group {
            critic.opt.average_grads(group)?;
        }
        sum.lr = schedule.lr(critic.steps_taken());
        sum.grad_norm = critic.step(max_norm, sum.lr)?;
        sum.step = critic.steps_taken();
        Ok(sum)
    }

    /// Reward-model metrics of `batch` without updating anything (held-out pairs); under
    /// ZeRO-3 a collective.
    pub fn reward_eval(&self, batch: &PreferenceBatch) -> Result<PreferenceMetrics> {
        tch::no_grad(|| self.reward_loss(batch).map(|(_, m)| m))
    }

    /// Save the value model as a Hugging Face reward model (`LlamaForSequenceClassification`,
    /// one label), loadable as PPO's `rlvr.reward_model_path`. Under ZeRO-3 a collective
    /// (rank 0 writes).
    pub fn save_reward_model(&self, dir: &Path) -> Result<()> {
        self.critic
            .as_ref()
            .ok_or(LearnerError::Missing("value model"))?
            .model
            .save(dir)
    }
}

/// The Bradley–Terry loss (mean over pairs) of a reward model's `scores` of `pb`'s rows (the
/// chosen sides first), with its statistics.
fn reward_from_scores(scores: &Tensor, pb: &PreferenceBatch) -> (Tensor, PreferenceMetrics) {
    let n = pb.pairs() as i64;
    let (chosen, rejected) = (scores.narrow(0, 0, n), scores.narrow(0, n, n));
    let losses = preference::bradley_terry(&chosen, &rejected);
    let mean = |t: &Tensor| t.mean(Kind::Double).double_value(&[]);
    let metrics = PreferenceMetrics {
        loss: mean(&losses),
        accuracy: mean(&chosen.gt_tensor(&rejected).to_kind(Kind::Double)),
        chosen_reward: mean(&chosen.detach()),
        rejected_reward: mean(&rejected.detach()),
        tokens: pb.batch.loss_tokens() as u64,
        ..PreferenceMetrics::default()
    };
    (losses.mean(Kind::Float), metrics)
}
