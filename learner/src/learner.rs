//! The learner: a model, its optimiser and schedule, and one method per optimiser step. It
//! knows nothing of where batches come from.

use std::path::Path;

use rlvr_core::{PolicyBatch, StepMetrics, TrainBatch, WeightChunk, IGNORE};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use rlvr_dist::ProcessGroup;

use crate::checkpoint;
use crate::error::{LearnerError, Result};
use crate::model::{CausalLm, Config, Documents};
use crate::optim::{AdamW, AdamWConfig};
use crate::policy::{self, LossInputs, PolicyLoss, PolicyMetrics, Sums, TokenDistribution, Tokens};
use crate::schedule::Schedule;
use crate::value::{Critic, ScoreModel};
use crate::zero::Zero3;

mod pairs;
mod parallel;
mod sharded;

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
    /// Element type of the model's weights (`Float`, or `BFloat16` with f32 master weights and
    /// moments in the optimiser).
    pub kind: Kind,
}

impl LearnerConfig {
    /// AdamW with β = (0.9, 0.999), ε = 1e-8 and no weight decay at a constant learning rate
    /// `lr`, gradients clipped to norm 1, on `device`: a plain setting for tests, benchmarks and
    /// experiments (stages build theirs from the recipe).
    pub fn constant(lr: f64, device: Device) -> Self {
        Self {
            adamw: AdamWConfig {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            schedule: Schedule {
                peak: lr,
                warmup_steps: 0,
                total_steps: 1,
                shape: crate::schedule::Shape::Constant,
            },
            max_grad_norm: Some(1.0),
            device,
            kind: Kind::Float,
        }
    }
}

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

/// A model being trained.
pub struct Learner {
    vs: VarStore,
    model: CausalLm,
    opt: AdamW,
    config: LearnerConfig,
    /// Frozen copy of the policy that RL's KL penalty is measured against.
    reference: Option<(VarStore, CausalLm)>,
    /// PPO's value model.
    critic: Option<Critic>,
    /// A frozen reward model that scores RL responses.
    reward_model: Option<ScoreModel>,
    /// Recompute each decoder layer in the backward pass of LM steps instead of keeping its
    /// activations.
    gradient_checkpointing: bool,
    /// Data parallelism: gradients are averaged over this group's ranks before each update.
    group: Option<ProcessGroup>,
    /// ZeRO-3: parameters, gradients and optimiser state sharded over a group's ranks.
    zero: Option<std::cell::RefCell<Zero3>>,
}

impl Learner {
    /// A model initialised from `seed`.
    pub fn new(model: &Config, config: LearnerConfig, seed: i64) -> Self {
        let (vs, llama) = crate::runtime::seeded(seed, || {
            let vs = Self::store(&config);
            let llama = CausalLm::new(&vs.root(), model);
            (vs, llama)
        });
        Self::with_model(vs, llama, config)
    }

    /// An empty store on the configured device whose new variables take the configured kind.
    fn store(config: &LearnerConfig) -> VarStore {
        let mut vs = VarStore::new(config.device);
        vs.set_kind(config.kind);
        vs
    }

    fn with_model(vs: VarStore, llama: CausalLm, config: LearnerConfig) -> Self {
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
            reference: None,
            critic: None,
            reward_model: None,
            gradient_checkpointing: false,
            group: None,
            zero: None,
        }
    }

    /// Train in bf16 with f32 master weights: the model's weights (and its gradients and
    /// activations) become bf16, and the optimiser keeps an f32 copy of each with f32 moments.
    /// Call before the first step.
    pub fn set_bf16(&mut self) -> Result<()> {
        if self.opt.steps_taken() > 0
            || self.critic.is_some()
            || self.reference.is_some()
            || self.zero.is_some()
        {
            return Err(LearnerError::Order(
                "switch to bf16 before the first step, before ZeRO-3, and before attaching a reference or value model",
            ));
        }
        self.vs.bfloat16();
        self.opt = AdamW::new(
            self.vs
                .variables()
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>()
                .into_iter()
                .collect(),
            self.config.adamw,
        );
        Ok(())
    }

    /// Hold one decoder layer's activations at a time in the backward pass of LM steps
    /// (pretraining, SFT), recomputing each layer's forward: less memory for one more forward.
    pub fn set_gradient_checkpointing(&mut self, on: bool) {
        self.gradient_checkpointing = on;
    }

    /// A model loaded from a Hugging Face directory (`config.json` + safetensors), its weights
    /// read straight into the configured kind on the configured device.
    pub fn from_pretrained(dir: &Path, config: LearnerConfig) -> Result<Self> {
        let model_config = checkpoint::read_config(dir)?;
        let vs = Self::store(&config);
        let model = CausalLm::for_loading(&vs.root(), &model_config);
        checkpoint::load_dir(&vs, dir)?;
        Ok(Self::with_model(vs, model, config))
    }

    /// The model.
    pub fn model(&self) -> &CausalLm {
        &self.model
    }

    /// Optimiser steps taken.
    pub fn steps_taken(&self) -> u64 {
        match &self.zero {
            Some(z) => z.borrow().steps_taken(),
            None => self.opt.steps_taken(),
        }
    }

    /// Parameters of the model.
    pub fn num_params(&self) -> i64 {
        if let Some(z) = &self.zero {
            return z.borrow().num_params();
        }
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

    /// The packed layout of a batch, on the device.
    fn documents(&self, b: &TrainBatch) -> Option<Documents> {
        b.packing.as_ref().map(|p| Documents {
            position_ids: self.tensor(&p.position_ids, b),
            document_ids: self.tensor(&p.document_ids, b),
        })
    }

    /// Loss of one micro-batch.
    fn loss(&self, batch: &TrainBatch, objective: Objective) -> Result<Tensor> {
        self.check_tokens(&batch.input_ids, batch.rows, batch.cols)?;
        let input = self.tensor(&batch.input_ids, batch);
        let hidden = self
            .model
            .hidden_states_of(&input, self.documents(batch).as_ref());
        Ok(self.lm_loss(&hidden, batch, objective))
    }

    /// The LM loss of `batch` from the model's final hidden states.
    fn lm_loss(&self, hidden: &Tensor, batch: &TrainBatch, objective: Objective) -> Tensor {
        let vocab = self.model.config().vocab_size;
        let Objective::Lm(reduction) = objective;
        let labels = self.tensor(&batch.labels, batch);
        // Position i predicts label i + 1: shift the labels, not the (large) logits, so the
        // logits need no copy; the last position predicts nothing.
        let targets = Tensor::cat(
            &[
                labels.narrow(1, 1, batch.cols as i64 - 1),
                Tensor::full([batch.rows as i64, 1], IGNORE, (Kind::Int64, self.config.device)),
            ],
            1,
        );
        let logits = self.model.logits(hidden).to_kind(Kind::Float);
        let flat = logits.reshape([-1, vocab]);
        let red = match reduction {
            Reduction::Mean => tch::Reduction::Mean,
            Reduction::Sum => tch::Reduction::Sum,
        };
        flat.cross_entropy_loss::<Tensor>(&targets.reshape([-1]), None, red, IGNORE, 0.0)
    }

    /// One optimiser step over `micro_batches` (gradient accumulation): forward, backward,
    /// clip, AdamW update at the scheduled rate.
    pub fn train_step(&mut self, micro_batches: &[TrainBatch], objective: Objective) -> Result<StepMetrics> {
        if self.zero.is_some() {
            return self.sharded_train_step(micro_batches, objective);
        }
        let n = micro_batches.len().max(1) as f64;
        self.opt.zero_grad();
        let mut loss_sum = 0.0;
        let mut tokens = 0;
        for b in micro_batches {
            let loss = if self.gradient_checkpointing {
                self.check_tokens(&b.input_ids, b.rows, b.cols)?;
                let input = self.tensor(&b.input_ids, b);
                self.model
                    .backward_checkpointed(&input, self.documents(b).as_ref(), |h| {
                        self.lm_loss(h, b, objective) / n
                    })
                    * n
            } else {
                let loss = self.loss(b, objective)?;
                (&loss / n).backward();
                loss
            };
            loss_sum += loss.double_value(&[]);
            tokens += b.loss_tokens() as i64;
        }
        self.average_grads()?;
        // The mean over micro-batches (as the gradient is), then over ranks.
        let (loss, tokens) = self.across_ranks(loss_sum / n, tokens as f64)?;
        let grad_norm = self.opt.clip_grad_norm(self.config.max_grad_norm);
        let lr = self.config.schedule.lr(self.opt.steps_taken());
        self.opt.step(lr);
        Ok(StepMetrics {
            step: self.opt.steps_taken(),
            loss,
            lr,
            grad_norm,
            tokens: tokens as u64,
        })
    }

    /// Freeze a copy of the current weights as the reference policy of RL's KL penalty.
    pub fn freeze_reference(&mut self) -> Result<()> {
        self.unsharded("a reference policy is not kept under ZeRO-3 yet")?;
        let mut vs = VarStore::new(self.config.device);
        vs.set_kind(self.vs.kind());
        let model = CausalLm::for_loading(&vs.root(), self.model.config());
        vs.copy(&self.vs).map_err(|source| LearnerError::Torch {
            context: "copying the reference policy".into(),
            source,
        })?;
        vs.freeze();
        self.reference = Some((vs, model));
        Ok(())
    }

    /// Attach a PPO value model: a copy of the policy's trunk with a zero-initialised scalar
    /// head and its own AdamW (same settings and schedule as the policy's).
    pub fn attach_critic(&mut self) -> Result<()> {
        self.unsharded("a value model is not kept under ZeRO-3 yet")?;
        self.critic = Some(Critic::from_policy(
            &self.vs,
            self.model.config(),
            self.config.adamw,
        )?);
        Ok(())
    }

    /// Attach a PPO value model loaded from a reward model's directory
    /// (`LlamaForSequenceClassification` with one label: `model.*` and `score.weight`).
    pub fn attach_critic_from(&mut self, reward_model: &Path) -> Result<()> {
        self.unsharded("a value model is not kept under ZeRO-3 yet")?;
        self.critic = Some(Critic::from_reward_model(
            reward_model,
            self.config.device,
            self.config.adamw,
        )?);
        Ok(())
    }

    /// Attach a frozen reward model (a `…ForSequenceClassification` directory with one label)
    /// that [`Learner::score`] scores each response with. Its vocabulary must be the policy's,
    /// so every token the policy samples is one it reads.
    pub fn attach_reward_model(&mut self, dir: &Path) -> Result<()> {
        self.unsharded("a reward model is not kept under ZeRO-3 yet")?;
        let mut model = ScoreModel::load(dir, self.config.device)?;
        let (theirs, ours) = (model.config().vocab_size, self.model.config().vocab_size);
        if theirs != ours {
            return Err(LearnerError::Checkpoint {
                path: dir.display().to_string(),
                message: format!(
                    "the reward model's vocabulary has {theirs} tokens, the policy's {ours}: they must be the same"
                ),
            });
        }
        model.vs.freeze();
        self.reward_model = Some(model);
        Ok(())
    }

    /// For each row of `batch`: the frozen reference's log-probs of `distribution` (zeros
    /// without a reference) and the value model's estimates (zeros without one), aligned with
    /// its tokens; and the reward model's score of the whole response, when one is attached.
    /// What per-token rewards with a KL term, PPO's advantages and a learned reward are built
    /// from.
    pub fn score(&self, batch: &PolicyBatch, distribution: &TokenDistribution) -> Result<BatchScores> {
        self.unsharded("scoring does not run under ZeRO-3 yet")?;
        self.check_policy_batch(batch)?;
        let tokens = Tokens::new(batch, self.config.device);
        let zeros = || vec![0.0; batch.rows * batch.cols];
        tch::no_grad(|| {
            let reference = match &self.reference {
                Some((_, r)) => host_f32s(policy::token_logprobs(r, &tokens, distribution).0)?,
                None => zeros(),
            };
            let values = match &self.critic {
                Some(c) => host_f32s(c.model.values(&tokens))?,
                None => zeros(),
            };
            let rewards = match &self.reward_model {
                Some(m) => {
                    let lens: Vec<i64> = batch
                        .mask
                        .chunks(batch.cols)
                        .map(|row| row.iter().filter(|&&m| m > 0.0).count().max(1) as i64)
                        .collect();
                    let lens = Tensor::from_slice(&lens).to_device(self.config.device);
                    Some(host_f32s(m.response_scores(&tokens, &lens))?)
                }
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
    /// off-policy correction, and what the train/rollout mismatch is measured against.
    pub fn logprobs(&self, batch: &PolicyBatch, distribution: &TokenDistribution) -> Result<Vec<f32>> {
        self.unsharded("scoring does not run under ZeRO-3 yet")?;
        self.check_policy_batch(batch)?;
        let tokens = Tokens::new(batch, self.config.device);
        tch::no_grad(|| host_f32s(policy::token_logprobs(&self.model, &tokens, distribution).0))
    }

    fn check_policy_batch(&self, b: &PolicyBatch) -> Result<()> {
        if b.groups == 0 || b.prompt_cols == 0 || b.cols == 0 {
            return Err(LearnerError::Batch(format!(
                "{} prompts of {} positions, {} responses of {}: need prompts and response tokens",
                b.groups, b.prompt_cols, b.rows, b.cols
            )));
        }
        let sizes_match = b.prompt_ids.len() == b.groups * b.prompt_cols
            && b.response_ids.len() == b.rows * b.cols
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

    fn check_tokens(&self, ids: &[i64], rows: usize, cols: usize) -> Result<()> {
        if rows == 0 || cols < 2 || ids.len() != rows * cols {
            return Err(LearnerError::Batch(format!(
                "{rows}x{cols} batch of {} ids: need rows and at least 2 positions",
                ids.len()
            )));
        }
        self.check_vocab(ids)
    }

    fn check_vocab(&self, ids: &[i64]) -> Result<()> {
        let vocab = self.model.config().vocab_size;
        match ids.iter().find(|&&t| t < 0 || t >= vocab) {
            Some(bad) => Err(LearnerError::Batch(format!(
                "token id {bad} outside the vocabulary (0..{vocab})"
            ))),
            None => Ok(()),
        }
    }

    /// One policy-gradient optimiser step over `micro_batches`: the loss's surrogate weighted
    /// by each token's off-policy weight (and β·KL to the reference, when one is frozen and
    /// β > 0), aggregated as the loss says, then clip and AdamW as in [`Learner::train_step`].
    pub fn policy_step(&mut self, micro_batches: &[PolicyBatch], loss: &PolicyLoss) -> Result<PolicyMetrics> {
        self.unsharded("policy steps do not run under ZeRO-3 yet")?;
        let tokens: usize = micro_batches.iter().map(PolicyBatch::response_tokens).sum();
        if tokens == 0 {
            return Err(LearnerError::Batch("a policy step needs response tokens".into()));
        }
        self.opt.zero_grad();
        if let Some(c) = &mut self.critic {
            c.opt.zero_grad();
        }
        let rows: usize = micro_batches.iter().map(|b| b.rows).sum();
        let mut sums = Sums::default();
        let mut loss_sum = 0.0;
        let (mut vf_sum, mut vf_clipped) = (0.0, 0.0);
        for b in micro_batches {
            self.check_policy_batch(b)?;
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
            let (logprobs, entropy) = policy::token_logprobs(&self.model, &input, &loss.distribution);
            let reference = match &self.reference {
                Some((_, r)) if loss.beta > 0.0 => Some(tch::no_grad(|| {
                    policy::token_logprobs(r, &input, &loss.distribution).0
                })),
                _ => None,
            };
            let inputs = LossInputs {
                logprobs: &logprobs,
                entropy: &entropy,
                old_logprobs: &f32s(&b.old_logprobs),
                advantages: &f32s(&b.advantages),
                mask: &f32s(&b.mask),
                weights: &f32s(&weights),
                is_weights: &f32s(&b.is_weights),
                ref_logprobs: reference.as_ref(),
            };
            let (l, s) = policy::surrogate(&inputs, loss);
            let mut l = l;
            if let Some(c) = &self.critic {
                let mask = f32s(&b.mask);
                let (vf, took) = policy::value_loss(
                    &c.model.values(&input),
                    &f32s(&b.old_values),
                    &f32s(&b.returns),
                    &mask,
                    loss.value_clip,
                );
                vf_sum += vf.double_value(&[]);
                vf_clipped += took;
                // The value loss is a mean over the step's response tokens.
                l += vf * (loss.vf_coef / tokens as f64);
            }
            l.backward();
            loss_sum += l.double_value(&[]);
            sums.pg_loss += s.pg_loss;
            sums.kl += s.kl;
            sums.clipped += s.clipped;
            sums.ratio += s.ratio;
            sums.entropy += s.entropy;
            sums.abs_log_ratio += s.abs_log_ratio;
            sums.max_abs_log_ratio = sums.max_abs_log_ratio.max(s.max_abs_log_ratio);
            sums.approx_kl += s.approx_kl;
        }
        self.average_grads()?;
        let grad_norm = self.opt.clip_grad_norm(self.config.max_grad_norm);
        let lr = self.config.schedule.lr(self.opt.steps_taken());
        self.opt.step(lr);
        if let Some(c) = &mut self.critic {
            c.opt.clip_grad_norm(self.config.max_grad_norm);
            c.opt.step(lr);
        }
        let n = tokens as f64;
        Ok(PolicyMetrics {
            step: self.opt.steps_taken(),
            loss: loss_sum / n,
            pg_loss: sums.pg_loss / n,
            kl: sums.kl / n,
            clipfrac: sums.clipped / n,
            ratio: sums.ratio / n,
            max_abs_log_ratio: sums.max_abs_log_ratio,
            mean_abs_log_ratio: sums.abs_log_ratio / n,
            approx_kl: sums.approx_kl / n,
            entropy: sums.entropy / n,
            vf_loss: vf_sum / n,
            vf_clipfrac: vf_clipped / n,
            grad_norm,
            lr,
            tokens: tokens as u64,
        })
    }

    /// Mean loss of `batch` without updating anything.
    pub fn eval_loss(&self, batch: &TrainBatch, objective: Objective) -> Result<f64> {
        if self.zero.is_some() {
            return self.sharded_eval_loss(batch, objective);
        }
        tch::no_grad(|| self.loss(batch, objective).map(|l| l.double_value(&[])))
    }

    /// Every parameter as a [`WeightChunk`] tagged with `version`, in name order: what the
    /// rollout engines load after a step.
    pub fn export_weights(&self, version: u64) -> Result<Vec<WeightChunk>> {
        if self.zero.is_some() {
            return self.sharded_export(version);
        }
        checkpoint::export_chunks(&self.vs, version)
    }

    /// Save the model in Hugging Face format. Under ZeRO-3 a collective (every rank calls it)
    /// and rank 0 writes.
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        let writer = self.zero.as_ref().is_none_or(|z| z.borrow().group().rank() == 0);
        self.with_whole_model(|l| match writer {
            true => checkpoint::save_model(&l.vs, l.model.config(), dir),
            false => Ok(()),
        })
    }

    /// Save model and optimiser state (`optimizer.safetensors`) for exact resume.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        if self.zero.is_some() {
            return self.sharded_save_checkpoint(dir);
        }
        self.save_model(dir)?;
        checkpoint::write_tensors(&self.opt.state(), &dir.join("optimizer.safetensors"))?;
        if let Some(c) = &self.critic {
            let weights: Vec<(String, Tensor)> = c.model.vs.variables().into_iter().collect();
            checkpoint::write_tensors(&weights, &dir.join("value.safetensors"))?;
            checkpoint::write_tensors(&c.opt.state(), &dir.join("value_optimizer.safetensors"))?;
        }
        Ok(())
    }

    /// Restore model and optimiser state written by [`Learner::save_checkpoint`] after `steps`
    /// optimiser steps.
    pub fn load_checkpoint(&mut self, dir: &Path, steps: u64) -> Result<()> {
        if self.zero.is_some() {
            return self.sharded_load_checkpoint(dir, steps);
        }
        checkpoint::load_dir(&self.vs, dir)?;
        let path = dir.join("optimizer.safetensors");
        let state = checkpoint::read_tensors(&path)?;
        let mut missing = self.opt.load_state(&state, steps);
        if let Some(c) = &mut self.critic {
            let weights = dir.join("value.safetensors");
            checkpoint::load_files(&c.model.vs, std::slice::from_ref(&weights), &weights)?;
            let state = checkpoint::read_tensors(&dir.join("value_optimizer.safetensors"))?;
            missing.extend(c.opt.load_state(&state, steps));
        }
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

/// A tensor's elements as f32 on the host, flattened.
fn host_f32s(t: Tensor) -> Result<Vec<f32>> {
    Vec::<f32>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float).reshape([-1])).map_err(|source| {
        LearnerError::Torch {
            context: "reading per-token scores".into(),
            source,
        }
    })
}
