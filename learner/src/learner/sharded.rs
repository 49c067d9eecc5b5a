//! The learner under ZeRO-3 ([`crate::zero`]): language-model and preference-pair (DPO-family)
//! steps and evaluation (and RL policy steps, in [`super::rl`]) run the model one parameter unit
//! at a time, gathering each unit from its shards; saving, exporting and visiting the weights
//! gather them the same way, one unit at a time (an export then holds the whole model in rank
//! 0's host memory; a visit holds nothing past the unit). Checkpoints hold the whole
//! model (written by rank 0) and one file per rank of its slices and optimiser state,
//! `optimizer-rank{R}-of-{N}.safetensors` (and `value-rank{R}-of-{N}.safetensors` for PPO's
//! value model), which a resume on the same world size reads alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rlvr_core::{PreferenceBatch, StepMetrics, TrainBatch};
use rlvr_dist::ProcessGroup;
use tch::{Kind, Tensor};

use std::cell::RefCell;

use super::{Learner, LearnerConfig, Objective};
use crate::checkpoint;
use crate::error::{LearnerError, Result};
use crate::model::CausalLm;
use crate::optim::AdamW;
use crate::preference::{self, PreferenceLoss, PreferenceMetrics};
use crate::zero::{ShardMemory, Training, Zero3};

impl Learner {
    /// Train with ZeRO-3 over `group`: from here on this rank holds only its shard of the
    /// parameters, gradients and AdamW state (every rank must start from the same weights, and
    /// steps on its own share of the batch, as with [`Learner::set_data_parallel`]). Language
    /// model, preference-pair and RL policy steps (and the policy's log-probs); call before the
    /// first step, in f32 or after [`Learner::set_bf16`], with no reference, value or reward
    /// model attached.
    pub fn set_zero3(&mut self, group: ProcessGroup) -> Result<()> {
        if self.opt.steps_taken() > 0
            || self.critic.is_some()
            || self.reference.is_some()
            || self.reward_model.is_some()
            || self.group.is_some()
        {
            return Err(LearnerError::Order(
                "ZeRO-3 is set before the first step, without data parallelism, a reference, a value or a reward model",
            ));
        }
        let vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        let zero = Zero3::new(self.model.units(), &vars, Arc::new(group), Some(self.training()))?;
        // The whole-model optimiser state goes: the shards hold it now.
        self.opt = AdamW::new(Vec::new(), self.config.adamw);
        self.zero = Some(RefCell::new(zero));
        Ok(())
    }

    /// A model loaded from a Hugging Face directory straight into ZeRO-3 shards over `group`:
    /// each rank reads one parameter unit at a time from the checkpoint, keeps its slice and
    /// lets the unit go, so it never holds the whole model (its peak is its slices and one
    /// unit). Equal to [`Learner::from_pretrained`] then [`Learner::set_zero3`].
    pub fn from_pretrained_zero3(dir: &Path, config: LearnerConfig, group: ProcessGroup) -> Result<Self> {
        let model_config = checkpoint::read_config(dir)?;
        let vs = Self::store(&config);
        // Allocated and left unset: pages nobody writes take no memory.
        let model = CausalLm::for_loading(&vs.root(), &model_config);
        let vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        let matched = checkpoint::Matched::dir(&vars, dir)?;
        let zero = Zero3::loading(
            model.units(),
            &vars,
            Arc::new(group),
            Some(Training {
                adamw: config.adamw,
                offload: config.offload_optimizer,
            }),
            |_, unit| matched.read(unit),
        )?;
        // Each unit was read whole, sliced and released: 0.6 GB of freed pages at
        // SmolLM2-135M that the pass's buffers do not reuse (BENCHMARKS.md, "Sharded loading").
        crate::runtime::return_freed_memory();
        // The whole-model optimiser state is the shards'.
        let opt = AdamW::new(Vec::new(), config.adamw);
        Ok(Self::assemble(vs, model, opt, config, Some(zero)))
    }

    /// Whether this learner holds ZeRO-3 shards (saving and evaluating are then collectives).
    pub fn is_sharded(&self) -> bool {
        self.zero.is_some()
    }

    /// The shards, for the ZeRO-3 paths.
    fn shards(&self) -> Result<&RefCell<Zero3>> {
        self.zero.as_ref().ok_or(LearnerError::Order("no ZeRO-3 shards"))
    }

    /// How the learner's sharded models train.
    pub(super) fn training(&self) -> Training {
        Training {
            adamw: self.config.adamw,
            offload: self.config.offload_optimizer,
        }
    }

    /// Refuse an offloaded optimiser without ZeRO-3 shards to offload.
    pub(super) fn check_offload(&self) -> Result<()> {
        match self.config.offload_optimizer && self.zero.is_none() {
            true => Err(LearnerError::Order(
                "offload_optimizer offloads ZeRO-3 shards: set ZeRO-3 first, or leave it off",
            )),
            false => Ok(()),
        }
    }

    /// Refuse what ZeRO-3 does not run yet.
    pub(super) fn unsharded(&self, what: &'static str) -> Result<()> {
        match self.zero {
            Some(_) => Err(LearnerError::Order(what)),
            None => Ok(()),
        }
    }

    /// [`Learner::train_step`] under ZeRO-3.
    pub(super) fn sharded_train_step(
        &mut self,
        micro_batches: &[TrainBatch],
        objective: Objective,
    ) -> Result<StepMetrics> {
        let cell = self.shards()?;
        let mut z = cell.borrow_mut();
        let n = micro_batches.len().max(1) as f64;
        z.zero_grad();
        let (mut loss_sum, mut tokens) = (0.0, 0);
        for b in micro_batches {
            self.check_tokens(&b.input_ids, b.rows, b.cols)?;
            let input = self.tensor(&b.input_ids, b);
            let docs = self.documents(b);
            let loss = self.model.backward_by_unit(
                &input,
                docs.as_ref(),
                |h| self.lm_loss(h, b, objective) / n,
                &mut *z,
            )?;
            loss_sum += loss.double_value(&[]) * n;
            tokens += b.loss_tokens() as i64;
        }
        let (loss, tokens) =
            super::parallel::mean_over(Some(z.group()), self.config.device, loss_sum / n, tokens as f64)?;
        let grad_norm = z.clip_grad_norm(self.config.max_grad_norm)?;
        let lr = self.config.schedule.lr(z.steps_taken());
        z.step(lr)?;
        Ok(StepMetrics {
            step: z.steps_taken(),
            loss,
            lr,
            grad_norm,
            tokens: tokens as u64,
        })
    }

    /// [`Learner::eval_loss`] under ZeRO-3 (a collective: every rank calls it).
    pub(super) fn sharded_eval_loss(&self, batch: &TrainBatch, objective: Objective) -> Result<f64> {
        let cell = self.shards()?;
        self.check_tokens(&batch.input_ids, batch.rows, batch.cols)?;
        let input = self.tensor(&batch.input_ids, batch);
        let docs = self.documents(batch);
        let loss = self.model.forward_by_unit(
            &input,
            docs.as_ref(),
            |h| self.lm_loss(h, batch, objective),
            &mut *cell.borrow_mut(),
        )?;
        Ok(loss.double_value(&[]))
    }

    /// [`Learner::preference_step`] under ZeRO-3: the policy's log-probabilities of each
    /// micro-batch come from the unit-by-unit pass, the loss from them and the cached
    /// reference log-probabilities.
    pub(super) fn sharded_preference_step(
        &mut self,
        micro_batches: &[PreferenceBatch],
        loss: &PreferenceLoss,
    ) -> Result<PreferenceMetrics> {
        let cell = self.shards()?;
        let mut z = cell.borrow_mut();
        let n = micro_batches.len().max(1) as f64;
        z.zero_grad();
        let mut sum = PreferenceMetrics::default();
        for pb in micro_batches {
            self.check_pairs(pb, loss)?;
            let mut metrics = PreferenceMetrics::default();
            // The loss comes back too; the metrics already hold it.
            let _loss = self.model.backward_by_unit(
                &self.tensor(&pb.batch.input_ids, &pb.batch),
                None,
                self.pair_loss(pb, loss, n, &mut metrics),
                &mut *z,
            )?;
            sum.add_share(&metrics, n);
        }
        let mut sum = super::parallel::preference_over(Some(z.group()), self.config.device, sum)?;
        sum.grad_norm = z.clip_grad_norm(self.config.max_grad_norm)?;
        sum.lr = self.config.schedule.lr(z.steps_taken());
        z.step(sum.lr)?;
        sum.step = z.steps_taken();
        Ok(sum)
    }

    /// [`Learner::preference_eval`] under ZeRO-3 (a collective).
    pub(super) fn sharded_preference_eval(
        &self,
        pb: &PreferenceBatch,
        loss: &PreferenceLoss,
    ) -> Result<PreferenceMetrics> {
        let cell = self.shards()?;
        self.check_pairs(pb, loss)?;
        let mut metrics = PreferenceMetrics::default();
        let _loss = self.model.forward_by_unit(
            &self.tensor(&pb.batch.input_ids, &pb.batch),
            None,
            self.pair_loss(pb, loss, 1.0, &mut metrics),
            &mut *cell.borrow_mut(),
        )?;
        Ok(metrics)
    }

    /// The loss of a checked micro-batch of pairs from the final hidden states, divided by
    /// `n`; its statistics go to `metrics`.
    pub(super) fn pair_loss<'a>(
        &'a self,
        pb: &'a PreferenceBatch,
        loss: &'a PreferenceLoss,
        n: f64,
        metrics: &'a mut PreferenceMetrics,
    ) -> impl FnOnce(&Tensor) -> Tensor + 'a {
        let labels = self.tensor(&pb.batch.labels, &pb.batch);
        move |h| {
            let (sums, counts) = preference::sequence_logps_of(&self.model, h, &labels);
            let (l, m) = self.preference_from(&sums, &counts, pb, loss);
            *metrics = m;
            l / n
        }
    }

    /// This rank's file of `what` (`optimizer`: the policy's optimiser state, `value`: the
    /// value model's slices and optimiser state) in a checkpoint directory.
    fn shard_file(&self, dir: &Path, what: &str) -> Result<PathBuf> {
        let z = self.shards()?.borrow();
        let g = z.group();
        Ok(dir.join(format!(
            "{what}-rank{}-of-{}.safetensors",
            g.rank(),
            g.world_size()
        )))
    }

    /// The value model's shards, when there is one.
    fn value_shards(&self) -> Option<&RefCell<Zero3>> {
        self.critic.as_ref().and_then(|c| c.model.shards.as_ref())
    }

    /// [`Learner::save_checkpoint`] under ZeRO-3: the whole model from rank 0, each rank's
    /// optimiser shard (and value model shard) from that rank.
    pub(super) fn sharded_save_checkpoint(&self, dir: &Path) -> Result<()> {
        self.save_model(dir)?;
        std::fs::create_dir_all(dir).map_err(|source| LearnerError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let path = self.shard_file(dir, "optimizer")?;
        checkpoint::write_tensors(&self.shards()?.borrow().state(), &path)?;
        if let Some(value) = self.value_shards() {
            checkpoint::write_tensors(&value.borrow().state(), &self.shard_file(dir, "value")?)?;
        }
        Ok(())
    }

    /// [`Learner::load_checkpoint`] under ZeRO-3: every rank reads its own shard files (the
    /// policy's and the value model's slices and optimiser state).
    pub(super) fn sharded_load_checkpoint(&mut self, dir: &Path, steps: u64) -> Result<()> {
        restore(self.shards()?, &self.shard_file(dir, "optimizer")?, steps)?;
        if let Some(value) = self.value_shards() {
            restore(value, &self.shard_file(dir, "value")?, steps)?;
        }
        Ok(())
    }

    /// What this rank holds for parameters, gradients and optimiser state, and gathers at
    /// most during a pass, over every sharded model (the policy, and in RL its reference,
    /// value and reward models); `None` without ZeRO-3.
    pub fn shard_memory(&self) -> Option<ShardMemory> {
        let reference = self.reference.as_ref().and_then(|r| r.shards.as_ref());
        let reward = self.reward_model.as_ref().and_then(|m| m.shards.as_ref());
        let models = [self.zero.as_ref(), reference, self.value_shards(), reward];
        models
            .into_iter()
            .flatten()
            .map(|z| z.borrow().memory())
            .reduce(|a, b| ShardMemory {
                held: a.held + b.held,
                offloaded: a.offloaded + b.offloaded,
                unsharded: a.unsharded + b.unsharded,
                // One model's units are gathered at a time.
                peak_gathered: a.peak_gathered.max(b.peak_gathered),
            })
    }

    /// [`Learner::visit_weights`] under ZeRO-3 (a collective): unit by unit, `f` called with
    /// each of its parameters on rank 0 while it is whole.
    pub(super) fn sharded_visit(&self, mut f: impl FnMut(&str, &Tensor) -> Result<()>) -> Result<()> {
        let mut z = self.shards()?.borrow_mut();
        let lead = z.group().rank() == 0;
        z.visit_units(|_, names, params| match lead {
            true => names.iter().zip(params).try_for_each(|(name, t)| f(name, t)),
            false => Ok(()),
        })
    }

    /// [`Learner::weight_table`] under ZeRO-3.
    pub(super) fn sharded_table(&self) -> Result<Vec<(String, Kind, Vec<i64>)>> {
        let z = self.shards()?.borrow();
        let kind = z.kind();
        Ok(z.tensors()
            .into_iter()
            .map(|(name, shape)| (name, kind, shape))
            .collect())
    }

    /// [`Learner::save_model`] under ZeRO-3 (a collective): unit by unit, rank 0 writing.
    pub(super) fn sharded_save_model(&self, dir: &Path) -> Result<()> {
        let mut z = self.shards()?.borrow_mut();
        let config = self.model.config().to_hf_json(checkpoint::dtype_name(z.kind()));
        z.save(dir, &config)
    }
}

/// Restore `shards` from this rank's state file `path`, written after `steps` optimiser steps.
fn restore(shards: &RefCell<Zero3>, path: &Path, steps: u64) -> Result<()> {
    if !path.is_file() {
        return Err(LearnerError::Checkpoint {
            path: path.display().to_string(),
            message:
                "no shard for this rank: the checkpoint was saved with another world size, or without ZeRO-3"
                    .into(),
        });
    }
    let state = checkpoint::read_tensors(path)?;
    if let Some(name) = shards.borrow_mut().load_state(&state, steps).first() {
        return Err(LearnerError::Checkpoint {
            path: path.display().to_string(),
            message: format!("no state `{name}` of this rank's shard"),
        });
    }
    Ok(())
}
