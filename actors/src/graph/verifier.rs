//! Verifier worker: scores responses with the verifiers crate, each call under a timeout. A
//! verifier that hangs is abandoned on its thread, and one that panics is caught; either way the
//! response is scored as failed with the reason, so one bad response cannot stall a step.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rlvr_core::Verdict;
use rlvr_verifiers::{Truth, Verifier};

use super::pool::{JobId, PoolMsg, PoolWorker};

/// Responses to one prompt, to score against its ground truth.
#[derive(Clone)]
pub struct VerifyJob {
    /// The verifier the prompt's data set routes to.
    pub verifier: Arc<dyn Verifier>,
    /// The prompt's parsed ground truth.
    pub truth: Arc<Truth>,
    /// The ground truth unparsed, for a verifier on another node.
    pub label: Arc<str>,
    /// Decoded responses.
    pub responses: Vec<String>,
}

/// Messages of a verifier worker.
#[derive(ractor_cluster::RactorMessage)]
pub enum VerifyMsg {
    /// Score a job for the pool.
    Run(JobId, VerifyJob),
}

/// Start-up arguments of a verifier worker.
pub struct VerifyArgs {
    /// The pool that deals jobs.
    pub pool: ActorRef<PoolMsg<VerifierWorker>>,
}

/// The verifier worker actor.
pub struct VerifierWorker {
    /// Longest one verify call may take.
    pub timeout: Duration,
}

impl PoolWorker for VerifierWorker {
    type Job = VerifyJob;
    type Output = Vec<Verdict>;

    fn assign(id: JobId, job: VerifyJob) -> VerifyMsg {
        VerifyMsg::Run(id, job)
    }
}

impl Actor for VerifierWorker {
    type Msg = VerifyMsg;
    type State = ActorRef<PoolMsg<VerifierWorker>>;
    type Arguments = VerifyArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<VerifyMsg>,
        args: VerifyArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args.pool)
    }

    async fn handle(
        &self,
        _myself: ActorRef<VerifyMsg>,
        message: VerifyMsg,
        pool: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let VerifyMsg::Run(job, work) = message;
        let output = score(&work.verifier, &work.truth, work.responses, self.timeout).await;
        pool.send_message(PoolMsg::Done { job, output })?;
        Ok(())
    }
}

/// Score `responses` one by one, each call on a blocking thread under `timeout`: a call that
/// panics or hangs is scored failed with the reason.
pub async fn score(
    verifier: &Arc<dyn Verifier>,
    truth: &Arc<Truth>,
    responses: Vec<String>,
    timeout: Duration,
) -> Vec<Verdict> {
    let mut output = Vec::with_capacity(responses.len());
    for response in responses {
        let (v, t) = (verifier.clone(), truth.clone());
        let call = tokio::task::spawn_blocking(move || v.verify_score(&response, &t));
        let name = verifier.name();
        let failed = |reason: String| Verdict::new(0.0, false, reason);
        output.push(match tokio::time::timeout(timeout, call).await {
            Ok(Ok(verdict)) => verdict,
            // A verifier that panics on one response would panic again on a retry: score it
            // failed, with the reason, instead of restarting the worker over it.
            Ok(Err(panic)) => failed(format!("verifier `{name}` panicked: {panic}")),
            Err(_) => failed(format!(
                "verifier `{name}` timed out after {:.1}s",
                timeout.as_secs_f64()
            )),
        });
    }
    output
}
