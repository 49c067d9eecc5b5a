//! `rlvr bench collectives`: c10d collectives between ranks (Gloo on CPU, NCCL on CUDA) on a
//! buffer the size of a model's weights, with every result checked, against the device's copy
//! bandwidth. Started without torchrun's variables it spawns `--ranks` local ranks of itself.

use std::time::Instant;

use anyhow::Result;
use rlvr_dist::ReduceOp;
use serde_json::json;
use tch::{Kind, Tensor};

use super::{copy_bandwidth, sync, DeviceArg};
use crate::UsageError;

/// Arguments of `rlvr bench collectives`.
#[derive(Debug, clap::Args)]
pub struct CollectivesArgs {
    /// Local ranks to spawn (ignored when started by a launcher that sets `RANK`).
    #[arg(long, default_value_t = 2)]
    pub ranks: usize,
    /// Where the buffers live: cpu uses Gloo, cuda uses NCCL (one GPU per local rank).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Buffer size in MiB (f32); 513 MiB is a SmolLM2-135M's weights.
    #[arg(long, default_value_t = 513)]
    pub mib: usize,
    /// Timed repetitions of each collective; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
}

/// Run as one rank, or spawn the local ranks and print rank 0's report.
pub fn collectives(args: &CollectivesArgs) -> Result<()> {
    if args.ranks == 0 || args.mib == 0 || args.repeats == 0 {
        return Err(UsageError("--ranks, --mib and --repeats must be positive".into()).into());
    }
    let device = args.device.device()?;
    let Some((group, device)) = super::join_ranks(device, args.ranks, "bench")? else {
        return Ok(());
    };
    let backend = group.backend();
    let world = group.world_size();
    let n = (args.mib << 20) / 4 / world * world;
    let bytes = (n * 4) as f64;
    let rank = group.rank() as f64;
    let opts = (Kind::Float, device);

    let mut reports = Vec::new();
    let mut time = |name: &str, bus_factor: f64, op: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        op()?;
        let mut best = f64::INFINITY;
        for _ in 0..args.repeats {
            group.barrier()?;
            sync(device);
            let t = Instant::now();
            op()?;
            sync(device);
            best = best.min(t.elapsed().as_secs_f64());
        }
        reports.push(json!({
            "op": name, "ms": best * 1e3, "algbw_gb_s": bytes / best / 1e9,
            "busbw_gb_s": bytes / best / 1e9 * bus_factor,
        }));
        Ok(())
    };
    let w = world as f64;
    let check = |name: &str, ok: bool| -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(anyhow::anyhow!("{name}: wrong result on rank {rank}"))
        }
    };
    let mut t = Tensor::ones([n as i64], opts);
    time("all_reduce", 2.0 * (w - 1.0) / w, &mut || {
        let _ = t.fill_(1.0);
        group.all_reduce(&mut t, ReduceOp::Sum)?;
        Ok(())
    })?;
    check(
        "all_reduce",
        t.min().double_value(&[]) == w && t.max().double_value(&[]) == w,
    )?;
    time("broadcast", 1.0, &mut || {
        let _ = t.fill_(rank);
        group.broadcast(&mut t, 0)?;
        Ok(())
    })?;
    check("broadcast", t.abs().max().double_value(&[]) == 0.0)?;
    let shard = Tensor::full([(n / world) as i64], rank, opts);
    time("all_gather", (w - 1.0) / w, &mut || {
        group.all_gather(&mut t, &shard)?;
        Ok(())
    })?;
    let expect =
        Tensor::arange(world as i64, opts).repeat_interleave_self_int((n / world) as i64, None, None);
    check("all_gather", t.equal(&expect))?;
    let mut mine = Tensor::zeros([(n / world) as i64], opts);
    time("reduce_scatter", (w - 1.0) / w, &mut || {
        let _ = t.fill_(1.0);
        group.reduce_scatter(&mut mine, &t, ReduceOp::Sum)?;
        Ok(())
    })?;
    check("reduce_scatter", mine.min().double_value(&[]) == w)?;
    drop((t, shard, mine, expect));

    if group.rank() == 0 {
        let bandwidth = copy_bandwidth(device);
        println!(
            "{}",
            json!({
                "backend": format!("{backend:?}"), "device": format!("{device:?}"), "world_size": world,
                "bytes": bytes, "copy_bandwidth_gb_s": bandwidth / 1e9,
                "copy_ms": 2.0 * bytes / bandwidth * 1e3, "collectives": reports,
            })
        );
    }
    group.barrier()?;
    Ok(())
}
