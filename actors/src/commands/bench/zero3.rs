//! `rlvr bench zero3`: what ZeRO-3 costs and saves per rank — bytes of parameter, gradient and
//! optimiser slices held between steps against one unsharded learner, the most parameters
//! gathered at once, the process's peak resident memory, and the step time — for N local
//! ranks (spawned unless a launcher set `RANK`), or with `--unsharded` for one plain learner,
//! the baseline to run beside it. `--offload-optimizer` keeps the ranks' optimiser state in
//! host memory and reports its bytes.

use std::time::Instant;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rlvr_core::TrainBatch;
use rlvr_learner::{Learner, LearnerConfig, Objective, Reduction};
use serde_json::json;
use tch::{Device, Kind, Tensor};

use super::peak_rss_mb;
use super::{shape, sync, ModelArgs};
use crate::UsageError;

/// Arguments of `rlvr bench zero3`.
#[derive(Debug, clap::Args)]
pub struct Zero3Args {
    /// Local ranks to spawn (ignored when started by a launcher that sets `RANK`).
    #[arg(long, default_value_t = 2)]
    pub ranks: usize,
    /// One unsharded learner instead, on `--ranks` times the per-rank batch: the baseline.
    #[arg(long)]
    pub unsharded: bool,
    /// Sequences per rank per step.
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub seq_len: usize,
    /// Timed optimiser steps (after one untimed).
    #[arg(long, default_value_t = 2)]
    pub steps: usize,
    /// Keep each rank's optimiser state (f32 masters, gradient slices, moments) in host memory
    /// and step it there (ZeRO-Offload; `launch.offload_optimizer`).
    #[arg(long, conflicts_with = "unsharded")]
    pub offload_optimizer: bool,
    /// Start from this Hugging Face model directory instead of a random model of the shape:
    /// the unsharded learner loads it whole, each ZeRO-3 rank only its shards, unit by unit.
    #[arg(long)]
    pub init: Option<std::path::PathBuf>,
    /// Model, device and output.
    #[command(flatten)]
    pub model: ModelArgs,
}

/// `rows` random sequences of the run's shape, the same on every rank for `seed`.
fn batch(args: &Zero3Args, vocab: i64, rows: usize, seed: u64) -> TrainBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let seqs: Vec<Vec<i64>> = (0..rows)
        .map(|_| (0..args.seq_len).map(|_| rng.gen_range(0..vocab)).collect())
        .collect();
    TrainBatch::from_sequences(&seqs, 0)
}

/// Seconds per step over `args.steps` timed steps after one untimed, and the last loss.
fn time_steps(args: &Zero3Args, learner: &mut Learner, b: &TrainBatch, device: Device) -> Result<(f64, f64)> {
    let objective = Objective::Lm(Reduction::Mean);
    learner.train_step(std::slice::from_ref(b), objective)?;
    sync(device);
    let t = Instant::now();
    let mut loss = 0.0;
    for _ in 0..args.steps {
        loss = learner.train_step(std::slice::from_ref(b), objective)?.loss;
    }
    sync(device);
    Ok((t.elapsed().as_secs_f64() / args.steps as f64, loss))
}

/// Run as one rank, the unsharded baseline, or spawn the local ranks and print rank 0's report.
pub fn zero3(args: &Zero3Args) -> Result<()> {
    if args.ranks == 0 || args.batch == 0 || args.seq_len < 2 || args.steps == 0 {
        return Err(
            UsageError("--ranks, --batch and --steps must be positive, --seq-len at least 2".into()).into(),
        );
    }
    let (device, kind) = (args.model.device.device()?, args.model.dtype.kind());
    let config = match &args.init {
        Some(dir) => rlvr_learner::checkpoint::read_config(dir)?,
        None => shape(&args.model.shape_from)?,
    };
    let learner_config = LearnerConfig {
        offload_optimizer: args.offload_optimizer,
        ..LearnerConfig::constant(1e-5, device)
    };
    let new_learner = || -> Result<Learner> {
        let mut l = match &args.init {
            Some(dir) => Learner::from_pretrained(dir, learner_config)?,
            None => Learner::new(&config, learner_config, 0),
        };
        if kind == Kind::BFloat16 {
            l.set_bf16()?;
        }
        Ok(l)
    };
    if args.unsharded {
        let mut learner = new_learner()?;
        let b = batch(args, config.vocab_size, args.batch * args.ranks, 0);
        let (step_s, loss) = time_steps(args, &mut learner, &b, device)?;
        // 16 bytes per parameter either way: f32 parameter, gradient and two moments, or a
        // bf16 parameter and gradient with an f32 master and two f32 moments.
        let per_param = 16;
        let report = json!({
            "mode": "unsharded", "params": learner.num_params(), "rows_per_step": args.batch * args.ranks,
            "held_bytes": per_param * learner.num_params() as u64, "peak_rss_mb": peak_rss_mb(),
            "step_s": step_s, "loss": loss,
        });
        println!("{report}");
        return Ok(());
    }
    let Some((group, device)) = super::join_ranks(device, args.ranks, "zero3")? else {
        return Ok(());
    };
    let backend = group.backend();
    let (rank, world) = (group.rank(), group.world_size());
    let loads_shards = args.init.is_some() && kind != Kind::BFloat16;
    // Rank r's rows are rows r·batch.. of the baseline's batch.
    let all = batch(args, config.vocab_size, args.batch * world, 0);
    let cols = all.cols;
    let rows = rank * args.batch..(rank + 1) * args.batch;
    let mine = TrainBatch {
        input_ids: all.input_ids[rows.start * cols..rows.end * cols].to_vec(),
        labels: all.labels[rows.start * cols..rows.end * cols].to_vec(),
        rows: args.batch,
        cols,
        packing: None,
    };
    let mut learner = match &args.init {
        // Each rank reads only its shards of the checkpoint.
        Some(dir) if loads_shards => Learner::from_pretrained_zero3(dir, learner_config, group)?,
        _ => {
            let mut learner = new_learner()?;
            learner.set_zero3(group)?;
            learner
        }
    };
    let (step_s, loss) = time_steps(args, &mut learner, &mine, device)?;
    let memory = learner.shard_memory().unwrap_or(rlvr_learner::ShardMemory {
        held: 0,
        offloaded: 0,
        unsharded: 0,
        peak_gathered: 0,
    });
    // Every rank's figures, gathered to rank 0.
    let figures = [
        memory.held as f64,
        memory.offloaded as f64,
        memory.peak_gathered as f64,
        peak_rss_mb(),
        step_s,
    ];
    // On the rank's device: NCCL gathers CUDA tensors only.
    let mut all_figures = Tensor::zeros([(world * figures.len()) as i64], (Kind::Double, device));
    let mine = Tensor::from_slice(&figures).to_device(device);
    learner
        .with_group(|g| g.all_gather(&mut all_figures, &mine))
        .unwrap_or(Ok(()))?;
    let all_figures = Vec::<f64>::try_from(all_figures.to_device(Device::Cpu))?;
    if rank == 0 {
        let ranks: Vec<_> = all_figures
            .chunks(figures.len())
            .map(|f| {
                json!({"held_bytes": f[0], "offloaded_bytes": f[1], "peak_gathered_bytes": f[2], "peak_rss_mb": f[3], "step_s": f[4]})
            })
            .collect();
        println!(
            "{}",
            json!({
                "mode": "zero3", "world_size": world, "backend": format!("{backend:?}"),
                "params": learner.num_params(), "rows_per_step": args.batch * world,
                "unsharded_bytes": memory.unsharded, "held_share": memory.held as f64 / memory.unsharded.max(1) as f64,
                "loss": loss, "ranks": ranks,
            })
        );
    }
    learner.with_group(|g| g.barrier()).unwrap_or(Ok(()))?;
    Ok(())
}
