//! `rlvr bench train`: the learner's training throughput and model-FLOPs utilisation.

use std::time::Instant;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tch::{Device, Kind, Tensor};

use super::{best_of, peak_rss_mb, sync, ModelArgs};
use crate::UsageError;

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
    /// Recompute each decoder layer in the backward pass instead of keeping its activations.
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Model, device and output.
    #[command(flatten)]
    pub model: ModelArgs,
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

pub(super) fn train(args: &TrainArgs) -> Result<()> {
    if args.batch == 0 || args.seq_len < 2 || args.steps == 0 {
        return Err(UsageError("--batch and --steps must be positive, --seq-len at least 2".into()).into());
    }
    if args.threads > 0 {
        tch::set_num_threads(args.threads as i32);
    }
    let (device, kind) = (args.model.device.device()?, args.model.dtype.kind());
    let (mut learner, label) = super::learner(&args.model, device, kind)?;
    let config = learner.model().config().clone();
    learner.set_gradient_checkpointing(args.gradient_checkpointing);
    if let Some(dir) = &args.model.save_model {
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
        "device": format!("{device:?}"), "dtype": format!("{:?}", args.model.dtype), "model": label,
        "batch": args.batch, "seq_len": args.seq_len, "steps": args.steps, "seconds": seconds,
        "tokens_per_s": tokens_per_s, "params": learner.num_params(), "threads": tch::get_num_threads(),
        "flops_per_token": flops_per_token, "achieved_gflop_s": achieved / 1e9,
        "matmul_peak_gflop_s": peak / 1e9, "mfu": achieved / peak,
        "gradient_checkpointing": args.gradient_checkpointing, "peak_rss_mb": peak_rss_mb(),
    });
    if args.model.json {
        println!("{report}");
    } else {
        println!(
            "learner, {label} model, {:?} on {device:?}, {} CPU threads",
            args.model.dtype,
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
