//! Weight updates of the native engine: chunks copied into its parameters in place between
//! `generate` calls ([`Engine::load_weights`](crate::Engine::load_weights)), or between decode
//! steps from a [`WeightFeed`] (in flight), each tagged with its policy version.

use std::sync::Arc;

use rlvr_core::{DType, WeightChunk};
use tch::{Device, Kind, Tensor};

use super::NativeEngine;
use crate::error::{Result, RolloutError};
use crate::WeightFeed;

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
        feed.load_newer(self.version, &mut |chunks, version| {
            self.load_chunks(chunks, version)
        })
    }

    /// [`Engine::load_weights`](crate::Engine::load_weights).
    pub(super) fn load_chunks(&mut self, chunks: &[WeightChunk], version: u64) -> Result<()> {
        let vars = self.vs.variables();
        let tied = self.model.config().tie_word_embeddings;
        tch::no_grad(|| {
            for chunk in chunks {
                let bad = |message: String| {
                    Err(RolloutError::Weights {
                        name: chunk.name.clone(),
                        message,
                    })
                };
                let Some(var) = vars.get(&chunk.name) else {
                    if tied && chunk.name == "lm_head.weight" {
                        continue;
                    }
                    return bad("no such parameter in this model".into());
                };
                if var.size() != chunk.shape {
                    return bad(format!("shape {:?}, the model has {:?}", chunk.shape, var.size()));
                }
                let kind = match chunk.dtype {
                    DType::F32 => Kind::Float,
                    DType::Bf16 => Kind::BFloat16,
                    DType::F16 => Kind::Half,
                };
                let numel: i64 = chunk.shape.iter().product();
                if chunk.data.len() != numel as usize * chunk.dtype.size() {
                    return bad(format!(
                        "{} bytes for {numel} {:?} elements",
                        chunk.data.len(),
                        chunk.dtype
                    ));
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
                    var.shallow_clone().copy_(&src);
                } else {
                    let src = Tensor::from_data_size(&chunk.data, &chunk.shape, kind);
                    var.shallow_clone().copy_(&src);
                }
            }
            Ok(())
        })?;
        self.version = version;
        Ok(())
    }
}
