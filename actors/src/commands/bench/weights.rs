//! `rlvr bench weight-sync`: a learner's weights to a rollout engine in another process — rank
//! 0 exports them and broadcasts them in buckets ([`WeightSync`]), every other rank receives
//! them and loads them into its engine in place — against a memory copy of the same bytes.
//! Every receiver checks what it loaded against rank 0's checksum. `--over cluster` measures the
//! other path, to a worker node ([`super::worker_sync`]).

use std::time::Instant;

use anyhow::{bail, Result};
use rlvr_dist::{ReduceOp, WeightSync};
use rlvr_learner::{Learner, LearnerConfig};
use rlvr_rollout::{Engine, NativeEngine};
use serde_json::json;
use tch::{Kind, Tensor};

use super::{copy_bandwidth, shape, sync, ModelArgs};
use crate::UsageError;

/// How weights travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// c10d broadcasts between ranks (Gloo on CPU, NCCL on CUDA).
    C10d,
    /// Messages to a `rlvr worker` node over `ractor_cluster`, as `rlvr run --listen` sends
    /// them (CPU).
    Cluster,
}

/// Arguments of `rlvr bench weight-sync`.
#[derive(Debug, clap::Args)]
pub struct WeightSyncArgs {
    /// How the weights travel.
    #[arg(long, value_enum, default_value_t = Transport::C10d)]
    pub over: Transport,
    /// Local ranks: rank 0 trains, the others roll out (ignored under a launcher's `RANK`); with
    /// one rank, rank 0 broadcasts to itself and loads the weights into its own engine.
    #[arg(long, default_value_t = 2)]
    pub ranks: usize,
    /// Bytes per broadcast, in MiB.
    #[arg(long, default_value_t = 64)]
    pub bucket_mib: usize,
    /// Timed syncs; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Model, device and output.
    #[command(flatten)]
    pub model: ModelArgs,
}

/// A checksum of weight bytes, exact in an f64 for any model that fits in memory.
fn checksum(chunks: &[rlvr_core::WeightChunk]) -> f64 {
    chunks
        .iter()
        .flat_map(|c| c.data.iter())
        .map(|&b| f64::from(b))
        .sum()
}

/// Run as one rank, or spawn the local ranks and print rank 0's report.
pub fn weight_sync(args: &WeightSyncArgs) -> Result<()> {
    if args.over == Transport::Cluster {
        if args.bucket_mib == 0 || args.repeats == 0 || args.model.device != super::DeviceArg::Cpu {
            return Err(UsageError(
                "--over cluster: --bucket-mib and --repeats must be positive, --device cpu".into(),
            )
            .into());
        }
        return super::worker_sync::worker_sync(args);
    }
    if args.ranks == 0 || args.bucket_mib == 0 || args.repeats == 0 {
        return Err(UsageError("--ranks, --bucket-mib and --repeats must be positive".into()).into());
    }
    let (device, kind) = (args.model.device.device()?, args.model.dtype.kind());
    let Some((group, device)) = super::join_ranks(device, args.ranks, "weights")? else {
        return Ok(());
    };
    let backend = group.backend();
    let config = shape(&args.model.shape_from)?;
    let sync_on = WeightSync::new(&group, 0, args.bucket_mib << 20, device);
    let mut best = (f64::INFINITY, 0.0, 0u64, 0u64);
    let mut sum = 0.0;
    if group.rank() == 0 {
        let mut learner = Learner::new(&config, LearnerConfig::constant(1e-5, device), 0);
        if kind == Kind::BFloat16 {
            learner.set_bf16()?;
        }
        // Alone (one GPU: NCCL takes one rank per device), rank 0 is its own rollout engine.
        let mut own_engine =
            (group.world_size() == 1).then(|| NativeEngine::new(&config, device, kind, 1, 0));
        for version in 1..=args.repeats as u64 {
            group.barrier()?;
            let t = Instant::now();
            let chunks = learner.export_weights(version)?;
            let stats = sync_on.send(&chunks)?;
            if let Some(engine) = &mut own_engine {
                engine.load_weights(&chunks, version)?;
                sync(device);
                if engine.policy_version() != version {
                    bail!(
                        "the engine holds version {} after loading {version}",
                        engine.policy_version()
                    );
                }
            }
            let seconds = t.elapsed().as_secs_f64();
            if seconds < best.0 {
                best = (seconds, stats.seconds, stats.bytes, stats.buckets);
            }
            sum = checksum(&chunks);
        }
    } else {
        let mut engine = NativeEngine::new(&config, device, kind, 1, 0);
        for _ in 0..args.repeats {
            group.barrier()?;
            let t = Instant::now();
            let (chunks, stats) = sync_on.receive()?;
            let version = chunks.first().map_or(0, |c| c.version);
            engine.load_weights(&chunks, version)?;
            sync(device);
            let seconds = t.elapsed().as_secs_f64();
            if seconds < best.0 {
                best = (seconds, stats.seconds, stats.bytes, stats.buckets);
            }
            if engine.policy_version() != version {
                bail!(
                    "the engine holds version {} after loading {version}",
                    engine.policy_version()
                );
            }
            sum = checksum(&chunks);
        }
    }
    // Rank 0's checksum against every receiver's.
    let mut lo = Tensor::from_slice(&[sum]).to_device(device);
    let mut hi = lo.copy();
    group.all_reduce(&mut lo, ReduceOp::Min)?;
    group.all_reduce(&mut hi, ReduceOp::Max)?;
    if lo.double_value(&[0]) != hi.double_value(&[0]) {
        bail!("a rollout rank loaded weights that differ from the learner's");
    }
    // The slowest rank's best time is the sync's time.
    let mut slowest = Tensor::from_slice(&[best.0]).to_device(device);
    group.all_reduce(&mut slowest, ReduceOp::Max)?;
    if group.rank() == 0 {
        let (_, broadcast_s, bytes, buckets) = best;
        let copy_s = bytes as f64 / (copy_bandwidth(device) / 2.0);
        let total_s = slowest.double_value(&[0]);
        println!(
            "{}",
            json!({
                "backend": format!("{backend:?}"), "device": format!("{device:?}"), "world_size": group.world_size(),
                "bytes": bytes, "buckets": buckets, "bucket_mib": args.bucket_mib,
                "sync_ms": total_s * 1e3, "broadcast_ms": broadcast_s * 1e3, "memcpy_ms": copy_s * 1e3,
                "sync_over_memcpy": total_s / copy_s, "checksums_equal": true,
            })
        );
    }
    group.barrier()?;
    Ok(())
}
