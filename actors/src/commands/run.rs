//! `rlvr run`: run a recipe's stages in order into one output directory, with
//! `recipe.resolved.toml`, `metrics.jsonl`, checkpoints, and each stage's final model.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

use rlvr_recipes::spec::StageKind;
use rlvr_recipes::Recipe;
use rlvr_verifiers::Verifier;

use crate::cluster::{self, Listen};
use crate::metrics::MetricsLog;
use crate::stages;
use crate::UsageError;

/// Arguments of `rlvr run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Recipe name (see `rlvr recipes`) or path to a recipe .toml file.
    pub recipe: String,
    /// Override a value (repeatable), as in `rlvr show`.
    #[arg(long = "set", value_name = "KEY=VALUE", conflicts_with = "resume")]
    pub overrides: Vec<String>,
    /// Output directory [default: runs/RECIPE].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its newest checkpoint, with the recipe it saved.
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Delete what --out holds and start over.
    #[arg(long)]
    pub overwrite: bool,
    /// Let worker nodes (`rlvr worker --join`) add rollout and verifier workers to the RLVR
    /// stages, listening on this address.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// File holding the secret worker nodes must share [default: $RLVR_COOKIE_FILE].
    #[arg(long, requires = "listen")]
    pub cookie_file: Option<PathBuf>,
    /// Dress rehearsal: run the recipe's real topology (its stages, one local rank per learner
    /// GPU, ZeRO-3 and offload, batch geometry, schedule) with a tiny model of the same family
    /// and a few steps of built-in data on this CPU over Gloo, then report what the real run
    /// would hold per GPU beside what each rank held (also in OUT/rehearsal.json).
    #[arg(long, conflicts_with_all = ["resume", "listen"])]
    pub rehearse: bool,
    /// The most local ranks a rehearsal starts per stage [default: what this machine's
    /// available memory holds, 350 MiB a rank]; fewer than the real run's GPUs is said.
    #[arg(long, requires = "rehearse")]
    pub max_ranks: Option<u64>,
}

/// Run every stage; each starts from the model the one before it wrote.
pub fn run(args: &Args) -> Result<()> {
    run_with(args, &[])
}

/// [`run`], with `verifiers` beside the built-in ones and the recipe's plug-ins: RLVR stages
/// route data sets to them by name (`rlvr.dataset_verifiers`). The library entry point for a
/// program with verifiers of its own (`examples/custom-verifier`).
pub fn run_with(args: &Args, verifiers: &[Arc<dyn Verifier>]) -> Result<()> {
    let mut resolved = rlvr_recipes::load(&args.recipe, &args.overrides)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("runs").join(resolved.name()));
    let resolved_path = out.join("recipe.resolved.toml");
    if args.resume {
        // A resumed run continues with exactly the recipe it started with.
        let saved = rlvr_recipes::load_resolved(&resolved_path).map_err(|e| {
            UsageError(format!(
                "--resume: {} holds no run to resume ({e})",
                out.display()
            ))
        })?;
        if saved.name() != resolved.name() {
            let msg = format!(
                "--resume: {} holds a run of `{}`, not `{}`",
                out.display(),
                saved.name(),
                resolved.name()
            );
            return Err(UsageError(msg).into());
        }
        resolved = saved;
    }
    let rehearsal = args
        .rehearse
        .then(|| super::rehearse::prepare(&resolved, &out, args.max_ranks));
    if let Some(r) = &rehearsal {
        resolved = r.resolved.clone();
    }
    let stages = resolved.stages();
    for stage in &stages {
        stages::check_available(stage)?;
    }
    let listen = match &args.listen {
        Some(addr) => {
            if !stages.iter().any(|s| s.kind == Some(StageKind::Rlvr)) {
                let msg = format!(
                    "--listen: `{}` has no RLVR stage for worker nodes to join",
                    resolved.name()
                );
                return Err(UsageError(msg).into());
            }
            Some(Listen::new(
                addr,
                &cluster::cookie_file(args.cookie_file.as_ref())?,
            )?)
        }
        None => None,
    };
    // Under a launcher every rank runs this command; rank 0 alone prepares --out and logs (the
    // others reach nothing there before they meet rank 0 in the group's rendezvous).
    let lead = crate::ranks::is_lead();
    let mut metrics = match lead {
        true => {
            prepare_out(&out, args)?;
            if !args.resume {
                std::fs::write(&resolved_path, resolved.to_toml())
                    .with_context(|| format!("writing {}", resolved_path.display()))?;
            }
            tracing::info!("run {} -> {}", resolved.name(), out.display());
            if let Some(r) = &rehearsal {
                r.start()?;
            }
            Some(MetricsLog::open(&out.join("metrics.jsonl"))?)
        }
        false => None,
    };
    let started = std::time::Instant::now();

    // Each stage starts from the policy the last policy stage made; a reward-model stage's model
    // is not a policy: it becomes the reward model of the RLVR stages after it.
    let mut previous: Option<PathBuf> = None;
    let mut reward_model: Option<PathBuf> = None;
    for stage in stages {
        let stage = with_pipeline_reward_model(stage, reward_model.as_deref(), lead);
        let model = match &mut metrics {
            Some(metrics) => stages::run(
                &stage,
                &out,
                previous.as_deref(),
                args.resume,
                metrics,
                listen.as_ref(),
                verifiers,
            )?,
            None => stages::follow(&stage, &out, previous.as_deref(), args.resume)?,
        };
        match stage.kind {
            Some(StageKind::Rm) => reward_model = Some(model),
            _ => previous = Some(model),
        }
    }
    if let (Some(model), true) = (previous, lead) {
        tracing::info!("done: final model in {}", model.display());
    }
    if let (Some(r), true) = (&rehearsal, lead) {
        r.report(&out, started.elapsed().as_secs_f64())?;
    }
    Ok(())
}

/// `stage`, an RLVR stage of a pipeline that trained a reward model before it, with that model
/// as its `rlvr.reward_model_path` (PPO's value model and any learned reward start from it);
/// other stages as they are. `say`: log the change.
fn with_pipeline_reward_model(stage: &Recipe, reward_model: Option<&Path>, say: bool) -> Recipe {
    let mut stage = stage.clone();
    if let (Some(rl), Some(dir)) = (stage.rlvr.as_mut(), reward_model) {
        if rl.reward_model_path == dir.display().to_string() {
            return stage;
        }
        if say {
            tracing::info!(
                "stage {}: reward model from this run's reward-model stage, {} (the recipe names {:?})",
                stage.name,
                dir.display(),
                rl.reward_model_path
            );
        }
        rl.reward_model_path = dir.display().to_string();
    }
    stage
}

fn prepare_out(out: &Path, args: &Args) -> Result<()> {
    let has_run = out.join("metrics.jsonl").exists();
    if args.overwrite && out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
    } else if has_run && !args.resume {
        return Err(UsageError(format!(
            "{} already holds a run; pass --resume to continue it, --overwrite to start over, or another --out",
            out.display()
        ))
        .into());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))
}

/// Arguments of the hidden `rlvr stage-rank`, which `rlvr run` starts once per learner rank.
#[derive(Debug, clap::Args)]
pub struct RankArgs {
    /// The run's output directory (it holds `recipe.resolved.toml`).
    #[arg(long)]
    pub out: PathBuf,
    /// The stage to run.
    #[arg(long)]
    pub stage: String,
    /// The model the stage starts from.
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Continue from the stage's newest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// The reward model an earlier stage of the pipeline trained (an RLVR stage's
    /// `rlvr.reward_model_path`).
    #[arg(long)]
    pub reward_model: Option<PathBuf>,
}

/// Run one learner rank of a stage of the run in `args.out`.
pub fn rank(args: &RankArgs) -> Result<()> {
    let resolved = rlvr_recipes::load_resolved(&args.out.join("recipe.resolved.toml"))?;
    let stage = resolved
        .stages()
        .into_iter()
        .find(|s| s.name == args.stage)
        .with_context(|| format!("{} has no stage `{}`", args.out.display(), args.stage))?;
    let stage = with_pipeline_reward_model(stage, args.reward_model.as_deref(), false);
    stages::ranked::run_rank(&stage, &args.out, args.init.as_deref(), args.resume)
}
