//! Language-model stages — pretraining (loss on every token of plain text) and SFT (loss on the
//! assistant turn only) — the learner driven step by step with a progress bar, `metrics.jsonl`
//! records, periodic checkpoints and exact resume. Examples come from the stage's mix (built-in
//! data sets, data files, hub data sets: `messages` rendered with `data.chat_template`, or
//! `text`), padded per batch or packed (`data.packing`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rlvr_core::{Encoded, TrainBatch};
use rlvr_data::arith::Split;
use rlvr_data::pack::{pack, Waste};
use rlvr_data::{lm_row, Builtin, Sampler, Tokenizer};
use rlvr_dist::ProcessGroup;
use rlvr_learner::model::Config;
use rlvr_learner::optim::AdamWConfig;
use rlvr_learner::runtime::default_device;
use rlvr_learner::schedule::{Schedule, Shape};
use rlvr_learner::{Learner, LearnerConfig, Objective, Reduction};
use rlvr_recipes::spec::{Checkpointing, LrScheduler, ReduceLoss};
use rlvr_recipes::Recipe;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::metrics::MetricsLog;
use crate::UsageError;

/// Held-out rows scored for `eval_loss`.
const EVAL_ROWS: usize = 256;

/// What a checkpoint needs besides weights and optimiser state to continue exactly.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct TrainerState {
    pub step: u64,
    pub data_position: u64,
    pub tokens: u64,
    pub elapsed_s: f64,
}

/// A stage's examples, encoded: training rows (grouped into packed rows when
/// `data.packing` is set) and held-out rows (those of `data.eval_mix`).
pub(crate) struct Texts {
    train: Vec<Encoded>,
    eval: Vec<Encoded>,
    /// With packing: the training examples of each packed row.
    packed: Option<Vec<Vec<usize>>>,
    /// Padding without and with packing.
    pub waste: Waste,
    /// What was read, for the run's record.
    pub record: serde_json::Value,
}

impl Texts {
    /// Rows the sampler draws from: examples, or packed rows.
    fn rows(&self) -> u64 {
        self.packed.as_ref().map_or(self.train.len(), Vec::len) as u64
    }

    /// The training examples.
    pub(crate) fn train(&self) -> &[Encoded] {
        &self.train
    }
}

/// Load the stage's examples (`data.mix` and `data.eval_mix`), encoded with `tok`.
fn texts(stage: &Recipe, tok: &Tokenizer) -> Result<Texts> {
    let template = super::chat_template(stage, tok)?;
    let max_len = stage.data.max_seq_length as usize;
    let generated =
        |b: Builtin, i, split| Ok(b.example(stage.seed, i, split).map(|e| e.encode(tok, max_len)));
    let read =
        |row: &serde_json::Value, at: rlvr_data::At<'_>| lm_row(row, at, &template, tok, max_len).map(Some);
    let train = super::load_mix(stage, "data.mix", &stage.data.mix, generated, read)?;
    let eval = super::load_mix(stage, "data.eval_mix", &stage.data.eval_mix, generated, read)?;
    let lengths: Vec<usize> = train.rows.iter().map(|e| e.0.len()).collect();
    let groups = pack(&lengths, max_len);
    let waste = Waste::measure(
        &lengths,
        stage.train.per_device_train_batch_size as usize,
        max_len,
        &groups,
    );
    if crate::ranks::is_lead() {
        tracing::info!(
        "stage {}: {} tokens in {} examples; padding {:.1}% of positions in batches of {}, {:.1}% packed into {} rows of {max_len}{}",
        stage.name,
        waste.tokens,
        lengths.len(),
        100.0 * waste.unpacked,
        stage.train.per_device_train_batch_size,
        100.0 * waste.packed,
        waste.packed_rows,
        if stage.data.packing { " (packing on)" } else { "" }
    );
    }
    let record = json!({
        "data.mix": train.report, "data.eval_mix": eval.report,
        "packing": stage.data.packing, "padding": waste,
    });
    Ok(Texts {
        train: train.rows,
        eval: eval.rows,
        packed: stage.data.packing.then_some(groups),
        waste,
        record,
    })
}

/// For `rlvr data inspect`: the stage's tokenizer and examples.
pub(crate) fn inspect(stage: &Recipe, init: Option<&Path>) -> Result<(Tokenizer, Texts)> {
    let tok = super::tokenizer(stage, init)?;
    let texts = texts(stage, &tok)?;
    Ok((tok, texts))
}

/// Check the stage can run here: its data sets.
pub fn check(stage: &Recipe) -> Result<()> {
    let hint = "builtin:arith or builtin:arith-chat, or a data file";
    let holds = |b: Builtin| b.example(0, 0, Split::Train).is_some();
    super::check_mix(stage, "data.mix", &stage.data.mix, hint, holds)?;
    super::check_mix(stage, "data.eval_mix", &stage.data.eval_mix, hint, holds)
}

pub(super) fn model_config(stage: &Recipe, tok: &Tokenizer) -> Config {
    Config {
        bos_token_id: tok.bos_id.map(i64::from),
        eos_token_ids: vec![i64::from(tok.eos_id)],
        ..super::llama_config(&stage.model.config)
    }
}

pub(super) fn schedule(stage: &Recipe, total: u64) -> Schedule {
    let t = &stage.train;
    let warmup = t
        .warmup_steps
        .unwrap_or((t.warmup_ratio * total as f64).round() as u64);
    let shape = match t.lr_scheduler {
        LrScheduler::Linear => Shape::Linear,
        LrScheduler::Cosine => Shape::Cosine,
        LrScheduler::Constant => Shape::Constant,
        LrScheduler::Wsd => Shape::Wsd {
            decay_steps: (t.decay_ratio * total as f64).round() as u64,
        },
    };
    Schedule {
        peak: t.learning_rate,
        warmup_steps: warmup,
        total_steps: total,
        shape,
    }
}

/// The optimiser, schedule (over `total` optimiser steps) and clip of a stage.
pub(super) fn learner_config(stage: &Recipe, total: u64, device: tch::Device) -> LearnerConfig {
    let t = &stage.train;
    LearnerConfig {
        adamw: AdamWConfig {
            beta1: t.adam_beta1,
            beta2: t.adam_beta2,
            eps: t.adam_eps,
            weight_decay: t.weight_decay,
        },
        schedule: schedule(stage, total),
        max_grad_norm: t.max_grad_norm,
        device,
        kind: crate::placement::recipe_kind(stage.model.dtype),
        offload_optimizer: stage.launch.offload_optimizer,
    }
}

/// The learner of a stage over `total` optimiser steps on `device`: loaded from `init` (the
/// previous stage's or the recipe's model) or initialised from the stage's seed, in bf16 with
/// f32 masters when `model.dtype` asks, checkpointing activations layer by layer when
/// `train.gradient_checkpointing` asks (every objective: LM, preference, reward-model and policy
/// steps), and spread over `group` when there is one ([`super::ranked::distribute`]; ZeRO-3
/// ranks load their shards of `init` unit by unit, never the whole model). Returns it with a
/// few words on its layout for the stage's opening line.
pub(super) fn new_learner(
    stage: &Recipe,
    total: u64,
    device: tch::Device,
    init: Option<&Path>,
    tok: &Tokenizer,
    group: Option<ProcessGroup>,
) -> Result<(Learner, String)> {
    let config = learner_config(stage, total, device);
    let lead = group.as_ref().is_none_or(|g| g.rank() == 0);
    let sharded = group.is_some() && stage.launch.zero_stage >= 3;
    if config.offload_optimizer && !sharded {
        bail!(UsageError(format!(
            "stage `{}`: launch.offload_optimizer = true: the optimiser state offloaded is that of \
             ZeRO-3 shards; this run has {}: set launch.zero_stage = 3 over learner.world_size > 1 \
             ranks (or a launcher's), or set launch.offload_optimizer = false",
            stage.name,
            match &group {
                Some(g) => format!("{} data-parallel ranks", g.world_size()),
                None => "one learner rank".to_string(),
            }
        )));
    }
    let (mut learner, layout) = match (init, group) {
        (Some(dir), Some(g)) if stage.launch.zero_stage >= 3 => {
            let world = g.world_size();
            let learner = Learner::from_pretrained_zero3(dir, config, g)?;
            (
                learner,
                super::ranked::zero3_layout(world, config.offload_optimizer),
            )
        }
        (init, group) => {
            let mut learner = match init {
                Some(dir) => Learner::from_pretrained(dir, config)?,
                None => Learner::new(&model_config(stage, tok), config, stage.seed as i64),
            };
            let layout = super::ranked::distribute(&mut learner, stage, group)?;
            (learner, layout)
        }
    };
    learner.set_gradient_checkpointing(stage.train.gradient_checkpointing);
    if lead {
        warn_if_bf16_stalls(stage, &learner, total);
    }
    Ok((learner, layout))
}

/// Warn when most of a bf16 learner's weights cannot change in the stage at all: AdamW moves a
/// weight by about the learning rate a step, and a bf16 weight changes only once its f32 master
/// has moved half a bf16 step ([`rlvr_learner::bf16_reach`]). Counted on this rank's weights.
fn warn_if_bf16_stalls(stage: &Recipe, learner: &Learner, optimizer_steps: u64) {
    let lr = stage.train.learning_rate;
    let Some(share) = learner.bf16_movable_share(lr * optimizer_steps as f64) else {
        return;
    };
    if share < 0.5 {
        tracing::warn!(
            "stage `{}` trains bf16 weights at a peak learning rate of {lr:e} for {optimizer_steps} optimiser step(s): \
             AdamW moves a weight by about the learning rate a step, and a bf16 weight changes only once its f32 master \
             has moved half a bf16 step, so at most {:.1}% of this model's weights can change at all in this stage. \
             Train in f32 (--set model.dtype=f32), raise train.learning_rate, or take more steps",
            stage.name,
            100.0 * share
        );
    }
}

/// The training batch of sampler rows `rows`: examples padded to the longest, or packed rows
/// of `max_seq_length` positions.
fn batch(texts: &Texts, stage: &Recipe, rows: &[u64], tok: &Tokenizer) -> TrainBatch {
    let pad = i64::from(tok.pad_id);
    match &texts.packed {
        Some(groups) => {
            let packed: Vec<Vec<&Encoded>> = rows
                .iter()
                .map(|&r| groups[r as usize].iter().map(|&i| &texts.train[i]).collect())
                .collect();
            TrainBatch::from_packed(&packed, stage.data.max_seq_length as usize, pad)
        }
        None => {
            let examples: Vec<Encoded> = rows.iter().map(|&r| texts.train[r as usize].clone()).collect();
            TrainBatch::from_examples(&examples, pad)
        }
    }
}

pub(super) fn checkpoint_dir(out: &Path, stage: &Recipe) -> PathBuf {
    out.join("checkpoints").join(&stage.name)
}

/// Save a checkpoint `step-N` under `dir` — the model with its tokenizer files, so it loads
/// like a stage's output, and the optimiser state — keeping the newest `keep`.
pub(super) fn save_checkpoint(
    learner: &Learner,
    tok: &Tokenizer,
    dir: &Path,
    state: &TrainerState,
    keep: Option<u64>,
) -> Result<()> {
    let path = dir.join(format!("step-{}", state.step));
    // Under ZeRO-3 every rank saves its optimiser shard (and rank 0 the model); otherwise
    // rank 0 saves everything. Then rank 0 marks the checkpoint complete.
    let rank = learner.with_group(|g| g.rank()).unwrap_or(0);
    if rank == 0 || learner.is_sharded() {
        learner.save_checkpoint(&path)?;
    }
    learner.with_group(|g| g.barrier()).transpose()?;
    if rank != 0 {
        return Ok(());
    }
    tok.save(&path)?;
    // Written last: a checkpoint without it is incomplete and ignored on resume.
    super::write_state(&path.join("trainer_state.json"), state)?;
    super::prune_checkpoints(dir, keep)?;
    Ok(())
}

/// Where a learner stage starts: step 0, or — with `resume` — its newest complete checkpoint
/// under `ckpt_dir`, loaded into `learner` and `sampler`, with the `kind` records of `metrics`
/// after that step dropped.
pub(super) fn start(
    stage: &Recipe,
    ckpt_dir: &Path,
    resume: bool,
    kind: &str,
    learner: &mut Learner,
    sampler: &mut Sampler,
    metrics: Option<&mut MetricsLog>,
) -> Result<TrainerState> {
    let saved = if resume {
        super::latest_checkpoint::<TrainerState>(ckpt_dir, |s| s.step)?
    } else {
        None
    };
    let Some((dir, saved)) = saved else {
        return Ok(TrainerState {
            step: 0,
            data_position: 0,
            tokens: 0,
            elapsed_s: 0.0,
        });
    };
    learner.load_checkpoint(&dir, saved.step)?;
    sampler.set_position(saved.data_position);
    let Some(metrics) = metrics else {
        return Ok(saved); // another rank keeps the log
    };
    metrics.truncate_after(kind, saved.step)?;
    tracing::info!(
        "resuming {} from {} (step {})",
        stage.name,
        dir.display(),
        saved.step
    );
    Ok(saved)
}

/// A stage's progress bar over `total` steps, at `position`.
pub(super) fn progress_bar(stage: &Recipe, total: u64, position: u64) -> ProgressBar {
    let bar = ProgressBar::new(total).with_position(position);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} steps  {msg}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(stage.name.clone());
    bar
}

/// A log line above the progress bar (or on stderr when the bar is hidden).
pub(super) fn log_line(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        tracing::info!("{line}");
    } else {
        bar.println(line);
    }
}

/// Whether `train.checkpointing_steps` asks for a checkpoint after this step (`epoch`: when
/// the step crossed into a new pass over the `rows`); never after the last step.
pub(super) fn save_due(stage: &Recipe, state: &TrainerState, total: u64, rows: u64) -> bool {
    let t = &stage.train;
    let per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps * stage.learner.world_size;
    match t.checkpointing_steps {
        Checkpointing::Steps(n) => n > 0 && state.step.is_multiple_of(n) && state.step < total,
        Checkpointing::At(_) => {
            state.step < total && state.data_position / rows > (state.data_position - per_step) / rows
        }
    }
}

/// Mean loss over the first [`EVAL_ROWS`] held-out rows; `None` without `data.eval_mix`.
fn eval_loss(learner: &Learner, tok: &Tokenizer, texts: &Texts, objective: Objective) -> Result<Option<f64>> {
    if texts.eval.is_empty() {
        return Ok(None);
    }
    let held_out = &texts.eval[..texts.eval.len().min(EVAL_ROWS)];
    let batch = TrainBatch::from_examples(held_out, i64::from(tok.pad_id));
    Ok(Some(learner.eval_loss(&batch, objective)?))
}

/// Run the stage; returns the directory of the final model. With `learner.world_size` > 1,
/// or under a launcher, the stage runs as ranks of a group ([`super::ranked`]).
pub fn run(
    stage: &Recipe,
    out: &Path,
    init: Option<&Path>,
    resume: bool,
    metrics: &mut MetricsLog,
) -> Result<PathBuf> {
    match super::ranked::layout(stage)? {
        super::ranked::Layout::Alone => {
            train(stage, out, init, resume, Some(metrics), None, default_device())
        }
        _ => super::ranked::run_ranks(stage, out, init, resume),
    }
}

/// Train the stage on `device`, alone or as one rank of `group` (rank 0 logs to `metrics`,
/// writes the records and the model); returns the directory of the final model.
pub(super) fn train(
    stage: &Recipe,
    out: &Path,
    init: Option<&Path>,
    resume: bool,
    mut metrics: Option<&mut MetricsLog>,
    group: Option<ProcessGroup>,
    device: tch::Device,
) -> Result<PathBuf> {
    let model_dir = out.join(&stage.name);
    let done_marker = model_dir.join("trainer_state.json");
    let kind = stage.kind.map_or("lm", |k| k.as_str());
    let (rank, world) = group.as_ref().map_or((0, 1), |g| (g.rank(), g.world_size()));
    let lead = rank == 0;
    let tok = super::tokenizer(stage, init)?;
    let texts = texts(stage, &tok)?;
    if lead {
        super::save_data_record(out, stage, &texts.record)?;
    }
    let rows = texts.rows();
    let t = &stage.train;
    let per_rank = t.per_device_train_batch_size as usize;
    let per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps * world as u64;
    let total = t
        .max_steps
        .unwrap_or_else(|| (rows * t.num_train_epochs).div_ceil(per_step));
    let (mut learner, layout) = new_learner(stage, total, device, init, &tok, group)?;
    let objective = Objective::Lm(match t.reduce_loss {
        ReduceLoss::Mean => Reduction::Mean,
        ReduceLoss::Sum => Reduction::Sum,
    });
    let mut sampler = Sampler::new(rows, stage.seed);
    let ckpt_dir = checkpoint_dir(out, stage);
    let mut state = start(
        stage,
        &ckpt_dir,
        resume,
        kind,
        &mut learner,
        &mut sampler,
        metrics.as_deref_mut(),
    )?;
    if lead {
        tracing::info!(
            "stage {}: {} parameters on {:?}{layout}, {} steps of {} sequences",
            stage.name,
            learner.num_params(),
            device,
            total,
            per_step
        );
    }
    let mut log = |record: serde_json::Value| match metrics.as_deref_mut() {
        Some(m) => m.write(&record),
        None => Ok(()),
    };
    if state.step == 0 {
        if let Some(loss) = eval_loss(&learner, &tok, &texts, objective)? {
            log(
                json!({"stage": kind, "step": 0, "eval_loss": loss, "lr": 0.0, "tokens": 0, "elapsed_s": 0.0}),
            )?;
        }
    }

    let bar = match lead {
        true => progress_bar(stage, total, state.step),
        false => ProgressBar::hidden(),
    };
    let started = Instant::now();
    let elapsed_before = state.elapsed_s;
    while state.step < total {
        let micro: Vec<TrainBatch> = (0..t.gradient_accumulation_steps)
            .map(|_| {
                // Every rank draws the whole micro-batch and keeps its share.
                let rows = sampler.take(per_rank * world);
                batch(&texts, stage, &rows[rank * per_rank..(rank + 1) * per_rank], &tok)
            })
            .collect();
        let m = learner.train_step(&micro, objective)?;
        state.step = m.step;
        state.tokens += m.tokens;
        state.data_position = sampler.position();
        state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
        bar.set_position(state.step);
        bar.set_message(format!("loss {:.4}", m.loss));
        if lead && (state.step.is_multiple_of(t.logging_steps) || state.step == total) {
            log(json!({
                "stage": kind, "step": state.step, "loss": m.loss, "lr": m.lr,
                "grad_norm": m.grad_norm, "tokens": state.tokens, "elapsed_s": state.elapsed_s,
                "tokens_per_s": state.tokens as f64 / state.elapsed_s.max(1e-9),
            }))?;
            log_line(
                &bar,
                format!(
                    "{} step {:>5}/{total}  loss {:.4}  lr {:.2e}  grad_norm {:.3}  tokens {}",
                    stage.name, state.step, m.loss, m.lr, m.grad_norm, state.tokens
                ),
            );
        }
        if save_due(stage, &state, total, rows) {
            save_checkpoint(&learner, &tok, &ckpt_dir, &state, t.keep_last_n_checkpoints)?;
        }
    }
    bar.finish_and_clear();
    // What each learner rank held (a collective).
    let ranks = crate::graph::memory::ranks_memory(&learner)?;
    log(json!({"stage": kind, "step": state.step, "learner_ranks": ranks}))?;

    let loss = eval_loss(&learner, &tok, &texts, objective)?;
    if let Some(loss) = loss {
        log(
            json!({"stage": kind, "step": state.step, "eval_loss": loss, "lr": 0.0, "tokens": state.tokens, "elapsed_s": state.elapsed_s}),
        )?;
    }
    // Under ZeRO-3 saving is collective (rank 0 writes); otherwise rank 0 saves.
    if lead || learner.is_sharded() {
        learner.save_model(&model_dir)?;
    }
    learner.with_group(|g| g.barrier()).transpose()?;
    if !lead {
        return Ok(model_dir);
    }
    tok.save(&model_dir)?;
    // Written last: its presence marks the stage complete for `--resume`.
    super::write_state(&done_marker, &state)?;
    let held_out = loss.map_or("no held-out rows".into(), |l| format!("held-out loss {l:.4}"));
    tracing::info!(
        "stage {}: {held_out} after {} steps, {:.1}s; model in {}",
        stage.name,
        state.step,
        state.elapsed_s,
        model_dir.display()
    );
    Ok(model_dir)
}
