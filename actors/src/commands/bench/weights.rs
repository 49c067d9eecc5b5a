//! `rlvr bench weight-sync`: a learner's weights to a rollout engine in another process — rank
//! 0 exports them and broadcasts them in buckets ([`WeightSync`]), every other rank receives
//! them and loads them into its engine in place — against a memory copy of the same bytes. Two
//! paths alternate in each repeat: chunks staged through host memory, and tensors that stay on
//! the device (a snapshot packed in the buckets that go out, as a run's learner makes it).
//! Every receiver checks what it loaded against rank 0's checksum. `--over cluster` measures the
//! other path, to a worker node ([`super::worker_sync`]).

use std::time::Instant;

use anyhow::{bail, Result};
use rlvr_dist::{ReduceOp, SyncStats, WeightPacker, WeightSync};
use rlvr_learner::{Learner, LearnerConfig};
use rlvr_rollout::{Engine, NativeEngine, WeightSource};
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

/// The fastest of a path's timed syncs.
#[derive(Debug, Clone, Copy)]
struct Best {
    seconds: f64,
    broadcast_s: f64,
    bytes: u64,
    buckets: u64,
}

impl Default for Best {
    fn default() -> Self {
        Self {
            seconds: f64::INFINITY,
            broadcast_s: 0.0,
            bytes: 0,
            buckets: 0,
        }
    }
}

impl Best {
    fn keep(&mut self, seconds: f64, stats: SyncStats) {
        if seconds < self.seconds {
            *self = Self {
                seconds,
                broadcast_s: stats.seconds,
                bytes: stats.bytes,
                buckets: stats.buckets,
            };
        }
    }
}

/// Refuse an engine that does not hold `version` after loading it.
fn expect_version(engine: Option<&NativeEngine>, version: u64) -> Result<()> {
    match engine {
        Some(e) if e.policy_version() != version => {
            bail!(
                "the engine holds version {} after loading {version}",
                e.policy_version()
            )
        }
        _ => Ok(()),
    }
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
    let bucket_bytes = args.bucket_mib << 20;
    let sync_on = WeightSync::new(&group, 0, bucket_bytes, device);
    // Both paths, alternating within each repeat: host-staged chunks (what the actor messages
    // carry) and device-resident tensors.
    let (mut staged, mut resident) = (Best::default(), Best::default());
    let (mut staged_sum, mut resident_sum) = (0.0, 0.0);
    let timed = |best: &mut Best, f: &mut dyn FnMut() -> Result<SyncStats>| -> Result<()> {
        group.barrier()?;
        let t = Instant::now();
        let stats = f()?;
        sync(device);
        best.keep(t.elapsed().as_secs_f64(), stats);
        Ok(())
    };
    if group.rank() == 0 {
        let mut learner = Learner::new(&config, LearnerConfig::constant(1e-5, device), 0);
        if kind == Kind::BFloat16 {
            learner.set_bf16()?;
        }
        // Alone (one GPU: NCCL takes one rank per device), rank 0 is its own rollout engine.
        let mut own_engine =
            (group.world_size() == 1).then(|| NativeEngine::new(&config, device, kind, 1, 0));
        for round in 0..args.repeats as u64 {
            let version = 2 * round + 1;
            timed(&mut staged, &mut || {
                let chunks = learner.export_weights(version)?;
                let stats = sync_on.send(&chunks)?;
                if let Some(engine) = &mut own_engine {
                    engine.load_weights(&chunks, version)?;
                }
                staged_sum = checksum(&chunks);
                Ok(stats)
            })?;
            expect_version(own_engine.as_ref(), version)?;
            timed(&mut resident, &mut || {
                // As a run does: the learner's snapshot, packed in the buckets that go out.
                let mut packer =
                    WeightPacker::new(&learner.weight_table()?, version + 1, bucket_bytes, device)?;
                learner.visit_weights(|name, t| Ok(packer.push(name, t)?))?;
                let packed = packer.finish()?;
                let stats = sync_on.send_packed(&packed)?;
                if let Some(engine) = &mut own_engine {
                    engine.load(WeightSource::Tensors(packed.tensors()), version + 1)?;
                }
                Ok(stats)
            })?;
            expect_version(own_engine.as_ref(), version + 1)?;
            resident_sum = match &own_engine {
                Some(engine) => checksum(&engine.export_weights(version + 1)?),
                None => staged_sum,
            };
        }
    } else {
        let mut engine = NativeEngine::new(&config, device, kind, 1, 0);
        for _ in 0..args.repeats {
            timed(&mut staged, &mut || {
                let (chunks, stats) = sync_on.receive()?;
                engine.load_weights(&chunks, chunks.first().map_or(0, |c| c.version))?;
                staged_sum = checksum(&chunks);
                Ok(stats)
            })?;
            timed(&mut resident, &mut || {
                let received = sync_on.receive_tensors(device)?;
                engine.load(WeightSource::Tensors(&received.tensors), received.version)?;
                Ok(received.stats)
            })?;
            resident_sum = checksum(&engine.export_weights(engine.policy_version())?);
        }
    }
    // Rank 0's checksums against every receiver's: the staged bytes it sent, and what its
    // engine (or every receiver's) holds after the device-resident load.
    for sum in [staged_sum, resident_sum] {
        let mut lo = Tensor::from_slice(&[sum]).to_device(device);
        let mut hi = lo.copy();
        group.all_reduce(&mut lo, ReduceOp::Min)?;
        group.all_reduce(&mut hi, ReduceOp::Max)?;
        if lo.double_value(&[0]) != hi.double_value(&[0]) {
            bail!("a rollout rank loaded weights that differ from the learner's");
        }
    }
    // The slowest rank's best time is each path's time.
    let mut slowest = Tensor::from_slice(&[staged.seconds, resident.seconds]).to_device(device);
    group.all_reduce(&mut slowest, ReduceOp::Max)?;
    if group.rank() == 0 {
        let copy_s = staged.bytes as f64 / (copy_bandwidth(device) / 2.0);
        let (staged_s, resident_s) = (slowest.double_value(&[0]), slowest.double_value(&[1]));
        println!(
            "{}",
            json!({
                "backend": format!("{backend:?}"), "device": format!("{device:?}"), "world_size": group.world_size(),
                "shape_from": args.model.shape_from, "bytes": staged.bytes, "bucket_mib": args.bucket_mib,
                "buckets": staged.buckets, "sync_ms": staged_s * 1e3, "broadcast_ms": staged.broadcast_s * 1e3,
                "resident_buckets": resident.buckets, "resident_sync_ms": resident_s * 1e3,
                "resident_broadcast_ms": resident.broadcast_s * 1e3,
                "memcpy_ms": copy_s * 1e3, "sync_over_memcpy": staged_s / copy_s,
                "resident_over_memcpy": resident_s / copy_s, "staged_over_resident": staged_s / resident_s,
                "checksums_equal": true,
            })
        );
    }
    group.barrier()?;
    Ok(())
}
