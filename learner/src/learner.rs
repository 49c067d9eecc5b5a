//! The learner: a model, its optimiser and schedule, and one method per optimiser step. It
//! knows nothing of where batches come from.

use std::path::Path;

use rlvr_core::{StepMetrics, TrainBatch, WeightChunk, IGNORE};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::checkpoint;
use crate::error::{LearnerError, Result};
use crate::llama::{Config, Llama};
use crate::optim::{AdamW, AdamWConfig};
use crate::schedule::Schedule;

/// How a sequence loss is reduced over its tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// Mean over the step's loss tokens.
    Mean,
    /// Sum over loss tokens (Tülu 3 SFT's `reduce_loss = sum`).
    Sum,
}

/// Training objectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objective {
    /// Next-token cross-entropy on every labelled position: pretraining (all tokens) and SFT
    /// (assistant tokens only, prompts labelled [`IGNORE`]).
    Lm(Reduction),
}

/// Optimiser and schedule settings.
#[derive(Debug, Clone, Copy)]
pub struct LearnerConfig {
    /// AdamW hyperparameters.
    pub adamw: AdamWConfig,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Gradient-norm clip.
    pub max_grad_norm: Option<f64>,
    /// Where tensors live.
    pub device: Device,
}

/// A model being trained.
pub struct Learner {
    vs: VarStore,
    model: Llama,
    opt: AdamW,
    config: LearnerConfig,
}

impl Learner {
    /// A model initialised from `seed`.
    pub fn new(model: &Config, config: LearnerConfig, seed: i64) -> Self {
        tch::manual_seed(seed);
        let vs = VarStore::new(config.device);
        let llama = Llama::new(&vs.root(), model);
        let opt = AdamW::new(
            vs.variables()
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>()
                .into_iter()
                .collect(),
            config.adamw,
        );
        Self {
            vs,
            model: llama,
            opt,
            config,
        }
    }

    /// A model loaded from a Hugging Face directory (`config.json` + safetensors).
    pub fn from_pretrained(dir: &Path, config: LearnerConfig) -> Result<Self> {
        let model_config = checkpoint::read_config(dir)?;
        let learner = Self::new(&model_config, config, 0);
        checkpoint::load_into(&learner.vs, &checkpoint::read_weights(dir)?, dir)?;
        Ok(learner)
    }

    /// The model.
    pub fn model(&self) -> &Llama {
        &self.model
    }

    /// Optimiser steps taken.
    pub fn steps_taken(&self) -> u64 {
        self.opt.steps_taken()
    }

    /// Parameters of the model.
    pub fn num_params(&self) -> i64 {
        self.vs
            .trainable_variables()
            .iter()
            .map(Tensor::numel)
            .sum::<usize>() as i64
    }

    fn tensor(&self, data: &[i64], b: &TrainBatch) -> Tensor {
        Tensor::from_slice(data)
            .view([b.rows as i64, b.cols as i64])
            .to_device(self.config.device)
    }

    /// Loss of one micro-batch, and its loss-token count.
    fn loss(&self, batch: &TrainBatch, objective: Objective) -> Result<(Tensor, i64)> {
        if batch.rows == 0 || batch.cols < 2 {
            return Err(LearnerError::Batch(format!(
                "{}x{} batch: need rows and at least 2 positions",
                batch.rows, batch.cols
            )));
        }
        let vocab = self.model.config().vocab_size;
        if let Some(bad) = batch.input_ids.iter().find(|&&t| t < 0 || t >= vocab) {
            return Err(LearnerError::Batch(format!(
                "token id {bad} outside the vocabulary (0..{vocab})"
            )));
        }
        let Objective::Lm(reduction) = objective;
        let input = self.tensor(&batch.input_ids, batch);
        let labels = self.tensor(&batch.labels, batch);
        let t = batch.cols as i64;
        let logits = self
            .model
            .forward(&input)
            .narrow(1, 0, t - 1)
            .to_kind(Kind::Float);
        let targets = labels.narrow(1, 1, t - 1);
        let flat = logits.reshape([-1, vocab]);
        let red = match reduction {
            Reduction::Mean => tch::Reduction::Mean,
            Reduction::Sum => tch::Reduction::Sum,
        };
        let loss = flat.cross_entropy_loss::<Tensor>(&targets.reshape([-1]), None, red, IGNORE, 0.0);
        Ok((loss, batch.loss_tokens() as i64))
    }

    /// One optimiser step over `micro_batches` (gradient accumulation): forward, backward,
    /// clip, AdamW update at the scheduled rate.
    pub fn train_step(&mut self, micro_batches: &[TrainBatch], objective: Objective) -> Result<StepMetrics> {
        let n = micro_batches.len().max(1) as f64;
        self.opt.zero_grad();
        let mut loss_sum = 0.0;
        let mut tokens = 0;
        for b in micro_batches {
            let (loss, toks) = self.loss(b, objective)?;
            (&loss / n).backward();
            loss_sum += loss.double_value(&[]);
            tokens += toks;
        }
        let grad_norm = self.opt.clip_grad_norm(self.config.max_grad_norm);
        let lr = self.config.schedule.lr(self.opt.steps_taken());
        self.opt.step(lr);
        Ok(StepMetrics {
            step: self.opt.steps_taken(),
            loss: loss_sum / n,
            lr,
            grad_norm,
            tokens: tokens as u64,
        })
    }

    /// Mean loss of `batch` without updating anything.
    pub fn eval_loss(&self, batch: &TrainBatch, objective: Objective) -> Result<f64> {
        tch::no_grad(|| self.loss(batch, objective).map(|(l, _)| l.double_value(&[])))
    }

    /// Every parameter as a [`WeightChunk`] tagged with `version`, in name order: what the
    /// rollout engines load after a step.
    pub fn export_weights(&self, version: u64) -> Result<Vec<WeightChunk>> {
        checkpoint::export_chunks(&self.vs, version)
    }

    /// Save the model in Hugging Face format.
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        checkpoint::save_model(&self.vs, self.model.config(), dir)
    }

    /// Save model and optimiser state (`optimizer.safetensors`) for exact resume.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        self.save_model(dir)?;
        checkpoint::write_tensors(&self.opt.state(), &dir.join("optimizer.safetensors"))
    }

    /// Restore model and optimiser state written by [`Learner::save_checkpoint`] after `steps`
    /// optimiser steps.
    pub fn load_checkpoint(&mut self, dir: &Path, steps: u64) -> Result<()> {
        checkpoint::load_into(&self.vs, &checkpoint::read_weights(dir)?, dir)?;
        let path = dir.join("optimizer.safetensors");
        let state = checkpoint::read_tensors(&path)?;
        let missing = self.opt.load_state(&state, steps);
        if let Some(name) = missing.first() {
            return Err(LearnerError::Checkpoint {
                path: path.display().to_string(),
                message: format!(
                    "no optimiser state for `{name}` ({} tensors missing)",
                    missing.len()
                ),
            });
        }
        Ok(())
    }
}
