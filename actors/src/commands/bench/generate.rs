//! `rlvr bench generate`: the native engine's throughput, bandwidth bound, weight updates and log-prob agreement with the learner.

use std::time::Instant;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rlvr_core::{Completion, GenerationRequest, SamplingParams, WeightChunk};
use rlvr_learner::model::Config;
use rlvr_learner::Learner;
use rlvr_rollout::{DecodeMode, Engine, NativeEngine};
use serde_json::json;
use tch::{Device, Kind, Tensor};

use super::{best_of, copy_bandwidth, sync, ModelArgs};
use crate::UsageError;

/// Arguments of `rlvr bench generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Prompts in the batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Tokens per prompt.
    #[arg(long, default_value_t = 16)]
    pub prompt_len: usize,
    /// New tokens per completion (EOS is ignored so every completion has this many).
    #[arg(long, default_value_t = 128)]
    pub new_tokens: usize,
    /// Completions per prompt (GRPO's group size): they share the prompt's KV cache blocks.
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// Timed repetitions; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Split the engine over this many local ranks (tensor parallelism over Gloo on the CPU,
    /// NCCL on GPUs), measured against one whole engine on rank 0.
    #[arg(long, default_value_t = 1)]
    pub tensor_parallel: usize,
    /// Fix the KV cache at this many GiB (as `rollout.kv_cache_gib` does in a run): sequences
    /// past it wait for room. Without it the cache holds every sequence's positions unshared.
    #[arg(long)]
    pub kv_cache_gib: Option<f64>,
    /// Run every decode step op by op, as its batch is (on a GPU the default replays each
    /// step's shape from a CUDA graph; this measures the engine without them).
    #[arg(long)]
    pub eager: bool,
    /// Model, device and output.
    #[command(flatten)]
    pub model: ModelArgs,
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
/// by one full forward pass over each of the first `k` completions; NaN if either side has one
/// (a plain `max` would hide it).
pub(super) fn logprob_gap(
    learner: &Learner,
    requests: &[GenerationRequest],
    out: &[Completion],
    k: usize,
) -> f64 {
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
        .fold(0.0, |worst, gap| {
            if worst.is_nan() || gap.is_nan() {
                f64::NAN
            } else {
                worst.max(gap)
            }
        })
}

/// A new engine for the benchmark's `sequences`, its KV cache fixed by `--kv-cache-gib`.
pub(super) fn engine(
    args: &GenerateArgs,
    new: impl FnOnce(usize) -> rlvr_rollout::Result<NativeEngine>,
) -> Result<NativeEngine> {
    let mut engine = new(args.batch * args.samples)?;
    engine.set_kv_budget(args.kv_cache_gib.map(|g| (g * (1u64 << 30) as f64) as u64));
    if args.eager {
        engine.set_decode_mode(DecodeMode::Eager)?;
    }
    Ok(engine)
}

/// The benchmark's prompts (random tokens, seeded) and sampling (temperature 1, EOS ignored).
pub(super) fn workload(args: &GenerateArgs, config: &Config) -> (Vec<GenerationRequest>, SamplingParams) {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let requests = (0..args.batch as u64)
        .map(|id| GenerationRequest {
            id,
            prompt_ids: (0..args.prompt_len)
                .map(|_| rng.gen_range(0..config.vocab_size as u32))
                .collect(),
            n: args.samples,
            seed: id,
        })
        .collect();
    let params = SamplingParams {
        temperature: 1.0,
        max_new_tokens: args.new_tokens,
        ..Default::default()
    };
    (requests, params)
}

/// A short warm-up call, then the fastest of `repeats` timed calls: its seconds and completions.
pub(super) fn timed(
    engine: &mut NativeEngine,
    requests: &[GenerationRequest],
    params: &SamplingParams,
    repeats: usize,
    device: Device,
) -> Result<(f64, Vec<Completion>)> {
    let warm_up = SamplingParams {
        max_new_tokens: 4,
        ..params.clone()
    };
    engine.generate(requests, &warm_up)?;
    let (mut best, mut out) = (f64::INFINITY, Vec::new());
    for _ in 0..repeats {
        sync(device);
        let t = Instant::now();
        out = engine.generate(requests, params)?;
        sync(device);
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok((best, out))
}

pub(super) fn generate(args: &GenerateArgs) -> Result<()> {
    if [
        args.batch,
        args.prompt_len,
        args.new_tokens,
        args.samples,
        args.repeats,
    ]
    .contains(&0)
        || args.kv_cache_gib.is_some_and(|g| !(g.is_finite() && g > 0.0))
    {
        return Err(UsageError(
            "--batch, --prompt-len, --new-tokens, --samples, --repeats and --kv-cache-gib must be positive"
                .into(),
        )
        .into());
    }
    if args.tensor_parallel > 1 {
        return super::tensor_parallel::generate(args);
    }
    let sequences = args.batch * args.samples;
    let (device, kind) = (args.model.device.device()?, args.model.dtype.kind());
    // The weights reach the engine from a learner, as a weight broadcast carries them.
    let (learner, label) = super::learner(&args.model, device, kind)?;
    let config = learner.model().config().clone();
    let chunks = learner.export_weights(1)?;
    let mut engine = engine(args, |max| Ok(NativeEngine::new(&config, device, kind, max, 0)))?;
    engine.load_weights(&chunks, 1)?;
    if let Some(dir) = &args.model.save_model {
        engine.save_model(dir)?;
    }
    let (requests, params) = workload(args, &config);
    let (best, out) = timed(&mut engine, &requests, &params, args.repeats, device)?;
    let (peak_blocks, block_bytes) = (engine.peak_blocks(), engine.block_bytes());
    let tokens = (sequences * args.new_tokens) as f64;
    let tokens_per_s = tokens / best;
    let logprob_gap = logprob_gap(&learner, &requests, &out, 8);
    drop(learner);

    // The memory-bandwidth bound: every decode step reads all weights and the KV cache.
    let bandwidth = copy_bandwidth(device);
    let elt = kind.elt_size_in_bytes();
    let weight_bytes = engine.weight_bytes() as f64;
    let kv_per_token =
        (2 * config.num_hidden_layers * config.kv_heads() * config.head_dim * elt as i64) as f64;
    // Each prompt's cached positions once (its samples share them), each completion's own.
    let kv_tokens = (args.prompt_len * args.batch) as f64 + args.new_tokens as f64 / 2.0 * sequences as f64;
    let step_bytes = weight_bytes + kv_per_token * kv_tokens;
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
        "device": format!("{device:?}"), "dtype": format!("{:?}", args.model.dtype), "model": label,
        "batch": args.batch, "prompt_len": args.prompt_len, "new_tokens": args.new_tokens,
        "samples": args.samples, "kv_peak_bytes": peak_blocks as u64 * block_bytes,
        "kv_cache_gib": args.kv_cache_gib,
        "params": weight_bytes / elt as f64, "seconds": best, "tokens_per_s": tokens_per_s,
        "step_ms": step_s * 1e3, "bandwidth_gb_s": bandwidth / 1e9, "bytes_per_step": step_bytes,
        "bandwidth_floor_step_ms": floor_step_s * 1e3, "fraction_of_bandwidth_bound": floor_step_s / step_s,
        "weight_update_ms": update_s * 1e3, "weight_memcpy_ms": copy_s * 1e3,
        "weight_update_over_memcpy": update_s / copy_s, "weight_bytes": total,
        "logprob_max_abs_diff": logprob_gap, "cpu_decode_kernel": rlvr_learner::model::cpu_decode_kernel(),
        "cpu_decode_attention": rlvr_learner::model::cpu_decode_attention(),
        "decode": format!("{:?}", engine.decode_mode()), "decode_shapes": engine.decode_shapes(),
    });
    if args.model.json {
        println!("{report}");
    } else {
        println!(
            "native engine, {label} model, {:?} on {device:?}",
            args.model.dtype
        );
        if device == tch::Device::Cpu {
            println!(
                "  f32 decode projections: {}",
                rlvr_learner::model::cpu_decode_kernel()
            );
            println!(
                "  f32 decode attention: {}",
                rlvr_learner::model::cpu_decode_attention()
            );
        }
        println!(
            "  decode steps: {:?} ({} fixed shapes)",
            engine.decode_mode(),
            engine.decode_shapes()
        );
        println!(
            "  {} prompts x {} samples x {} new tokens in {:.2} s: {:.0} tokens/s ({:.1} ms per decode step)",
            args.batch,
            args.samples,
            args.new_tokens,
            best,
            tokens_per_s,
            step_s * 1e3
        );
        println!(
            "  KV cache held at the peak: {:.1} MB ({peak_blocks} blocks)",
            (peak_blocks as u64 * block_bytes) as f64 / 1e6
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
