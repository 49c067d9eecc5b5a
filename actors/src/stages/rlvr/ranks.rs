//! An RLVR stage's learner as every learner rank builds it, and the ranks beyond the first:
//! the step geometry, the policy learner (spread over the ranks, with the reference, value and
//! reward models the algorithm needs, all sharded under ZeRO-3), where a resume starts, and
//! the loop of a rank that follows rank 0's learner.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rlvr_data::Tokenizer;
use rlvr_dist::ProcessGroup;
use rlvr_learner::Learner;
use rlvr_recipes::spec::RlvrSpec;
use rlvr_recipes::Recipe;

use super::{check, spec, Algorithm};
use crate::graph::controller::Progress;
use crate::graph::learner::LearnSettings;
use crate::graph::weight_group::WeightGroup;

/// The learner ranks of a stage spread over several: the learner's own group (ZeRO-3 or
/// data-parallel), a Gloo group rank 0 sends its requests over, and rank 0's weight group to
/// the launched engine ranks.
pub(crate) struct LearnerRanks {
    /// The group the learner trains over.
    pub group: ProcessGroup,
    /// Rank 0's requests to the others.
    pub requests: ProcessGroup,
    /// On rank 0, with launched engine ranks: the group it sends each policy version over.
    pub engines: Option<WeightGroup>,
}

/// How many steps a stage takes and what each holds.
pub(super) struct Geometry {
    pub(super) steps: u64,
    pub(super) prompts_per_step: usize,
    pub(super) samples_per_prompt: usize,
    pub(super) mini_batch: usize,
    /// Optimiser steps (policy versions) per RL step.
    pub(super) versions_per_step: u64,
}

/// The step geometry of the recipe's learner GPUs (`actor_num_gpus_per_node`), as open-instruct
/// sizes it: a step's prompts and a mini-batch's responses are the per-GPU (`local_…`) counts
/// times the learner GPUs, however many ranks this run's learner has.
pub(super) fn geometry(stage: &Recipe, rl: &RlvrSpec) -> Geometry {
    let n = rl.num_samples_per_prompt.max(1) as usize;
    let learners = stage.learner_gpus();
    let prompts_per_step = (rl.local_rollout_batch_size * learners) as usize;
    let steps = stage
        .train
        .max_steps
        .unwrap_or(rl.total_episodes / (prompts_per_step * n) as u64)
        .max(1);
    let mini_batch = (rl.local_mini_batch_size.max(1) * learners) as usize;
    Geometry {
        steps,
        prompts_per_step,
        samples_per_prompt: n,
        mini_batch,
        versions_per_step: rl.num_epochs.max(1) * (prompts_per_step * n).div_ceil(mini_batch) as u64,
    }
}

/// The policy learner as every learner rank builds it: from `init` or initialised, spread
/// over `group` when there is one, with the frozen reference (β > 0), the value model (PPO)
/// and the reward model (`reward_model_multiplier` ≠ 0) the algorithm needs. Without `init`,
/// the starting model is saved to `init_out` (a collective under ZeRO-3; rank 0 writes), where
/// the rollout engines load it. Returns it with a few words on its layout.
#[allow(clippy::too_many_arguments)]
pub(super) fn policy_learner(
    stage: &Recipe,
    rl: &RlvrSpec,
    algorithm: &Algorithm,
    geometry: &Geometry,
    init: Option<&Path>,
    init_out: &Path,
    tok: &Tokenizer,
    device: tch::Device,
    group: Option<ProcessGroup>,
) -> Result<(Learner, String)> {
    let optimizer_steps = geometry.steps * geometry.versions_per_step;
    let (mut learner, layout) =
        crate::stages::lm::new_learner(stage, optimizer_steps, device, init, tok, group)?;
    if init.is_none() {
        learner.save_model(init_out)?;
    }
    if rl.beta > 0.0 {
        learner.freeze_reference()?;
    }
    if algorithm.estimator.needs_values() && rl.reward_model_path.is_empty() {
        learner.attach_critic()?;
    } else if algorithm.estimator.needs_values() {
        // Tülu 3: the value model starts as the reward model.
        learner.attach_critic_from(&crate::stages::resolve_model(&rl.reward_model_path)?)?;
    }
    if rl.reward_model_multiplier != 0.0 {
        let dir = crate::stages::resolve_model(&rl.reward_model_path)?;
        learner
            .attach_reward_model(&dir)
            .with_context(|| format!("stage `{}`: rlvr.reward_model_path", stage.name))?;
    }
    Ok((learner, layout))
}

/// How the learner turns a step's samples into optimiser steps.
pub(super) fn learn_settings(
    rl: &RlvrSpec,
    algorithm: &Algorithm,
    geometry: &Geometry,
    tok: &Tokenizer,
) -> LearnSettings {
    LearnSettings {
        loss: algorithm.loss,
        correction: algorithm.correction,
        epochs: rl.num_epochs.max(1) as usize,
        mini_batch: geometry.mini_batch,
        micro_batch: rl.local_rollout_forward_batch_size.max(1) as usize,
        pad_id: i64::from(tok.pad_id),
    }
}

/// The stage's newest checkpoint, when resuming.
pub(super) fn resume_point(out: &Path, stage: &Recipe, resume: bool) -> Result<Option<(PathBuf, Progress)>> {
    match resume {
        true => {
            crate::stages::latest_checkpoint::<Progress>(&out.join("checkpoints").join(&stage.name), |p| {
                p.step
            })
        }
        false => Ok(None),
    }
}

/// A learner rank other than 0: build the same learner as rank 0, restore the same
/// checkpoint, and join rank 0's learner collectives until the stage ends.
pub(crate) fn follow(
    stage: &Recipe,
    out: &Path,
    init: Option<&Path>,
    resume: bool,
    device: tch::Device,
    ranks: LearnerRanks,
) -> Result<()> {
    check(stage)?;
    let rl = spec(stage)?;
    let tok = crate::stages::tokenizer(stage, init)?;
    let algorithm = Algorithm::from_spec(&stage.name, rl)?;
    let geometry = geometry(stage, rl);
    let init_out = out.join("checkpoints").join(&stage.name).join("init");
    let (mut learner, _) = policy_learner(
        stage,
        rl,
        &algorithm,
        &geometry,
        init,
        &init_out,
        &tok,
        device,
        Some(ranks.group),
    )?;
    if let Some((dir, saved)) = resume_point(out, stage, resume)? {
        learner.load_checkpoint(&dir, saved.policy_version)?;
    }
    let learn = learn_settings(rl, &algorithm, &geometry, &tok);
    crate::graph::learner::follow(learner, &learn, &ranks.requests)
}
