//! The typed recipe: what one file may say, with the defaults open-instruct and TRL use when a
//! command line leaves a flag out.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod rlvr;
mod rollout;

pub use rlvr::{
    LossAggregation, OffPolicyCorrection, RlAlgorithm, RlvrSpec, VerifierMode, VerifierSpec,
    R1_FORMAT_PATTERN,
};
pub use rollout::{is_device_name, RolloutSpec};

/// One recipe file, resolved or not: either a pipeline (`pipeline = [...]`) or a single stage
/// (`kind = ...`). Every field has a default so a file that `extends` another may say only what
/// differs; [`crate::load`] checks what a complete recipe must have.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Recipe {
    /// Name used on the command line (`rlvr run NAME`).
    pub name: String,
    /// One line for `rlvr recipes`.
    pub description: String,
    /// Name of the recipe this one starts from (at most one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// For pipelines: the stage recipes, in the order they run.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pipeline: Vec<String>,
    /// For stages: what the stage trains.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<StageKind>,
    /// Seed for data order, initialisation and sampling.
    pub seed: u64,
    /// The model trained and where it comes from.
    pub model: ModelSpec,
    /// Datasets and sequence lengths.
    pub data: DataSpec,
    /// Optimiser, schedule and batch.
    pub train: TrainSpec,
    /// How the reference run was launched (used by `rlvr plan`).
    pub launch: LaunchSpec,
    /// DPO settings (kind = "dpo").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dpo: Option<DpoSpec>,
    /// RLVR settings (kind = "rlvr").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rlvr: Option<RlvrSpec>,
    /// Evaluation on standard test sets during RLVR and DPO stages.
    #[serde(skip_serializing_if = "EvalSpec::is_default")]
    pub eval: EvalSpec,
    /// How an RLVR stage's actor graph is staffed on this machine.
    #[serde(skip_serializing_if = "RolloutSpec::is_default")]
    pub rollout: RolloutSpec,
    /// How `rlvr run` lays the learner out on this machine.
    #[serde(skip_serializing_if = "LearnerSpec::is_default")]
    pub learner: LearnerSpec,
}

/// The learner's processes on this machine: `world_size` local ranks (Gloo on CPU, NCCL on
/// GPUs), each stepping on its share of every batch, sharded with ZeRO-3 when
/// `launch.zero_stage = 3` and data-parallel otherwise. Pretraining and SFT stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LearnerSpec {
    /// Local learner ranks.
    pub world_size: u64,
}

impl Recipe {
    /// The learner GPUs of the run the recipe describes: an RLVR stage's
    /// `rlvr.actor_num_gpus_per_node` (the rest of `launch.gpus` run rollout engines), else
    /// every GPU.
    pub fn learner_gpus(&self) -> u64 {
        match &self.rlvr {
            Some(rl) if self.kind == Some(StageKind::Rlvr) => {
                rl.actor_num_gpus_per_node.iter().sum::<u64>().max(1)
            }
            _ => self.launch.gpus.max(1),
        }
    }
}

impl Default for LearnerSpec {
    fn default() -> Self {
        Self { world_size: 1 }
    }
}

impl LearnerSpec {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Evaluation during a stage with the code of `rlvr eval`: RLVR stages at their evaluation
/// points (the start, every `every` steps or `rlvr.num_evals` times, the end), DPO stages at the
/// start and the end; `metrics.jsonl` records each task's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSpec {
    /// `gsm8k`, `math500`, `ifeval`, or data files of RLVR rows; empty: none.
    pub tasks: Vec<String>,
    /// RLVR: evaluate every this many steps (0: at the held-out evaluations, `rlvr.num_evals`).
    pub every: u64,
    /// The first this many questions of each task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// How questions are asked: `chat` (zero-shot, the model's template) or `tulu3` (GSM8K
    /// 8-shot chain of thought, MATH 4-shot Minerva).
    pub preset: EvalPreset,
    /// Most new tokens per answer.
    pub max_new_tokens: u64,
    /// The chat template (`data.chat_template`'s forms); empty: the stage's.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub chat_template: String,
    /// Verifier rules for scoring.
    pub mode: VerifierMode,
}

impl Default for EvalSpec {
    fn default() -> Self {
        Self {
            tasks: Vec::new(),
            every: 0,
            limit: None,
            preset: EvalPreset::Chat,
            max_new_tokens: 512,
            chat_template: String::new(),
            mode: VerifierMode::Default,
        }
    }
}

impl EvalSpec {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// How evaluation questions are asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EvalPreset {
    /// Zero-shot, the model's chat template.
    Chat,
    /// Tülu 3's few-shot settings.
    Tulu3,
}

/// What a stage trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    /// Next-token pretraining on plain text.
    Pretrain,
    /// Supervised fine-tuning on chat messages.
    Sft,
    /// Direct preference optimisation on chosen/rejected pairs.
    Dpo,
    /// Bradley–Terry reward-model training.
    Rm,
    /// Reinforcement learning from verifiable rewards (PPO or GRPO).
    Rlvr,
}

impl StageKind {
    /// Every kind, in pipeline order.
    pub const ALL: [StageKind; 5] = [
        StageKind::Pretrain,
        StageKind::Sft,
        StageKind::Rm,
        StageKind::Dpo,
        StageKind::Rlvr,
    ];

    /// The lower-case name used in files and `--set` prefixes.
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Pretrain => "pretrain",
            StageKind::Sft => "sft",
            StageKind::Dpo => "dpo",
            StageKind::Rm => "rm",
            StageKind::Rlvr => "rlvr",
        }
    }
}

/// The model a stage starts from and its shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSpec {
    /// Hub id or local directory of the starting weights; empty = initialise from `config`.
    pub name_or_path: String,
    /// Tokenizer hub id or directory, when it differs from the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// Weight dtype during training (`bf16` or `f32`).
    pub dtype: Dtype,
    /// Architecture, with Hugging Face `config.json` names.
    pub config: ModelConfig,
}

/// Tensor element types the planner and learner know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 32-bit float.
    #[default]
    F32,
    /// bfloat16.
    Bf16,
}

impl Dtype {
    /// Bytes per element.
    pub fn bytes(self) -> u64 {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 => 2,
        }
    }
}

/// A Llama-family architecture, named as in Hugging Face `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Width of the residual stream.
    pub hidden_size: u64,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: u64,
    /// Decoder layers.
    pub num_hidden_layers: u64,
    /// Query heads.
    pub num_attention_heads: u64,
    /// Key/value heads (grouped-query attention).
    pub num_key_value_heads: u64,
    /// Vocabulary size.
    pub vocab_size: u64,
    /// Whether the LM head shares the embedding matrix (SmolLM2).
    pub tie_word_embeddings: bool,
    /// RoPE base.
    pub rope_theta: f64,
    /// Longest position the model was trained for.
    pub max_position_embeddings: u64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            hidden_size: 0,
            intermediate_size: 0,
            num_hidden_layers: 0,
            num_attention_heads: 0,
            num_key_value_heads: 0,
            vocab_size: 0,
            tie_word_embeddings: false,
            rope_theta: 10000.0,
            max_position_embeddings: 2048,
            rms_norm_eps: 1e-5,
        }
    }
}

impl ModelConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> u64 {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Parameters in one decoder layer: q, k, v, o projections, the three SwiGLU matrices and
    /// two RMSNorm weights.
    pub fn params_per_layer(&self) -> u64 {
        let h = self.hidden_size;
        let kv = self.num_key_value_heads * self.head_dim();
        let attn = 2 * h * h + 2 * h * kv;
        let mlp = 3 * h * self.intermediate_size;
        attn + mlp + 2 * h
    }

    /// Total parameters, counting a tied embedding once.
    pub fn num_params(&self) -> u64 {
        let embed = self.vocab_size * self.hidden_size;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        embed + head + self.num_hidden_layers * self.params_per_layer() + self.hidden_size
    }
}

/// Datasets, their mix and sequence lengths.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DataSpec {
    /// Training mix (open-instruct `dataset_mixer_list`).
    pub mix: Vec<MixEntry>,
    /// Evaluation mix (open-instruct `dataset_mixer_eval_list`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub eval_mix: Vec<MixEntry>,
    /// Longest training sequence (prompt + response), in tokens.
    pub max_seq_length: u64,
    /// Longest prompt, in tokens (DPO, RM, RLVR).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_prompt_length: Option<u64>,
    /// Chat template name (`tulu`, `chatml`), a model directory, or empty for the tokenizer's
    /// own.
    pub chat_template: String,
    /// How RL prompts made from GSM8K (`question`/`answer`) and MATH (`problem`) rows ask their
    /// question: `few_shot` (Tülu 3's 8-shot / 4-shot prompts), `zero_shot` (the question and
    /// an instruction on the answer's form), or `auto`: zero-shot when the stage renders with
    /// the model's own template (`chat_template` empty), few-shot with a named one.
    #[serde(skip_serializing_if = "PromptFormat::is_auto")]
    pub prompt_format: PromptFormat,
    /// SFT and pretraining: pack several examples into each `max_seq_length` row (attention
    /// stays inside each example) instead of padding each batch to its longest.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub packing: bool,
    /// Leave out (and count) rows that cannot be used instead of stopping at the first.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skip_bad_rows: bool,
    /// Rows in the training mix, when known before download (used by `rlvr plan`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

/// How GSM8K and MATH rows become RL prompts (see [`DataSpec::prompt_format`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PromptFormat {
    /// Zero-shot with the model's own template, few-shot with a named one.
    #[default]
    Auto,
    /// The few-shot exemplars first (Tülu 3).
    FewShot,
    /// The question and an instruction on the answer's form.
    ZeroShot,
}

impl PromptFormat {
    fn is_auto(&self) -> bool {
        *self == PromptFormat::Auto
    }
}

/// One dataset in a mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MixEntry {
    /// Hub id, local file or directory, or `builtin:NAME` for data the project generates.
    pub dataset: String,
    /// A float is a fraction of the dataset, an integer an exact row count (open-instruct).
    pub amount: Amount,
    /// Split to read.
    #[serde(default = "default_split")]
    pub split: String,
    /// Hub revision (branch, tag or commit); `main` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

fn default_split() -> String {
    "train".to_string()
}

/// How much of a dataset a mix takes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Amount {
    /// Exactly this many rows.
    Count(u64),
    /// This fraction of the rows (f > 0; above 1 repeats rows, as open-instruct upsamples).
    Fraction(f64),
}

/// Optimiser, learning-rate schedule and batch shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSpec {
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Schedule after warmup.
    pub lr_scheduler: LrScheduler,
    /// Warmup as a fraction of all optimiser steps.
    pub warmup_ratio: f64,
    /// Warmup in optimiser steps (wins over `warmup_ratio` when set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<u64>,
    /// `wsd` only: fraction of all steps spent decaying at the end.
    pub decay_ratio: f64,
    /// Decoupled (AdamW) weight decay.
    pub weight_decay: f64,
    /// AdamW β1.
    pub adam_beta1: f64,
    /// AdamW β2.
    pub adam_beta2: f64,
    /// AdamW ε.
    pub adam_eps: f64,
    /// Gradient-norm clip; none when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_grad_norm: Option<f64>,
    /// Passes over the data (SFT, DPO, RM).
    pub num_train_epochs: u64,
    /// Hard cap on optimiser steps (tiny recipes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u64>,
    /// Sequences per device per micro-step.
    pub per_device_train_batch_size: u64,
    /// Micro-steps per optimiser step.
    pub gradient_accumulation_steps: u64,
    /// Pretraining: tokens in one optimiser step across all devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_batch_tokens: Option<u64>,
    /// Global batch in sequences, when the source gives it directly (SmolLM2 tables).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_batch_size: Option<u64>,
    /// Pretraining: total tokens to train on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<f64>,
    /// SFT loss reduction over tokens: `mean` or `sum` (Tülu 3 SFT).
    pub reduce_loss: ReduceLoss,
    /// Recompute each decoder layer's activations in the backward pass: LM, DPO, reward-model
    /// and RL policy steps (PPO's value model keeps its activations).
    pub gradient_checkpointing: bool,
    /// Save every N optimiser steps, or at each epoch's end.
    pub checkpointing_steps: Checkpointing,
    /// Keep only the newest N checkpoints, in every stage kind (transformers'
    /// `save_total_limit`; at least the newest is kept; none = keep all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_last_n_checkpoints: Option<u64>,
    /// Log a metrics record every N optimiser steps.
    pub logging_steps: u64,
}

impl Default for TrainSpec {
    fn default() -> Self {
        // transformers / open-instruct defaults for flags a command line leaves out.
        Self {
            learning_rate: 0.0,
            lr_scheduler: LrScheduler::Linear,
            warmup_ratio: 0.0,
            warmup_steps: None,
            decay_ratio: 0.1,
            weight_decay: 0.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            max_grad_norm: None,
            num_train_epochs: 1,
            max_steps: None,
            per_device_train_batch_size: 1,
            gradient_accumulation_steps: 1,
            global_batch_tokens: None,
            global_batch_size: None,
            total_tokens: None,
            reduce_loss: ReduceLoss::Mean,
            gradient_checkpointing: false,
            checkpointing_steps: Checkpointing::At(CheckpointAt::Epoch),
            keep_last_n_checkpoints: None,
            logging_steps: 1,
        }
    }
}

/// Learning-rate schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LrScheduler {
    /// Linear warmup, then linear decay to zero.
    Linear,
    /// Linear warmup, then half-cosine decay to zero.
    Cosine,
    /// Linear warmup, constant, then linear decay over the last `decay_ratio` of steps.
    Wsd,
    /// Linear warmup, then constant.
    Constant,
}

/// Token-loss reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReduceLoss {
    /// Average over the batch's loss tokens.
    Mean,
    /// Sum over the batch's loss tokens (long sequences weigh more).
    Sum,
}

/// When to write checkpoints: a step count, or `"epoch"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Checkpointing {
    /// Every N optimiser steps.
    Steps(u64),
    /// At a named point.
    At(CheckpointAt),
}

/// Named checkpoint points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointAt {
    /// At the end of each epoch.
    Epoch,
}

/// How the reference run was launched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LaunchSpec {
    /// Machines.
    pub nodes: u64,
    /// GPUs across all machines (accelerate `num_processes`).
    pub gpus: u64,
    /// DeepSpeed ZeRO stage.
    pub zero_stage: u8,
    /// Optimiser state offloaded to CPU memory.
    pub offload_optimizer: bool,
}

impl Default for LaunchSpec {
    fn default() -> Self {
        Self {
            nodes: 1,
            gpus: 1,
            zero_stage: 3,
            offload_optimizer: false,
        }
    }
}

/// DPO loss settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DpoSpec {
    /// `dpo`, `dpo_norm` (length-normalised, Tülu 3) or `simpo`.
    pub loss_type: DpoLoss,
    /// β.
    pub beta: f64,
    /// SimPO's target reward margin γ.
    pub gamma_beta_ratio: f64,
}

impl Default for DpoSpec {
    fn default() -> Self {
        Self {
            loss_type: DpoLoss::Dpo,
            beta: 0.1,
            gamma_beta_ratio: 0.3,
        }
    }
}

/// DPO loss variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DpoLoss {
    /// Rafailov et al.
    Dpo,
    /// Log-probs averaged over tokens (Tülu 3).
    DpoNorm,
    /// Reference-free, length-normalised with a margin.
    Simpo,
}
