//! The learner: a model, its optimiser and schedule, and one method per optimiser step. It
//! knows nothing of where batches come from.

use std::cell::RefCell;
use std::path::Path;

use rlvr_core::{StepMetrics, TrainBatch, WeightChunk, IGNORE};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use rlvr_dist::ProcessGroup;

use crate::checkpoint;
use crate::error::{LearnerError, Result};
use crate::model::{CausalLm, Config, Documents};
use crate::optim::{AdamW, AdamWConfig};
use crate::schedule::Schedule;
use crate::value::{Critic, ScoreModel};
use crate::zero::Zero3;

mod pairs;
mod parallel;
mod rl;
mod sharded;

pub use rl::BatchScores;

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
    /// Under ZeRO-3, keep the optimiser state (f32 masters, gradient slices, moments) in host
    /// memory, pinned beside a GPU, and step it there. Only sharded learners offload: an
    /// unsharded learner with it set refuses to step.
    pub offload_optimizer: bool,
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
            offload_optimizer: false,
        }
    }
}

/// The frozen copy of the policy that RL's KL penalty is measured against: whole, or ZeRO-3
/// shards beside the policy's.
struct Reference {
    model: CausalLm,
    shards: Option<RefCell<Zero3>>,
}

impl Reference {
    /// The shards, for the passes that need them.
    fn shards(&self) -> Result<&RefCell<Zero3>> {
        self.shards
            .as_ref()
            .ok_or(LearnerError::Order("the reference is not sharded"))
    }
}

/// A model being trained.
pub struct Learner {
    vs: VarStore,
    model: CausalLm,
    opt: AdamW,
    config: LearnerConfig,
    /// Frozen copy of the policy that RL's KL penalty is measured against.
    reference: Option<Reference>,
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
    zero: Option<RefCell<Zero3>>,
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
        Self::assemble(vs, llama, opt, config, None)
    }

    /// A learner of these parts, nothing attached yet.
    fn assemble(
        vs: VarStore,
        model: CausalLm,
        opt: AdamW,
        config: LearnerConfig,
        zero: Option<Zero3>,
    ) -> Self {
        Self {
            vs,
            model,
            opt,
            config,
            reference: None,
            critic: None,
            reward_model: None,
            gradient_checkpointing: false,
            group: None,
            zero: zero.map(RefCell::new),
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

    /// Where the learner's tensors live (and its group's collectives run).
    pub fn device(&self) -> Device {
        self.config.device
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

    /// With bf16 weights, the share of them (this rank's slices under ZeRO-3) whose bf16 value
    /// updates that move each f32 master by at most `displacement` can change
    /// ([`crate::bf16_reach`]); `None` for f32 weights.
    pub fn bf16_movable_share(&self, displacement: f64) -> Option<f64> {
        let weights = match &self.zero {
            Some(z) => z.borrow().shards(),
            None => self.vs.trainable_variables(),
        };
        (weights.first()?.kind() == Kind::BFloat16)
            .then(|| crate::bf16_reach::movable_share(&weights, displacement))
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
        self.check_offload()?;
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

    /// Freeze a copy of the current weights as the reference policy of RL's KL penalty. Under
    /// ZeRO-3 a collective: the copy is sharded like the policy, made one unit at a time.
    pub fn freeze_reference(&mut self) -> Result<()> {
        let mut vs = VarStore::new(self.config.device);
        vs.set_kind(self.vs.kind());
        let model = CausalLm::for_loading(&vs.root(), self.model.config());
        vs.freeze();
        let shards = match &self.zero {
            None => {
                vs.copy(&self.vs).map_err(|source| LearnerError::Torch {
                    context: "copying the reference policy".into(),
                    source,
                })?;
                None
            }
            Some(cell) => {
                let vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
                let mut policy = cell.borrow_mut();
                let group = policy.shared_group();
                Some(RefCell::new(Zero3::loading(
                    model.units(),
                    &vars,
                    group,
                    None,
                    |unit, mine| policy.copy_unit_into(unit, mine, &[]),
                )?))
            }
        };
        self.reference = Some(Reference { model, shards });
        Ok(())
    }

    /// Attach a PPO value model: a copy of the policy's trunk with a zero-initialised scalar
    /// head and its own AdamW (same settings and schedule as the policy's). Under ZeRO-3 a
    /// collective: the value model is sharded like the policy, copied one unit at a time.
    pub fn attach_critic(&mut self) -> Result<()> {
        let (device, adamw) = (self.config.device, self.config.adamw);
        self.critic = Some(match &self.zero {
            Some(cell) => {
                Critic::from_policy_shards(&mut cell.borrow_mut(), self.model.config(), device, adamw)?
            }
            None => Critic::from_policy(&self.vs, self.model.config(), adamw)?,
        });
        Ok(())
    }

    /// Attach a PPO value model loaded from a reward model's directory
    /// (`LlamaForSequenceClassification` with one label: `model.*` and `score.weight`); under
    /// ZeRO-3 each rank reads its shards only.
    pub fn attach_critic_from(&mut self, reward_model: &Path) -> Result<()> {
        let (device, adamw) = (self.config.device, self.config.adamw);
        self.critic = Some(match &self.zero {
            Some(cell) => {
                let group = cell.borrow().shared_group();
                Critic::from_reward_model_shards(reward_model, device, group, self.training())?
            }
            None => Critic::from_reward_model(reward_model, device, adamw)?,
        });
        Ok(())
    }

    /// Attach a frozen reward model (a `…ForSequenceClassification` directory with one label)
    /// that [`Learner::score`] scores each response with; under ZeRO-3 each rank reads its
    /// shards only. Its vocabulary must be the policy's, so every token the policy samples is
    /// one it reads.
    pub fn attach_reward_model(&mut self, dir: &Path) -> Result<()> {
        let device = self.config.device;
        let mut model = match &self.zero {
            Some(cell) => {
                let group = cell.borrow().shared_group();
                ScoreModel::load_sharded(dir, device, group, None)?
            }
            None => ScoreModel::load(dir, device)?,
        };
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

    /// Mean loss of `batch` without updating anything.
    pub fn eval_loss(&self, batch: &TrainBatch, objective: Objective) -> Result<f64> {
        if self.zero.is_some() {
            return self.sharded_eval_loss(batch, objective);
        }
        tch::no_grad(|| self.loss(batch, objective).map(|l| l.double_value(&[])))
    }

    /// Every parameter as a [`WeightChunk`] tagged with `version`, in name order: what the
    /// rollout engines load after a step. Under ZeRO-3 a collective, and rank 0 alone gets
    /// the chunks (the other ranks an empty list).
    pub fn export_weights(&self, version: u64) -> Result<Vec<WeightChunk>> {
        if self.zero.is_some() {
            let mut chunks = Vec::new();
            self.visit_weights(|name, t| {
                chunks.push(checkpoint::export_chunk(name.to_string(), t, version)?);
                Ok(())
            })?;
            chunks.sort_by(|a, b| a.name.cmp(&b.name));
            return Ok(chunks);
        }
        checkpoint::export_chunks(&self.vs, version)
    }

    /// Every parameter's name, element type and shape, in the order [`Learner::visit_weights`]
    /// gives them.
    pub fn weight_table(&self) -> Result<Vec<(String, Kind, Vec<i64>)>> {
        if self.zero.is_some() {
            return self.sharded_table();
        }
        let vars: std::collections::BTreeMap<String, Tensor> = self.vs.variables().into_iter().collect();
        Ok(vars
            .into_iter()
            .map(|(name, t)| (name, t.kind(), t.size()))
            .collect())
    }

    /// Call `f` with every parameter, whole, on the learner's device, in the order of
    /// [`Learner::weight_table`] (by name; under ZeRO-3 unit by unit). Under ZeRO-3 a
    /// collective: each unit is gathered for the calls of its parameters and let go after, so
    /// no rank ever holds the whole model, and rank 0 alone calls `f`.
    pub fn visit_weights(&self, mut f: impl FnMut(&str, &Tensor) -> Result<()>) -> Result<()> {
        tch::no_grad(|| {
            if self.zero.is_some() {
                return self.sharded_visit(f);
            }
            let vars: std::collections::BTreeMap<String, Tensor> = self.vs.variables().into_iter().collect();
            vars.iter().try_for_each(|(name, t)| f(name, t))
        })
    }

    /// Every parameter copied on the learner's device, in name order: a snapshot the next
    /// step does not change, which an engine loads device to device, never staged in host
    /// memory (a run packs its snapshot in broadcast buckets instead, from
    /// [`Learner::visit_weights`]). It holds the whole model once more on the device, so a
    /// ZeRO-3 learner refuses ([`Learner::export_weights`] assembles its weights in host
    /// memory, unit by unit).
    pub fn device_weights(&self) -> Result<Vec<(String, Tensor)>> {
        if self.zero.is_some() {
            return Err(LearnerError::Order(
                "device_weights: a ZeRO-3 learner's whole model is never assembled on a device; use export_weights",
            ));
        }
        let vars: std::collections::BTreeMap<String, Tensor> = self.vs.variables().into_iter().collect();
        Ok(tch::no_grad(|| {
            vars.into_iter().map(|(name, t)| (name, t.copy())).collect()
        }))
    }

    /// Save the model in Hugging Face format. Under ZeRO-3 a collective (every rank calls it):
    /// unit by unit, rank 0 writing, in safetensors files of at most 5 GB with an index.
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        if self.zero.is_some() {
            return self.sharded_save_model(dir);
        }
        checkpoint::save_model(&self.vs, self.model.config(), dir)
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
pub(super) fn host_f32s(t: Tensor) -> Result<Vec<f32>> {
    Vec::<f32>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float).reshape([-1])).map_err(|source| {
        LearnerError::Torch {
            context: "reading per-token scores".into(),
            source,
        }
    })
}
