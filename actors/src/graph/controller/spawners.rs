//! How the controller's pools start their workers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use rlvr_rollout::WeightFeed;

use crate::graph::broadcast::BroadcastMsg;
use crate::graph::pool::{PoolMsg, Spawner};
use crate::graph::rollout::{RolloutArgs, RolloutWorker};
use crate::graph::verifier::{VerifierWorker, VerifyArgs};
use crate::graph::wire::EngineOptions;

/// Starts rollout workers (again, after a crash) from the run's starting weights; each then
/// loads the newest from the broadcaster.
pub(super) struct RolloutSpawner {
    pub(super) model: PathBuf,
    pub(super) version: u64,
    /// Worker `i` runs on entry `i` modulo their number.
    pub(super) devices: Vec<tch::Device>,
    pub(super) kind: tch::Kind,
    /// The learner's device: an engine there frees its KV cache between jobs.
    pub(super) learner_device: tch::Device,
    pub(super) max_batch: usize,
    pub(super) options: EngineOptions,
    pub(super) broadcaster: ActorRef<BroadcastMsg>,
    pub(super) in_flight: Option<Arc<dyn WeightFeed>>,
}

impl Spawner<RolloutWorker> for RolloutSpawner {
    fn make(&self, index: usize, pool: ActorRef<PoolMsg<RolloutWorker>>) -> (RolloutWorker, RolloutArgs) {
        let device = self
            .devices
            .get(index % self.devices.len().max(1))
            .copied()
            .unwrap_or(self.learner_device);
        let args = RolloutArgs {
            model: self.model.clone(),
            version: self.version,
            device,
            kind: self.kind,
            free_cache_between_jobs: device == self.learner_device,
            max_batch: self.max_batch,
            options: self.options,
            pool,
            broadcaster: self.broadcaster.clone(),
            in_flight: self.in_flight.clone(),
        };
        (RolloutWorker, args)
    }
}

/// Starts verifier workers with their per-call timeout.
pub(super) struct VerifierSpawner(pub(super) Duration);

impl Spawner<VerifierWorker> for VerifierSpawner {
    fn make(&self, _index: usize, pool: ActorRef<PoolMsg<VerifierWorker>>) -> (VerifierWorker, VerifyArgs) {
        (VerifierWorker { timeout: self.0 }, VerifyArgs { pool })
    }
}
