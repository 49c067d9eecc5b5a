//! A worker on a worker node (`rlvr worker`): it joins its role's process group, which
//! `ractor_cluster` mirrors on the run's node, and serves [`RemoteMsg`]s from the run's proxy
//! for it — a rollout worker builds its engine from the run's config and the weights the run
//! sends, then completes jobs; a verifier worker scores responses with the built-in verifiers.
//! A rollout worker that leads a tensor-parallel group relays each message to the group's other
//! ranks first (`tensor_parallel.rs`). A launched engine rank's worker takes each policy version
//! from its [`Inbox`] (the run's weight group), not from weight messages.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rlvr_core::WeightChunk;
use rlvr_rollout::{Engine, NativeEngine, WeightSource};
use rlvr_verifiers::{Registry, Truth, Verifier};
use tch::Device;

use super::proxy::SETUP_TIMEOUT;
use super::rollout::{generate, with_engine};
use super::tensor_parallel::{build_engine, LeaderFeed, Relayed};
use super::verifier::score;
use super::weight_group::{Inbox, WeightGroup};
use super::wire::{
    decode, decode_bucket, encode, Completions, RemoteMsg, RolloutRequest, RolloutSetup, Verdicts,
    VerifierSetup, VerifyRequest,
};

/// What a worker node's workers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Generate completions.
    Rollout,
    /// Score responses.
    Verifier,
}

/// A worker of a worker node.
pub struct RemoteWorker {
    /// Its role.
    pub role: Role,
    /// Where a rollout worker's engine runs.
    pub device: Device,
    /// The tensor-parallel group a rollout worker leads (its engine is split over the group,
    /// and it relays each message to the other ranks first).
    pub tensor_parallel: Option<WeightGroup>,
    /// Where a launched engine rank's policy versions arrive (the run's weight group).
    pub inbox: Option<Arc<Inbox>>,
}

/// State of a remote worker: set up by the run's first message.
#[derive(Default)]
pub struct RemoteState {
    engine: Option<NativeEngine>,
    /// Whether the engine holds the run's weights yet (it is built with random ones).
    loaded: bool,
    pending: Vec<WeightChunk>,
    bad_bucket: Option<String>,
    verifiers: Option<(Registry, Duration)>,
}

impl RemoteWorker {
    async fn setup(&self, bytes: &[u8], state: &mut RemoteState) -> Result<(), String> {
        match self.role {
            Role::Rollout => {
                let s: RolloutSetup = decode(bytes, "rollout set-up")?;
                let in_flight = s.in_flight;
                let (device, group, bytes) = (self.device, self.tensor_parallel.clone(), bytes.to_vec());
                let mut engine = tokio::task::spawn_blocking(move || {
                    if let Some(g) = &group {
                        g.relay(&Relayed::Setup(bytes))?;
                    }
                    build_engine(&s, device, group.as_ref())
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
                if let (Some(inbox), true) = (&self.inbox, in_flight) {
                    tracing::info!(
                        "engine: takes newer weights from the run's weight group between decode steps"
                    );
                    match &self.tensor_parallel {
                        Some(group) => engine.set_weight_feed(Arc::new(LeaderFeed {
                            inbox: inbox.clone(),
                            group: group.clone(),
                        })),
                        None => engine.set_weight_feed(inbox.clone()),
                    }
                }
                state.engine = Some(engine);
            }
            Role::Verifier => {
                let s: VerifierSetup = decode(bytes, "verifier set-up")?;
                let timeout = Duration::from_secs_f64(s.timeout_s.max(0.001));
                state.verifiers = Some((Registry::new(s.mode), timeout));
            }
        }
        Ok(())
    }

    async fn load(&self, version: u64, state: &mut RemoteState) -> Result<(), String> {
        let chunks = std::mem::take(&mut state.pending);
        if let Some(why) = state.bad_bucket.take() {
            return Err(why);
        }
        if state.engine.is_none() {
            return Err("weights before set-up".into());
        }
        let group = self.tensor_parallel.clone();
        with_engine(&mut state.engine, move |e| {
            load(e, group.as_ref(), WeightSource::Chunks(&chunks), version)
        })
        .await
        .map_err(|e| e.to_string())??;
        state.loaded = true;
        Ok(())
    }

    /// Load policy `version` (or a newer one) from the inbox, unless the engine holds it.
    async fn load_synced(&self, version: u64, state: &mut RemoteState) -> Result<(), String> {
        let inbox = self
            .inbox
            .clone()
            .ok_or("this worker is not in the run's weight group")?;
        if state.engine.is_none() {
            return Err("weights before set-up".into());
        }
        let (group, loaded) = (self.tensor_parallel.clone(), state.loaded);
        with_engine(&mut state.engine, move |e| {
            // The proxy waits SETUP_TIMEOUT for the reply; give up a little before it does.
            let wait = SETUP_TIMEOUT.saturating_sub(Duration::from_secs(10));
            let have = loaded.then(|| e.policy_version());
            match inbox.take(version, have, wait)? {
                Some(arrived) => load(e, group.as_ref(), arrived.source(), arrived.version()),
                None => Ok(()),
            }
        })
        .await
        .map_err(|e| e.to_string())??;
        state.loaded = true;
        Ok(())
    }

    async fn generate(&self, bytes: &[u8], state: &mut RemoteState) -> Completions {
        let job: RolloutRequest = decode(bytes, "rollout job")?;
        if state.engine.is_none() {
            return Err("a rollout job before set-up".into());
        }
        let (group, bytes) = (self.tensor_parallel.clone(), bytes.to_vec());
        with_engine(&mut state.engine, move |e| {
            if let Some(g) = &group {
                g.relay(&Relayed::Generate(bytes)).map_err(|e| e.to_string())?;
            }
            generate(e, &job.requests, &job.params).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// A verify job's verifier, parsed ground truth, responses and time limit.
    fn verify_job(&self, bytes: &[u8], state: &RemoteState) -> Result<VerifyWork, String> {
        let job: VerifyRequest = decode(bytes, "verify job")?;
        let (registry, timeout) = state.verifiers.as_ref().ok_or("a verify job before set-up")?;
        let verifier = registry.get(&job.verifier).map_err(|e| e.to_string())?.clone();
        let truth = verifier.parse_truth(&job.label).map_err(|e| e.to_string())?;
        Ok((verifier, Arc::new(truth), job.responses, *timeout))
    }
}

/// Load `weights` into `engine` as `version`, having the tensor-parallel `group`'s other ranks
/// load them first.
fn load(
    engine: &mut NativeEngine,
    group: Option<&WeightGroup>,
    weights: WeightSource<'_>,
    version: u64,
) -> Result<(), String> {
    if let Some(g) = group {
        g.relay_load(weights, version).map_err(|e| format!("{e:#}"))?;
    }
    engine.load(weights, version).map_err(|e| e.to_string())
}

type VerifyWork = (Arc<dyn Verifier>, Arc<Truth>, Vec<String>, Duration);

fn status(r: Result<(), String>) -> String {
    r.err().unwrap_or_default()
}

impl Actor for RemoteWorker {
    type Msg = RemoteMsg;
    type State = RemoteState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<RemoteMsg>,
        _: (),
    ) -> Result<RemoteState, ActorProcessingErr> {
        Ok(RemoteState::default())
    }

    async fn handle(
        &self,
        _myself: ActorRef<RemoteMsg>,
        message: RemoteMsg,
        state: &mut RemoteState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RemoteMsg::Setup(bytes, reply) => {
                let _ = reply.send(status(self.setup(&bytes, state).await));
            }
            RemoteMsg::Bucket(bytes) => match decode_bucket(&bytes) {
                Ok(chunks) => state.pending.extend(chunks),
                Err(why) => state.bad_bucket = Some(why),
            },
            RemoteMsg::Load(version, reply) => {
                let _ = reply.send(status(self.load(version, state).await));
            }
            RemoteMsg::LoadSynced(version, reply) => {
                let _ = reply.send(status(self.load_synced(version, state).await));
            }
            RemoteMsg::Generate(bytes, reply) => {
                let _ = reply.send(encode(&self.generate(&bytes, state).await));
            }
            RemoteMsg::Verify(bytes, reply) => {
                let verdicts: Verdicts = match self.verify_job(&bytes, state) {
                    Ok((verifier, truth, responses, timeout)) => {
                        Ok(score(&verifier, &truth, responses, timeout).await)
                    }
                    Err(why) => Err(why),
                };
                let _ = reply.send(encode(&verdicts));
            }
        }
        Ok(())
    }
}
