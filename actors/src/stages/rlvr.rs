//! RLVR stages: build the actor graph from the recipe (data actor, rollout and verifier pools,
//! learner, broadcaster under one controller), run it on a tokio runtime, and write the final
//! model and the held-out accuracy curve. GRPO or PPO (`rlvr.algorithm`); resumes from the
//! newest checkpoint.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ractor::Actor;
use rlvr_core::SamplingParams;
use rlvr_data::arith::Split;
use rlvr_data::Tokenizer;
use rlvr_learner::policy::{Aggregation, KlEstimator, PolicyLoss};
use rlvr_recipes::spec::{LossAggregation, MixEntry, RlAlgorithm, RlvrSpec};
use rlvr_recipes::Recipe;
use rlvr_verifiers::reward::Shaping;
use rlvr_verifiers::{Mode, Registry};
use serde_json::json;

use crate::graph::controller::{Controller, ControllerArgs, LoopSettings, Ppo, Progress};
use crate::graph::data::{load_prompts, Prompt};
use crate::graph::learner::LearnSettings;
use crate::metrics::MetricsLog;
use crate::UsageError;

fn spec(stage: &Recipe) -> Result<&RlvrSpec> {
    stage
        .rlvr
        .as_ref()
        .with_context(|| format!("stage `{}` has no [rlvr] table", stage.name))
}

/// The single data set of a stage's mix, checked to be built in or a local JSON-lines file.
fn single(stage: &Recipe, mix: &[MixEntry], key: &str) -> Result<MixEntry> {
    match mix {
        [entry] if entry.dataset.starts_with("builtin:") || entry.dataset.ends_with(".jsonl") => Ok(entry.clone()),
        [entry] => bail!(
            "stage `{}` is not available yet: {key} data set `{}`: this build loads the built-in data sets and local `.jsonl` files in the Tülu 3 RLVR format (hub data sets arrive with the data work)",
            stage.name,
            entry.dataset
        ),
        _ => bail!(UsageError(format!(
            "stage `{}`: {key} must name exactly one data set in this build",
            stage.name
        ))),
    }
}

/// Check the stage can run here.
pub fn check(stage: &Recipe) -> Result<()> {
    let rl = spec(stage)?;
    if KlEstimator::parse(&rl.kl_estimator).is_none() {
        bail!(UsageError(format!(
            "stage `{}`: rlvr.kl_estimator = {:?}: expected kl1 or kl3",
            stage.name, rl.kl_estimator
        )));
    }
    single(stage, &stage.data.mix, "data.mix")?;
    single(stage, &stage.data.eval_mix, "data.eval_mix")?;
    let rm = &rl.reward_model_path;
    if rl.algorithm == RlAlgorithm::Ppo && !rm.is_empty() && !Path::new(rm).is_dir() {
        bail!(
            "stage `{}` is not available yet: rlvr.reward_model_path = {rm:?} is not a local directory (hub downloads arrive with the data work)",
            stage.name
        );
    }
    Ok(())
}

/// The verifiers of the stage, with its data sets routed to them.
fn registry(rl: &RlvrSpec) -> Registry {
    let mut r = Registry::new(match rl.verifier_mode {
        rlvr_recipes::spec::VerifierMode::Default => Mode::Default,
        rlvr_recipes::spec::VerifierMode::Tulu3 => Mode::Tulu3,
    });
    for (dataset, verifier) in &rl.dataset_verifiers {
        r.alias(dataset, verifier);
    }
    r
}

fn split(entry: &MixEntry) -> Split {
    if entry.split == "test" {
        Split::Test
    } else {
        Split::Train
    }
}

/// Run the stage; returns the directory of the final model.
/// For `rlvr data inspect`: the stage's tokenizer, its training prompts' token ids and
/// `rlvr.max_prompt_token_length`.
pub(crate) fn inspect(stage: &Recipe, init: Option<&Path>) -> Result<(Tokenizer, Vec<Vec<u32>>, usize)> {
    check(stage)?;
    let rl = spec(stage)?;
    let tok = match init {
        Some(dir) if dir.join("tokenizer.json").is_file() => Tokenizer::from_file(dir)?,
        _ => Tokenizer::builtin_chars(),
    };
    let entry = single(stage, &stage.data.mix, "data.mix")?;
    let template = super::chat_template(stage, &tok)?;
    let prompts = load_prompts(&entry, split(&entry), stage.seed, &tok, &template, &registry(rl))?;
    let ids = prompts.into_iter().map(|p| p.prompt_ids).collect();
    Ok((tok, ids, rl.max_prompt_token_length as usize))
}

pub fn run(
    stage: &Recipe,
    out: &Path,
    init: Option<&Path>,
    resume: bool,
    metrics: &MetricsLog,
) -> Result<PathBuf> {
    let model_dir = out.join(&stage.name);
    let done_marker = model_dir.join("trainer_state.json");
    check(stage)?;
    let rl = spec(stage)?;
    let t = &stage.train;
    let device = rlvr_learner::runtime::default_device();

    // The policy starts from `init` (the previous stage's or the recipe's model; see
    // `stages::run`) or from scratch.
    let init_dir = init.map(Path::to_path_buf);
    let tok = match &init_dir {
        Some(dir) if dir.join("tokenizer.json").is_file() => Tokenizer::from_file(dir)?,
        _ => Tokenizer::builtin_chars(),
    };
    let verifiers = registry(rl);
    let train_entry = single(stage, &stage.data.mix, "data.mix")?;
    let eval_entry = single(stage, &stage.data.eval_mix, "data.eval_mix")?;
    let limit = rl.max_prompt_token_length as usize;
    let template = super::chat_template(stage, &tok)?;
    let load = |entry: &MixEntry, key: &str| -> Result<Vec<Prompt>> {
        let all = load_prompts(entry, split(entry), stage.seed, &tok, &template, &verifiers)?;
        let total = all.len();
        let kept: Vec<Prompt> = all.into_iter().filter(|p| p.prompt_ids.len() <= limit).collect();
        if kept.is_empty() {
            bail!(UsageError(format!(
                "stage `{}`: all {total} prompts of {key} `{}` are longer than rlvr.max_prompt_token_length = {limit} tokens",
                stage.name, entry.dataset
            )));
        }
        Ok(kept)
    };
    let prompts = load(&train_entry, "data.mix")?;
    let eval_prompts = load(&eval_entry, "data.eval_mix")?;

    let n = rl.num_samples_per_prompt.max(1) as usize;
    let learners: u64 = rl.actor_num_gpus_per_node.iter().sum::<u64>().max(1);
    let prompts_per_step = (rl.local_rollout_batch_size * learners) as usize;
    let steps = t
        .max_steps
        .unwrap_or(rl.total_episodes / (prompts_per_step * n) as u64)
        .max(1);
    let mini_batch = rl.local_mini_batch_size.max(1) as usize;
    let optimizer_steps = steps * rl.num_epochs.max(1) * (prompts_per_step * n).div_ceil(mini_batch) as u64;
    let mut learner = super::lm::new_learner(stage, optimizer_steps, device, init_dir.as_deref(), &tok)?;
    // Rollout engines load the starting weights from a directory.
    let engine_dir: PathBuf = match &init_dir {
        Some(dir) => dir.clone(),
        None => {
            let dir = out.join("checkpoints").join(&stage.name).join("init");
            learner.save_model(&dir)?;
            tok.save(&dir)?;
            dir
        }
    };
    if rl.beta > 0.0 {
        learner.freeze_reference()?;
    }
    let is_ppo = rl.algorithm == RlAlgorithm::Ppo;
    if is_ppo && rl.reward_model_path.is_empty() {
        learner.attach_critic()?;
    } else if is_ppo {
        // Tülu 3: the value model starts as the reward model.
        learner.attach_critic_from(Path::new(&rl.reward_model_path))?;
    }
    // Resume: the policy, its optimiser state and the loop's position from the newest
    // checkpoint; the engines start from its weights; the reference stays the stage's start.
    let ckpt_dir = out.join("checkpoints").join(&stage.name);
    let mut start = Progress::default();
    let mut engine_dir = engine_dir;
    if resume {
        if let Some((dir, saved)) = super::latest_checkpoint::<Progress>(&ckpt_dir, |p| p.step)? {
            learner.load_checkpoint(&dir, saved.policy_version)?;
            metrics.reopen()?.truncate_after("rlvr", saved.step)?;
            eprintln!(
                "resuming {} from {} (step {})",
                stage.name,
                dir.display(),
                saved.step
            );
            engine_dir = dir;
            start = saved;
        }
    }
    let kl = KlEstimator::parse(&rl.kl_estimator).context("kl_estimator checked above")?;
    let learn = LearnSettings {
        loss: PolicyLoss {
            clip: rl.cliprange,
            // PPO puts the KL in the reward; GRPO in the loss.
            beta: if is_ppo { 0.0 } else { rl.beta },
            kl,
            temperature: rl.temperature,
            vf_coef: rl.vf_coef,
            value_clip: rl.cliprange_value,
            aggregation: match rl.loss_aggregation {
                LossAggregation::Token => Aggregation::Token,
                LossAggregation::Sequence => Aggregation::Sequence,
                LossAggregation::DrGrpo => Aggregation::DrGrpo {
                    max_tokens: rl.response_length as usize,
                },
            },
        },
        epochs: rl.num_epochs.max(1) as usize,
        mini_batch,
        micro_batch: rl.local_rollout_forward_batch_size.max(1) as usize,
        pad_id: i64::from(tok.pad_id),
    };
    let mut stop_token_ids = vec![tok.eos_id];
    if let [end_of_turn] = tok.encode("<|im_end|>")[..] {
        stop_token_ids.push(end_of_turn);
    }
    let settings = LoopSettings {
        steps,
        prompts_per_step,
        samples_per_prompt: n,
        sampling: SamplingParams {
            temperature: rl.temperature,
            max_new_tokens: rl.response_length as usize,
            stop_token_ids,
            ..SamplingParams::default()
        },
        eval_every: (steps / rl.num_evals.max(1)).max(1),
        shaping: Shaping {
            verified_reward: rl.verified_reward,
            non_stop_penalty: rl.non_stop_penalty,
            penalty_reward_value: rl.penalty_reward_value,
        },
        async_mode: rl.async_mode,
        seed: stage.seed,
        save_every: rl.save_freq,
        scale_rewards: rl.scale_rewards,
        ppo: is_ppo.then_some(Ppo {
            beta: rl.beta,
            kl,
            gamma: rl.gamma,
            lam: rl.lam,
            whiten: rl.whiten_advantages,
        }),
    };
    eprintln!(
        "stage {}: {}, {} parameters on {:?}, {steps} steps of {prompts_per_step} prompts x {n} samples; {} rollout and {} verifier workers; {} train / {} held-out prompts",
        stage.name,
        if is_ppo { "PPO" } else { "GRPO" },
        learner.num_params(),
        device,
        stage.rollout.workers,
        stage.rollout.verifier_workers,
        prompts.len(),
        eval_prompts.len()
    );

    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps  {msg}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(stage.name.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the actor runtime")?;
    let (done, outcome) = tokio::sync::oneshot::channel();
    let args = ControllerArgs {
        settings,
        learner,
        learn,
        model_dir: engine_dir,
        prompts,
        eval_prompts,
        tokenizer: tok.clone(),
        rollout_workers: stage.rollout.workers.max(1) as usize,
        verifier_workers: stage.rollout.verifier_workers.max(1) as usize,
        verifier_timeout: Duration::from_secs_f64(stage.rollout.verifier_timeout_s.max(0.001)),
        device,
        engine_batch: stage.rollout.engine_batch.max(1) as usize,
        metrics: metrics.reopen()?,
        checkpoints: ckpt_dir,
        bar: bar.clone(),
        done,
        model_out: model_dir.clone(),
        start,
    };
    let summary = runtime.block_on(async move {
        let (_controller, handle) = Actor::spawn(None, Controller, args)
            .await
            .map_err(|e| anyhow::anyhow!("starting the RLVR actor graph: {e}"))?;
        let summary = outcome
            .await
            .map_err(|_| anyhow::anyhow!("the controller stopped without a result"))?;
        let _ = handle.await;
        summary
    });
    // A verifier call abandoned after its timeout may still hold a thread: do not wait for it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    bar.finish_and_clear();
    let summary = summary?;

    tok.save(&model_dir)?;
    let png = out.join("reward.png");
    if crate::plot::reward_curve(metrics.path(), &png)? {
        eprintln!("stage {}: reward curve in {}", stage.name, png.display());
    }
    let state = json!({"step": summary.steps, "evals": summary.evals});
    // Written last: its presence marks the stage complete for `--resume`.
    std::fs::write(&done_marker, serde_json::to_string_pretty(&state)?)?;
    let (first, last) = (summary.evals.first(), summary.evals.last());
    if let (Some((_, a)), Some((_, b))) = (first, last) {
        eprintln!(
            "stage {}: held-out accuracy {a:.3} -> {b:.3} over {} steps; model in {}",
            stage.name,
            summary.steps,
            model_dir.display()
        );
    }
    Ok(model_dir)
}
