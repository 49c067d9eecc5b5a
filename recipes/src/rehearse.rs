//! The dress rehearsal of a recipe (`rlvr run RECIPE --rehearse`): the same stages, learner
//! world sizes, ZeRO-3 sharding and offload, gradient checkpointing, dtype, batch geometry and
//! schedule, with a tiny model of the same architecture family (Llama, its grouped-query ratio
//! and head tying kept) and a few steps of built-in data of each stage's kind, so a broken
//! many-GPU job shows up on one CPU before anyone pays for it.
//!
//! What changes is data: [`rehearsal`] rewrites each stage and says, per stage, what it kept
//! and what it could not ([`Rehearsed`]). Each learner GPU of the real run is one local rank;
//! nodes are blocks of consecutive ranks (on one machine nothing else tells them apart). A
//! machine that cannot hold every rank runs fewer, the largest count that divides the real
//! one, with gradient accumulation raised so each optimiser step still takes the real global
//! batch, and says so.

use crate::load::Resolved;
use crate::spec::{Amount, Checkpointing, MixEntry, ModelConfig, Recipe, StageKind};

/// Optimiser steps each rehearsed stage takes (a checkpoint after each).
pub const REHEARSAL_STEPS: u64 = 2;

/// Tokens each rehearsal RLVR response may take, and each evaluation answer.
const REHEARSAL_RESPONSE_TOKENS: u64 = 16;

/// Longest example a rehearsal stage trains on (the built-in data are short).
const REHEARSAL_SEQ_LEN: u64 = 256;

/// What the rehearsal of one stage kept of the real run and what it changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Rehearsed {
    /// The stage.
    pub stage: String,
    /// Learner GPUs of the real run.
    pub learner_gpus: u64,
    /// Nodes of the real run.
    pub nodes: u64,
    /// GPUs of the real run in all (the rollout engines' included, for RLVR).
    pub gpus: u64,
    /// Local learner ranks of the rehearsal.
    pub ranks: u64,
    /// Whether the machine held fewer ranks than the real run has learner GPUs.
    pub shrunk: bool,
    /// What else differs from the real run, one sentence each.
    pub notes: Vec<String>,
}

/// A tiny model of `real`'s family and proportions: two layers, head width 8, two key/value
/// heads with the real query-to-key/value ratio, the real head tying, RoPE base and norm
/// epsilon; the built-in character tokenizer's vocabulary (64).
pub fn tiny_config(real: &ModelConfig) -> ModelConfig {
    let ratio = (real.num_attention_heads / real.num_key_value_heads.max(1)).clamp(1, 8);
    let heads = 2 * ratio;
    let hidden = 8 * heads;
    ModelConfig {
        hidden_size: hidden,
        intermediate_size: 2 * hidden,
        num_hidden_layers: 2,
        num_attention_heads: heads,
        num_key_value_heads: 2,
        vocab_size: 64,
        tie_word_embeddings: real.tie_word_embeddings,
        rope_theta: real.rope_theta,
        // The evaluation presets' few-shot prompts run to thousands of characters.
        max_position_embeddings: 16384,
        rms_norm_eps: real.rms_norm_eps,
    }
}

/// The built-in data set a stage of `kind` rehearses on.
fn builtin_data(kind: StageKind) -> &'static str {
    match kind {
        StageKind::Pretrain => "builtin:arith",
        StageKind::Sft => "builtin:arith-chat",
        StageKind::Dpo | StageKind::Rm => "builtin:arith-prefs",
        StageKind::Rlvr => "builtin:arith-rlvr",
    }
}

/// The rehearsal of `resolved` on a machine that holds at most `max_ranks` local ranks.
pub fn rehearsal(resolved: &Resolved, max_ranks: u64) -> (Resolved, Vec<Rehearsed>) {
    let mut out = resolved.clone();
    let stages: Vec<&mut Recipe> = match &mut out {
        Resolved::Stage(r) => vec![r.as_mut()],
        Resolved::Pipeline(p) => p.stages.iter_mut().collect(),
    };
    let mut reports = Vec::new();
    for (i, stage) in stages.into_iter().enumerate() {
        reports.push(rehearse_stage(stage, i == 0, max_ranks));
    }
    (out, reports)
}

/// Rewrite one stage for its rehearsal (`first`: the pipeline's first, which starts from a
/// fresh tiny model; later stages start from the stage before, as in the real run).
fn rehearse_stage(stage: &mut Recipe, first: bool, max_ranks: u64) -> Rehearsed {
    let kind = stage.kind.unwrap_or(StageKind::Sft);
    let (gpus, nodes) = (stage.launch.gpus.max(1), stage.launch.nodes.max(1));
    let learners = stage.learner_gpus();
    let mut notes = Vec::new();
    // The most ranks the machine holds that keep the real batch geometry.
    let ranks = match kind {
        // The RL step's geometry comes from the recipe's learner GPUs, not the ranks.
        StageKind::Rlvr => learners.min(max_ranks.max(1)),
        _ => (1..=learners.min(max_ranks.max(1)))
            .rev()
            .find(|r| learners.is_multiple_of(*r))
            .unwrap_or(1),
    };
    let shrunk = ranks < learners;
    if shrunk && kind != StageKind::Rlvr {
        let factor = learners / ranks;
        stage.train.gradient_accumulation_steps = stage.train.gradient_accumulation_steps.max(1) * factor;
        notes.push(format!(
            "{ranks} ranks stand for {learners} GPUs: gradient accumulation x{factor} keeps the global batch"
        ));
    } else if shrunk {
        notes.push(format!(
            "{ranks} ranks stand for {learners} learner GPUs: each takes a larger share of the same mini-batches"
        ));
    }
    stage.learner.world_size = ranks;
    stage.launch.gpus = 1;
    stage.launch.nodes = 1;

    let real = stage.model.config.clone();
    stage.model.config = tiny_config(&real);
    notes.push(format!(
        "model: {} layers of width {} ({} heads, {} key/value) stand for {} of width {}",
        stage.model.config.num_hidden_layers,
        stage.model.config.hidden_size,
        stage.model.config.num_attention_heads,
        stage.model.config.num_key_value_heads,
        real.num_hidden_layers,
        real.hidden_size
    ));
    if first {
        stage.model.name_or_path = String::new();
    }
    stage.model.tokenizer = None;

    let data = builtin_data(kind);
    let rows = |amount: u64, split: &str| MixEntry {
        dataset: data.to_string(),
        amount: Amount::Count(amount),
        split: split.to_string(),
        revision: None,
    };
    notes.push(format!(
        "data: {data} stands for {}",
        stage
            .data
            .mix
            .iter()
            .map(|m| m.dataset.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    // Twice what the rehearsal's steps take: a step's prompts (RLVR) or its global batch.
    let per_step = match &stage.rlvr {
        Some(rl) => rl.local_rollout_batch_size * learners,
        None => {
            stage.train.per_device_train_batch_size.max(1)
                * stage.train.gradient_accumulation_steps.max(1)
                * ranks
        }
    };
    stage.data.mix = vec![rows((2 * REHEARSAL_STEPS * per_step).max(64), "train")];
    if !stage.data.eval_mix.is_empty() {
        stage.data.eval_mix = vec![rows(16, "test")];
    }
    stage.data.rows = None;
    stage.data.max_seq_length = stage.data.max_seq_length.min(REHEARSAL_SEQ_LEN);
    stage.data.max_prompt_length = stage.data.max_prompt_length.map(|p| p.min(REHEARSAL_SEQ_LEN / 2));

    stage.train.max_steps = Some(REHEARSAL_STEPS);
    stage.train.total_tokens = None;
    stage.train.checkpointing_steps = Checkpointing::Steps(1);
    stage.train.logging_steps = 1;
    if !stage.eval.tasks.is_empty() {
        stage.eval.limit = Some(2);
        stage.eval.max_new_tokens = REHEARSAL_RESPONSE_TOKENS;
    }

    if let Some(rl) = stage.rlvr.as_mut() {
        // The built-in rows are GSM8K-style questions.
        rl.dataset_verifiers.insert(data.to_string(), "gsm8k".to_string());
        rl.response_length = REHEARSAL_RESPONSE_TOKENS;
        rl.max_token_length = rl.max_token_length.min(REHEARSAL_SEQ_LEN);
        rl.max_prompt_token_length = rl.max_prompt_token_length.min(REHEARSAL_SEQ_LEN);
        rl.num_evals = 1;
        rl.save_freq = 1;
        if let Some(value) = &mut rl.value_model_config {
            *value = tiny_config(value);
        }
        let engines = rl.vllm_num_engines.max(1);
        stage.rollout.workers = engines;
        if rl.vllm_tensor_parallel_size > 1 {
            notes.push(format!(
                "rollout: {engines} engine(s) of tensor parallelism {} run whole here (launched engine ranks split them)",
                rl.vllm_tensor_parallel_size
            ));
            rl.vllm_tensor_parallel_size = 1;
        }
    }
    Rehearsed {
        stage: stage.name.clone(),
        learner_gpus: learners,
        nodes,
        gpus,
        ranks,
        shrunk,
        notes,
    }
}
