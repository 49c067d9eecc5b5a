//! A native engine as one rank of a tensor-parallel engine: it holds its share of each layer's
//! heads and MLP channels ([`rlvr_learner::model::tensor_parallel`]) and completes each layer's
//! partial sums over the group. Every rank is given the same requests and runs the same
//! scheduling, and the all-reduced logits are the same bits on every rank, so each draws the
//! same tokens from the same seeds: the ranks move in lockstep with no other message. Weights
//! arrive whole (from a learner, as chunks or tensors) and each rank copies in its part.

use std::sync::Arc;

use rlvr_dist::ProcessGroup;
use rlvr_learner::model::tensor_parallel::shard_config;
use rlvr_learner::model::{CausalLm, Config};
use tch::{Device, Kind};

use super::NativeEngine;
use crate::error::{Result, RolloutError};

impl NativeEngine {
    /// This process's rank of a tensor-parallel engine for `config` (the whole model's) over
    /// `group`: freshly initialised weights of its share (seeded; load the policy's weights
    /// before generating), up to `max_batch` sequences, parameters and cache in `kind` on
    /// `device`. Refused for a model that does not split over the group's size.
    pub fn tensor_parallel(
        config: &Config,
        device: Device,
        kind: Kind,
        max_batch: usize,
        seed: i64,
        group: Arc<ProcessGroup>,
    ) -> Result<Self> {
        let (rank, world) = (group.rank(), group.world_size());
        let shard = shard_config(config, world).map_err(|e| RolloutError::TensorParallel(e.to_string()))?;
        let (vs, mut model) = rlvr_learner::runtime::seeded(seed, || {
            let vs = Self::store(device, kind);
            let model = CausalLm::new(&vs.root(), &shard);
            (vs, model)
        });
        model.set_tensor_parallel(group);
        let mut engine = Self::with_model(vs, model, kind, max_batch);
        engine.shard = Some((rank, world));
        engine.decode_mode = super::DecodeMode::Eager;
        Ok(engine)
    }

    /// Refuse `what` on one rank's share of a tensor-parallel engine, which needs the whole.
    pub(super) fn whole(&self, what: &str) -> Result<()> {
        match self.shard {
            Some((rank, world)) if world > 1 => Err(RolloutError::TensorParallel(format!(
                "{what}: rank {rank} of {world} holds a share of each layer, not the model"
            ))),
            _ => Ok(()),
        }
    }
}
