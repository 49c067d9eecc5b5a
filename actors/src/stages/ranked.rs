//! A stage spread over `learner.world_size` local ranks: `rlvr run` starts that many processes
//! of the hidden `rlvr stage-rank`, each of which joins the group torchrun's variables describe
//! (Gloo on CPU, NCCL on each rank's GPU) and trains its share of every batch, with ZeRO-3
//! (`launch.zero_stage = 3`) or data-parallel; rank 0 keeps the log and writes the records. In
//! an RLVR stage rank 0 also runs the actor graph, and the other ranks follow its learner.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use rlvr_dist::{Backend, ProcessGroup, Rendezvous};
use rlvr_learner::runtime::default_device;
use rlvr_learner::Learner;
use rlvr_recipes::spec::StageKind;
use rlvr_recipes::Recipe;

use super::{engine_ranks, lm, preference, rlvr};
use crate::metrics::MetricsLog;
use crate::UsageError;

/// How a stage's learner is laid out over processes.
pub(super) enum Layout {
    /// One process, this one.
    Alone,
    /// This process is one rank of a group a launcher started (torchrun, `srun`): it joins it.
    Launched,
    /// `learner.world_size` local ranks, started here.
    Local,
}

/// Where `stage` runs: as one rank of the group a launcher started this process in, over
/// `learner.world_size` local ranks, or alone. Under a launcher the recipe's
/// `learner.world_size`, when set above 1, must equal the launched ranks that learn (all of
/// them, or an RLVR stage's learner GPUs when the launcher started more: the rest run engines,
/// `engine_ranks.rs`).
pub(super) fn layout(stage: &Recipe) -> Result<Layout> {
    if crate::ranks::is_rank() {
        let rdv = Rendezvous::from_env()?;
        let learners = engine_ranks::split(stage, rdv.world_size).learners;
        let asked = stage.learner.world_size;
        if asked > 1 && asked as usize != learners {
            bail!(UsageError(format!(
                "stage `{}`: learner.world_size = {asked}, but {learners} of the {} ranks the \
                 launcher started learn (WORLD_SIZE; an RLVR stage's learners are \
                 rlvr.actor_num_gpus_per_node): set learner.world_size = {learners} or leave it at 1",
                stage.name, rdv.world_size
            )));
        }
        return Ok(Layout::Launched);
    }
    Ok(match stage.learner.world_size {
        0 | 1 => Layout::Alone,
        _ => Layout::Local,
    })
}

/// Run `stage` as this launched rank, or spawn its local ranks; returns the final model's
/// directory.
pub(super) fn run_ranks(stage: &Recipe, out: &Path, init: Option<&Path>, resume: bool) -> Result<PathBuf> {
    match layout(stage)? {
        Layout::Launched => run_rank(stage, out, init, resume).map(|()| out.join(&stage.name)),
        _ => spawn(stage, out, init, resume),
    }
}

/// Run `stage` as `stage.learner.world_size` local ranks; returns the final model's directory.
fn spawn(stage: &Recipe, out: &Path, init: Option<&Path>, resume: bool) -> Result<PathBuf> {
    let mut args: Vec<OsString> = ["stage-rank", "--out"].map(OsString::from).to_vec();
    args.extend([out.as_os_str().into(), "--stage".into(), (&stage.name).into()]);
    if let Some(init) = init {
        args.extend(["--init".into(), init.as_os_str().into()]);
    }
    if resume {
        args.push("--resume".into());
    }
    // The ranks read the stage from the resolved recipe; a reward model an earlier stage of
    // this run trained is not in it.
    if let Some(rl) = stage.rlvr.as_ref().filter(|rl| !rl.reward_model_path.is_empty()) {
        args.extend(["--reward-model".into(), (&rl.reward_model_path).into()]);
    }
    crate::ranks::spawn_local_with(stage.learner.world_size as usize, &args)?;
    Ok(out.join(&stage.name))
}

/// One rank of a stage: join the learner group and train, or, past an RLVR stage's learners,
/// run a rollout engine for them.
pub fn run_rank(stage: &Recipe, out: &Path, init: Option<&Path>, resume: bool) -> Result<()> {
    let launched = Rendezvous::from_env()?;
    let split = engine_ranks::split(stage, launched.world_size);
    if launched.rank >= split.learners {
        return engine_ranks::serve(stage, out, &launched);
    }
    let rdv = Rendezvous {
        world_size: split.learners,
        ..launched
    };
    let device = match default_device() {
        tch::Device::Cuda(_) => tch::Device::Cuda(rdv.local_rank),
        d => d,
    };
    let group = ProcessGroup::new(
        &rdv,
        Backend::for_device(device),
        "learner",
        Duration::from_secs(1800),
    )?;
    // Rank 0 logs, its records tagged with the stage as the run's own process tags them.
    let mut metrics = match group.rank() {
        0 => Some(MetricsLog::open(&out.join("metrics.jsonl"))?.for_stage(&stage.name)?),
        _ => None,
    };
    if stage.kind == Some(StageKind::Rlvr) {
        // Rank 0's requests wait out a whole step's rollouts: no short timeout.
        let requests = group.gloo_sibling(&rdv.host, "rlvr-requests", Duration::from_secs(7 * 24 * 3600))?;
        let ranks = rlvr::LearnerRanks { group, requests };
        let Some(log) = metrics else {
            return rlvr::follow(stage, out, init, resume, device, ranks);
        };
        // With engine ranks, rank 0 holds no engine of its own and listens for theirs.
        let (listen, stage) = match split.engines {
            0 => (None, stage.clone()),
            n => {
                tracing::info!(
                    "stage `{}`: {n} launched rank(s) run the rollout engines",
                    stage.name
                );
                let mut learners_only = stage.clone();
                learners_only.rollout.workers = 0;
                (Some(engine_ranks::listen(&rdv, out)?), learners_only)
            }
        };
        return rlvr::lead(&stage, out, init, resume, &log, listen.as_ref(), &[], Some(ranks)).map(drop);
    }
    let metrics = metrics.as_mut();
    match stage.kind {
        Some(StageKind::Pretrain | StageKind::Sft) => {
            lm::train(stage, out, init, resume, metrics, Some(group), device)
        }
        Some(StageKind::Dpo | StageKind::Rm) => {
            preference::train(stage, out, init, resume, metrics, Some(group), device)
        }
        _ => bail!("stage `{}` does not run over several learner ranks", stage.name),
    }
    .map(drop)
}

/// The stage's opening words on a ZeRO-3 learner over `world` ranks.
pub(super) fn zero3_layout(world: usize, offload: bool) -> String {
    match offload {
        true => format!(", ZeRO-3 over {world} ranks, optimiser offloaded to host memory"),
        false => format!(", ZeRO-3 over {world} ranks"),
    }
}

/// Put `learner` on `group`: ZeRO-3 when the stage asks for it, data-parallel otherwise; returns
/// how, for the stage's opening line.
pub(super) fn distribute(
    learner: &mut Learner,
    stage: &Recipe,
    group: Option<ProcessGroup>,
) -> Result<String> {
    Ok(match group {
        Some(g) if stage.launch.zero_stage >= 3 => {
            let world = g.world_size();
            learner.set_zero3(g)?;
            zero3_layout(world, stage.launch.offload_optimizer)
        }
        Some(g) => {
            let world = g.world_size();
            learner.set_data_parallel(g)?;
            format!(", data-parallel over {world} ranks")
        }
        None => String::new(),
    })
}
