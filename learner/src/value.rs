//! Models with a scalar head (`score.weight`, as Hugging Face's `LlamaForSequenceClassification`
//! and its siblings): [`ScoreModel`]. The PPO value model (critic) is one with its own AdamW,
//! trained on PPO's clipped value loss. Tülu 3 starts it from the reward model's checkpoint
//! ([`Critic::from_reward_model`], which may have another shape than the policy, as the 70B
//! runs' 8B reward model); without one it copies the policy's trunk and starts its head at
//! zero, so its first estimates are 0. The same model is what a reward-model stage trains
//! (Bradley–Terry on preference pairs) and saves, and what scores responses, frozen, when the
//! reward model is part of the RL reward. Under ZeRO-3 a score model is sharded over the
//! policy's ranks like the policy ([`ScoreModel::shards`]) and runs unit by unit on the flat
//! layout ([`Flat`]); its head belongs to the last unit.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

use rlvr_dist::ProcessGroup;
use tch::nn::{Init, VarStore};
use tch::{Device, Kind, Tensor};

use crate::checkpoint;
use crate::error::{LearnerError, Result};
use crate::model::{CausalLm, Config};
use crate::optim::{AdamW, AdamWConfig};
use crate::policy::{final_states, response_states, Flat, Tokens};
use crate::zero::{Training, Zero3};

/// A model with a scalar head: the trunk of a causal LM and `score.weight`. A value model
/// trains one; a reward model is one, frozen.
pub(crate) struct ScoreModel {
    pub(crate) vs: VarStore,
    trunk: CausalLm,
    head: Tensor,
    /// The weights' ZeRO-3 shards (and a trained model's optimiser state), when the model is
    /// spread over the policy's ranks.
    pub(crate) shards: Option<RefCell<Zero3>>,
}

/// A value model and its optimiser (its shards' own, under ZeRO-3).
pub(crate) struct Critic {
    pub(crate) model: ScoreModel,
    pub(crate) opt: AdamW,
}

impl Critic {
    /// A critic whose trunk is a copy of `policy`'s weights and whose head starts at zero.
    pub(crate) fn from_policy(policy: &VarStore, config: &Config, adamw: AdamWConfig) -> Result<Self> {
        Ok(Self::with_optimiser(
            ScoreModel::from_policy(policy, config)?,
            adamw,
        ))
    }

    /// A critic loaded from a reward model's Hugging Face directory.
    pub(crate) fn from_reward_model(dir: &Path, device: Device, adamw: AdamWConfig) -> Result<Self> {
        Ok(Self::with_optimiser(ScoreModel::load(dir, device)?, adamw))
    }

    /// A critic sharded beside the policy's shards `policy` (over its group, its optimiser
    /// offloaded when the policy's is), its trunk copied from the policy one unit at a time (a
    /// collective) and its head at zero.
    pub(crate) fn from_policy_shards(
        policy: &mut Zero3,
        config: &Config,
        device: Device,
        adamw: AdamWConfig,
    ) -> Result<Self> {
        let mut model = ScoreModel::allocated(config, device);
        let vars: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
        let shards = Zero3::loading(
            model.units(),
            &vars,
            policy.shared_group(),
            Some(Training {
                adamw,
                offload: policy.offloads(),
            }),
            |unit, mine| policy.copy_unit_into(unit, mine, &["score.weight"]),
        )?;
        model.shards = Some(RefCell::new(shards));
        Ok(Self {
            model,
            opt: AdamW::new(Vec::new(), adamw),
        })
    }

    /// A critic loaded from a reward model's directory straight into shards over `group`,
    /// trained as `training` says.
    pub(crate) fn from_reward_model_shards(
        dir: &Path,
        device: Device,
        group: Arc<ProcessGroup>,
        training: Training,
    ) -> Result<Self> {
        Ok(Self {
            model: ScoreModel::load_sharded(dir, device, group, Some(training))?,
            opt: AdamW::new(Vec::new(), training.adamw),
        })
    }

    fn with_optimiser(model: ScoreModel, adamw: AdamWConfig) -> Self {
        let params: std::collections::BTreeMap<String, Tensor> = model.vs.variables().into_iter().collect();
        let opt = AdamW::new(params.into_iter().collect(), adamw);
        Self { model, opt }
    }

    /// Forget the accumulated gradients.
    pub(crate) fn zero_grad(&mut self) {
        match &self.model.shards {
            Some(z) => z.borrow_mut().zero_grad(),
            None => self.opt.zero_grad(),
        }
    }

    /// Optimiser steps taken.
    pub(crate) fn steps_taken(&self) -> u64 {
        match &self.model.shards {
            Some(z) => z.borrow().steps_taken(),
            None => self.opt.steps_taken(),
        }
    }

    /// Clip and step at rate `lr`; returns the gradient norm before clipping.
    pub(crate) fn step(&mut self, max_norm: Option<f64>, lr: f64) -> Result<f64> {
        match &self.model.shards {
            Some(z) => {
                let mut z = z.borrow_mut();
                let norm = z.clip_grad_norm(max_norm)?;
                z.step(lr)?;
                Ok(norm)
            }
            None => {
                let norm = self.opt.clip_grad_norm(max_norm);
                self.opt.step(lr);
                Ok(norm)
            }
        }
    }
}

impl ScoreModel {
    /// A copy of `policy`'s trunk with a zero head. Nothing is drawn at random (the trunk is
    /// allocated, then copied), so building one never disturbs a seeded initialisation on
    /// another thread.
    fn from_policy(policy: &VarStore, config: &Config) -> Result<Self> {
        let model = Self::allocated(config, policy.device());
        let theirs = policy.variables();
        tch::no_grad(|| {
            for (name, dst) in model.vs.variables() {
                if name == "score.weight" {
                    continue;
                }
                let src = theirs.get(&name).ok_or_else(|| LearnerError::Checkpoint {
                    path: "value model".into(),
                    message: format!("value model tensor `{name}` has no counterpart in the policy"),
                })?;
                dst.shallow_clone().copy_(src);
            }
            Ok::<(), LearnerError>(())
        })?;
        Ok(model)
    }

    /// A score model of `config`'s trunk with its weights allocated and unset (no LM head:
    /// the head reads hidden states only).
    fn allocated(config: &Config, device: Device) -> Self {
        let mut config = config.clone();
        config.tie_word_embeddings = true;
        let vs = VarStore::new(device);
        let trunk = CausalLm::for_loading(&vs.root(), &config);
        let head = (vs.root() / "score").var("weight", &[1, config.hidden_size], Init::Const(0.0));
        Self {
            vs,
            trunk,
            head,
            shards: None,
        }
    }

    /// A reward model's Hugging Face directory (`config.json` and a `model.safetensors`
    /// holding `model.*` and `score.weight`).
    pub(crate) fn load(dir: &Path, device: Device) -> Result<Self> {
        let model = Self::allocated(&checkpoint::read_config(dir)?, device);
        checkpoint::load_dir(&model.vs, dir)?;
        Ok(model)
    }

    /// [`ScoreModel::load`] straight into ZeRO-3 shards over `group`, one unit at a time:
    /// trained as `training` says (a value model), or frozen (`None`: a reward model).
    pub(crate) fn load_sharded(
        dir: &Path,
        device: Device,
        group: Arc<ProcessGroup>,
        training: Option<Training>,
    ) -> Result<Self> {
        let mut model = Self::allocated(&checkpoint::read_config(dir)?, device);
        let vars: Vec<(String, Tensor)> = model.vs.variables().into_iter().collect();
        let matched = checkpoint::Matched::dir(&vars, dir)?;
        let shards = Zero3::loading(model.units(), &vars, group, training, |_, unit| {
            matched.read(unit)
        })?;
        model.shards = Some(RefCell::new(shards));
        Ok(model)
    }

    /// The parameter units ZeRO-3 shards: the trunk's, the head in the last.
    fn units(&self) -> Vec<Vec<Tensor>> {
        let mut units = self.trunk.units();
        if let Some(last) = units.last_mut() {
            last.push(self.head.shallow_clone());
        }
        units
    }

    /// The shards, for the passes that need them.
    fn shards(&self) -> Result<&RefCell<Zero3>> {
        self.shards
            .as_ref()
            .ok_or(LearnerError::Order("the score model is not sharded"))
    }

    /// The head's score of each of the hidden states `h` `[.., hidden]`.
    fn project(&self, h: &Tensor) -> Tensor {
        h.to_kind(Kind::Float)
            .matmul(&self.head.transpose(0, 1))
            .squeeze_dim(-1)
    }

    /// [`ScoreModel::values`] of the flat layout, unit by unit over the shards (a collective).
    pub(crate) fn values_by_unit(&self, flat: &Flat) -> Result<Tensor> {
        self.trunk.forward_by_unit(
            flat.input_ids(),
            Some(flat.documents()),
            |h| self.project(&flat.response_states(h)),
            &mut *self.shards()?.borrow_mut(),
        )
    }

    /// [`ScoreModel::sequence_scores`] unit by unit over the shards (a collective).
    pub(crate) fn sequence_scores_by_unit(&self, input_ids: &Tensor, last: &Tensor) -> Result<Tensor> {
        self.trunk.forward_by_unit(
            input_ids,
            None,
            |h| self.scores_at(h, last),
            &mut *self.shards()?.borrow_mut(),
        )
    }

    /// Back-propagate `loss` of [`ScoreModel::sequence_scores_by_unit`]'s scores unit by unit
    /// into the shards' gradients (a collective); returns the loss, detached.
    pub(crate) fn backward_scores_by_unit(
        &self,
        input_ids: &Tensor,
        last: &Tensor,
        loss: impl FnOnce(&Tensor) -> Tensor,
    ) -> Result<Tensor> {
        self.trunk.backward_by_unit_with(
            input_ids,
            None,
            |h| loss(&self.scores_at(h, last)),
            &[self.head.shallow_clone()],
            &mut *self.shards()?.borrow_mut(),
        )
    }

    /// Back-propagate `loss` of [`ScoreModel::values_by_unit`]'s values unit by unit into the
    /// shards' gradients (a collective); returns the loss, detached.
    pub(crate) fn backward_values_by_unit(
        &self,
        flat: &Flat,
        loss: impl FnOnce(&Tensor) -> Tensor,
    ) -> Result<Tensor> {
        self.trunk.backward_by_unit_with(
            flat.input_ids(),
            Some(flat.documents()),
            |h| loss(&self.project(&flat.response_states(h))),
            &[self.head.shallow_clone()],
            &mut *self.shards()?.borrow_mut(),
        )
    }

    /// [`ScoreModel::response_scores`] of the flat layout, unit by unit (a collective).
    pub(crate) fn response_scores_by_unit(&self, flat: &Flat, lens: &Tensor) -> Result<Tensor> {
        self.trunk.forward_by_unit(
            flat.input_ids(),
            Some(flat.documents()),
            |h| self.project(&flat.last_states(h, lens)),
            &mut *self.shards()?.borrow_mut(),
        )
    }

    /// The trunk's shape.
    pub(crate) fn config(&self) -> &Config {
        self.trunk.config()
    }

    /// The score of each row of `input_ids` `[rows, cols]` at its position in `last` `[rows]`:
    /// a reward model's reward for the sequence ending there.
    pub(crate) fn sequence_scores(&self, input_ids: &Tensor, last: &Tensor) -> Tensor {
        self.scores_at(&self.trunk.hidden_states(input_ids), last)
    }

    /// [`ScoreModel::sequence_scores`] from the trunk's final hidden states `h`.
    pub(crate) fn scores_at(&self, h: &Tensor, last: &Tensor) -> Tensor {
        let hidden = h.size()[2];
        let at = last.view([-1, 1, 1]).expand([-1, 1, hidden], false);
        self.project(&h.gather(1, &at, false).squeeze_dim(1))
    }

    /// Back-propagate `loss` of the trunk's final hidden states with one layer's activations
    /// held at a time ([`CausalLm::backward_checkpointed`]); returns the loss, detached.
    pub(crate) fn backward_checkpointed(
        &self,
        input_ids: &Tensor,
        loss: impl FnOnce(&Tensor) -> Tensor,
    ) -> Tensor {
        self.trunk.backward_checkpointed(input_ids, None, loss)
    }

    /// Save as the family's `…ForSequenceClassification` with one label (`model.*` and
    /// `score.weight`; no LM head), the form [`ScoreModel::load`] and PPO's
    /// `rlvr.reward_model_path` read. Sharded, a collective: unit by unit, rank 0 writing.
    pub(crate) fn save(&self, dir: &Path) -> Result<()> {
        if let Some(cell) = &self.shards {
            return cell.borrow_mut().save(dir, &self.hf_config());
        }
        let tensors: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(name, _)| name != "lm_head.weight")
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
            .map(|(n, t)| (n, t.contiguous()))
            .collect();
        checkpoint::write_model(dir, &self.hf_config(), &tensors)
    }

    /// The `config.json` of the family's `…ForSequenceClassification` with one label.
    fn hf_config(&self) -> serde_json::Value {
        let trunk = self.trunk.config();
        let mut config = trunk.to_hf_json(checkpoint::dtype_name(self.head.kind()));
        if let Some(m) = config.as_object_mut() {
            m.insert(
                "architectures".into(),
                serde_json::json!([trunk.family.sequence_classification_class()]),
            );
            m.insert("num_labels".into(), 1.into());
        }
        config
    }

    /// Value `[rows, cols]` of the state each response token is generated from.
    pub(crate) fn values(&self, tokens: &Tokens) -> Tensor {
        self.project(&response_states(&self.trunk, tokens))
    }

    /// The score `[rows]` of each response after its last token (`lens` `[rows]`, each ≥ 1):
    /// a reward model's reward for the prompt and response.
    pub(crate) fn response_scores(&self, tokens: &Tokens, lens: &Tensor) -> Tensor {
        self.project(&final_states(&self.trunk, tokens, lens))
    }
}
