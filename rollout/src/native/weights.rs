//! Weight updates of the native engine: chunks copied into its parameters in place between
//! `generate` calls ([`Engine::load_weights`](crate::Engine::load_weights)), or between decode
//! steps from a [`WeightFeed`] (in flight), each tagged with its policy version.

use std::collections::HashMap;
use std::sync::Arc;

use rlvr_core::{DType, WeightChunk};
use rlvr_learner::model::tensor_parallel::shard_of;
use tch::{Device, Kind, Tensor};

use super::NativeEngine;
use crate::error::{Result, RolloutError};
use crate::{WeightFeed, WeightSource};

impl NativeEngine {
    /// Take newer weights from `feed` between decode steps (and before each call), so that
    /// generation never runs more than one decode step behind the newest published weights.
    pub fn set_weight_feed(&mut self, feed: Arc<dyn WeightFeed>) {
        self.feed = Some(feed);
    }

    /// Load newer weights from the feed, if there is one and it has them.
    pub(super) fn take_newer_weights(&mut self) -> Result<()> {
        let Some(feed) = self.feed.clone() else {
            return Ok(());
        };
        feed.load_newer(self.version, &mut |source, version| self.load(source, version))
    }

    /// Load `source` in place of the current weights and hold `version`.
    pub fn load(&mut self, source: WeightSource<'_>, version: u64) -> Result<()> {
        match source {
            WeightSource::Chunks(chunks) => self.load_chunks(chunks, version),
            WeightSource::Tensors(tensors) => self.load_tensors(tensors, version),
        }
    }

    /// [`Engine::load_weights`](crate::Engine::load_weights).
    pub(super) fn load_chunks(&mut self, chunks: &[WeightChunk], version: u64) -> Result<()> {
        let vars = self.vs.variables();
        let tied = self.model.config().tie_word_embeddings;
        tch::no_grad(|| {
            for chunk in chunks {
                let kind = match chunk.dtype {
                    DType::F32 => Kind::Float,
                    DType::Bf16 => Kind::BFloat16,
                    DType::F16 => Kind::Half,
                };
                let numel: i64 = chunk.shape.iter().product();
                if chunk.data.len() != numel.max(0) as usize * chunk.dtype.size() {
                    return Err(RolloutError::Weights {
                        name: chunk.name.clone(),
                        message: format!(
                            "{} bytes, where shape {:?} of {:?} needs {}",
                            chunk.data.len(),
                            chunk.shape,
                            chunk.dtype,
                            numel.max(0) as usize * chunk.dtype.size()
                        ),
                    });
                }
                if (chunk.data.as_ptr() as usize).is_multiple_of(chunk.dtype.size()) {
                    let mut strides = vec![1i64; chunk.shape.len()];
                    for d in (0..chunk.shape.len().saturating_sub(1)).rev() {
                        strides[d] = strides[d + 1] * chunk.shape[d + 1];
                    }
                    // SAFETY: the view covers exactly `chunk.data` (length checked above), is
                    // aligned for its element type, and lives only for the copy below, while
                    // `chunk` is borrowed.
                    let src = unsafe {
                        Tensor::from_blob(chunk.data.as_ptr(), &chunk.shape, &strides, kind, Device::Cpu)
                    };
                    copy_into(&vars, tied, self.shard, &chunk.name, &src)?;
                } else {
                    let src = Tensor::from_data_size(&chunk.data, &chunk.shape, kind);
                    copy_into(&vars, tied, self.shard, &chunk.name, &src)?;
                }
            }
            Ok(())
        })?;
        self.version = version;
        Ok(())
    }

    /// Load weights that are tensors already (on any device: a learner's snapshot, a
    /// device-resident sync's), copied device to device, never through host memory.
    fn load_tensors(&mut self, tensors: &[(String, Tensor)], version: u64) -> Result<()> {
        let vars = self.vs.variables();
        let tied = self.model.config().tie_word_embeddings;
        tch::no_grad(|| {
            tensors
                .iter()
                .try_for_each(|(name, src)| copy_into(&vars, tied, self.shard, name, src))
        })?;
        self.version = version;
        Ok(())
    }
}

/// Copy `src` into the parameter `name` in place, converting its element type and device (on a
/// tensor-parallel rank, `shard` = (rank, world), its part of the whole `src`); the tied head
/// (`lm_head.weight` when the embedding is shared) is skipped.
fn copy_into(
    vars: &HashMap<String, Tensor>,
    tied: bool,
    shard: Option<(usize, usize)>,
    name: &str,
    src: &Tensor,
) -> Result<()> {
    let bad = |message: String| {
        Err(RolloutError::Weights {
            name: name.to_string(),
            message,
        })
    };
    let Some(var) = vars.get(name) else {
        if tied && name == "lm_head.weight" {
            return Ok(());
        }
        return bad("no such parameter in this model".into());
    };
    let src = match shard {
        Some((rank, world)) => shard_of(name, src, rank, world),
        None => src.shallow_clone(),
    };
    if var.size() != src.size() {
        return bad(format!("shape {:?}, the model has {:?}", src.size(), var.size()));
    }
    var.shallow_clone().copy_(&src);
    Ok(())
}
