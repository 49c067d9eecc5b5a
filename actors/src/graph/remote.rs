//! A worker on a worker node (`rlvr worker`): it joins its role's process group, which
//! `ractor_cluster` mirrors on the run's node, and serves [`RemoteMsg`]s from the run's proxy
//! for it — a rollout worker builds its engine from the run's config and the weights the run
//! sends, then completes jobs; a verifier worker scores responses with the built-in verifiers.
//! A rollout worker that leads a tensor-parallel group relays each message to the group's other
//! ranks first (`tensor_parallel.rs`).

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rlvr_core::WeightChunk;
use rlvr_rollout::{Engine, NativeEngine};
use rlvr_verifiers::{Registry, Truth, Verifier};
use tch::Device;

use super::rollout::{generate, with_engine};
use super::tensor_parallel::{build_engine, Group, Relayed};
use super::verifier::score;
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
    pub tensor_parallel: Option<Group>,
}

/// State of a remote worker: set up by the run's first message.
#[derive(Default)]
pub struct RemoteState {
    engine: Option<NativeEngine>,
    pending: Vec<WeightChunk>,
    bad_bucket: Option<String>,
    verifiers: Option<(Registry, Duration)>,
}

impl RemoteWorker {
    async fn setup(&self, bytes: &[u8], state: &mut RemoteState) -> Result<(), String> {
        match self.role {
            Role::Rollout => {
                let s: RolloutSetup = decode(bytes, "rollout set-up")?;
                let (device, group, bytes) = (self.device, self.tensor_parallel.clone(), bytes.to_vec());
                let engine = tokio::task::spawn_blocking(move || {
                    if let Some(g) = &group {
                        g.relay(&Relayed::Setup(bytes), &[])?;
                    }
                    build_engine(&s, device, group.as_ref())
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
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
            if let Some(g) = &group {
                g.relay(&Relayed::Load(version), &chunks)
                    .map_err(|e| e.to_string())?;
            }
            e.load_weights(&chunks, version).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    async fn generate(&self, bytes: &[u8], state: &mut RemoteState) -> Completions {
        let job: RolloutRequest = decode(bytes, "rollout job")?;
        if state.engine.is_none() {
            return Err("a rollout job before set-up".into());
        }
        let (group, bytes) = (self.tensor_parallel.clone(), bytes.to_vec());
        with_engine(&mut state.engine, move |e| {
            if let Some(g) = &group {
                g.relay(&Relayed::Generate(bytes), &[])
                    .map_err(|e| e.to_string())?;
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
