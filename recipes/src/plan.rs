//! The resource planner behind `rlvr plan`: per-GPU memory for the learner under ZeRO, memory of
//! the rollout engine, optimiser steps and tokens per step — before anything is launched.
//!
//! # Formulas (Ψ = parameters, N = learner GPUs, bytes; GiB = 2^30 bytes)
//!
//! **Model states** (ZeRO paper, Rajbhandari et al. 2020, §3 and Table 1). With bf16 weights
//! and gradients and fp32 AdamW states (master weights, m, v: K = 12 bytes per parameter):
//! stage 0 `(2 + 2 + K)Ψ`; stage 1 `2Ψ + 2Ψ + KΨ/N`; stage 2 `2Ψ + (2 + K)Ψ/N`;
//! stage 3 `(2 + 2 + K)Ψ/N`. In f32 there is no master copy: `4Ψ + 4Ψ + 8Ψ`. With
//! `offload_optimizer` the `K` term lives in CPU memory. Under stage 3 one layer's parameters
//! are gathered in full while it runs, plus one prefetched: `2 × 2 × Ψ_layer`.
//!
//! **Activations** per decoder layer for a micro-batch of `b` sequences of `s` tokens, with a
//! fused attention kernel (no s×s scores kept), `h` hidden, `kv` key/value width and `I` MLP
//! width, in bf16: the attention block keeps its norm input, the QKV input, Q/K/V and the
//! attention output, `sb(8h + 4kv)`; the SwiGLU block keeps its norm input, the MLP input, the
//! gate and up outputs, the activation and the product, `sb(4h + 8I)`; in all
//! `sb(12h + 4kv + 8I)` per layer. With gradient checkpointing only each layer's input is kept,
//! `2sbh` per layer (Korthikanti et al. 2022, "full recomputation: 2sbhL"), plus one layer's
//! full activations during its recomputation. The logits add `sbV × 6` bytes (bf16 logits and
//! the fp32 log-softmax).
//!
//! **Rollout engine**: weights `eΨ / tp` per GPU, and on an engine's first GPU the next policy
//! version as it arrived (whole, in the learner's dtype) when an unsharded learner sends it
//! device to device (a ZeRO-3 learner's arrives whole in the host memory of each engine's first
//! rank, sent as the learner ranks gather it unit by unit, so rank 0 never holds it whole, and
//! relayed to the engine's other ranks tensor by tensor); the KV cache holds `2 × L × kv × e` bytes per
//! token (K and V), `e` the bytes of an element in the engine's dtype (`rollout.dtype`, else
//! `model.dtype`: 2 in bf16, 4 in f32), for `prompt / n + response` tokens per sequence (the n
//! samples of a prompt share its blocks). The cache is what is left of the GPU, or
//! `rollout.kv_cache_gib` when set. When the whole batch does not fit, generation runs in
//! waves; the plan says how many sequences are resident at once.
//!
//! A fixed 2 GiB per GPU is reserved for the CUDA context, communication buffers and
//! fragmentation.

use std::fmt::Write as _;

use serde::Serialize;

use crate::spec::{Dtype, ModelConfig, Recipe, RlAlgorithm, StageKind};

const GIB: f64 = (1u64 << 30) as f64;
/// Per-GPU reserve for the CUDA context, NCCL buffers and allocator fragmentation.
pub const RESERVE_BYTES: f64 = 2.0 * GIB;

/// What the user asked to plan for.
#[derive(Debug, Clone, Copy)]
pub struct PlanRequest {
    /// GPUs in all.
    pub gpus: u64,
    /// Memory of one GPU in GiB.
    pub gpu_mem_gib: f64,
    /// Machines the GPUs are spread over.
    pub nodes: u64,
}

/// Bytes of model states (weights, gradients, optimiser) on one GPU under a ZeRO stage.
pub fn model_state_bytes(params: f64, dtype: Dtype, zero_stage: u8, n: u64, offload: bool) -> States {
    let n = n.max(1) as f64;
    let (w, g, k) = match dtype {
        Dtype::Bf16 => (2.0, 2.0, 12.0),
        Dtype::F32 => (4.0, 4.0, 8.0),
    };
    let k = if offload { 0.0 } else { k };
    let (w_div, g_div, k_div) = match zero_stage {
        0 => (1.0, 1.0, 1.0),
        1 => (1.0, 1.0, n),
        2 => (1.0, n, n),
        _ => (n, n, n),
    };
    States {
        weights: w * params / w_div,
        gradients: g * params / g_div,
        optimizer: k * params / k_div,
    }
}

/// Model-state bytes on one GPU, by kind.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct States {
    /// Parameters (sharded under stage 3).
    pub weights: f64,
    /// Gradients (sharded under stages 2 and 3).
    pub gradients: f64,
    /// Optimiser states (sharded under stages 1–3; zero when offloaded).
    pub optimizer: f64,
}

impl States {
    /// Sum of the three.
    pub fn total(&self) -> f64 {
        self.weights + self.gradients + self.optimizer
    }
}

/// Activation bytes for one micro-batch of `b` sequences of `s` tokens.
pub fn activation_bytes(c: &ModelConfig, s: u64, b: u64, checkpointing: bool) -> f64 {
    let (s, b) = (s as f64, b as f64);
    let h = c.hidden_size as f64;
    let kv = (c.num_key_value_heads * c.head_dim()) as f64;
    let i = c.intermediate_size as f64;
    let layers = c.num_hidden_layers as f64;
    let per_layer = s * b * (12.0 * h + 4.0 * kv + 8.0 * i);
    let layers_bytes = if checkpointing {
        2.0 * s * b * h * layers + per_layer
    } else {
        per_layer * layers
    };
    layers_bytes + s * b * c.vocab_size as f64 * 6.0
}

/// KV-cache bytes per token (K and V of every layer, bf16).
pub fn kv_bytes_per_token(c: &ModelConfig) -> f64 {
    (2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim() * 2) as f64
}

/// Parameters of a value/reward model of this shape: the trunk plus a scalar head.
pub fn value_model_params(c: &ModelConfig) -> u64 {
    let lm_head = if c.tie_word_embeddings {
        0
    } else {
        c.vocab_size * c.hidden_size
    };
    c.num_params() - lm_head + c.hidden_size
}

/// One stage's plan.
#[derive(Debug, Clone, Serialize)]
pub struct StagePlan {
    /// Stage recipe name.
    pub name: String,
    /// Stage kind.
    pub kind: StageKind,
    /// Learner GPUs (all GPUs but the rollout engines' for RLVR).
    pub learner_gpus: u64,
    /// Policy parameters.
    pub params: u64,
    /// Policy model states per learner GPU.
    pub states: States,
    /// Gathered-layer working set under ZeRO-3.
    pub gathered_layer_bytes: f64,
    /// Activations with the recipe's checkpointing setting.
    pub activation_bytes: f64,
    /// Activations the other way round (for comparison).
    pub activation_bytes_alt: f64,
    /// Extra models on the learner GPUs (reference policy, value model, and an unsharded RLVR
    /// learner's copy of each policy version for its engines), bytes per GPU.
    pub extra_model_bytes: f64,
    /// Total per learner GPU, reserve included.
    pub learner_total_bytes: f64,
    /// Rollout engine per GPU (RLVR only).
    pub engine: Option<EnginePlan>,
    /// Gradient accumulation used to keep the recipe's global batch on this many GPUs.
    pub gradient_accumulation_steps: u64,
    /// Sequences (or episodes, for RLVR) per optimiser step.
    pub global_batch: u64,
    /// Optimiser steps of the whole stage, when the data size is known.
    pub steps: Option<u64>,
    /// Upper bound of tokens per optimiser step.
    pub tokens_per_step: u64,
    /// Whether everything fits.
    pub fits: bool,
    /// What to change when it does not fit.
    pub advice: Vec<String>,
}

/// Rollout-engine memory per GPU.
#[derive(Debug, Clone, Serialize)]
pub struct EnginePlan {
    /// Engines.
    pub engines: u64,
    /// GPUs per engine.
    pub tensor_parallel: u64,
    /// Weight bytes per GPU.
    pub weight_bytes: f64,
    /// A policy version received and not yet loaded, on the engine's first GPU: whole, in the
    /// learner's element type, when an unsharded learner sends it device to device (a ZeRO-3
    /// learner's versions arrive in host memory: 0).
    pub received_bytes: f64,
    /// Host memory on each engine's first rank for a ZeRO-3 learner's policy version, which
    /// arrives whole in host memory and waits there until the engine loads it (rank 0 sends it
    /// as the learner ranks gather it, unit by unit; the engine's other tensor-parallel ranks
    /// load each tensor as it arrives and hold none of it); 0 when an unsharded learner sends
    /// it device to device.
    pub received_host_bytes: f64,
    /// KV bytes per GPU for the whole batch resident at once.
    pub kv_full_batch_bytes: f64,
    /// Sequences per engine in one rollout batch.
    pub batch_per_engine: u64,
    /// Sequences that fit at once in what is left of the GPU.
    pub resident_sequences: u64,
}

/// Learner memory per GPU on `n` learner GPUs.
#[derive(Debug, Clone, Copy)]
struct LearnerMemory {
    states: States,
    gathered: f64,
    act: f64,
    act_alt: f64,
    extra: f64,
}

impl LearnerMemory {
    fn total(&self) -> f64 {
        self.states.total() + self.gathered + self.act + self.extra + RESERVE_BYTES
    }
}

fn learner_memory(r: &Recipe, n: u64) -> LearnerMemory {
    let kind = r.kind.unwrap_or(StageKind::Sft);
    let c = &r.model.config;
    let params = c.num_params() as f64;
    let (dtype, stage, offload) = (r.model.dtype, r.launch.zero_stage, r.launch.offload_optimizer);
    let states = model_state_bytes(params, dtype, stage, n, offload);
    let gathered = if stage >= 3 {
        2.0 * dtype.bytes() as f64 * c.params_per_layer() as f64
    } else {
        0.0
    };
    let (seq, micro, ckpt) = (
        r.data.max_seq_length,
        r.train.per_device_train_batch_size,
        r.train.gradient_checkpointing,
    );
    let act = activation_bytes(c, seq, micro, ckpt);
    let act_alt = activation_bytes(c, seq, micro, !ckpt);
    let mut extra = 0.0;
    if matches!(kind, StageKind::Dpo | StageKind::Rlvr) {
        // The frozen reference policy, sharded like the weights.
        extra += model_state_bytes(params, dtype, stage, n, true).weights;
    }
    if let (Some(rl), StageKind::Rlvr) = (&r.rlvr, kind) {
        if stage < 3 {
            // Each policy version's weights, copied on the learner's device for the engines
            // (a ZeRO-3 learner assembles them in host memory instead).
            extra += params * dtype.bytes() as f64;
        }
        if rl.algorithm == RlAlgorithm::Ppo {
            // The value model trains too, with a scalar head instead of logits.
            let vc = rl.value_model_config.as_ref().unwrap_or(c);
            extra += model_state_bytes(value_model_params(vc) as f64, dtype, stage, n, offload).total();
            extra += activation_bytes(vc, seq, micro, ckpt) - (seq * micro * vc.vocab_size) as f64 * 6.0;
        }
    }
    LearnerMemory {
        states,
        gathered,
        act,
        act_alt,
        extra,
    }
}

/// GPUs the rollout engines of an RLVR stage take (0 for other stages).
fn engine_gpus(r: &Recipe) -> u64 {
    match (&r.rlvr, r.kind) {
        (Some(rl), Some(StageKind::Rlvr)) => rl.vllm_num_engines.max(1) * rl.vllm_tensor_parallel_size.max(1),
        _ => 0,
    }
}

/// Plan one stage on `req`.
pub fn plan_stage(r: &Recipe, req: &PlanRequest) -> StagePlan {
    let kind = r.kind.unwrap_or(StageKind::Sft);
    let c = &r.model.config;
    let params = c.num_params();
    let gpu_bytes = req.gpu_mem_gib * GIB;
    let t = &r.train;
    let seq = r.data.max_seq_length;
    let micro = t.per_device_train_batch_size;
    let mut advice = Vec::new();

    let engine_gpus = engine_gpus(r);
    let learner_gpus = req.gpus.saturating_sub(engine_gpus);
    let n = learner_gpus.max(1);
    let mem = learner_memory(r, n);
    let learner_total = mem.total();

    // Batch: keep the recipe's global batch on the GPUs given, by changing accumulation.
    let recipe_learners = r.learner_gpus();
    let global_batch = t
        .global_batch_size
        .unwrap_or(micro * t.gradient_accumulation_steps * recipe_learners);
    let per_step_micro = micro * n;
    let accum = global_batch.div_ceil(per_step_micro).max(1);
    if kind != StageKind::Rlvr && !global_batch.is_multiple_of(per_step_micro) {
        advice.push(format!(
            "the global batch {global_batch} is not a multiple of {micro} x {n} GPUs; {accum} accumulation steps give {}",
            accum * per_step_micro
        ));
    }

    let (steps, tokens_per_step, global_batch) = match (kind, &r.rlvr) {
        (StageKind::Rlvr, Some(rl)) => {
            let episodes = rl.local_rollout_batch_size * recipe_learners * rl.num_samples_per_prompt.max(1);
            let steps = rl.total_episodes / episodes.max(1);
            (
                Some(steps),
                episodes * (rl.max_prompt_token_length.min(seq) + rl.response_length),
                episodes,
            )
        }
        (StageKind::Pretrain, _) => {
            let tokens = t.global_batch_tokens.unwrap_or(global_batch * seq);
            let steps = t.total_tokens.map(|tt| (tt / tokens as f64).ceil() as u64);
            (steps, tokens, tokens / seq.max(1))
        }
        _ => {
            let steps = r
                .data
                .rows
                .map(|rows| rows.div_ceil(global_batch.max(1)) * t.num_train_epochs);
            (steps, global_batch * seq, global_batch)
        }
    };
    let steps = match (steps, t.max_steps) {
        (Some(s), Some(m)) => Some(s.min(m)),
        (s, m) => s.or(m),
    };

    let mut fits = true;
    if req.gpus <= engine_gpus {
        fits = false;
        advice.push(format!(
            "the rollout engines take {engine_gpus} GPUs; give more than {engine_gpus} GPUs so the learner has some"
        ));
    }
    if learner_total > gpu_bytes {
        fits = false;
        advice.push(format!(
            "the learner needs {:.1} GiB per GPU, more than {:.0} GiB",
            learner_total / GIB,
            req.gpu_mem_gib
        ));
        match min_learner_gpus(r, gpu_bytes) {
            Some(min) => advice.push(format!(
                "use at least {} GPUs (--gpus {})",
                min,
                min + engine_gpus
            )),
            None => advice.push("no GPU count is enough at this micro-batch and sequence length".into()),
        }
        if !r.launch.offload_optimizer && r.launch.zero_stage >= 1 {
            advice.push(format!(
                "offload the optimiser to CPU (--set launch.offload_optimizer=true) to free {:.1} GiB per GPU",
                mem.states.optimizer / GIB
            ));
        }
        if !t.gradient_checkpointing {
            advice.push(format!(
                "turn on gradient checkpointing (--set train.gradient_checkpointing=true): activations {:.1} -> {:.1} GiB",
                mem.act / GIB,
                mem.act_alt / GIB
            ));
        }
        if micro > 1 {
            advice.push("use a smaller micro-batch (--set train.per_device_train_batch_size=1); accumulation keeps the global batch".into());
        }
    }

    let engine = match (&r.rlvr, kind) {
        (Some(rl), StageKind::Rlvr) => {
            let tp = rl.vllm_tensor_parallel_size.max(1);
            let engines = rl.vllm_num_engines.max(1);
            // Bytes per element of the engine's weights and cache (`rollout.dtype`, else
            // `model.dtype`), against the bf16 of `kv_bytes_per_token`.
            let elt = r.rollout.dtype.unwrap_or(r.model.dtype).bytes() as f64;
            let weight_bytes = elt * params as f64 / tp as f64;
            let samples = rl.num_samples_per_prompt.max(1);
            let tokens =
                rl.max_prompt_token_length.min(seq) as f64 / samples as f64 + rl.response_length as f64;
            let per_seq = kv_bytes_per_token(c) * elt / 2.0 * tokens / tp as f64;
            let batch_per_engine =
                (rl.local_rollout_batch_size * recipe_learners * samples).div_ceil(engines);
            let version_bytes = params as f64 * r.model.dtype.bytes() as f64;
            let (received_bytes, received_host_bytes) = match r.launch.zero_stage {
                3.. => (0.0, version_bytes),
                _ => (version_bytes, 0.0),
            };
            let mut free = gpu_bytes - weight_bytes - received_bytes - RESERVE_BYTES;
            if let Some(budget) = r.rollout.kv_cache_bytes() {
                let budget = budget as f64 / tp as f64;
                if budget > free {
                    fits = false;
                    advice.push(format!(
                        "rollout.kv_cache_gib asks {:.1} GiB per GPU where {:.1} GiB are left beside the engine's weights",
                        budget / GIB,
                        free.max(0.0) / GIB
                    ));
                }
                free = free.min(budget);
            }
            let resident = if free > 0.0 {
                (free / per_seq).floor() as u64
            } else {
                0
            };
            if resident == 0 {
                fits = false;
                advice.push(format!(
                    "the rollout engine does not fit: {:.1} GiB of weights per GPU plus {:.2} GiB per sequence; raise --set rlvr.vllm_tensor_parallel_size",
                    weight_bytes / GIB,
                    per_seq / GIB
                ));
            }
            Some(EnginePlan {
                engines,
                tensor_parallel: tp,
                weight_bytes,
                received_bytes,
                received_host_bytes,
                kv_full_batch_bytes: per_seq * batch_per_engine as f64,
                batch_per_engine,
                resident_sequences: resident.min(batch_per_engine),
            })
        }
        _ => None,
    };

    StagePlan {
        name: r.name.clone(),
        kind,
        learner_gpus,
        params,
        states: mem.states,
        gathered_layer_bytes: mem.gathered,
        activation_bytes: mem.act,
        activation_bytes_alt: mem.act_alt,
        extra_model_bytes: mem.extra,
        learner_total_bytes: learner_total,
        engine,
        gradient_accumulation_steps: accum,
        global_batch,
        steps,
        tokens_per_step,
        fits,
        advice,
    }
}

/// The fewest learner GPUs on which the learner's share fits in `gpu_bytes`, if any does
/// (searched up to 65,536).
pub fn min_learner_gpus(r: &Recipe, gpu_bytes: f64) -> Option<u64> {
    let fits = |n: u64| learner_memory(r, n).total() <= gpu_bytes;
    let mut hi = 1u64;
    while !fits(hi) {
        hi *= 2;
        if hi > 65_536 {
            return None;
        }
    }
    let mut lo = hi / 2 + 1;
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fits(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(hi)
}

/// Human-readable report of one stage's plan.
pub fn render(p: &StagePlan, req: &PlanRequest) -> String {
    let g = |b: f64| format!("{:>8.2} GiB", b / GIB);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "stage {} ({}), {} parameters",
        p.name,
        p.kind.as_str(),
        human(p.params)
    );
    let _ = writeln!(
        s,
        "  learner: {} GPUs ({} per node over {} node(s))",
        p.learner_gpus,
        req.gpus.div_ceil(req.nodes.max(1)),
        req.nodes
    );
    let _ = writeln!(s, "    weights            {}", g(p.states.weights));
    let _ = writeln!(s, "    gradients          {}", g(p.states.gradients));
    let _ = writeln!(s, "    optimizer (AdamW)  {}", g(p.states.optimizer));
    let _ = writeln!(s, "    gathered layers    {}", g(p.gathered_layer_bytes));
    let _ = writeln!(
        s,
        "    activations        {}   (other checkpointing setting: {})",
        g(p.activation_bytes),
        g(p.activation_bytes_alt).trim()
    );
    if p.extra_model_bytes > 0.0 {
        let _ = writeln!(s, "    ref/value/version  {}", g(p.extra_model_bytes));
    }
    let _ = writeln!(s, "    reserve            {}", g(RESERVE_BYTES));
    let _ = writeln!(
        s,
        "    total per GPU      {}   of {:.0} GiB",
        g(p.learner_total_bytes),
        req.gpu_mem_gib
    );
    if let Some(e) = &p.engine {
        let _ = writeln!(
            s,
            "  rollout: {} engine(s) x tensor parallel {}",
            e.engines, e.tensor_parallel
        );
        let _ = writeln!(s, "    weights per GPU    {}", g(e.weight_bytes));
        if e.received_bytes > 0.0 {
            let _ = writeln!(
                s,
                "    next version       {}   (first GPU of an engine, until loaded)",
                g(e.received_bytes)
            );
        }
        if e.received_host_bytes > 0.0 {
            let _ = writeln!(
                s,
                "    host, per engine   {}   (its first rank: each policy version whole, until loaded)",
                g(e.received_host_bytes)
            );
        }
        let _ = writeln!(
            s,
            "    KV, whole batch    {}   ({} sequences per engine)",
            g(e.kv_full_batch_bytes),
            e.batch_per_engine
        );
        let waves = e.batch_per_engine.div_ceil(e.resident_sequences.max(1));
        let _ = writeln!(
            s,
            "    resident at once   {:>8} sequences ({} wave(s) per rollout)",
            e.resident_sequences, waves
        );
    }
    let _ = writeln!(
        s,
        "  batch: {} per step, {} accumulation step(s); {} tokens per step at most; {} optimizer steps",
        p.global_batch,
        p.gradient_accumulation_steps,
        human(p.tokens_per_step),
        p.steps
            .map_or("unknown (set data.rows)".to_string(), |n| n.to_string())
    );
    let _ = writeln!(s, "  {}", if p.fits { "fits" } else { "DOES NOT FIT" });
    for a in &p.advice {
        let _ = writeln!(s, "    - {a}");
    }
    s
}

fn human(n: u64) -> String {
    let f = n as f64;
    if f >= 1e9 {
        format!("{:.2}B", f / 1e9)
    } else if f >= 1e6 {
        format!("{:.1}M", f / 1e6)
    } else if f >= 1e3 {
        format!("{:.1}k", f / 1e3)
    } else {
        n.to_string()
    }
}
