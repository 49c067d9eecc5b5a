//! Rollout worker: owns one inference engine, completes the prompt groups the rollout pool deals
//! it, and swaps in new weights from the broadcaster between jobs — so every completion comes
//! from exactly one policy version — or, with in-flight updates, between decode steps from the
//! broadcaster's shared slot, each token tagged with its version.

use std::path::PathBuf;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rlvr_core::{GenerationRequest, SamplingParams};
use rlvr_rollout::{Engine, NativeEngine, WeightFeed};
use tch::{Device, Kind};

use super::broadcast::{BroadcastMsg, Weights};
use super::pool::{JobId, PoolMsg, PoolWorker};
use super::wire::{EngineOptions, Generated};

/// Prompts to complete with one set of sampling settings.
#[derive(Debug, Clone)]
pub struct RolloutJob {
    /// The prompts, each completed `n` times.
    pub requests: Vec<GenerationRequest>,
    /// Sampling settings.
    pub params: Arc<SamplingParams>,
}

/// Messages of a rollout worker.
#[derive(ractor_cluster::RactorMessage)]
pub enum RolloutMsg {
    /// Generate a job for the pool.
    Run(JobId, RolloutJob),
    /// Load new weights; replies with the version now in use.
    LoadWeights(Arc<Weights>, RpcReplyPort<u64>),
}

/// Start-up arguments of a rollout worker.
pub struct RolloutArgs {
    /// Model directory the engine starts from.
    pub model: PathBuf,
    /// The policy version of the weights in `model` (0, or the step of a resumed checkpoint).
    pub version: u64,
    /// Where the engine runs.
    pub device: Device,
    /// Element type of its weights and KV cache.
    pub kind: Kind,
    /// Free the KV cache after each job: the engine shares its device with the learner, which
    /// steps while the engine waits for the next job.
    pub free_cache_between_jobs: bool,
    /// Sequences in flight at once.
    pub max_batch: usize,
    /// Its KV cache and decode steps.
    pub options: EngineOptions,
    /// The pool that deals jobs.
    pub pool: ActorRef<PoolMsg<RolloutWorker>>,
    /// Where newer weights come from.
    pub broadcaster: ActorRef<BroadcastMsg>,
    /// Where the engine takes newer weights between decode steps (in-flight updates).
    pub in_flight: Option<Arc<dyn WeightFeed>>,
}

/// State of a rollout worker.
pub struct RolloutState {
    engine: Option<NativeEngine>,
    pool: ActorRef<PoolMsg<RolloutWorker>>,
    free_cache_between_jobs: bool,
}

/// The rollout worker actor.
pub struct RolloutWorker;

impl PoolWorker for RolloutWorker {
    type Job = RolloutJob;
    type Output = Generated;

    fn assign(id: JobId, job: RolloutJob) -> RolloutMsg {
        RolloutMsg::Run(id, job)
    }
}

/// Run `f` on the engine on a blocking thread (an await point, so a kill interrupts the wait).
pub(crate) async fn with_engine<T: Send + 'static>(
    slot: &mut Option<NativeEngine>,
    f: impl FnOnce(&mut NativeEngine) -> T + Send + 'static,
) -> Result<T, ActorProcessingErr> {
    let mut engine = slot.take().ok_or("engine lost by an earlier failure")?;
    let (engine, out) = tokio::task::spawn_blocking(move || {
        let out = f(&mut engine);
        rlvr_learner::runtime::return_freed_memory();
        (engine, out)
    })
    .await?;
    *slot = Some(engine);
    Ok(out)
}

/// Complete `requests` with `engine`, with its in-flight batch.
pub(crate) fn generate(
    engine: &mut NativeEngine,
    requests: &[GenerationRequest],
    params: &SamplingParams,
) -> rlvr_rollout::Result<Generated> {
    let completions = engine.generate(requests, params)?;
    Ok(Generated {
        completions,
        peak_sequences: engine.peak_sequences(),
    })
}

impl Actor for RolloutWorker {
    type Msg = RolloutMsg;
    type State = RolloutState;
    type Arguments = RolloutArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RolloutMsg>,
        args: RolloutArgs,
    ) -> Result<RolloutState, ActorProcessingErr> {
        let (model, device, kind) = (args.model, args.device, args.kind);
        let (max_batch, version) = (args.max_batch, args.version);
        let mut engine = tokio::task::spawn_blocking(move || {
            NativeEngine::from_pretrained(&model, device, kind, max_batch).map(|e| e.at_version(version))
        })
        .await??;
        args.options.apply(&mut engine)?;
        if let Some(feed) = args.in_flight {
            engine.set_weight_feed(feed);
        }
        let mut state = RolloutState {
            engine: Some(engine),
            pool: args.pool,
            free_cache_between_jobs: args.free_cache_between_jobs,
        };
        // Subscribe before taking jobs, and start from the newest weights.
        let latest = ractor::call!(args.broadcaster, BroadcastMsg::Subscribe, myself)?;
        if let Some(w) = latest {
            with_engine(&mut state.engine, move |e| {
                w.with_source(|source| e.load(source, w.version))
            })
            .await??;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<RolloutMsg>,
        message: RolloutMsg,
        state: &mut RolloutState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RolloutMsg::Run(job, work) => {
                let free_cache = state.free_cache_between_jobs;
                let output = with_engine(&mut state.engine, move |e| {
                    let output = generate(e, &work.requests, &work.params);
                    if free_cache {
                        e.release_cache();
                    }
                    output
                })
                .await??;
                state.pool.send_message(PoolMsg::Done { job, output })?;
            }
            RolloutMsg::LoadWeights(w, reply) => {
                // An engine fed in flight may already hold these weights, or newer ones.
                let version = with_engine(&mut state.engine, move |e| {
                    if e.policy_version() < w.version {
                        w.with_source(|source| e.load(source, w.version))?;
                    }
                    Ok::<u64, rlvr_rollout::RolloutError>(e.policy_version())
                })
                .await??;
                let _ = reply.send(version);
            }
        }
        Ok(())
    }
}
