//! The stages `rlvr run` can execute, one module each: language-model and preference (DPO, RM)
//! stages drive the learner directly (data → learner); RLVR stages run the actor graph of
//! [`crate::graph`].

mod engine_ranks;
mod eval;
pub mod lm;
pub mod preference;
pub mod ranked;
pub mod rlvr;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rlvr_data::arith::Split;
use rlvr_data::{mix, Builtin, ChatTemplate, Hub, Tokenizer};
use rlvr_learner::model::Config;
use rlvr_recipes::spec::{Amount, MixEntry, ModelConfig, StageKind};
use rlvr_recipes::Recipe;
use rlvr_verifiers::Verifier;

use crate::cluster::Listen;
use crate::metrics::MetricsLog;
use crate::UsageError;

/// Join a stage as a rank other than 0 of the group a launcher (torchrun, `srun`) started:
/// the same starting model as rank 0's [`run`], no logs or records of its own. Returns the
/// directory of the stage's final model (rank 0 writes it).
pub fn follow(stage: &Recipe, out: &Path, init: Option<&Path>, resume: bool) -> Result<PathBuf> {
    let model_dir = out.join(&stage.name);
    if resume && model_dir.join("trainer_state.json").is_file() {
        return Ok(model_dir);
    }
    let named = named_model(stage, init)?;
    ranked::run_rank(stage, out, init.or(named.as_deref()), resume)?;
    Ok(model_dir)
}

/// The recipe's `model.name_or_path` (a directory or a hub id), resolved, when the stage has no
/// previous stage's model (`init`) to start from.
fn named_model(stage: &Recipe, init: Option<&Path>) -> Result<Option<PathBuf>> {
    Ok(match init {
        None if !stage.model.name_or_path.is_empty() => Some(resolve_model(&stage.model.name_or_path)?),
        _ => None,
    })
}

/// Run one stage into `out`, starting from `init` (the previous stage's model) when given.
/// Returns the directory of the stage's final model.
pub fn run(
    stage: &Recipe,
    out: &Path,
    init: Option<&Path>,
    resume: bool,
    metrics: &mut MetricsLog,
    listen: Option<&Listen>,
    verifiers: &[Arc<dyn Verifier>],
) -> Result<PathBuf> {
    // A stage's model directory gets `trainer_state.json` last: with it, the stage is done.
    let model_dir = out.join(&stage.name);
    if resume && model_dir.join("trainer_state.json").is_file() {
        tracing::info!(
            "stage {}: already complete in {}",
            stage.name,
            model_dir.display()
        );
        return Ok(model_dir);
    }
    // A stage starts from the previous stage's model, else from the recipe's `model.name_or_path`
    // (a directory or a hub id).
    let named = named_model(stage, init)?;
    let init = init.or(named.as_deref());
    if stage.model.dtype == rlvr_recipes::spec::Dtype::Bf16
        && rlvr_learner::runtime::default_device() == tch::Device::Cpu
    {
        tracing::warn!(
            "stage `{}` trains in bf16 on the CPU, several times slower than f32 here \
             (libtorch has few bf16 CPU kernels); --set model.dtype=f32 to train in f32",
            stage.name
        );
    }
    let metrics = &mut metrics.for_stage(&stage.name)?;
    match stage.kind {
        Some(StageKind::Pretrain | StageKind::Sft) => lm::run(stage, out, init, resume, metrics),
        Some(StageKind::Dpo | StageKind::Rm) => preference::run(stage, out, init, resume, metrics),
        Some(StageKind::Rlvr) => rlvr::run(stage, out, init, resume, metrics, listen, verifiers),
        None => Err(not_a_stage(stage)),
    }
}

/// Check that a stage can run in this build, before anything starts.
pub fn check_available(stage: &Recipe) -> Result<()> {
    // Where its ranks run: a launcher's, one local rank per GPU of launch.gpus, or
    // learner.world_size local ranks; refused here when this machine cannot hold them.
    ranked::layout(stage)?;
    match stage.kind {
        Some(StageKind::Pretrain | StageKind::Sft) => lm::check(stage),
        Some(StageKind::Dpo | StageKind::Rm) => preference::check(stage),
        Some(StageKind::Rlvr) => rlvr::check(stage),
        None => Err(not_a_stage(stage)),
    }
}

fn not_a_stage(stage: &Recipe) -> anyhow::Error {
    anyhow::anyhow!("`{}` is not a stage", stage.name)
}

/// The data crate's form of a recipe's mix entries.
fn entries(mix: &[MixEntry]) -> Vec<mix::Entry> {
    mix.iter()
        .map(|e| mix::Entry {
            dataset: e.dataset.clone(),
            take: match e.amount {
                Amount::Count(n) => mix::Take::Count(n),
                Amount::Fraction(f) => mix::Take::Fraction(f),
            },
            split: e.split.clone(),
            revision: e.revision.clone(),
        })
        .collect()
}

/// Check, before anything runs, that every entry of `mix` (the stage's `key`) can be found: a
/// built-in data set holding what the stage reads (`holds`; `hint` names one that does) with
/// a row count, a local file or directory, or a hub id. With a built-in data set, the model's
/// vocabulary must hold the built-in tokenizer's.
pub(crate) fn check_mix(
    stage: &Recipe,
    key: &str,
    mix: &[MixEntry],
    hint: &str,
    holds: impl Fn(Builtin) -> bool,
) -> Result<()> {
    for (i, entry) in mix.iter().enumerate() {
        let at = format!("stage `{}`: {key}[{i}] `{}`", stage.name, entry.dataset);
        if entry.dataset.starts_with("builtin:") {
            let source = Builtin::parse(&entry.dataset).with_context(|| at.clone())?;
            if !holds(source) {
                bail!(UsageError(format!(
                    "{at} holds nothing this stage reads (try {hint})"
                )));
            }
            if source.fixed_rows().is_none() && !matches!(entry.amount, Amount::Count(n) if n > 0) {
                bail!(UsageError(format!(
                    "{at}: a generated data set needs a positive row count"
                )));
            }
            let vocab = Tokenizer::builtin_chars().vocab_size() as u64;
            if source.for_char_tokenizer() && stage.model.config.vocab_size < vocab {
                bail!(UsageError(format!(
                    "stage `{}`: model.config.vocab_size = {} is smaller than the built-in tokenizer's {vocab}",
                    stage.name, stage.model.config.vocab_size
                )));
            }
        } else if !Path::new(&entry.dataset).exists() && !mix::is_hub_id(&entry.dataset) {
            bail!(UsageError(format!(
                "{at}: no such file or directory, and not a hub data set id"
            )));
        }
    }
    Ok(())
}

/// Read `mix` (the stage's `key`, `data.mix` or `data.eval_mix`): generated built-in rows
/// through `generated`, file rows through `read` (see [`mix::load`]). The resolved mix is
/// printed; bad rows stop the load unless `data.skip_bad_rows` is set.
pub(crate) fn load_mix<T>(
    stage: &Recipe,
    key: &str,
    mix: &[MixEntry],
    generated: impl Fn(Builtin, u64, Split) -> std::result::Result<Option<T>, rlvr_data::DataError>,
    read: impl Fn(&serde_json::Value, rlvr_data::At) -> std::result::Result<Option<T>, rlvr_data::DataError>,
) -> Result<mix::Mixed<T>> {
    let options = mix::MixOptions {
        seed: stage.seed,
        bad_rows: if stage.data.skip_bad_rows {
            mix::BadRows::Skip
        } else {
            mix::BadRows::Fail
        },
        hub: Hub::from_env(),
    };
    let mixed = mix::load(&entries(mix), &options, generated, read)
        .with_context(|| format!("stage `{}`: {key}", stage.name))?;
    if crate::ranks::is_lead() {
        for line in mixed.report.lines() {
            tracing::info!("stage {}: {key}: {line}", stage.name);
        }
    }
    if !mix.is_empty() && mixed.rows.is_empty() {
        let filtered: u64 = mixed.report.entries.iter().map(|e| e.filtered).sum();
        bail!(UsageError(format!(
            "stage `{}`: {key} gives no rows ({filtered} filtered out as too long for the stage)",
            stage.name
        )));
    }
    Ok(mixed)
}

/// Record what a stage read (its resolved mixes, and what else `record` holds) beside the
/// run's outputs: `OUT/data/STAGE.json`.
pub(crate) fn save_data_record(out: &Path, stage: &Recipe, record: &serde_json::Value) -> Result<()> {
    let dir = out.join("data");
    std::fs::create_dir_all(&dir)?;
    write_state(&dir.join(format!("{}.json", stage.name)), record)
}

/// The tokenizer of a stage: `model.tokenizer` when the recipe names one (a directory or a hub
/// id), else the starting model's (`init`), else — for a model built from scratch — the
/// built-in character tokenizer of the tiny recipes. A starting model without a tokenizer is
/// an error naming its directory. The stage's chat template is recorded in it, so the model
/// the stage writes carries the template it was trained with.
pub(crate) fn tokenizer(stage: &Recipe, init: Option<&Path>) -> Result<Tokenizer> {
    let source = match (&stage.model.tokenizer, init) {
        (Some(named), _) => Some(
            resolve_tokenizer(named).with_context(|| format!("stage `{}`: model.tokenizer", stage.name))?,
        ),
        (None, Some(dir)) => Some(dir.to_path_buf()),
        (None, None) => None,
    };
    let mut tok = match source {
        Some(dir) if dir.join("tokenizer.json").is_file() => Tokenizer::from_file(&dir)?,
        Some(dir) => bail!(UsageError(format!(
            "stage `{}`: {} has no tokenizer.json; give the model's tokenizer with model.tokenizer = \"DIR\"",
            stage.name,
            dir.display()
        ))),
        None => Tokenizer::builtin_chars(),
    };
    let template = chat_template(stage, &tok)?;
    tok.set_chat_template(template.source());
    Ok(tok)
}

/// A directory holding a tokenizer from a recipe's reference: a local directory, or a hub
/// model id (its tokenizer files only, downloaded into the hub cache or found there).
pub fn resolve_tokenizer(name: &str) -> Result<PathBuf> {
    let path = Path::new(name);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if !mix::is_hub_id(name) {
        bail!(UsageError(format!(
            "tokenizer `{name}`: no such directory, and not a hub model id"
        )));
    }
    let (id, revision) = match name.split_once('@') {
        Some((id, rev)) => (id, Some(rev)),
        None => (name, None),
    };
    Ok(Hub::from_env().tokenizer_dir(id, revision)?)
}

/// A model directory from a recipe's model reference: a local directory, or a hub model id
/// (downloaded into the hub cache, or found there).
pub fn resolve_model(name: &str) -> Result<PathBuf> {
    let path = Path::new(name);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if !mix::is_hub_id(name) {
        bail!(UsageError(format!(
            "model `{name}`: no such directory, and not a hub model id"
        )));
    }
    let (id, revision) = match name.split_once('@') {
        Some((id, rev)) => (id, Some(rev)),
        None => (name, None),
    };
    Ok(Hub::from_env().model_dir(id, revision)?)
}

/// The test-set evaluation of the stage's `[eval]` table (`None` without tasks), sampled with
/// the stage's seed and `stop` strings; the chat template is the stage's unless the table names
/// one.
pub(crate) fn eval_settings(stage: &Recipe, stop: &[String]) -> Option<crate::evaluation::Settings> {
    use rlvr_recipes::spec::{EvalPreset, VerifierMode};
    let e = &stage.eval;
    (!e.tasks.is_empty()).then(|| crate::evaluation::Settings {
        tasks: e.tasks.clone(),
        limit: e.limit.map(|l| l as usize),
        preset: match e.preset {
            EvalPreset::Chat => rlvr_data::evals::Preset::Chat,
            EvalPreset::Tulu3 => rlvr_data::evals::Preset::Tulu3,
        },
        chat_template: if e.chat_template.is_empty() {
            stage.data.chat_template.clone()
        } else {
            e.chat_template.clone()
        },
        samples: 1,
        temperature: 0.0,
        max_new_tokens: e.max_new_tokens as usize,
        mode: match e.mode {
            VerifierMode::Default => rlvr_verifiers::Mode::Default,
            VerifierMode::Tulu3 => rlvr_verifiers::Mode::Tulu3,
        },
        seed: stage.seed,
        stop: stop.to_vec(),
    })
}

/// How the stage's GSM8K and MATH rows ask their question (`data.prompt_format`; `auto`:
/// zero-shot with the model's own template, few-shot with a named one).
pub(crate) fn prompt_format(stage: &Recipe) -> rlvr_data::PromptFormat {
    use rlvr_recipes::spec::PromptFormat as Spec;
    match (stage.data.prompt_format, stage.data.chat_template.is_empty()) {
        (Spec::FewShot, _) | (Spec::Auto, false) => rlvr_data::PromptFormat::FewShot,
        (Spec::ZeroShot, _) | (Spec::Auto, true) => rlvr_data::PromptFormat::ZeroShot,
    }
}

/// The chat template the stage's `data.chat_template` names (the model's own when empty, ChatML
/// when it has none), ending assistant turns with the tokenizer's EOS token.
pub(crate) fn chat_template(stage: &Recipe, tok: &Tokenizer) -> Result<ChatTemplate> {
    ChatTemplate::resolve(&stage.data.chat_template, tok)
        .with_context(|| format!("recipe {}: data.chat_template", stage.name))
}

/// The learner's model configuration for a recipe's architecture (a Llama; no token ids set).
pub fn llama_config(c: &ModelConfig) -> Config {
    Config {
        rms_norm_eps: c.rms_norm_eps,
        rope_theta: c.rope_theta,
        ..Config::llama(
            c.hidden_size as i64,
            c.intermediate_size as i64,
            c.num_hidden_layers as i64,
            c.num_attention_heads as i64,
            c.num_key_value_heads as i64,
            c.vocab_size as i64,
            c.max_position_embeddings as i64,
            c.tie_word_embeddings,
        )
    }
}

/// Write `state` as pretty JSON to `path` all at once: into a temporary file beside it, then
/// renamed over it, so a process killed meanwhile leaves the old file or the new one, never a
/// torn one. `trainer_state.json` marks checkpoints and finished stages complete this way.
pub(crate) fn write_state(path: &Path, state: &impl serde::Serialize) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(state)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Keep the newest `keep` checkpoints under `dir` (`step-N/`, by step; at least the newest one,
/// just written and complete) and delete the older ones (`train.keep_last_n_checkpoints`, as
/// transformers' `save_total_limit`). `None` keeps all.
pub(crate) fn prune_checkpoints(dir: &Path, keep: Option<u64>) -> Result<()> {
    let Some(keep) = keep else {
        return Ok(());
    };
    let mut steps: Vec<u64> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("step-")?.parse().ok())
        .collect();
    steps.sort_unstable();
    for old in steps
        .iter()
        .take(steps.len().saturating_sub(keep.max(1) as usize))
    {
        let path = dir.join(format!("step-{old}"));
        std::fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// The newest complete checkpoint under `dir` (`step-N/` holding a `trainer_state.json` of type
/// `T`, written last): its directory and state.
pub(crate) fn latest_checkpoint<T: serde::de::DeserializeOwned>(
    dir: &Path,
    step: impl Fn(&T) -> u64,
) -> Result<Option<(PathBuf, T)>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut best: Option<(PathBuf, T)> = None;
    for entry in entries {
        let path = entry?.path();
        let state_path = path.join("trainer_state.json");
        let Ok(text) = std::fs::read_to_string(&state_path) else {
            continue;
        };
        let state: T = match serde_json::from_str(&text) {
            Ok(state) => state,
            Err(e) => {
                tracing::info!("ignoring the checkpoint {}: {e}", state_path.display());
                continue;
            }
        };
        if best.as_ref().is_none_or(|(_, b)| step(&state) > step(b)) {
            best = Some((path, state));
        }
    }
    Ok(best)
}
