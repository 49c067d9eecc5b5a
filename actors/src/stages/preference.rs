//! Preference stages: preference pairs → the learner, as DPO (`kind = "dpo"`) or as
//! reward-model training (`kind = "rm"`). Progress bar, `metrics.jsonl` records, periodic
//! checkpoints and exact resume as in the LM stages.
//!
//! DPO: the reference policy's log-probabilities of every training and held-out pair are
//! computed once, from the starting weights, before the first step (open-instruct caches them
//! the same way), so no second model is held during training. The `[dpo]` table picks `dpo`,
//! `dpo_norm` or `simpo`. The stage saves the policy.
//!
//! RM: the starting model's trunk with a zero scalar head (Hugging Face's
//! `LlamaForSequenceClassification`) trains on the Bradley–Terry loss; the stage saves that
//! reward model, which a PPO stage's `rlvr.reward_model_path` starts its value model from, as
//! Tülu 3 does.
//!
//! Held-out evaluation at the start and the end: loss and ranking accuracy on test pairs, and,
//! for DPO when `data.eval_mix` names RL prompts, greedy answer accuracy on them
//! (`eval_accuracy`, the RLVR stage's figure), answers cut at `max_seq_length −
//! max_prompt_length` tokens.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use rlvr_core::{Encoded, PreferenceBatch};
use rlvr_data::arith::Split;
use rlvr_data::{preference_row, rlvr_row, At, Builtin, Sampler, Tokenizer};
use rlvr_dist::ProcessGroup;
use rlvr_learner::preference::{PreferenceLoss, PreferenceLossType, PreferenceMetrics};
use rlvr_learner::runtime::default_device;
use rlvr_learner::Learner;
use rlvr_recipes::spec::{DpoLoss, StageKind};
use rlvr_recipes::Recipe;
use rlvr_verifiers::{Mode, Registry};
use serde_json::json;

use super::lm::{self, TrainerState};
use crate::graph::data::Prompt;
use crate::metrics::MetricsLog;
use crate::UsageError;

/// Held-out pairs scored at the start and the end.
const EVAL_PAIRS: usize = 256;
/// Pairs per forward pass of the reference pass.
const REFERENCE_BATCH: usize = 64;

/// A pair encoded as (chosen, rejected).
pub(crate) type EncodedPair = (Encoded, Encoded);

/// A held-out row: a pair, or (DPO) an RL prompt whose greedy answer is checked.
enum HeldOut {
    Pair(EncodedPair),
    Prompt(Prompt),
}

/// A stage's data: training pairs, held-out pairs and answer prompts (from `data.eval_mix`,
/// each entry holding either), and what was read.
pub(crate) struct Pairs {
    pub train: Vec<EncodedPair>,
    eval: Vec<EncodedPair>,
    prompts: Vec<Prompt>,
    pub record: serde_json::Value,
}

/// Load the stage's pairs and held-out rows, encoded with `tok`. Pairs whose prompt leaves an
/// answer no token within `data.max_seq_length` are filtered out.
fn pairs(stage: &Recipe, tok: &Tokenizer) -> Result<Pairs> {
    let template = super::chat_template(stage, tok)?;
    let max_len = stage.data.max_seq_length as usize;
    let pair = |b: Builtin, i, split| Ok(b.pair(stage.seed, i, split).map(|p| p.encode(tok, max_len)));
    let read = |row: &serde_json::Value, at: At<'_>| preference_row(row, at, &template, tok, max_len);
    let train = super::load_mix(stage, "data.mix", &stage.data.mix, pair, read)?;
    // The built-in RL prompts are GSM8K-style: `#### N` answers.
    let mut verifiers = Registry::new(Mode::Default);
    verifiers.alias(Builtin::ArithRlvr.name(), "gsm8k");
    let held_out = |b: Builtin, i, split| match (b.pair(stage.seed, i, split), b.prompt(stage.seed, i, split))
    {
        (Some(p), _) => Ok(Some(HeldOut::Pair(p.encode(tok, max_len)))),
        (None, Some(row)) => {
            let at = At {
                path: b.name(),
                row: i as usize + 1,
            };
            Prompt::new(&row, at, tok, &verifiers).map(|p| Some(HeldOut::Prompt(p)))
        }
        (None, None) => Ok(None),
    };
    let read_held_out = |row: &serde_json::Value, at: At<'_>| {
        if row.get("chosen").is_some() {
            return Ok(preference_row(row, at, &template, tok, max_len)?.map(HeldOut::Pair));
        }
        let p = rlvr_row(row, at, &template, super::prompt_format(stage))?;
        Prompt::new(&p, at, tok, &verifiers).map(|p| Some(HeldOut::Prompt(p)))
    };
    let eval = super::load_mix(
        stage,
        "data.eval_mix",
        &stage.data.eval_mix,
        held_out,
        read_held_out,
    )?;
    let (mut eval_pairs, mut prompts) = (Vec::new(), Vec::new());
    for row in eval.rows {
        match row {
            HeldOut::Pair(p) if eval_pairs.len() < EVAL_PAIRS => eval_pairs.push(p),
            HeldOut::Pair(_) => {}
            HeldOut::Prompt(p) => prompts.push(p),
        }
    }
    Ok(Pairs {
        train: train.rows,
        eval: eval_pairs,
        prompts,
        record: json!({"data.mix": train.report, "data.eval_mix": eval.report}),
    })
}

/// For `rlvr data inspect`: the stage's tokenizer and pairs.
pub(crate) fn inspect(stage: &Recipe, init: Option<&Path>) -> Result<(Tokenizer, Pairs)> {
    let tok = super::tokenizer(stage, init)?;
    let pairs = pairs(stage, &tok)?;
    Ok((tok, pairs))
}

/// The new-token budget of held-out answers: `max_seq_length − max_prompt_length`.
fn answer_budget(stage: &Recipe) -> Result<usize> {
    let budget = stage
        .data
        .max_prompt_length
        .and_then(|p| stage.data.max_seq_length.checked_sub(p))
        .filter(|b| *b > 0);
    let Some(budget) = budget else {
        bail!(UsageError(format!(
            "stage `{}`: RL prompts in data.eval_mix need data.max_prompt_length below data.max_seq_length (the answers get the difference)",
            stage.name
        )));
    };
    Ok(budget as usize)
}

/// What a preference stage trains.
#[derive(Debug, Clone, Copy)]
enum Objective {
    /// The policy, on a DPO-family loss.
    Dpo(PreferenceLoss),
    /// A reward model, on the Bradley–Terry loss.
    RewardModel,
}

impl Objective {
    fn of(stage: &Recipe) -> Self {
        match stage.kind {
            Some(StageKind::Rm) => Objective::RewardModel,
            _ => Objective::Dpo(loss_of(stage)),
        }
    }

    /// The `stage` field of its metrics records.
    fn name(self) -> &'static str {
        match self {
            Objective::Dpo(_) => "dpo",
            Objective::RewardModel => "rm",
        }
    }

    /// The reference pass's loss, when the objective has one.
    fn reference(self) -> Option<PreferenceLoss> {
        match self {
            Objective::Dpo(loss) if loss.uses_reference() => Some(loss),
            _ => None,
        }
    }

    fn step(self, learner: &mut Learner, micro: &[PreferenceBatch]) -> Result<PreferenceMetrics> {
        Ok(match self {
            Objective::Dpo(loss) => learner.preference_step(micro, &loss)?,
            Objective::RewardModel => learner.reward_step(micro)?,
        })
    }

    fn eval(self, learner: &Learner, batch: &PreferenceBatch) -> Result<PreferenceMetrics> {
        Ok(match self {
            Objective::Dpo(loss) => learner.preference_eval(batch, &loss)?,
            Objective::RewardModel => learner.reward_eval(batch)?,
        })
    }
}

fn loss_of(stage: &Recipe) -> PreferenceLoss {
    let spec = stage.dpo.clone().unwrap_or_default();
    PreferenceLoss {
        kind: match spec.loss_type {
            DpoLoss::Dpo => PreferenceLossType::Dpo,
            DpoLoss::DpoNorm => PreferenceLossType::DpoNorm,
            DpoLoss::Simpo => PreferenceLossType::Simpo,
        },
        beta: spec.beta,
        gamma_beta_ratio: spec.gamma_beta_ratio,
    }
}

/// Check the stage can run here: its data sets and tokenizer.
pub fn check(stage: &Recipe) -> Result<()> {
    let hint = "builtin:arith-prefs, or a data file of `chosen`/`rejected` conversations";
    super::check_mix(stage, "data.mix", &stage.data.mix, hint, |b| {
        b.pair(0, 0, Split::Train).is_some()
    })?;
    let holds = |b: Builtin| b.pair(0, 0, Split::Train).is_some() || super::rlvr::holds_prompts(b);
    super::check_mix(stage, "data.eval_mix", &stage.data.eval_mix, hint, holds)?;
    let beta = loss_of(stage).beta;
    if stage.kind == Some(StageKind::Rm) {
        if stage.dpo.is_some() {
            bail!(UsageError(format!(
                "stage `{}`: a reward-model stage has no [dpo] table",
                stage.name
            )));
        }
    } else if !(beta > 0.0 && beta.is_finite()) {
        bail!(UsageError(format!(
            "stage `{}`: dpo.beta = {beta}: must be a positive number",
            stage.name
        )));
    } else if stage
        .data
        .eval_mix
        .iter()
        .any(|e| Builtin::parse(&e.dataset).is_ok_and(super::rlvr::holds_prompts))
    {
        answer_budget(stage)?;
    }
    Ok(())
}

/// The reference log-probabilities of `pairs`: `(chosen, rejected)` by pair. Over several
/// learner ranks each rank scores its contiguous share, in as many batches as every other rank
/// (under ZeRO-3 each batch is a collective; a rank whose share is spent scores a stand-in
/// pair and drops it), and the shares are gathered back in order.
fn reference_pass(learner: &Learner, pairs: &[EncodedPair], tok: &Tokenizer) -> Result<Vec<(f64, f64)>> {
    let (rank, world) = learner
        .with_group(|g| (g.rank(), g.world_size()))
        .unwrap_or((0, 1));
    let n = pairs.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let mine = &pairs[rank * n / world..(rank + 1) * n / world];
    let batches = n.div_ceil(world).div_ceil(REFERENCE_BATCH).max(1);
    let mut rows: Vec<Vec<f32>> = Vec::with_capacity(mine.len());
    for part in 0..batches {
        let chunk = &mine[part * mine.len() / batches..(part + 1) * mine.len() / batches];
        let scored = if chunk.is_empty() { &pairs[..1] } else { chunk };
        let b = PreferenceBatch::from_pairs(scored, i64::from(tok.pad_id));
        let logps = learner.sequence_logps(&b.batch)?;
        let (chosen, rejected) = logps.split_at(scored.len());
        if !chunk.is_empty() {
            rows.extend(
                chosen
                    .iter()
                    .zip(rejected)
                    .map(|(&c, &r)| vec![c as f32, r as f32]),
            );
        }
    }
    let rows = match learner.with_group(|g| g.all_gather_rows(&rows, learner.device())) {
        Some(gathered) => gathered?,
        None => rows,
    };
    Ok(rows.iter().map(|r| (f64::from(r[0]), f64::from(r[1]))).collect())
}

/// Pairs `rows` of `pairs` with their cached reference log-probabilities.
fn batch(pairs: &[EncodedPair], rows: &[u64], tok: &Tokenizer, reference: &[(f64, f64)]) -> PreferenceBatch {
    let picked: Vec<EncodedPair> = rows.iter().map(|&r| pairs[r as usize].clone()).collect();
    let mut b = PreferenceBatch::from_pairs(&picked, i64::from(tok.pad_id));
    b.reference_chosen = rows.iter().map(|&r| reference[r as usize].0).collect();
    b.reference_rejected = rows.iter().map(|&r| reference[r as usize].1).collect();
    b
}

/// Held-out pair metrics and, when asked for, greedy answer accuracy (of the weights saved to
/// `scratch` for the engine).
struct Evaluation<'a> {
    pairs: Option<PreferenceBatch>,
    prompts: Option<(Vec<Prompt>, usize)>,
    /// The test sets of `[eval]`, scored as `rlvr eval` scores them.
    tasks: Option<crate::evaluation::Settings>,
    stage: &'a Recipe,
    tok: &'a Tokenizer,
    scratch: PathBuf,
    /// Rank 0 (or the only rank): it generates and prints; other ranks take part in the
    /// collectives only.
    lead: bool,
}

impl Evaluation<'_> {
    fn record(
        &self,
        learner: &Learner,
        objective: Objective,
        state: &TrainerState,
    ) -> Result<serde_json::Value> {
        let mut record = json!({
            "stage": objective.name(), "step": state.step, "tokens": state.tokens, "elapsed_s": state.elapsed_s,
        });
        let mut line = format!("{} step {:>5}  held out:", self.stage.name, state.step);
        if let Some(pairs) = &self.pairs {
            let m = objective.eval(learner, pairs)?;
            record["eval_loss"] = json!(m.loss);
            record["eval_pair_accuracy"] = json!(m.accuracy);
            record["eval_reward_margin"] = json!(m.chosen_reward - m.rejected_reward);
            line.push_str(&format!(
                " pairs: loss {:.4}, ranked right {:.3}",
                m.loss, m.accuracy
            ));
        }
        if self.prompts.is_some() || self.tasks.is_some() {
            if self.lead || learner.is_sharded() {
                learner.save_model(&self.scratch)?;
            }
            if !self.lead {
                return Ok(record);
            }
            self.tok.save(&self.scratch)?;
        }
        if let Some(settings) = &self.tasks {
            let device = rlvr_learner::runtime::default_device();
            let mut engine =
                rlvr_rollout::NativeEngine::from_pretrained(&self.scratch, device, tch::Kind::Float, 64)?;
            let report = crate::evaluation::evaluate(&mut engine, self.tok, settings, &mut |_, _| {})?;
            record["eval_tasks"] = crate::evaluation::scores_json(&report.scores);
            for (task, s) in &report.scores {
                line.push_str(&format!("; {task} {:.3}", s.accuracy));
            }
        }
        if let Some((prompts, budget)) = &self.prompts {
            let acc = super::eval::greedy_accuracy(&self.scratch, prompts, *budget)?;
            record["eval_accuracy"] = json!(acc);
            line.push_str(&format!(
                "; answers right {acc:.3} ({} prompts, greedy)",
                prompts.len()
            ));
        }
        if self.lead {
            tracing::info!("{line}");
        }
        Ok(record)
    }
}

/// Run the stage; returns the directory of the final model. With `learner.world_size` > 1,
/// the stage runs as that many local ranks ([`super::ranked`]).
pub fn run(
    stage: &Recipe,
    out: &Path,
    init: Option<&Path>,
    resume: bool,
    metrics: &mut MetricsLog,
) -> Result<PathBuf> {
    check(stage)?;
    match super::ranked::layout(stage)? {
        super::ranked::Layout::Alone => {
            train(stage, out, init, resume, Some(metrics), None, default_device())
        }
        _ => super::ranked::run_ranks(stage, out, init, resume),
    }
}

/// Train the stage on `device`, alone or as one rank of `group` (each rank steps on its share
/// of every batch; rank 0 logs to `metrics` and writes the model); returns the directory of
/// the final model.
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
    let objective = Objective::of(stage);
    let kind = objective.name();
    let (rank, world) = group.as_ref().map_or((0, 1), |g| (g.rank(), g.world_size()));
    let lead = rank == 0;
    let tok = super::tokenizer(stage, init)?;
    let data = pairs(stage, &tok)?;
    if lead {
        super::save_data_record(out, stage, &data.record)?;
    }
    let rows = data.train.len() as u64;
    let t = &stage.train;
    let per_rank = t.per_device_train_batch_size as usize;
    let per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps * world as u64;
    let total = t
        .max_steps
        .unwrap_or_else(|| (rows * t.num_train_epochs).div_ceil(per_step));
    let (mut learner, layout) = lm::new_learner(stage, total, device, init, &tok, group)?;
    if let Objective::RewardModel = objective {
        learner.attach_critic()?;
    }

    // The reference pass, from the starting weights (also on resume, before the checkpoint
    // loads); each rank scores its share of the pairs and every rank gets them all.
    let started = Instant::now();
    let (train_ref, eval_ref) = if objective.reference().is_some() {
        let refs = (
            reference_pass(&learner, &data.train, &tok)?,
            reference_pass(&learner, &data.eval, &tok)?,
        );
        if lead {
            tracing::info!(
                "stage {}: reference log-probabilities of {} pairs in {:.1}s",
                stage.name,
                data.train.len() + data.eval.len(),
                started.elapsed().as_secs_f64()
            );
        }
        refs
    } else {
        (
            vec![(0.0, 0.0); data.train.len()],
            vec![(0.0, 0.0); data.eval.len()],
        )
    };
    let eval_rows: Vec<u64> = (0..data.eval.len() as u64).collect();
    let prompts = match objective {
        Objective::Dpo(_) if !data.prompts.is_empty() => Some((data.prompts.clone(), answer_budget(stage)?)),
        _ => None,
    };
    let ckpt_dir = lm::checkpoint_dir(out, stage);
    let evaluation = Evaluation {
        pairs: (!eval_rows.is_empty()).then(|| batch(&data.eval, &eval_rows, &tok, &eval_ref)),
        prompts,
        tasks: match objective {
            Objective::Dpo(_) => super::eval_settings(stage, &[]),
            _ => None,
        },
        stage,
        tok: &tok,
        scratch: ckpt_dir.join("eval-model"),
        lead,
    };

    let mut sampler = Sampler::new(rows, stage.seed);
    let mut state = lm::start(
        stage,
        &ckpt_dir,
        resume,
        kind,
        &mut learner,
        &mut sampler,
        metrics.as_deref_mut(),
    )?;
    let mut log = |record: &serde_json::Value| match metrics.as_deref_mut() {
        Some(m) => m.write(record),
        None => Ok(()),
    };
    let what = match objective {
        Objective::Dpo(loss) => format!("{:?} loss (beta {})", loss.kind, loss.beta),
        Objective::RewardModel => "a reward model (Bradley-Terry)".to_string(),
    };
    if lead {
        tracing::info!(
            "stage {}: {} parameters on {:?}{layout}, {} steps of {} pairs, {what}",
            stage.name,
            learner.num_params(),
            device,
            total,
            per_step,
        );
    }
    if state.step == 0 {
        log(&evaluation.record(&learner, objective, &state)?)?;
    }

    let bar = match lead {
        true => lm::progress_bar(stage, total, state.step),
        false => indicatif::ProgressBar::hidden(),
    };
    let started = Instant::now();
    let elapsed_before = state.elapsed_s;
    while state.step < total {
        let micro: Vec<PreferenceBatch> = (0..t.gradient_accumulation_steps)
            .map(|_| {
                // Every rank draws the whole micro-batch and keeps its share.
                let rows = sampler.take(per_rank * world);
                batch(
                    &data.train,
                    &rows[rank * per_rank..(rank + 1) * per_rank],
                    &tok,
                    &train_ref,
                )
            })
            .collect();
        let m: PreferenceMetrics = objective.step(&mut learner, &micro)?;
        state.step = m.step;
        state.tokens += m.tokens;
        state.data_position = sampler.position();
        state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
        bar.set_position(state.step);
        bar.set_message(format!("loss {:.4}  ranked right {:.2}", m.loss, m.accuracy));
        if lead && (state.step.is_multiple_of(t.logging_steps) || state.step == total) {
            log(&json!({
                "stage": kind, "step": state.step, "loss": m.loss, "accuracy": m.accuracy,
                "chosen_reward": m.chosen_reward, "rejected_reward": m.rejected_reward,
                "reward_margin": m.chosen_reward - m.rejected_reward, "chosen_logp": m.chosen_logp,
                "rejected_logp": m.rejected_logp, "lr": m.lr, "grad_norm": m.grad_norm,
                "tokens": state.tokens, "elapsed_s": state.elapsed_s,
            }))?;
            lm::log_line(
                &bar,
                format!(
                    "{} step {:>5}/{total}  loss {:.4}  ranked right {:.2}  margin {:.3}  lr {:.2e}",
                    stage.name,
                    state.step,
                    m.loss,
                    m.accuracy,
                    m.chosen_reward - m.rejected_reward,
                    m.lr
                ),
            );
        }
        if lm::save_due(stage, &state, total, rows) {
            lm::save_checkpoint(&learner, &tok, &ckpt_dir, &state, t.keep_last_n_checkpoints)?;
        }
    }
    bar.finish_and_clear();
    // What each learner rank held (a collective).
    let ranks = crate::graph::memory::ranks_memory(&learner)?;
    log(&json!({"stage": objective.name(), "step": state.step, "learner_ranks": ranks}))?;

    log(&evaluation.record(&learner, objective, &state)?)?;
    if lead && evaluation.scratch.exists() {
        std::fs::remove_dir_all(&evaluation.scratch)?;
    }
    // Under ZeRO-3 saving is collective (rank 0 writes); otherwise rank 0 saves.
    if lead || learner.is_sharded() {
        match objective {
            Objective::Dpo(_) => learner.save_model(&model_dir)?,
            Objective::RewardModel => learner.save_reward_model(&model_dir)?,
        }
    }
    learner.with_group(|g| g.barrier()).transpose()?;
    if !lead {
        return Ok(model_dir);
    }
    tok.save(&model_dir)?;
    // Written last: its presence marks the stage complete for `--resume`.
    super::write_state(&done_marker, &state)?;
    tracing::info!(
        "stage {}: {} steps, {:.1}s; model in {}",
        stage.name,
        state.step,
        state.elapsed_s,
        model_dir.display()
    );
    Ok(model_dir)
}
