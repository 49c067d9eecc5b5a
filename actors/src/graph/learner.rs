//! Learner actor: owns the policy being trained (one rank until ZeRO-3 shards it), its frozen
//! reference and, for PPO, the value model. One message per RL step: the scored samples in; with
//! an off-policy correction, the policy's own log-probs of them and each token's weight;
//! optimiser steps over mini-batches and epochs (the first measures the train/rollout
//! mismatch); the new weights out for the broadcaster.

use std::path::PathBuf;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rlvr_core::{PolicyBatch, PolicySample};
use rlvr_learner::off_policy::{Correction, Mismatch};
use rlvr_learner::policy::{PolicyLoss, PolicyMetrics};
use rlvr_learner::Learner;

use super::broadcast::Weights;

/// How the learner turns one RL step's samples into optimiser steps.
#[derive(Debug, Clone, Copy)]
pub struct LearnSettings {
    /// The loss.
    pub loss: PolicyLoss,
    /// How the ratio between the learner's and the rollout's log-probs weighs each token.
    pub correction: Correction,
    /// Passes over each step's samples.
    pub epochs: usize,
    /// Samples per optimiser step.
    pub mini_batch: usize,
    /// Samples per forward pass (gradient accumulation inside a mini-batch).
    pub micro_batch: usize,
    /// Padding token id.
    pub pad_id: i64,
}

/// What one RL step's learning produced.
pub struct LearnReport {
    /// One entry per optimiser step.
    pub steps: Vec<PolicyMetrics>,
    /// The new weights, tagged with the new policy version.
    pub weights: Arc<Weights>,
    /// How far the learner's log-probs were from the rollout's when the step began (over the
    /// first mini-batch when no correction recomputes them all).
    pub mismatch: Mismatch,
    /// Seconds spent recomputing the samples' log-probs under the learner's policy (only
    /// with an off-policy correction).
    pub proximal_s: f64,
    /// Seconds spent in the optimiser steps.
    pub train_s: f64,
    /// Seconds spent exporting the new weights.
    pub export_s: f64,
}

/// What the learner says of one sample's response tokens before PPO's advantages are made.
#[derive(Debug, Clone)]
pub struct Scores {
    /// Log-probs under the frozen reference policy.
    pub reference: Vec<f32>,
    /// The value model's estimates.
    pub values: Vec<f32>,
    /// The reward model's score of the response, when one scores.
    pub reward_model: Option<f32>,
}

/// Messages of the learner actor.
#[derive(ractor_cluster::RactorMessage)]
pub enum LearnerMsg {
    /// Train on one RL step's samples.
    Learn(Vec<PolicySample>, RpcReplyPort<anyhow::Result<LearnReport>>),
    /// Each sample's reference log-probs and value estimates per response token, and its
    /// reward model score.
    Score(Vec<PolicySample>, RpcReplyPort<anyhow::Result<Vec<Scores>>>),
    /// Save a checkpoint (model, optimiser state) into a directory.
    Save(PathBuf, RpcReplyPort<anyhow::Result<()>>),
    /// Save the model alone, in Hugging Face format.
    SaveModel(PathBuf, RpcReplyPort<anyhow::Result<()>>),
}

/// State of the learner actor.
pub struct LearnerState {
    learner: Option<Learner>,
    settings: LearnSettings,
}

/// The learner actor.
pub struct LearnerActor;

fn learn(
    learner: &mut Learner,
    mut samples: Vec<PolicySample>,
    s: &LearnSettings,
) -> anyhow::Result<LearnReport> {
    let started = std::time::Instant::now();
    // With a correction the learner's own log-probs are needed before any update; without
    // one, the first optimiser step measures the mismatch for free (its ratio is to them).
    let mut mismatch = None;
    if s.correction.is_active() {
        let proximal = proximal_logprobs(learner, &samples, s)?;
        let responses = proximal
            .iter()
            .zip(&samples)
            .map(|(p, x)| (&p[..], &x.logprobs[..]));
        mismatch = Some(Mismatch::measure(responses, s.correction));
        for (sample, proximal) in samples.iter_mut().zip(proximal) {
            sample.is_weights = s.correction.weights(&proximal, &sample.logprobs);
            sample.proximal_logprobs = proximal;
        }
    }
    let proximal_s = started.elapsed().as_secs_f64();
    let mut steps = Vec::new();
    for _ in 0..s.epochs.max(1) {
        for mini in samples.chunks(s.mini_batch.max(1)) {
            let micro: Vec<PolicyBatch> = mini
                .chunks(s.micro_batch.max(1))
                .map(|m| PolicyBatch::from_samples(m, s.pad_id))
                .collect();
            steps.push(learner.policy_step(&micro, &s.loss)?);
        }
    }
    let train_s = started.elapsed().as_secs_f64() - proximal_s;
    let mismatch =
        mismatch.unwrap_or_else(|| steps.first().map(Mismatch::from_first_step).unwrap_or_default());
    let version = learner.steps_taken();
    let weights = Arc::new(Weights {
        version,
        chunks: learner.export_weights(version)?,
    });
    Ok(LearnReport {
        steps,
        weights,
        mismatch,
        proximal_s,
        train_s,
        export_s: started.elapsed().as_secs_f64() - train_s - proximal_s,
    })
}

/// Each sample's response-token log-probs under the learner's policy as it stands.
fn proximal_logprobs(
    learner: &Learner,
    samples: &[PolicySample],
    s: &LearnSettings,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(samples.len());
    for micro in samples.chunks(s.micro_batch.max(1)) {
        let batch = PolicyBatch::from_samples(micro, s.pad_id);
        let logprobs = learner.logprobs(&batch, &s.loss.distribution)?;
        for (row, sample) in micro.iter().enumerate() {
            let start = row * batch.cols;
            out.push(logprobs[start..start + sample.response_ids.len()].to_vec());
        }
    }
    Ok(out)
}

/// Reference log-probs and values of each sample's response tokens, and its reward-model score.
fn score(learner: &Learner, samples: &[PolicySample], s: &LearnSettings) -> anyhow::Result<Vec<Scores>> {
    let mut out = Vec::with_capacity(samples.len());
    for micro in samples.chunks(s.micro_batch.max(1)) {
        let batch = PolicyBatch::from_samples(micro, s.pad_id);
        let scores = learner.score(&batch, &s.loss.distribution)?;
        for (row, sample) in micro.iter().enumerate() {
            let start = row * batch.cols;
            let span = start..start + sample.response_ids.len();
            out.push(Scores {
                reference: scores.reference[span.clone()].to_vec(),
                values: scores.values[span].to_vec(),
                reward_model: scores.rewards.as_ref().map(|r| r[row]),
            });
        }
    }
    Ok(out)
}

impl LearnerState {
    /// Run `f` on the learner on a blocking thread.
    async fn run<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Learner, &LearnSettings) -> T + Send + 'static,
    ) -> Result<T, ActorProcessingErr> {
        let mut learner = self.learner.take().ok_or("learner lost by an earlier failure")?;
        let settings = self.settings;
        let (learner, out) = tokio::task::spawn_blocking(move || {
            let out = f(&mut learner, &settings);
            super::memory::return_freed_memory();
            (learner, out)
        })
        .await?;
        self.learner = Some(learner);
        Ok(out)
    }
}

impl Actor for LearnerActor {
    type Msg = LearnerMsg;
    type State = LearnerState;
    type Arguments = (Learner, LearnSettings);

    async fn pre_start(
        &self,
        _myself: ActorRef<LearnerMsg>,
        (learner, settings): (Learner, LearnSettings),
    ) -> Result<LearnerState, ActorProcessingErr> {
        Ok(LearnerState {
            learner: Some(learner),
            settings,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<LearnerMsg>,
        message: LearnerMsg,
        state: &mut LearnerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            LearnerMsg::Learn(samples, reply) => {
                let out = state.run(move |l, s| learn(l, samples, s)).await?;
                let _ = reply.send(out);
            }
            LearnerMsg::Score(samples, reply) => {
                let out = state.run(move |l, s| score(l, &samples, s)).await?;
                let _ = reply.send(out);
            }
            LearnerMsg::Save(dir, reply) => {
                let out = state
                    .run(move |l, _| l.save_checkpoint(&dir).map_err(anyhow::Error::from))
                    .await?;
                let _ = reply.send(out);
            }
            LearnerMsg::SaveModel(dir, reply) => {
                let out = state
                    .run(move |l, _| l.save_model(&dir).map_err(anyhow::Error::from))
                    .await?;
                let _ = reply.send(out);
            }
        }
        Ok(())
    }
}
