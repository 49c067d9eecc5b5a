//! RLVR stages: build the actor graph from the recipe (data actor, rollout and verifier pools,
//! learner, broadcaster under one controller), run it on a tokio runtime, and write the final
//! model and the held-out accuracy curve. The algorithm (`rlvr.algorithm`: PPO, GRPO, DAPO,
//! GSPO, CISPO, RLOO, REINFORCE++) is read in `algorithm.rs`, the reward's composition in
//! `reward.rs`, the learner every rank builds (and the ranks beyond the first) in `ranks.rs`;
//! resumes from the newest checkpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use ractor::Actor;
use rlvr_core::SamplingParams;
use rlvr_data::arith::Split;
use rlvr_data::mix::MixReport;
use rlvr_data::{rlvr_row, At, Builtin, Tokenizer};
use rlvr_recipes::spec::{MixEntry, RlvrSpec};
use rlvr_recipes::Recipe;
use rlvr_verifiers::{Mode, PluginVerifier, Registry, Verifier, WeightedSum};
use serde_json::json;

use crate::cluster::Listen;
use crate::graph::controller::{Controller, ControllerArgs, EvalTasks, LoopSettings, Progress};
use crate::graph::data::Prompt;
use crate::graph::learner::Ranks;
use crate::graph::wire::EngineOptions;
use crate::metrics::MetricsLog;
use crate::UsageError;

mod algorithm;
mod engines;
mod ranks;
mod reward;

use algorithm::Algorithm;
pub(crate) use ranks::{follow, LearnerRanks};
use ranks::{geometry, learn_settings, policy_learner, resume_point};

fn spec(stage: &Recipe) -> Result<&RlvrSpec> {
    stage
        .rlvr
        .as_ref()
        .with_context(|| format!("stage `{}` has no [rlvr] table", stage.name))
}

/// The RL prompts of `mix` (the stage's `key`): rendered with the stage's chat template,
/// routed to `verifiers`, their labels parsed; prompts longer than `limit` tokens are filtered
/// out (and counted). Returns them, numbered in mix order, and the resolved mix.
pub(crate) fn load_prompts(
    stage: &Recipe,
    key: &str,
    mix: &[MixEntry],
    tok: &Tokenizer,
    verifiers: &Registry,
    limit: Option<usize>,
) -> Result<(Vec<Prompt>, MixReport)> {
    let template = super::chat_template(stage, tok)?;
    let fits = |p: Prompt| limit.is_none_or(|l| p.prompt_ids.len() <= l).then_some(p);
    let read = |row: &serde_json::Value, at: At<'_>| {
        let p = rlvr_row(row, at, &template, super::prompt_format(stage))?;
        Prompt::new(&p, at, tok, verifiers).map(fits)
    };
    let generated = |b: Builtin, i: u64, split| {
        let at = At {
            path: b.name(),
            row: i as usize + 1,
        };
        if let Some(row) = b.row(stage.seed, i, split) {
            return read(&row, at);
        }
        match b.prompt(stage.seed, i, split) {
            Some(row) => Prompt::new(&row, at, tok, verifiers).map(fits),
            None => Ok(None),
        }
    };
    let mixed = super::load_mix(stage, key, mix, generated, read)?;
    let mut prompts = mixed.rows;
    for (i, p) in prompts.iter_mut().enumerate() {
        p.row = i as u64;
    }
    Ok((prompts, mixed.report))
}

/// Whether a built-in data set holds RL prompts.
pub(crate) fn holds_prompts(b: Builtin) -> bool {
    b.prompt(0, 0, Split::Train).is_some() || b.row(0, 0, Split::Train).is_some() || b.fixed_rows().is_some()
}

/// Check the stage can run here.
pub fn check(stage: &Recipe) -> Result<()> {
    let rl = spec(stage)?;
    let algorithm = Algorithm::from_spec(&stage.name, rl)?;
    reward::composition(&stage.name, rl, algorithm.dynamic_sampling.is_some())?;
    check_verifiers(stage, rl)?;
    if rl.num_evals == 0 {
        bail!(UsageError(format!(
            "stage `{}`: rlvr.num_evals = 0: must be >= 1 (held-out evaluations over the run; 1 means at the start and the end)",
            stage.name
        )));
    }
    let hint = "builtin:arith-rlvr, or a data file of RL prompts";
    super::check_mix(stage, "data.mix", &stage.data.mix, hint, holds_prompts)?;
    super::check_mix(stage, "data.eval_mix", &stage.data.eval_mix, hint, holds_prompts)?;
    if stage.data.eval_mix.is_empty() && stage.eval.tasks.is_empty() {
        bail!(UsageError(format!(
            "stage `{}`: name held-out prompts (data.eval_mix) or test sets (eval.tasks)",
            stage.name
        )));
    }
    Ok(())
}

/// The verifiers of the stage, with its data sets routed to them.
fn verifier_mode(rl: &RlvrSpec) -> Mode {
    match rl.verifier_mode {
        rlvr_recipes::spec::VerifierMode::Default => Mode::Default,
        rlvr_recipes::spec::VerifierMode::Tulu3 => Mode::Tulu3,
    }
}

/// The built-in verifiers, `extra` ones (a library caller's), the recipe's plug-ins
/// (`rlvr.verifiers`), and the data sets routed to them (`rlvr.dataset_verifiers`).
fn registry(rl: &RlvrSpec, extra: &[Arc<dyn Verifier>]) -> Registry {
    let mut r = Registry::new(verifier_mode(rl));
    for v in extra {
        r.register(v.clone());
    }
    for (name, plugin) in rl.verifiers.iter().filter(|(_, v)| !v.command.is_empty()) {
        r.register(Arc::new(PluginVerifier::with_processes(
            name,
            plugin.command.clone(),
            Duration::from_secs_f64(plugin.timeout_s),
            plugin.workers as usize,
        )));
    }
    // Sums after plug-ins, so they may name them; `check_verifiers` refused unknown names.
    for (name, spec) in rl.verifiers.iter().filter(|(_, v)| !v.sum.is_empty()) {
        let parts = spec
            .sum
            .iter()
            .filter_map(|(part, &weight)| r.get(part).ok().map(|v| (v.clone(), weight)))
            .collect();
        r.register(Arc::new(WeightedSum::new(name, parts)));
    }
    for (dataset, verifier) in &rl.dataset_verifiers {
        r.alias(dataset, verifier);
    }
    r
}

/// Refuse verifier declarations rlvr cannot run, naming the key.
fn check_verifiers(stage: &Recipe, rl: &RlvrSpec) -> Result<()> {
    let builtin = Registry::new(verifier_mode(rl)).names();
    let plugins: Vec<&String> = rl
        .verifiers
        .iter()
        .filter(|(_, v)| v.sum.is_empty())
        .map(|(name, _)| name)
        .collect();
    for (name, p) in &rl.verifiers {
        let bad = |key: &str, why: String| {
            bail!(UsageError(format!(
                "stage `{}`: rlvr.verifiers.{name}{key}: {why}",
                stage.name
            )))
        };
        if builtin.contains(name) {
            return bad("", "a built-in verifier has this name; choose another".into());
        }
        match (p.command.is_empty(), p.sum.is_empty()) {
            (true, true) => {
                return bad(
                    "",
                    "declares nothing: give `command` (a plug-in) or `sum` (a weighted sum of verifiers)"
                        .into(),
                )
            }
            (false, false) => return bad("", "give `command` or `sum`, not both".into()),
            _ => {}
        }
        for (part, weight) in &p.sum {
            if !builtin.contains(part) && !plugins.contains(&part) {
                let known: Vec<&str> = builtin
                    .iter()
                    .map(String::as_str)
                    .chain(plugins.iter().map(|s| s.as_str()))
                    .collect();
                return bad(
                    &format!(".sum.{part}"),
                    format!(
                        "not a verifier; a sum adds built-in verifiers and plug-ins: {}",
                        known.join(", ")
                    ),
                );
            }
            if !weight.is_finite() {
                return bad(&format!(".sum.{part}"), format!("{weight}: must be finite"));
            }
        }
        if p.sum.is_empty() && p.workers == 0 {
            return bad(".workers", "must be >= 1".into());
        }
        if p.sum.is_empty() && !(p.timeout_s > 0.0 && p.timeout_s.is_finite()) {
            return bad(".timeout_s", format!("{}: must be > 0", p.timeout_s));
        }
    }
    Ok(())
}

/// The longest prompt a stage keeps: `rlvr.max_prompt_token_length`, or `rlvr.max_token_length`
/// when smaller (open-instruct filters rows on both).
pub(crate) fn prompt_limit(rl: &RlvrSpec) -> usize {
    rl.max_prompt_token_length.min(rl.max_token_length) as usize
}

/// For `rlvr data inspect`: the stage's tokenizer, its training prompts (token ids, verifier,
/// parsed ground truth), the longest prompt it keeps ([`prompt_limit`]) and the resolved mix.
pub(crate) fn inspect(
    stage: &Recipe,
    init: Option<&Path>,
) -> Result<(Tokenizer, Vec<Prompt>, usize, MixReport)> {
    check(stage)?;
    let rl = spec(stage)?;
    let tok = super::tokenizer(stage, init)?;
    let (prompts, report) = load_prompts(stage, "data.mix", &stage.data.mix, &tok, &registry(rl, &[]), None)?;
    Ok((tok, prompts, prompt_limit(rl), report))
}

/// Run the stage; returns the directory of the final model. With `learner.world_size` > 1 the
/// stage runs as that many local learner ranks ([`super::ranked`]): rank 0 runs the actor
/// graph (`lead`), the others follow its learner (`follow`).
pub fn run(
    stage: &Recipe,
    out: &Path,
    init: Option<&Path>,
    resume: bool,
    metrics: &MetricsLog,
    listen: Option<&Listen>,
    extra_verifiers: &[Arc<dyn Verifier>],
) -> Result<PathBuf> {
    if !matches!(super::ranked::layout(stage)?, super::ranked::Layout::Alone) {
        if listen.is_some() || !extra_verifiers.is_empty() {
            bail!(UsageError(format!(
                "stage `{}` runs in rank processes (learner.world_size = {}, launch.gpus = {}), \
                 which neither listen for worker nodes nor hold a library caller's verifiers: \
                 use one learner rank with --listen or extra verifiers",
                stage.name, stage.learner.world_size, stage.launch.gpus
            )));
        }
        return super::ranked::run_ranks(stage, out, init, resume);
    }
    lead(stage, out, init, resume, metrics, listen, extra_verifiers, None)
}

/// Rank 0 of the stage (or its only rank): build the actor graph around the learner and run
/// it; returns the directory of the final model.
#[allow(clippy::too_many_arguments)]
pub(crate) fn lead(
    stage: &Recipe,
    out: &Path,
    init: Option<&Path>,
    resume: bool,
    metrics: &MetricsLog,
    listen: Option<&Listen>,
    extra_verifiers: &[Arc<dyn Verifier>],
    ranks: Option<LearnerRanks>,
) -> Result<PathBuf> {
    let model_dir = out.join(&stage.name);
    let done_marker = model_dir.join("trainer_state.json");
    check(stage)?;
    let rl = spec(stage)?;
    let t = &stage.train;
    let device = rlvr_learner::runtime::default_device();
    let (engine_devices, engine_kind) = engines::placement(stage, device)?;

    // The policy starts from `init` (the previous stage's or the recipe's model; see
    // `stages::run`) or from scratch.
    let init_dir = init.map(Path::to_path_buf);
    let tok = super::tokenizer(stage, init)?;
    let verifiers = registry(rl, extra_verifiers);
    let limit = Some(prompt_limit(rl));
    let (prompts, train_mix) = load_prompts(stage, "data.mix", &stage.data.mix, &tok, &verifiers, limit)?;
    let (eval_prompts, eval_mix) = load_prompts(
        stage,
        "data.eval_mix",
        &stage.data.eval_mix,
        &tok,
        &verifiers,
        limit,
    )?;
    super::save_data_record(
        out,
        stage,
        &json!({"data.mix": train_mix, "data.eval_mix": eval_mix}),
    )?;

    let geometry = geometry(stage, rl);
    let (steps, prompts_per_step, n) = (
        geometry.steps,
        geometry.prompts_per_step,
        geometry.samples_per_prompt,
    );
    let (prefetch, in_flight) = Algorithm::staleness(&stage.name, rl, geometry.versions_per_step)?;
    let algorithm = Algorithm::from_spec(&stage.name, rl)?;
    let reward = reward::composition(&stage.name, rl, algorithm.dynamic_sampling.is_some())?;
    // Rollout engines load the starting weights from a directory.
    let init_out = out.join("checkpoints").join(&stage.name).join("init");
    let (group, requests, engine_weights) = match ranks {
        Some(r) => (Some(r.group), Some(Ranks { requests: r.requests }), r.engines),
        None => (None, None, None),
    };
    let (mut learner, layout) = policy_learner(
        stage,
        rl,
        &algorithm,
        &geometry,
        init_dir.as_deref(),
        &init_out,
        &tok,
        device,
        group,
    )?;
    let engine_dir: PathBuf = match &init_dir {
        Some(dir) => dir.clone(),
        None => {
            tok.save(&init_out)?;
            init_out
        }
    };
    // Resume: the policy, its optimiser state and the loop's position from the newest
    // checkpoint; the engines start from its weights; the reference stays the stage's start.
    let ckpt_dir = out.join("checkpoints").join(&stage.name);
    let mut start = Progress::default();
    let mut engine_dir = engine_dir;
    let mut earlier_evals = Vec::new();
    if let Some((dir, saved)) = resume_point(out, stage, resume)? {
        learner.load_checkpoint(&dir, saved.policy_version)?;
        metrics.reopen()?.truncate_after("rlvr", saved.step)?;
        earlier_evals = metrics.series("rlvr", "eval_accuracy")?;
        tracing::info!(
            "resuming {} from {} (step {})",
            stage.name,
            dir.display(),
            saved.step
        );
        engine_dir = dir;
        start = saved;
    }
    let learn = learn_settings(rl, &algorithm, &geometry, &tok);
    // The model's end-of-sequence ids, and the built-in ChatML template's end of turn.
    let mut stop_token_ids = rlvr_rollout::stop_token_ids(&tok, learner.model().config());
    if let [end_of_turn] = tok.encode("<|im_end|>")[..] {
        if !stop_token_ids.contains(&end_of_turn) {
            stop_token_ids.push(end_of_turn);
        }
    }
    let eval_tasks = match super::eval_settings(stage, &rl.stop_strings) {
        Some(settings) => {
            let questions = crate::evaluation::Questions::new(&settings, &tok)
                .with_context(|| format!("stage `{}`: eval.tasks", stage.name))?;
            questions.check_fits(learner.model().config().max_position_embeddings)?;
            Some(EvalTasks {
                sampling: questions.sampling(stop_token_ids.clone()),
                questions: std::sync::Arc::new(questions),
                every: stage.eval.every,
            })
        }
        None => None,
    };
    let settings = LoopSettings {
        steps,
        prompts_per_step,
        samples_per_prompt: n,
        sampling: SamplingParams {
            temperature: rl.temperature,
            top_k: rl.top_k as usize,
            top_p: rl.top_p,
            max_new_tokens: rl.response_length as usize,
            stop_token_ids,
            stop: rl.stop_strings.clone(),
        },
        eval_every: (steps / rl.num_evals.max(1)).max(1),
        reward,
        prefetch,
        in_flight,
        seed: stage.seed,
        save_every: rl.save_freq,
        keep_checkpoints: t.keep_last_n_checkpoints,
        estimator: algorithm.estimator,
        kl_in_reward: algorithm.kl_in_reward,
        dynamic_sampling: algorithm.dynamic_sampling,
        mask_truncated: algorithm.mask_truncated,
    };
    tracing::info!(
        "stage {}: {}, {} parameters on {:?}{layout}, {steps} steps of {prompts_per_step} prompts x {n} samples; {} rollout and {} verifier workers; {} train / {} held-out prompts",
        stage.name,
        Algorithm::describe(rl),
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
        ranks: requests,
        model_dir: engine_dir,
        prompts,
        eval_prompts,
        eval_tasks,
        tokenizer: tok.clone(),
        // With worker nodes, the run itself may hold no workers of a role.
        rollout_workers: stage.rollout.workers.max(u64::from(listen.is_none())) as usize,
        verifier_workers: stage.rollout.verifier_workers.max(u64::from(listen.is_none())) as usize,
        verifier_timeout: Duration::from_secs_f64(stage.rollout.verifier_timeout_s.max(0.001)),
        engine_devices,
        engine_kind,
        engine_batch: stage.rollout.engine_batch.max(1) as usize,
        engine_options: EngineOptions {
            kv_cache_bytes: stage.rollout.kv_cache_bytes(),
            cuda_graphs: stage.rollout.cuda_graphs,
        },
        metrics: metrics.reopen()?,
        checkpoints: ckpt_dir,
        bar: bar.clone(),
        done,
        model_out: model_dir.clone(),
        start,
        earlier_evals,
        listen: listen.cloned(),
        engine_weights: engine_weights.clone(),
        verifier_mode: verifier_mode(rl),
        control: Some(out.join("control.sock")),
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
    // The engine ranks' weight threads wait for more until told there is none.
    if let Some(g) = &engine_weights {
        g.end()?;
    }

    tok.save(&model_dir)?;
    let png = out.join("reward.png");
    if crate::plot::reward_curve(metrics.path(), &png)? {
        tracing::info!("stage {}: reward curve in {}", stage.name, png.display());
    }
    let state = json!({"step": summary.steps, "evals": summary.evals});
    // Written last: its presence marks the stage complete for `--resume`.
    super::write_state(&done_marker, &state)?;
    let (first, last) = (summary.evals.first(), summary.evals.last());
    if let (Some((_, a)), Some((_, b))) = (first, last) {
        tracing::info!(
            "stage {}: held-out accuracy {a:.3} -> {b:.3} over {} steps; model in {}",
            stage.name,
            summary.steps,
            model_dir.display()
        );
    }
    Ok(model_dir)
}
