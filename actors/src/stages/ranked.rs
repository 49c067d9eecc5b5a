//! A stage spread over local ranks — one per GPU of `launch.gpus` on one node, else
//! `learner.world_size` — or over the ranks a launcher started: `rlvr run` starts the local
//! ones as processes of the hidden `rlvr stage-rank`, and each rank joins the group torchrun's
//! variables describe (Gloo on CPU, NCCL on each rank's GPU) and trains its share of every
//! batch, with ZeRO-3 (`launch.zero_stage = 3`) or data-parallel; rank 0 keeps the log and
//! writes the records. In an RLVR stage rank 0 also runs the actor graph, the other learner
//! ranks follow its learner, and ranks past the learners run its engines (`engine_ranks.rs`).

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
        engine_ranks::check(stage, rdv.world_size)?;
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
    Ok(match local_world(stage, visible_gpus())? {
        0 | 1 => Layout::Alone,
        _ => Layout::Local,
    })
}

/// GPUs this process sees.
fn visible_gpus() -> usize {
    usize::try_from(tch::Cuda::device_count()).unwrap_or(0)
}

/// The local ranks `rlvr run` starts for `stage` outside a launcher, on a machine with `gpus`
/// GPUs: one per GPU of `launch.gpus` on one node (an RLVR stage's learners, then its engine
/// ranks), else `learner.world_size` (learners on this machine's device). More GPUs than the
/// machine has, or several nodes, are refused: a launcher starts those ranks.
pub(super) fn local_world(stage: &Recipe, gpus: usize) -> Result<usize> {
    let l = &stage.launch;
    if l.gpus <= 1 {
        return Ok(stage.learner.world_size.max(1) as usize);
    }
    if l.nodes > 1 {
        bail!(UsageError(format!(
            "stage `{}` asks for {} GPUs on {} nodes (launch.gpus, launch.nodes): start it \
             under torchrun or srun on every node (one process per GPU), or try its topology \
             here with --rehearse",
            stage.name, l.gpus, l.nodes
        )));
    }
    let world = l.gpus as usize;
    if gpus < world {
        bail!(UsageError(format!(
            "stage `{}` asks for {world} GPUs (launch.gpus) and this machine has {gpus}: run it \
             where it has them, set launch.gpus = 1 (one device, or learner.world_size local \
             ranks), or try its topology here with --rehearse",
            stage.name
        )));
    }
    engine_ranks::check(stage, world)?;
    let learners = engine_ranks::split(stage, world).learners;
    let asked = stage.learner.world_size;
    if asked > 1 && asked as usize != learners {
        bail!(UsageError(format!(
            "stage `{}`: learner.world_size = {asked}, but {learners} of its {world} GPUs \
             (launch.gpus) learn: set learner.world_size = {learners} or leave it at 1",
            stage.name
        )));
    }
    Ok(world)
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
    crate::ranks::spawn_local_with(local_world(stage, visible_gpus())?, &args)?;
    Ok(out.join(&stage.name))
}

/// One rank of a stage: join the learner group and train, or, past an RLVR stage's learners,
/// run a rollout engine for them.
pub fn run_rank(stage: &Recipe, out: &Path, init: Option<&Path>, resume: bool) -> Result<()> {
    let launched = Rendezvous::from_env()?;
    let split = engine_ranks::split(stage, launched.world_size);
    if launched.rank >= split.learners + split.engines {
        tracing::info!(
            "stage `{}`: its {} learners and {} engine ranks (rlvr.vllm_num_engines x rlvr.vllm_tensor_parallel_size) take ranks 0..{}; rank {} has nothing to do",
            stage.name,
            split.learners,
            split.engines,
            split.learners + split.engines,
            launched.rank
        );
        return Ok(());
    }
    if launched.rank >= split.learners {
        return engine_ranks::serve(stage, out, &launched);
    }
    let launched_world = launched.world_size;
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
        let mut ranks = rlvr::LearnerRanks {
            group,
            requests,
            engines: None,
        };
        let Some(log) = metrics else {
            return rlvr::follow(stage, out, init, resume, device, ranks);
        };
        // With engine ranks, rank 0 holds no engine of its own, listens for theirs, and sends
        // them each policy version over the weight group.
        let (listen, stage) = match split.engines {
            0 => (None, stage.clone()),
            n => {
                tracing::info!(
                    "stage `{}`: {n} launched rank(s) run the rollout engines",
                    stage.name
                );
                let mut learners_only = stage.clone();
                learners_only.rollout.workers = 0;
                // The secret first: an engine rank reads it once the weight group has met.
                let listen = engine_ranks::listen(&rdv, out)?;
                ranks.engines = Some(engine_ranks::weight_group(stage, &rdv, launched_world, device)?);
                (Some(listen), learners_only)
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

#[cfg(test)]
mod tests {
    use super::engine_ranks::{check, split, Split};
    use super::local_world;

    fn stage(sets: &[&str]) -> rlvr_recipes::Recipe {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let resolved = rlvr_recipes::load("tiny-arith-rlvr", &sets).unwrap();
        resolved.stages()[0].clone()
    }

    /// Eight GPUs on one node, seven of them learners: eight local ranks, the last an engine
    /// rank; fewer GPUs than that, several nodes, or a learner count the GPUs do not give are
    /// refused with what to do; without `launch.gpus` the learner ranks are
    /// `learner.world_size`.
    #[test]
    fn one_local_rank_per_gpu_of_one_node() {
        let eight = stage(&["launch.gpus=8", "rlvr.actor_num_gpus_per_node=[7]"]);
        assert_eq!(local_world(&eight, 8).unwrap(), 8);
        assert_eq!(
            split(&eight, 8),
            Split {
                learners: 7,
                engines: 1,
                tensor_parallel: 1
            }
        );
        let four = stage(&[
            "launch.gpus=8",
            "rlvr.actor_num_gpus_per_node=[4]",
            "rlvr.vllm_num_engines=2",
            "rlvr.vllm_tensor_parallel_size=2",
        ]);
        assert_eq!(
            split(&four, 8),
            Split {
                learners: 4,
                engines: 4,
                tensor_parallel: 2
            },
            "two engines of two ranks"
        );
        // One engine of two ranks: the last two ranks have nothing to do.
        let one = stage(&[
            "launch.gpus=8",
            "rlvr.actor_num_gpus_per_node=[4]",
            "rlvr.vllm_tensor_parallel_size=2",
        ]);
        assert_eq!(split(&one, 8).engines, 2);
        assert!(check(&one, 8).is_ok());
        // Three ranks left for two engines of two: refused, as is a split engine with none.
        let three = stage(&[
            "launch.gpus=8",
            "rlvr.actor_num_gpus_per_node=[5]",
            "rlvr.vllm_num_engines=2",
            "rlvr.vllm_tensor_parallel_size=2",
        ]);
        let err = check(&three, 8).unwrap_err().to_string();
        assert!(err.contains("3 engine ranks do not make engines"), "{err}");
        let none = stage(&[
            "launch.gpus=8",
            "rlvr.actor_num_gpus_per_node=[8]",
            "rlvr.vllm_tensor_parallel_size=2",
        ]);
        let err = check(&none, 8).unwrap_err().to_string();
        assert!(err.contains("leave none of the 8"), "{err}");
        let refused = |s: &rlvr_recipes::Recipe, gpus: usize| local_world(s, gpus).unwrap_err().to_string();
        assert!(
            refused(&eight, 2).contains("this machine has 2"),
            "{}",
            refused(&eight, 2)
        );
        let nodes = stage(&["launch.gpus=16", "launch.nodes=2"]);
        assert!(refused(&nodes, 16).contains("torchrun or srun"));
        let mismatch = stage(&[
            "launch.gpus=8",
            "rlvr.actor_num_gpus_per_node=[7]",
            "learner.world_size=4",
        ]);
        assert!(refused(&mismatch, 8).contains("set learner.world_size = 7"));
        let two = stage(&["learner.world_size=2"]);
        assert_eq!(local_world(&two, 0).unwrap(), 2);
        assert_eq!(
            split(&two, 2),
            Split {
                learners: 2,
                engines: 0,
                tensor_parallel: 1
            },
            "learner ranks all learn"
        );
        assert_eq!(local_world(&stage(&[]), 0).unwrap(), 1);
    }
}
