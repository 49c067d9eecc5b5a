//! `rlvr bench`: speed measurements. Each prints its own numbers; `scripts/bench-*.sh` run the
//! baseline beside them in the same session and report the ratio (see BENCHMARKS.md).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use rlvr_dist::{Backend, ProcessGroup, Rendezvous};
use rlvr_learner::model::Config;
use rlvr_learner::{Learner, LearnerConfig};
use rlvr_recipes::{load, Resolved};
use tch::{Device, Kind, Tensor};

use crate::UsageError;

mod collectives;
mod generate;
mod load;
mod tensor_parallel;
mod train;
mod verify;
mod weights;
mod worker_sync;
mod zero3;

pub use collectives::CollectivesArgs;
pub use generate::GenerateArgs;
pub use load::LoadArgs;
pub use train::TrainArgs;
pub use verify::VerifyArgs;
pub use weights::WeightSyncArgs;
pub use zero3::Zero3Args;

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
    /// c10d collectives (all-reduce, broadcast, all-gather, reduce-scatter) between ranks —
    /// Gloo on CPU, NCCL on CUDA — on a model-sized buffer, against the device's copy
    /// bandwidth; spawns `--ranks` local ranks unless a launcher (torchrun) set `RANK`.
    Collectives(CollectivesArgs),
    /// Loading a model directory into the run's element type and device: seconds against
    /// `cat` reading the same files, resident memory added against the weights' size.
    Load(LoadArgs),
    /// ZeRO-3 per rank: parameter, gradient and optimiser bytes held against one unsharded
    /// learner, the most parameters gathered at once, peak resident memory and step time, for
    /// `--ranks` local ranks (or `--unsharded`, the baseline).
    Zero3(Zero3Args),
    /// A learner's weights to rollout engines in other processes — over c10d between ranks,
    /// or over `ractor_cluster` to a worker node — exported, sent in buckets, loaded in place
    /// and checked, against a memory copy of the same bytes.
    WeightSync(WeightSyncArgs),
}

/// The model, device and output options `bench generate` and `bench train` share.
#[derive(Debug, clap::Args)]
pub struct ModelArgs {
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Parameter type (and, for generation, KV-cache type); a bf16 learner keeps f32 master
    /// weights and moments in the optimiser.
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    pub dtype: DtypeArg,
    /// Recipe whose model shape to use (with random weights).
    #[arg(long, default_value = "smollm2-135m-sft")]
    pub shape_from: String,
    /// A real checkpoint (directory or hub id) instead of random weights of `--shape-from`'s
    /// shape; the baseline scripts take the same directory.
    #[arg(long)]
    pub model: Option<String>,
    /// Also save the random (initial) model here, in Hugging Face format, for the baseline to
    /// load.
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

/// For benchmarks between ranks: started without a launcher's `RANK`, spawn `ranks` local
/// ranks of this command, print rank 0's output and return `None`; as a rank, join the group
/// (Gloo on the CPU, NCCL on this rank's GPU) and return it with this rank's device.
fn join_ranks(device: Device, ranks: usize, prefix: &str) -> Result<Option<(ProcessGroup, Device)>> {
    let backend = Backend::for_device(device);
    if !backend.available() {
        return Err(UsageError(
            "--device cuda: this rlvr was built without NCCL (cargo feature `nccl`)".into(),
        )
        .into());
    }
    if !crate::ranks::is_rank() {
        print!("{}", crate::ranks::spawn_local(ranks)?);
        return Ok(None);
    }
    let rdv = Rendezvous::from_env()?;
    let device = match device {
        Device::Cuda(_) => Device::Cuda(rdv.local_rank),
        d => d,
    };
    let group = ProcessGroup::new(&rdv, backend, prefix, Duration::from_secs(600))?;
    Ok(Some((group, device)))
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
        Bench::Generate(args) => generate::generate(args),
        Bench::Train(args) => train::train(args),
        Bench::Verify(args) => verify::verify(args),
        Bench::Collectives(args) => collectives::collectives(args),
        Bench::Load(args) => load::load(args),
        Bench::Zero3(args) => zero3::zero3(args),
        Bench::WeightSync(args) => weights::weight_sync(args),
    }
}

/// The benchmark's learner: the `--model` checkpoint, or random weights of `--shape-from`'s
/// shape (seed 0); in `kind` on `device`. Returns it with a label for reports.
fn learner(args: &ModelArgs, device: Device, kind: Kind) -> Result<(Learner, String)> {
    let config = LearnerConfig {
        kind,
        ..LearnerConfig::constant(1e-5, device)
    };
    match &args.model {
        Some(model) => {
            let dir = crate::stages::resolve_model(model)?;
            Ok((Learner::from_pretrained(&dir, config)?, dir.display().to_string()))
        }
        None => Ok((
            Learner::new(&shape(&args.shape_from)?, config, 0),
            format!("{}-shaped random", args.shape_from),
        )),
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

use crate::graph::memory::{peak_rss_mb, rss_mb};

/// Start the peak (`VmHWM`) over from the resident memory now (Linux's `clear_refs` 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
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
