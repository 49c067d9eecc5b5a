//! The run's stand-ins for workers on worker nodes. A proxy is a pool worker like a local one —
//! the rollout pool deals it jobs, the broadcaster sends it weights — and passes each on to its
//! remote worker as a [`RemoteMsg`], weights in buckets (or, to a launched engine rank, which
//! received them over the run's weight group, only the word to load them). When the remote
//! call fails (its node died, the connection dropped, it timed out) the proxy fails, and the
//! pool re-queues its job.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, BytesConvertable, RpcReplyPort};

use super::broadcast::{BroadcastMsg, Weights};
use super::pool::{PoolMsg, PoolWorker};
use super::rollout::{RolloutMsg, RolloutWorker};
use super::verifier::{score, VerifierWorker, VerifyMsg};
use super::wire::{
    decode, encode, encode_buckets, Completions, RemoteMsg, RolloutRequest, Verdicts, VerifyRequest,
};

/// Longest a remote rollout or verify job may take before its worker is given up on.
const JOB_TIMEOUT: Duration = Duration::from_secs(1800);
/// Longest a remote worker may take to set up or to load weights.
pub(crate) const SETUP_TIMEOUT: Duration = Duration::from_secs(600);
/// Bytes of weights per message.
const BUCKET_BYTES: usize = 64 << 20;

/// Call `remote` and wait for its reply.
pub(crate) async fn call<T: BytesConvertable + Send + 'static>(
    remote: &ActorRef<RemoteMsg>,
    msg: impl FnOnce(RpcReplyPort<T>) -> RemoteMsg,
    timeout: Duration,
) -> Result<T, ActorProcessingErr> {
    match remote.call(msg, Some(timeout)).await? {
        CallResult::Success(reply) => Ok(reply),
        CallResult::Timeout => Err(format!("no reply within {}s", timeout.as_secs()).into()),
        CallResult::SenderError => Err("its node went away".into()),
    }
}

/// A call whose reply is `""` on success and the error otherwise.
pub(crate) async fn call_status(
    remote: &ActorRef<RemoteMsg>,
    msg: impl FnOnce(RpcReplyPort<String>) -> RemoteMsg,
) -> Result<(), ActorProcessingErr> {
    match call(remote, msg, SETUP_TIMEOUT).await? {
        ok if ok.is_empty() => Ok(()),
        why => Err(why.into()),
    }
}

/// Start-up arguments of either proxy.
pub struct ProxyArgs<P: PoolWorker> {
    /// The worker on the other node.
    pub remote: ActorRef<RemoteMsg>,
    /// Its set-up message (JSON).
    pub setup: Vec<u8>,
    /// The pool that deals jobs.
    pub pool: ActorRef<PoolMsg<P>>,
}

/// State of a proxy.
pub struct ProxyState<P: PoolWorker> {
    remote: ActorRef<RemoteMsg>,
    pool: ActorRef<PoolMsg<P>>,
}

/// Stand-in for a rollout worker on a worker node.
pub struct RolloutProxy {
    /// Where weights come from.
    pub broadcaster: ActorRef<BroadcastMsg>,
    /// The worker is a launched engine rank's: every version the broadcaster holds went to it
    /// over the run's weight group.
    pub synced: bool,
}

impl RolloutProxy {
    /// Have `remote` load `w`: from its weight group, or sent in buckets.
    async fn deliver(&self, remote: &ActorRef<RemoteMsg>, w: &Weights) -> Result<(), ActorProcessingErr> {
        match self.synced {
            true => call_status(remote, |r| RemoteMsg::LoadSynced(w.version, r)).await,
            false => send_weights(remote, w, BUCKET_BYTES).await.map(drop),
        }
    }
}

/// Send `w` to `remote` in buckets of about `bucket_bytes`, then have it load them; returns
/// the number of buckets.
pub(crate) async fn send_weights(
    remote: &ActorRef<RemoteMsg>,
    w: &Weights,
    bucket_bytes: usize,
) -> Result<usize, ActorProcessingErr> {
    let buckets = encode_buckets(w.chunks()?, bucket_bytes);
    let n = buckets.len();
    for bucket in buckets {
        remote.send_message(RemoteMsg::Bucket(bucket))?;
    }
    call_status(remote, |r| RemoteMsg::Load(w.version, r)).await?;
    Ok(n)
}

impl Actor for RolloutProxy {
    type Msg = RolloutMsg;
    type State = ProxyState<RolloutWorker>;
    type Arguments = ProxyArgs<RolloutWorker>;

    async fn pre_start(
        &self,
        myself: ActorRef<RolloutMsg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let remote = args.remote;
        call_status(&remote, |r| RemoteMsg::Setup(args.setup, r)).await?;
        // The run seeds the broadcaster with its starting weights, so there are always some.
        let latest = ractor::call!(self.broadcaster, BroadcastMsg::Subscribe, myself)?
            .ok_or("the broadcaster holds no weights for a remote worker")?;
        self.deliver(&remote, &latest).await?;
        Ok(ProxyState {
            remote,
            pool: args.pool,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RolloutMsg>,
        message: RolloutMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RolloutMsg::Run(job, work) => {
                let request = encode(&RolloutRequest {
                    requests: work.requests,
                    params: (*work.params).clone(),
                });
                let reply = call(&state.remote, |r| RemoteMsg::Generate(request, r), JOB_TIMEOUT).await?;
                let output = decode::<Completions>(&reply, "completions")??;
                state.pool.send_message(PoolMsg::Done { job, output })?;
            }
            RolloutMsg::LoadWeights(w, reply) => {
                self.deliver(&state.remote, &w).await?;
                let _ = reply.send(w.version);
            }
        }
        Ok(())
    }
}

/// Stand-in for a verifier worker on a worker node. A job the node cannot score (its `rlvr`
/// lacks the verifier, or the job did not parse there) is scored here, on the run's node.
pub struct VerifierProxy {
    /// Longest one verify call may take, for jobs scored here.
    pub timeout: Duration,
}

impl Actor for VerifierProxy {
    type Msg = VerifyMsg;
    type State = ProxyState<VerifierWorker>;
    type Arguments = ProxyArgs<VerifierWorker>;

    async fn pre_start(
        &self,
        _myself: ActorRef<VerifyMsg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        call_status(&args.remote, |r| RemoteMsg::Setup(args.setup, r)).await?;
        Ok(ProxyState {
            remote: args.remote,
            pool: args.pool,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<VerifyMsg>,
        message: VerifyMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let VerifyMsg::Run(job, work) = message;
        let request = encode(&VerifyRequest {
            verifier: work.verifier.name().to_string(),
            label: work.label.to_string(),
            responses: work.responses.clone(),
        });
        let reply = call(&state.remote, |r| RemoteMsg::Verify(request, r), JOB_TIMEOUT).await?;
        let output = match decode::<Verdicts>(&reply, "verdicts")? {
            Ok(verdicts) => verdicts,
            Err(why) => {
                tracing::info!(
                    "verifier `{}`: a worker node could not score a job ({why}); scored on the run's node",
                    work.verifier.name()
                );
                score(&work.verifier, &work.truth, work.responses, self.timeout).await
            }
        };
        state.pool.send_message(PoolMsg::Done { job, output })?;
        Ok(())
    }
}
