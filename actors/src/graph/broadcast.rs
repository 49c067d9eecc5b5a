//! Weight broadcaster: keeps the newest policy weights and pushes each new version to every
//! subscribed rollout worker. A worker that starts (or restarts) subscribes first and gets the
//! newest weights before it takes any job. With in-flight updates the newest weights are also
//! in a shared slot ([`LatestWeights`]) the local engines read between decode steps, and a
//! publication returns as soon as they are there.

use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rlvr_core::WeightChunk;
use rlvr_dist::{PackedWeights, WeightPacker};
use rlvr_learner::checkpoint::export_chunk;
use rlvr_learner::Learner;
use rlvr_rollout::{WeightFeed, WeightSource};

use super::rollout::RolloutMsg;
use super::weight_group::{WeightGroup, BUCKET_BYTES};

/// One version of the policy's weights: a snapshot of the learner's tensors on its device,
/// packed in the buckets the weight group broadcasts ([`Weights::snapshot`]), which local
/// engines copy device to device and the launched engine ranks receive as they lie; or host
/// bytes (a run's starting weights, what arrives on a worker node); or nothing at all when the
/// version went to the launched engine ranks as the learner gathered it
/// ([`Weights::at_engine_ranks`]). Engines on worker nodes need host bytes; they are made from
/// the tensors once, on first use.
#[derive(Debug)]
pub struct Weights {
    /// Policy version (learner steps taken).
    pub version: u64,
    /// The snapshot (`Mutex`: libtorch tensors are `Send` but not `Sync`; engines only read it).
    packed: Option<Mutex<PackedWeights>>,
    /// Host bytes: given, or made from the snapshot on first use (never set when there is
    /// neither).
    chunks: OnceLock<Vec<WeightChunk>>,
}

/// Why a version sent to the launched engine ranks cannot reach any other engine.
const ONLY_AT_ENGINE_RANKS: &str =
    "it went to the launched engine ranks as the ZeRO-3 learner gathered it and is held nowhere else; \
     only engine ranks of this run (`rlvr.vllm_num_engines`) can take this run's weights";

impl Weights {
    /// Weights as host bytes.
    pub fn from_chunks(version: u64, chunks: Vec<WeightChunk>) -> Self {
        Self {
            version,
            packed: None,
            chunks: OnceLock::from(chunks),
        }
    }

    /// A snapshot of an unsharded `learner`'s weights as policy `version`, on its device, in
    /// the weight group's buckets: the one copy a version costs on the learner's side.
    pub fn snapshot(learner: &Learner, version: u64) -> anyhow::Result<Self> {
        let mut packer =
            WeightPacker::new(&learner.weight_table()?, version, BUCKET_BYTES, learner.device())?;
        learner.visit_weights(|name, t| Ok(packer.push(name, t)?))?;
        Ok(Self {
            version,
            packed: Some(Mutex::new(packer.finish()?)),
            chunks: OnceLock::new(),
        })
    }

    /// A version already sent to the launched engine ranks over the run's weight group while
    /// the learner gathered it ([`super::weight_group::WeightGroup::send_learner`]): it holds
    /// no weights, and nothing but those ranks can load it.
    pub fn at_engine_ranks(version: u64) -> Self {
        Self {
            version,
            packed: None,
            chunks: OnceLock::new(),
        }
    }

    /// Whether the version went to the engine ranks already and is held nowhere here.
    pub fn only_at_engine_ranks(&self) -> bool {
        self.packed.is_none() && self.chunks.get().is_none()
    }

    /// Call `f` with the weights as an engine loads them: the tensors when there are some. An
    /// error for a version held only at the engine ranks.
    pub fn with_source<R>(
        &self,
        f: impl FnOnce(WeightSource<'_>) -> rlvr_rollout::Result<R>,
    ) -> rlvr_rollout::Result<R> {
        match (&self.packed, self.chunks.get()) {
            (Some(packed), _) => f(WeightSource::Tensors(lock(packed).tensors())),
            (None, Some(chunks)) => f(WeightSource::Chunks(chunks)),
            (None, None) => Err(rlvr_rollout::RolloutError::Unavailable {
                version: self.version,
                message: ONLY_AT_ENGINE_RANKS.into(),
            }),
        }
    }

    /// The weights as host bytes, for a worker node (copied out of the snapshot once). An
    /// error for a version held only at the engine ranks.
    pub fn chunks(&self) -> anyhow::Result<&[WeightChunk]> {
        if let Some(chunks) = self.chunks.get() {
            return Ok(chunks);
        }
        let Some(packed) = &self.packed else {
            anyhow::bail!("policy version {}: {ONLY_AT_ENGINE_RANKS}", self.version);
        };
        let made = lock(packed)
            .tensors()
            .iter()
            .map(|(name, t)| export_chunk(name.clone(), t, self.version))
            .collect::<rlvr_learner::Result<Vec<_>>>()?;
        Ok(self.chunks.get_or_init(|| made))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The newest published weights, read by local engines between decode steps.
#[derive(Debug, Default)]
pub struct LatestWeights(RwLock<Option<Arc<Weights>>>);

impl LatestWeights {
    fn set(&self, weights: Arc<Weights>) {
        let mut slot = self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = Some(weights);
    }
}

impl WeightFeed for LatestWeights {
    fn load_newer(
        &self,
        version: u64,
        load: &mut dyn FnMut(WeightSource<'_>, u64) -> rlvr_rollout::Result<()>,
    ) -> rlvr_rollout::Result<()> {
        let newest = self
            .0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        match newest {
            Some(w) if w.version > version => w.with_source(|source| load(source, w.version)),
            _ => Ok(()),
        }
    }
}

/// What a broadcast did.
#[derive(Debug, Clone, Copy)]
pub struct BroadcastReport {
    /// Workers now on the new version.
    pub workers: usize,
    /// Seconds from send to the last acknowledgement.
    pub seconds: f64,
}

/// Messages of the broadcaster.
#[derive(ractor_cluster::RactorMessage)]
pub enum BroadcastMsg {
    /// A worker joins; the reply is the newest weights, if any were published.
    Subscribe(ActorRef<RolloutMsg>, RpcReplyPort<Option<Arc<Weights>>>),
    /// Send new weights to every worker; replies once all have loaded them (with in-flight
    /// updates: once they are in the shared slot, before the workers are told).
    Publish(Arc<Weights>, RpcReplyPort<BroadcastReport>),
}

/// State of the broadcaster.
pub struct BroadcastState {
    latest: Option<Arc<Weights>>,
    subscribers: Vec<ActorRef<RolloutMsg>>,
}

/// The broadcaster actor.
pub struct Broadcaster {
    /// Longest a worker may take to load weights (it finishes its current job first).
    pub timeout: Duration,
    /// The slot local engines read between decode steps, when updates are in flight.
    pub in_flight: Option<Arc<LatestWeights>>,
    /// The run's weight group to its launched engine ranks (this process is its rank 0).
    pub engines: Option<WeightGroup>,
}

impl Broadcaster {
    /// Send `weights` over the weight group to the launched engine ranks, if there are some.
    async fn to_engine_ranks(&self, weights: &Arc<Weights>) -> Result<(), ActorProcessingErr> {
        let Some(group) = self.engines.clone() else {
            return Ok(());
        };
        if weights.only_at_engine_ranks() {
            return Ok(());
        }
        let w = weights.clone();
        let stats = tokio::task::spawn_blocking(move || -> anyhow::Result<rlvr_dist::SyncStats> {
            match &w.packed {
                Some(packed) => group.send_packed(&lock(packed)),
                None => w.with_source(|source| Ok(group.send(source, w.version)))?,
            }
        })
        .await?
        .map_err(|e| {
            format!(
                "sending policy version {} to the engine ranks: {e:#}",
                weights.version
            )
        })?;
        tracing::debug!(
            "policy version {} to the engine ranks: {} bytes in {} broadcasts, {:.3} s",
            weights.version,
            stats.bytes,
            stats.buckets,
            stats.seconds
        );
        Ok(())
    }
}

impl Actor for Broadcaster {
    type Msg = BroadcastMsg;
    type State = BroadcastState;
    /// The weights a worker that subscribes before the first publication gets (the run's
    /// starting weights, for workers on other nodes, which cannot read its model directory).
    type Arguments = Option<Arc<Weights>>;

    async fn pre_start(
        &self,
        _myself: ActorRef<BroadcastMsg>,
        latest: Option<Arc<Weights>>,
    ) -> Result<BroadcastState, ActorProcessingErr> {
        if let Some(w) = &latest {
            self.to_engine_ranks(w).await?;
        }
        Ok(BroadcastState {
            latest,
            subscribers: Vec::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<BroadcastMsg>,
        message: BroadcastMsg,
        state: &mut BroadcastState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BroadcastMsg::Subscribe(worker, reply) => {
                state.subscribers.push(worker);
                let _ = reply.send(state.latest.clone());
            }
            BroadcastMsg::Publish(weights, reply) => {
                let started = Instant::now();
                self.to_engine_ranks(&weights).await?;
                state.latest = Some(weights.clone());
                let mut reply = Some(reply);
                if let Some(slot) = &self.in_flight {
                    slot.set(weights.clone());
                    if let Some(reply) = reply.take() {
                        let _ = reply.send(BroadcastReport {
                            workers: state.subscribers.len(),
                            seconds: started.elapsed().as_secs_f64(),
                        });
                    }
                }
                let mut alive = Vec::with_capacity(state.subscribers.len());
                for worker in state.subscribers.drain(..) {
                    let w = weights.clone();
                    let ack = worker
                        .call(|r| RolloutMsg::LoadWeights(w, r), Some(self.timeout))
                        .await;
                    // A worker that died is dropped here; its restart subscribes again.
                    if matches!(ack, Ok(ractor::rpc::CallResult::Success(_))) {
                        alive.push(worker);
                    }
                }
                state.subscribers = alive;
                if let Some(reply) = reply {
                    let _ = reply.send(BroadcastReport {
                        workers: state.subscribers.len(),
                        seconds: started.elapsed().as_secs_f64(),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Weights;

    /// A version a ZeRO-3 learner sent to the engine ranks as it gathered it holds no weights:
    /// an engine or a worker node asking for them gets an error, not an empty load.
    #[test]
    fn a_version_held_only_at_the_engine_ranks_loads_nowhere_else() {
        let w = Weights::at_engine_ranks(3);
        assert!(w.only_at_engine_ranks());
        let err = w.with_source(|_| Ok(())).unwrap_err().to_string();
        assert!(
            err.contains("policy version 3") && err.contains("held nowhere else"),
            "{err}"
        );
        let err = w.chunks().unwrap_err().to_string();
        assert!(err.contains("only engine ranks of this run"), "{err}");
        assert!(!Weights::from_chunks(3, Vec::new()).only_at_engine_ranks());
    }
}
