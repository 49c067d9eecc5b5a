//! `rlvr bench`: speed measurements. Each prints its own numbers; `scripts/bench-*.sh` run the
//! baseline beside them in the same session and report the ratio (see BENCHMARKS.md).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rlvr_core::{Completion, GenerationRequest, SamplingParams, WeightChunk};
use rlvr_learner::llama::Config;
use rlvr_learner::{Learner, LearnerConfig};
use rlvr_recipes::{load, Resolved};
use rlvr_rollout::{Engine, NativeEngine};
use serde_json::json;
use tch::{Device, Kind, Tensor};

use crate::UsageError;

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// Generation throughput, memory-bandwidth bound, weight-update time and log-prob agreement
    /// with the learner of the native engine on a SmolLM2-135M-shaped model with random weights.
    Generate(GenerateArgs),
    /// Training throughput of the learner (forward, backward, clip, AdamW) on a
    /// SmolLM2-135M-shaped model with random weights and tokens, and its model-FLOPs
    /// utilisation against a measured matmul peak.
    Train(TrainArgs),
    /// Verifier throughput on a JSONL file (`dataset`, `response`, `ground_truth` per line):
    /// labels are parsed first, then only the verify calls are timed (`--threads` to scale).
    Verify(VerifyArgs),
}

/// Arguments of `rlvr bench verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// JSONL input, as for `rlvr verify`.
    #[arg(long)]
    pub input: PathBuf,
    /// Verifier mode.
    #[arg(long, value_enum, default_value_t = crate::commands::verify::ModeArg::Default)]
    pub mode: crate::commands::verify::ModeArg,
    /// Passes over the input; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Threads sharing the rows.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Arguments of `rlvr bench train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Sequences per step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Timed optimiser steps (after one untimed).
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    /// Threads for libtorch (0: its default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Where to train.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Parameter type: bf16 keeps f32 master weights and moments in the optimiser.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub dtype: DtypeArg,
    /// Recompute each decoder layer in the backward pass instead of keeping its activations.
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Recipe whose model shape to use.
    #[arg(long, default_value = "smollm2-135m-sft")]
    pub shape_from: String,
    /// Also save the initial random model here (Hugging Face format) for the baseline to load.
    #[arg(long)]
    pub save_model: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `rlvr bench generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Prompts in the batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Tokens per prompt.
    #[arg(long, default_value_t = 16)]
    pub prompt_len: usize,
    /// New tokens per prompt (EOS is ignored so every completion has this many).
    #[arg(long, default_value_t = 128)]
    pub new_tokens: usize,
    /// Timed repetitions; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Where to generate.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Weight and KV-cache type.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub dtype: DtypeArg,
    /// Recipe whose model shape to use.
    #[arg(long, default_value = "smollm2-135m-sft")]
    pub shape_from: String,
    /// Also save the random model here (Hugging Face format) for the baseline to load.
    #[arg(long)]
    pub save_model: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Where a benchmark runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// The CPU.
    Cpu,
    /// The first CUDA device (an error when none is usable).
    Cuda,
}

impl DeviceArg {
    fn device(self) -> Result<Device> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda if rlvr_learner::runtime::default_device().is_cuda() => Ok(Device::Cuda(0)),
            Self::Cuda => Err(UsageError(
                "--device cuda: no usable CUDA device (libtorch_cuda.so not found or no GPU)".into(),
            )
            .into()),
        }
    }
}

/// Element type of a benchmark's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DtypeArg {
    /// 32-bit floats.
    F32,
    /// bfloat16.
    Bf16,
}

impl DtypeArg {
    fn kind(self) -> Kind {
        match self {
            Self::F32 => Kind::Float,
            Self::Bf16 => Kind::BFloat16,
        }
    }
}

/// Wait for the device's queued work, so wall-clock times cover it.
fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Run a benchmark.
pub fn run(bench: &Bench) -> Result<()> {
    match bench {
        Bench::Generate(args) => generate(args),
        Bench::Train(args) => train(args),
        Bench::Verify(args) => verify(args),
    }
}

fn shape(recipe: &str) -> Result<Config> {
    let Resolved::Stage(r) = load(recipe, &[])? else {
        return Err(UsageError(format!(
            "--shape-from {recipe}: name a stage recipe, not a pipeline"
        ))
        .into());
    };
    Ok(crate::stages::llama_config(&r.model.config))
}

/// Seconds of the fastest of `n` runs of `f`.
fn best_of(n: usize, mut f: impl FnMut()) -> f64 {
    (0..n.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Best-of-3 copy bandwidth of a 512 MiB buffer on `device` (bytes read + written per second).
fn copy_bandwidth(device: Device) -> f64 {
    let n = 512 << 20;
    if device.is_cuda() {
        let src = Tensor::ones([n as i64], (Kind::Uint8, device));
        let mut dst = src.zeros_like();
        dst.copy_(&src);
        sync(device);
        let best = best_of(3, || {
            dst.copy_(&src);
            sync(device);
        });
        return 2.0 * n as f64 / best;
    }
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    dst.copy_from_slice(&src);
    let best = best_of(3, || {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&dst);
    });
    2.0 * n as f64 / best
}

/// Seconds for the plain copy a weight update is measured against: the same bytes from host
/// memory into one buffer on `device` (a memcpy on the CPU, one host-to-device copy on a GPU).
fn weight_copy_seconds(chunks: &[WeightChunk], device: Device) -> f64 {
    let flat: Vec<u8> = chunks.iter().flat_map(|c| c.data.iter().copied()).collect();
    if device.is_cuda() {
        let host = Tensor::from_slice(&flat);
        let mut dst = host.to_device(device);
        sync(device);
        return best_of(3, || {
            dst.copy_(&host);
            sync(device);
        });
    }
    let mut copy = vec![1u8; flat.len()];
    best_of(3, || {
        copy.copy_from_slice(std::hint::black_box(&flat));
        std::hint::black_box(&copy);
    })
}

/// Largest difference between the engine's sampled-token log-probs and the learner's, recomputed
/// by one full forward pass over each of the first `k` completions.
fn logprob_gap(learner: &Learner, requests: &[GenerationRequest], out: &[Completion], k: usize) -> f64 {
    let device = learner.model().device();
    out.iter()
        .take(k)
        .filter_map(|c| {
            let prompt = &requests.iter().find(|r| r.id == c.request_id)?.prompt_ids;
            let ids: Vec<i64> = prompt.iter().chain(&c.token_ids).map(|&t| i64::from(t)).collect();
            let (p, t) = (prompt.len() as i64, c.token_ids.len() as i64);
            let input = Tensor::from_slice(&ids[..ids.len() - 1])
                .view([1, -1])
                .to_device(device);
            let logp = tch::no_grad(|| learner.model().forward(&input)).log_softmax(-1, Kind::Float);
            let sampled = Tensor::from_slice(&ids[p as usize..])
                .view([t, 1])
                .to_device(device);
            let want = logp
                .squeeze_dim(0)
                .narrow(0, p - 1, t)
                .gather(1, &sampled, false)
                .view([t]);
            let got = Tensor::from_slice(&c.logprobs).to_device(device);
            Some((got - want).abs().max().double_value(&[]))
        })
        .fold(0.0, f64::max)
}

fn generate(args: &GenerateArgs) -> Result<()> {
    if args.batch == 0 || args.prompt_len == 0 || args.new_tokens == 0 || args.repeats == 0 {
        return Err(
            UsageError("--batch, --prompt-len, --new-tokens and --repeats must be positive".into()).into(),
        );
    }
    let (device, kind) = (args.device.device()?, args.dtype.kind());
    let config = shape(&args.shape_from)?;
    // Random weights reach the engine from a learner, as a weight broadcast carries them.
    let mut learner = Learner::new(&config, LearnerConfig::constant(1e-5, device), 0);
    if kind == Kind::BFloat16 {
        learner.set_bf16()?;
    }
    let chunks = learner.export_weights(1)?;
    let mut engine = NativeEngine::new(&config, device, kind, args.batch, 0);
    engine.load_weights(&chunks, 1)?;
    if let Some(dir) = &args.save_model {
        engine.save_model(dir)?;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let requests: Vec<GenerationRequest> = (0..args.batch as u64)
        .map(|id| GenerationRequest {
            id,
            prompt_ids: (0..args.prompt_len)
                .map(|_| rng.gen_range(0..config.vocab_size as u32))
                .collect(),
            n: 1,
            seed: id,
        })
        .collect();
    let params = SamplingParams {
        temperature: 1.0,
        max_new_tokens: args.new_tokens,
        ..Default::default()
    };
    engine.generate(
        &requests,
        &SamplingParams {
            max_new_tokens: 4,
            ..params.clone()
        },
    )?;
    let (mut best, mut out) = (f64::INFINITY, Vec::new());
    for _ in 0..args.repeats {
        sync(device);
        let t = Instant::now();
        out = engine.generate(&requests, &params)?;
        sync(device);
        best = best.min(t.elapsed().as_secs_f64());
    }
    let tokens = (args.batch * args.new_tokens) as f64;
    let tokens_per_s = tokens / best;
    let logprob_gap = logprob_gap(&learner, &requests, &out, 8);
    drop(learner);

    // The memory-bandwidth bound: every decode step reads all weights and the KV cache.
    let bandwidth = copy_bandwidth(device);
    let elt = kind.elt_size_in_bytes();
    let weight_bytes = engine.weight_bytes() as f64;
    let kv_per_token =
        (2 * config.num_hidden_layers * config.kv_heads() * config.head_dim() * elt as i64) as f64;
    let mean_len = args.prompt_len as f64 + args.new_tokens as f64 / 2.0;
    let step_bytes = weight_bytes + kv_per_token * mean_len * args.batch as f64;
    let floor_step_s = step_bytes / bandwidth;
    let step_s = best / args.new_tokens as f64;

    // Weight update against a plain copy of the same bytes (both best of 3).
    let mut update_s = f64::INFINITY;
    for _ in 0..3 {
        sync(device);
        let t = Instant::now();
        engine.load_weights(&chunks, 1)?;
        sync(device);
        update_s = update_s.min(t.elapsed().as_secs_f64());
    }
    let copy_s = weight_copy_seconds(&chunks, device);
    let total: usize = chunks.iter().map(|c| c.data.len()).sum();

    let report = json!({
        "device": format!("{device:?}"), "dtype": format!("{:?}", args.dtype),
        "batch": args.batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
        "params": weight_bytes / elt as f64, "seconds": best, "tokens_per_s": tokens_per_s,
        "step_ms": step_s * 1e3, "bandwidth_gb_s": bandwidth / 1e9, "bytes_per_step": step_bytes,
        "bandwidth_floor_step_ms": floor_step_s * 1e3, "fraction_of_bandwidth_bound": floor_step_s / step_s,
        "weight_update_ms": update_s * 1e3, "weight_memcpy_ms": copy_s * 1e3,
        "weight_update_over_memcpy": update_s / copy_s, "weight_bytes": total,
        "logprob_max_abs_diff": logprob_gap,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "native engine, {}-shaped model, {:?} on {device:?}",
            args.shape_from, args.dtype
        );
        println!(
            "  {} x {} new tokens in {:.2} s: {:.0} tokens/s ({:.1} ms per decode step)",
            args.batch,
            args.new_tokens,
            best,
            tokens_per_s,
            step_s * 1e3
        );
        println!("  memory bandwidth (copy) {:.1} GB/s; a step reads {:.0} MB: floor {:.2} ms, we are at {:.0}% of the bound", bandwidth / 1e9, step_bytes / 1e6, floor_step_s * 1e3, 100.0 * floor_step_s / step_s);
        println!(
            "  weight update {:.1} ms vs a plain copy of the same {:.0} MB {:.1} ms ({:.2}x)",
            update_s * 1e3,
            total as f64 / 1e6,
            copy_s * 1e3,
            update_s / copy_s
        );
        println!(
            "  sampled log-probs vs the learner's recomputed ones: largest difference {logprob_gap:.2e}"
        );
    }
    Ok(())
}

/// The process's peak resident memory (`VmHWM`), in MiB; 0 where /proc is missing.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Best-of-5 matmul throughput (FLOP/s) of libtorch on `device` in `kind`: 2n³ per n×n product
/// (n = 2048 on the CPU, 8192 on a GPU).
fn matmul_peak(device: Device, kind: Kind) -> f64 {
    let n = if device.is_cuda() { 8192 } else { 2048 };
    let a = Tensor::randn([n, n], (kind, device));
    let b = Tensor::randn([n, n], (kind, device));
    let _ = a.matmul(&b);
    sync(device);
    let best = best_of(5, || {
        let _ = std::hint::black_box(a.matmul(&b));
        sync(device);
    });
    2.0 * (n as f64).powi(3) / best
}

fn train(args: &TrainArgs) -> Result<()> {
    if args.batch == 0 || args.seq_len < 2 || args.steps == 0 {
        return Err(UsageError("--batch and --steps must be positive, --seq-len at least 2".into()).into());
    }
    if args.threads > 0 {
        tch::set_num_threads(args.threads as i32);
    }
    let (device, kind) = (args.device.device()?, args.dtype.kind());
    let config = shape(&args.shape_from)?;
    let mut learner = Learner::new(&config, LearnerConfig::constant(1e-5, device), 0);
    if kind == Kind::BFloat16 {
        learner.set_bf16()?;
    }
    learner.set_gradient_checkpointing(args.gradient_checkpointing);
    if let Some(dir) = &args.save_model {
        learner.save_model(dir)?;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let seqs: Vec<Vec<i64>> = (0..args.batch)
        .map(|_| {
            (0..args.seq_len)
                .map(|_| rng.gen_range(0..config.vocab_size))
                .collect()
        })
        .collect();
    let batch = rlvr_core::TrainBatch::from_sequences(&seqs, 0);
    let objective = rlvr_learner::Objective::Lm(rlvr_learner::Reduction::Mean);
    learner.train_step(std::slice::from_ref(&batch), objective)?;
    sync(device);
    let t = Instant::now();
    for _ in 0..args.steps {
        learner.train_step(std::slice::from_ref(&batch), objective)?;
    }
    sync(device);
    let seconds = t.elapsed().as_secs_f64();
    let tokens = (args.batch * args.seq_len * args.steps) as f64;
    let tokens_per_s = tokens / seconds;

    // Model FLOPs per trained token (PaLM's count, no causal discount): 6 per weight of the
    // matmuls (layers and LM head; the embedding lookup is free) + 12·layers·hidden·context.
    let (d, layers, vocab) = (
        config.hidden_size as f64,
        config.num_hidden_layers as f64,
        config.vocab_size as f64,
    );
    let embed = vocab * d;
    let weights = learner.num_params() as f64 - embed - if config.tie_word_embeddings { 0.0 } else { embed };
    let flops_per_token = 6.0 * (weights + embed) + 12.0 * layers * d * args.seq_len as f64;
    let achieved = flops_per_token * tokens_per_s;
    let peak = matmul_peak(device, kind);
    let report = json!({
        "device": format!("{device:?}"), "dtype": format!("{:?}", args.dtype),
        "batch": args.batch, "seq_len": args.seq_len, "steps": args.steps, "seconds": seconds,
        "tokens_per_s": tokens_per_s, "params": learner.num_params(), "threads": tch::get_num_threads(),
        "flops_per_token": flops_per_token, "achieved_gflop_s": achieved / 1e9,
        "matmul_peak_gflop_s": peak / 1e9, "mfu": achieved / peak,
        "gradient_checkpointing": args.gradient_checkpointing, "peak_rss_mb": peak_rss_mb(),
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "learner, {}-shaped model, {:?} on {device:?}, {} CPU threads",
            args.shape_from,
            args.dtype,
            tch::get_num_threads()
        );
        println!(
            "  {} steps of {} x {} tokens in {:.2} s: {:.0} tokens/s",
            args.steps, args.batch, args.seq_len, seconds, tokens_per_s
        );
        println!(
            "  {:.1} GFLOP/s of model FLOPs against a {:.1} GFLOP/s matmul peak: MFU {:.1}%",
            achieved / 1e9,
            peak / 1e9,
            100.0 * achieved / peak
        );
    }
    Ok(())
}

fn verify(args: &VerifyArgs) -> Result<()> {
    let registry = rlvr_verifiers::Registry::new(args.mode.into());
    let text = std::fs::read_to_string(&args.input)
        .map_err(|e| UsageError(format!("--input {}: {e}", args.input.display())))?;
    let mut rows: std::collections::BTreeMap<String, Vec<(String, rlvr_verifiers::Truth)>> =
        Default::default();
    for (i, line) in text.lines().enumerate() {
        let row: serde_json::Value =
            serde_json::from_str(line).map_err(|e| UsageError(format!("line {}: {e}", i + 1)))?;
        let get = |k: &str| {
            row[k]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| UsageError(format!("line {}: `{k}`", i + 1)))
        };
        let (dataset, response, truth) = (get("dataset")?, get("response")?, get("ground_truth")?);
        let parsed = registry.parse_truth(&dataset, &truth)?;
        rows.entry(dataset).or_default().push((response, parsed));
    }
    for (dataset, items) in &rows {
        let verifier = registry.get(dataset)?;
        let threads = args.threads.max(1);
        let (mut best, mut slowest, mut verified) = (f64::INFINITY, 0f64, 0usize);
        for _ in 0..args.repeats.max(1) {
            let t = Instant::now();
            // Rows dealt to `threads` scoped threads in contiguous chunks; each reports its count
            // and its slowest single answer.
            let results: Vec<(usize, f64)> = std::thread::scope(|scope| {
                let handles: Vec<_> = items
                    .chunks(items.len().div_ceil(threads).max(1))
                    .map(|chunk| {
                        scope.spawn(move || {
                            chunk
                                .iter()
                                .fold((0usize, 0f64), |(n, worst), (response, truth)| {
                                    let one = Instant::now();
                                    let ok = verifier.verify(response, truth).verified;
                                    (n + usize::from(ok), worst.max(one.elapsed().as_secs_f64()))
                                })
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or((0, f64::NAN)))
                    .collect()
            });
            best = best.min(t.elapsed().as_secs_f64());
            verified = results.iter().map(|r| r.0).sum();
            slowest = results.iter().map(|r| r.1).fold(slowest, f64::max);
        }
        println!(
            "{}",
            json!({"dataset": dataset, "threads": threads, "rows": items.len(), "verified": verified,
                   "seconds": best, "answers_per_s": items.len() as f64 / best, "slowest_ms": slowest * 1e3})
        );
    }
    Ok(())
}
