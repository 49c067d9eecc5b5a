//! Where a command's model runs and in what element type — `--device cpu|cuda|cuda:N` and
//! `--dtype f32|bf16` — shared by `generate`, `eval` and `worker`, and the element type of a
//! recipe's dtype, which the stages read.

use anyhow::Result;
use tch::{Device, Kind};

use crate::UsageError;

/// The `--device` and `--dtype` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Placement {
    /// `cpu`, `cuda` or `cuda:N` [default: the first GPU when there is one, else the CPU].
    #[arg(long, value_parser = parse_device)]
    pub device: Option<Device>,
    /// Element type of the weights and the KV cache [default: bf16 on a GPU, f32 on the CPU].
    #[arg(long, value_enum)]
    pub dtype: Option<Dtype>,
}

/// An element type a command can run its model in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dtype {
    /// 32-bit floats.
    F32,
    /// bfloat16 (on the CPU several times slower than f32).
    Bf16,
}

impl Placement {
    /// The device and element type asked for (or the defaults); a GPU that is not usable here
    /// is a usage error. bf16 on the CPU runs, with a warning that says how to choose f32.
    pub fn resolve(&self) -> Result<(Device, Kind)> {
        let device = match self.device {
            Some(d) => usable(d).map_err(|why| UsageError(format!("--device cuda: {why}")))?,
            None => rlvr_learner::runtime::default_device(),
        };
        let kind = match (self.dtype, device) {
            (Some(Dtype::F32), _) => Kind::Float,
            (Some(Dtype::Bf16), _) => Kind::BFloat16,
            (None, Device::Cpu) => Kind::Float,
            (None, _) => Kind::BFloat16,
        };
        if kind == Kind::BFloat16 && device == Device::Cpu {
            tracing::warn!(
                "bf16 on the CPU is several times slower than f32 here (libtorch has few \
                 bf16 CPU kernels); use --dtype f32"
            );
        }
        Ok((device, kind))
    }
}

/// `device`, or why it cannot be used here (a GPU where libtorch finds none).
pub fn usable(device: Device) -> Result<Device, String> {
    if device.is_cuda() && !rlvr_learner::runtime::default_device().is_cuda() {
        return Err("no usable CUDA device here (libtorch_cuda.so not found or no GPU)".into());
    }
    Ok(device)
}

/// The libtorch element type of a recipe's dtype.
pub fn recipe_kind(dtype: rlvr_recipes::spec::Dtype) -> Kind {
    match dtype {
        rlvr_recipes::spec::Dtype::F32 => Kind::Float,
        rlvr_recipes::spec::Dtype::Bf16 => Kind::BFloat16,
    }
}

/// The flag's name of an element type (`f32`, `bf16`).
pub fn dtype_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bf16",
        _ => "f32",
    }
}

/// `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device, String> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| format!("`{s}`: expected cpu, cuda or cuda:N")),
    }
}
