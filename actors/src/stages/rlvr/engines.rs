//! Where an RLVR stage's rollout engines run and in what element type: `rollout.devices`
//! (worker `i` on entry `i` modulo their number; empty: the learner's device) and
//! `rollout.dtype` (unset: `model.dtype`).

use anyhow::Result;
use rlvr_recipes::Recipe;
use tch::{Device, Kind};

use crate::placement::{parse_device, recipe_kind, usable};
use crate::UsageError;

/// The engines' devices, in the order workers take them, and their element type. A CUDA
/// device where none is usable is a usage error naming the entry.
pub(crate) fn placement(stage: &Recipe, learner: Device) -> Result<(Vec<Device>, Kind)> {
    let mut devices = Vec::with_capacity(stage.rollout.devices.len());
    for (i, name) in stage.rollout.devices.iter().enumerate() {
        let refuse = |why: String| {
            UsageError(format!(
                "stage `{}`: rollout.devices[{i}] = `{name}`: {why}",
                stage.name
            ))
        };
        devices.push(parse_device(name).and_then(usable).map_err(refuse)?);
    }
    if devices.is_empty() {
        devices.push(learner);
    }
    let kind = recipe_kind(stage.rollout.dtype.unwrap_or(stage.model.dtype));
    if kind == Kind::BFloat16 && devices.contains(&Device::Cpu) {
        tracing::warn!(
            "stage `{}`: bf16 rollout engines on the CPU are several times slower than f32 \
             (libtorch has few bf16 CPU kernels); rollout.dtype = \"f32\" to choose f32",
            stage.name
        );
    }
    Ok((devices, kind))
}
