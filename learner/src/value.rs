//! Models with a scalar head (`score.weight`, as Hugging Face's `LlamaForSequenceClassification`
//! and its siblings): [`ScoreModel`]. The PPO value model (critic) is one with its own AdamW,
//! trained on PPO's clipped value loss. Tülu 3 starts it from the reward model's checkpoint
//! ([`Critic::from_reward_model`], which may have another shape than the policy, as the 70B
//! runs' 8B reward model); without one it copies the policy's trunk and starts its head at
//! zero, so its first estimates are 0. The same model is what a reward-model stage trains
//! (Bradley–Terry on preference pairs) and saves, and what scores responses, frozen, when the
//! reward model is part of the RL reward.

use std::path::Path;

use tch::nn::{Init, VarStore};
use tch::{Device, Kind, Tensor};

use crate::checkpoint;

use crate::error::{LearnerError, Result};
use crate::model::{CausalLm, Config};
use crate::optim::{AdamW, AdamWConfig};
use crate::policy::{final_states, response_states, Tokens};

/// A model with a scalar head: the trunk of a causal LM and `score.weight`. A value model
/// trains one; a reward model is one, frozen.
pub(crate) struct ScoreModel {
    pub(crate) vs: VarStore,
    trunk: CausalLm,
    head: Tensor,
}

/// A value model and its optimiser.
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

    fn with_optimiser(model: ScoreModel, adamw: AdamWConfig) -> Self {
        let params: std::collections::BTreeMap<String, Tensor> = model.vs.variables().into_iter().collect();
        let opt = AdamW::new(params.into_iter().collect(), adamw);
        Self { model, opt }
    }
}

impl ScoreModel {
    /// A copy of `policy`'s trunk with a zero head.
    fn from_policy(policy: &VarStore, config: &Config) -> Result<Self> {
        let vs = VarStore::new(policy.device());
        let trunk = CausalLm::new(&vs.root(), config);
        let head = (vs.root() / "score").var("weight", &[1, config.hidden_size], Init::Const(0.0));
        let mine = vs.variables();
        tch::no_grad(|| {
            for (name, t) in policy.variables() {
                let Some(dst) = mine.get(&name) else {
                    return Err(LearnerError::Checkpoint {
                        path: "value model".into(),
                        message: format!("policy tensor `{name}` has no place in the value model"),
                    });
                };
                dst.shallow_clone().copy_(&t);
            }
            Ok(())
        })?;
        Ok(Self { vs, trunk, head })
    }

    /// A reward model's Hugging Face directory (`config.json` and a `model.safetensors`
    /// holding `model.*` and `score.weight`).
    pub(crate) fn load(dir: &Path, device: Device) -> Result<Self> {
        let mut config = checkpoint::read_config(dir)?;
        // The head reads hidden states only: no LM head to allocate.
        config.tie_word_embeddings = true;
        let vs = VarStore::new(device);
        let trunk = CausalLm::for_loading(&vs.root(), &config);
        let head = (vs.root() / "score").var("weight", &[1, config.hidden_size], Init::Const(0.0));
        checkpoint::load_dir(&vs, dir)?;
        Ok(Self { vs, trunk, head })
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
        let h = h.to_kind(Kind::Float);
        let hidden = h.size()[2];
        let at = last.view([-1, 1, 1]).expand([-1, 1, hidden], false);
        let h = h.gather(1, &at, false).squeeze_dim(1);
        h.matmul(&self.head.transpose(0, 1)).squeeze_dim(-1)
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
    /// `rlvr.reward_model_path` read.
    pub(crate) fn save(&self, dir: &Path) -> Result<()> {
        let trunk = self.trunk.config();
        let mut config = trunk.to_hf_json(checkpoint::dtype_name(self.head.kind()));
        if let Some(m) = config.as_object_mut() {
            m.insert(
                "architectures".into(),
                serde_json::json!([trunk.family.sequence_classification_class()]),
            );
            m.insert("num_labels".into(), 1.into());
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
        checkpoint::write_model(dir, &config, &tensors)
    }

    /// Value `[rows, cols]` of the state each response token is generated from.
    pub(crate) fn values(&self, tokens: &Tokens) -> Tensor {
        let h = response_states(&self.trunk, tokens).to_kind(Kind::Float);
        h.matmul(&self.head.transpose(0, 1)).squeeze_dim(-1)
    }

    /// The score `[rows]` of each response after its last token (`lens` `[rows]`, each ≥ 1):
    /// a reward model's reward for the prompt and response.
    pub(crate) fn response_scores(&self, tokens: &Tokens, lens: &Tensor) -> Tensor {
        let h = final_states(&self.trunk, tokens, lens).to_kind(Kind::Float);
        h.matmul(&self.head.transpose(0, 1)).squeeze_dim(-1)
    }
}
