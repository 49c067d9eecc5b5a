//! The stages `rlvr run` can execute, one module each: language-model and preference (DPO, RM)
//! stages drive the learner directly (data → learner); RLVR stages run the actor graph of
//! [`crate::graph`].

mod eval;
pub mod lm;
pub mod preference;
pub mod rlvr;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rlvr_data::{Builtin, ChatTemplate, Tokenizer};
use rlvr_learner::llama::Config;
use rlvr_recipes::spec::{Amount, ModelConfig, StageKind};
use rlvr_recipes::Recipe;

use crate::metrics::MetricsLog;
use crate::UsageError;

/// Run one stage into `out`, starting from `init` (the previous stage's model) when given.
/// Returns the directory of the stage's final model.
pub fn run(
    stage: &Recipe,
    out: &Path,
    init: Option<&Path>,
    resume: bool,
    metrics: &mut MetricsLog,
) -> Result<PathBuf> {
    // A stage's model directory gets `trainer_state.json` last: with it, the stage is done.
    let model_dir = out.join(&stage.name);
    if resume && model_dir.join("trainer_state.json").is_file() {
        eprintln!(
            "stage {}: already complete in {}",
            stage.name,
            model_dir.display()
        );
        return Ok(model_dir);
    }
    // A stage starts from the previous stage's model, else from the recipe's `model.name_or_path`.
    let named = PathBuf::from(&stage.model.name_or_path);
    let init = init.or_else(|| (!stage.model.name_or_path.is_empty()).then_some(named.as_path()));
    match stage.kind {
        Some(StageKind::Pretrain | StageKind::Sft) => lm::run(stage, out, init, resume, metrics),
        Some(StageKind::Dpo | StageKind::Rm) => preference::run(stage, out, init, resume, metrics),
        Some(StageKind::Rlvr) => rlvr::run(stage, out, init, resume, metrics),
        None => Err(not_a_stage(stage)),
    }
}

/// Check that a stage can run in this build, before anything starts.
pub fn check_available(stage: &Recipe) -> Result<()> {
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

/// The one built-in data set of a stage's `data.mix` and its row count, checked to hold what
/// the stage trains on (`what`; `holds` tells whether a data set does, `hint` names one that
/// does), and the model's vocabulary to hold the built-in tokenizer's. Hub and file data sets
/// are refused until the data work lands.
pub(crate) fn builtin_source(
    stage: &Recipe,
    what: &str,
    hint: &str,
    holds: impl Fn(Builtin) -> bool,
) -> Result<(Builtin, u64)> {
    let [entry] = stage.data.mix.as_slice() else {
        bail!(UsageError(format!(
            "stage `{}`: this build reads one data set per stage; mixes arrive with the data work",
            stage.name
        )));
    };
    if !entry.dataset.starts_with("builtin:") {
        bail!(
            "stage `{}` is not available yet: data set `{}`: this build loads built-in {what} and, for pretraining and SFT, local .jsonl files (hub data sets arrive with the data work)",
            stage.name,
            entry.dataset
        );
    }
    let source = Builtin::parse(&entry.dataset)?;
    if !holds(source) {
        bail!(UsageError(format!(
            "stage `{}`: `{}` holds no {what} (try {hint})",
            stage.name, entry.dataset
        )));
    }
    let vocab = Tokenizer::builtin_chars().vocab_size() as u64;
    if stage.model.config.vocab_size < vocab {
        bail!(UsageError(format!(
            "stage `{}`: model.config.vocab_size = {} is smaller than the tokenizer's {vocab}",
            stage.name, stage.model.config.vocab_size
        )));
    }
    match entry.amount {
        Amount::Count(n) if n > 0 => Ok((source, n)),
        other => bail!(UsageError(format!(
            "stage `{}`: data.mix[0].amount = {other:?}: a generated data set needs a positive row count",
            stage.name
        ))),
    }
}

/// The chat template the stage's `data.chat_template` names (ChatML when empty), ending
/// assistant turns with the tokenizer's EOS token.
pub(crate) fn chat_template(stage: &Recipe, tok: &Tokenizer) -> Result<ChatTemplate> {
    let eos = tok.token(tok.eos_id).unwrap_or_default();
    ChatTemplate::resolve(&stage.data.chat_template, &eos)
        .with_context(|| format!("recipe {}: data.chat_template", stage.name))
}

/// The learner's model configuration for a recipe's architecture (no token ids set).
pub fn llama_config(c: &ModelConfig) -> Config {
    Config {
        hidden_size: c.hidden_size as i64,
        intermediate_size: c.intermediate_size as i64,
        num_hidden_layers: c.num_hidden_layers as i64,
        num_attention_heads: c.num_attention_heads as i64,
        num_key_value_heads: Some(c.num_key_value_heads as i64),
        vocab_size: c.vocab_size as i64,
        rms_norm_eps: c.rms_norm_eps,
        rope_theta: c.rope_theta,
        rope_scaling: None,
        max_position_embeddings: c.max_position_embeddings as i64,
        tie_word_embeddings: c.tie_word_embeddings,
        bos_token_id: None,
        eos_token_id: None,
    }
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
        let state: T =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", state_path.display()))?;
        if best.as_ref().is_none_or(|(_, b)| step(&state) > step(b)) {
            best = Some((path, state));
        }
    }
    Ok(best)
}
