//! Learner actor: owns the policy being trained, its frozen reference and, for PPO, the value
//! model. One message per RL step: the scored samples in; with an off-policy correction, the
//! policy's own log-probs of them and each token's weight; optimiser steps over mini-batches
//! and epochs (the first measures the train/rollout mismatch); the new weights out for the
//! broadcaster.
//!
//! Over several learner ranks (`learner.world_size`: ZeRO-3 shards or data-parallel copies) the
//! actor is rank 0: before each collective it sends the same request to the other ranks
//! ([`RankRequest`], over a Gloo group of their own), which [`follow`] it; every rank steps on
//! its share of each mini-batch ([`share`]), and scores (or recomputes the log-probs of) its
//! share of a step's samples, the rows gathered back over the requests group.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rlvr_core::{PolicyBatch, PolicySample};
use rlvr_dist::ProcessGroup;
use rlvr_learner::off_policy::{Correction, Mismatch};
use rlvr_learner::policy::{PolicyLoss, PolicyMetrics};
use rlvr_learner::Learner;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::broadcast::Weights;
use super::weight_group::WeightGroup;

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
    /// What each learner rank holds after the step.
    pub ranks_memory: Vec<super::memory::RankMemory>,
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
    ranks: Option<Ranks>,
    engines: Option<WeightGroup>,
}

/// What the learner actor starts with.
pub struct LearnerArgs {
    /// The learner (rank 0's, with other ranks).
    pub learner: Learner,
    /// How it learns.
    pub settings: LearnSettings,
    /// The other learner ranks, if any.
    pub ranks: Option<Ranks>,
    /// The run's weight group to its launched engine ranks, if it has some: a ZeRO-3
    /// learner sends each new version over it as it gathers it.
    pub engines: Option<WeightGroup>,
}

/// The learner actor.
pub struct LearnerActor;

/// What rank 0 asks of the other learner ranks: the collectives they must join.
#[derive(Debug, Serialize, Deserialize)]
pub enum RankRequest {
    /// Learn from one RL step's samples (each rank takes its share), then export the weights.
    Learn(Vec<PolicySample>),
    /// Score one RL step's samples (each rank its share).
    Score(Vec<PolicySample>),
    /// Save a checkpoint into a directory.
    Save(PathBuf),
    /// Save the model alone into a directory.
    SaveModel(PathBuf),
    /// Export the weights as this policy version (worker nodes start from them).
    Export(u64),
    /// The stage is over.
    Stop,
}

/// The other learner ranks, seen from rank 0: the group requests go over.
pub struct Ranks {
    /// A Gloo group of every learner rank, for requests only.
    pub requests: ProcessGroup,
}

impl Ranks {
    /// Send `request` to every other rank.
    pub fn send(&self, request: &RankRequest) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(request)?;
        let mut len = Tensor::from_slice(&[bytes.len() as i64]);
        self.requests.broadcast(&mut len, 0)?;
        let mut payload = Tensor::from_slice(&bytes);
        self.requests.broadcast(&mut payload, 0)?;
        Ok(())
    }
}

/// The other ranks stop when rank 0's learner goes, however the stage ended.
impl Drop for Ranks {
    fn drop(&mut self) {
        if let Err(e) = self.send(&RankRequest::Stop) {
            tracing::warn!("telling the other learner ranks to stop: {e:#}");
        }
    }
}

/// Wait for rank 0's next request.
fn receive(requests: &ProcessGroup) -> anyhow::Result<RankRequest> {
    let mut len = Tensor::from_slice(&[0i64]);
    requests.broadcast(&mut len, 0)?;
    let mut payload = Tensor::zeros([len.int64_value(&[0])], (Kind::Uint8, tch::Device::Cpu));
    requests.broadcast(&mut payload, 0)?;
    let bytes = Vec::<u8>::try_from(&payload).map_err(|e| anyhow!("reading a rank request: {e}"))?;
    serde_json::from_slice(&bytes).context("a rank request from rank 0")
}

/// A learner rank other than 0: take rank 0's requests, joining its collectives, until it
/// says the stage is over.
pub fn follow(mut learner: Learner, s: &LearnSettings, requests: &ProcessGroup) -> anyhow::Result<()> {
    loop {
        match receive(requests)? {
            RankRequest::Learn(samples) => {
                learn(&mut learner, samples, s, Some(requests), None)?;
            }
            RankRequest::Score(samples) => {
                score(&learner, &samples, s, Some(requests))?;
            }
            RankRequest::Save(dir) => learner.save_checkpoint(&dir)?,
            RankRequest::SaveModel(dir) => learner.save_model(&dir)?,
            RankRequest::Export(version) => drop(learner.export_weights(version)?),
            RankRequest::Stop => return Ok(()),
        }
    }
}

/// This rank's micro-batches of a mini-batch of `samples`: the mini-batch split into one
/// contiguous share per rank, each share into the same number of micro-batches on every rank
/// (so their collectives pair up), of about `micro_batch` samples. A mini-batch smaller than
/// the group is an error.
pub fn share(
    samples: &[PolicySample],
    micro_batch: usize,
    rank: usize,
    world: usize,
) -> anyhow::Result<Vec<&[PolicySample]>> {
    let n = samples.len();
    if n < world {
        bail!("a mini-batch of {n} responses cannot be shared by {world} learner ranks");
    }
    let bounds = |r: usize| r * n / world;
    let mine = &samples[bounds(rank)..bounds(rank + 1)];
    let (smallest, largest) = (n / world, n.div_ceil(world));
    let parts = largest.div_ceil(micro_batch.max(1)).min(smallest).max(1);
    Ok((0..parts)
        .map(|p| &mine[p * mine.len() / parts..(p + 1) * mine.len() / parts])
        .collect())
}

/// Learn from one RL step's `samples`, then export the new weights: to the launched engine
/// ranks over `engines` (rank 0 of a run that has some), or for this process's broadcaster.
fn learn(
    learner: &mut Learner,
    mut samples: Vec<PolicySample>,
    s: &LearnSettings,
    requests: Option<&ProcessGroup>,
    engines: Option<&WeightGroup>,
) -> anyhow::Result<LearnReport> {
    let started = std::time::Instant::now();
    // With a correction the learner's own log-probs are needed before any update; without
    // one, the first optimiser step measures the mismatch for free (its ratio is to them).
    let mut mismatch = None;
    if s.correction.is_active() {
        let proximal = proximal_logprobs(learner, &samples, s, requests)?;
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
    let (rank, world) = learner
        .with_group(|g| (g.rank(), g.world_size()))
        .unwrap_or((0, 1));
    for _ in 0..s.epochs.max(1) {
        for mini in samples.chunks(s.mini_batch.max(1)) {
            let micro: Vec<PolicyBatch> = share(mini, s.micro_batch, rank, world)?
                .into_iter()
                .map(|m| PolicyBatch::from_samples(m, s.pad_id))
                .collect();
            steps.push(learner.policy_step(&micro, &s.loss)?);
        }
    }
    let train_s = started.elapsed().as_secs_f64() - proximal_s;
    let mismatch =
        mismatch.unwrap_or_else(|| steps.first().map(Mismatch::from_first_step).unwrap_or_default());
    let version = learner.steps_taken();
    // An unsharded learner's snapshot stays on its device, packed as the weight group sends it
    // (local engines copy it device to device). A ZeRO-3 learner's goes to the launched engine
    // ranks as its ranks gather it, unit by unit, or is assembled in host memory unit by unit:
    // no device, and with engine ranks no host either, ever holds its whole model.
    let weights = Arc::new(match (learner.is_sharded(), engines) {
        (true, Some(group)) => {
            let sent = group.send_learner(learner, version)?;
            tracing::debug!(
                "policy version {version} to the engine ranks as it was gathered: {} bytes in {} broadcasts, {:.3} s",
                sent.bytes,
                sent.buckets,
                sent.seconds
            );
            Weights::at_engine_ranks(version)
        }
        (true, None) => Weights::from_chunks(version, learner.export_weights(version)?),
        (false, _) => Weights::snapshot(learner, version)?,
    });
    let export_s = started.elapsed().as_secs_f64() - train_s - proximal_s;
    Ok(LearnReport {
        steps,
        weights,
        mismatch,
        proximal_s,
        train_s,
        export_s,
        ranks_memory: super::memory::ranks_memory(learner)?,
    })
}

/// Rows of numbers per sample, `rows_of` each micro-batch of them: over several learner ranks,
/// each rank takes its share ([`share`], the same number of micro-batches on every rank, so
/// the learner's collectives pair up) and the rows are gathered back, in sample order, over
/// the `requests` group.
fn per_sample(
    learner: &Learner,
    samples: &[PolicySample],
    s: &LearnSettings,
    requests: Option<&ProcessGroup>,
    mut rows_of: impl FnMut(&Learner, &[PolicySample]) -> anyhow::Result<Vec<Vec<f32>>>,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let Some(requests) = requests else {
        let mut rows = Vec::with_capacity(samples.len());
        for micro in samples.chunks(s.micro_batch.max(1)) {
            rows.extend(rows_of(learner, micro)?);
        }
        return Ok(rows);
    };
    let mut rows = Vec::new();
    for micro in share(samples, s.micro_batch, requests.rank(), requests.world_size())? {
        rows.extend(rows_of(learner, micro)?);
    }
    Ok(requests.all_gather_rows(&rows, tch::Device::Cpu)?)
}

/// Each sample's response-token log-probs under the learner's policy as it stands.
fn proximal_logprobs(
    learner: &Learner,
    samples: &[PolicySample],
    s: &LearnSettings,
    requests: Option<&ProcessGroup>,
) -> anyhow::Result<Vec<Vec<f32>>> {
    per_sample(learner, samples, s, requests, |learner, micro| {
        let batch = PolicyBatch::from_samples(micro, s.pad_id);
        let logprobs = learner.logprobs(&batch, &s.loss.distribution)?;
        Ok(micro
            .iter()
            .enumerate()
            .map(|(row, sample)| {
                let start = row * batch.cols;
                logprobs[start..start + sample.response_ids.len()].to_vec()
            })
            .collect())
    })
}

/// Reference log-probs and values of each sample's response tokens, and its reward-model score.
fn score(
    learner: &Learner,
    samples: &[PolicySample],
    s: &LearnSettings,
    requests: Option<&ProcessGroup>,
) -> anyhow::Result<Vec<Scores>> {
    // One row per sample: its reference log-probs, its values, then its reward when scored.
    let rows = per_sample(learner, samples, s, requests, |learner, micro| {
        let batch = PolicyBatch::from_samples(micro, s.pad_id);
        let scores = learner.score(&batch, &s.loss.distribution)?;
        Ok(micro
            .iter()
            .enumerate()
            .map(|(row, sample)| {
                let start = row * batch.cols;
                let span = start..start + sample.response_ids.len();
                let mut out = scores.reference[span.clone()].to_vec();
                out.extend(&scores.values[span]);
                out.extend(scores.rewards.as_ref().map(|r| r[row]));
                out
            })
            .collect())
    })?;
    Ok(rows
        .into_iter()
        .zip(samples)
        .map(|(row, sample)| {
            let n = sample.response_ids.len();
            Scores {
                reference: row[..n].to_vec(),
                values: row[n..2 * n].to_vec(),
                reward_model: row.get(2 * n).copied(),
            }
        })
        .collect())
}

impl LearnerState {
    /// Run `f` on the learner on a blocking thread; with other learner ranks, `request` goes to
    /// them first, so they join its collectives, and `f` is given the requests group.
    async fn run<T: Send + 'static>(
        &mut self,
        request: Option<RankRequest>,
        f: impl FnOnce(&mut Learner, &LearnSettings, Option<&ProcessGroup>) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<anyhow::Result<T>, ActorProcessingErr> {
        let mut learner = self.learner.take().ok_or("learner lost by an earlier failure")?;
        let settings = self.settings;
        let ranks = self.ranks.take();
        let (learner, ranks, out) = tokio::task::spawn_blocking(move || {
            let sent = match (&ranks, &request) {
                (Some(ranks), Some(request)) => ranks.send(request),
                _ => Ok(()),
            };
            let requests = ranks.as_ref().map(|r| &r.requests);
            let out = sent.and_then(|()| f(&mut learner, &settings, requests));
            rlvr_learner::runtime::return_freed_memory();
            (learner, ranks, out)
        })
        .await?;
        self.learner = Some(learner);
        self.ranks = ranks;
        Ok(out)
    }
}

impl Actor for LearnerActor {
    type Msg = LearnerMsg;
    type State = LearnerState;
    type Arguments = LearnerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<LearnerMsg>,
        args: LearnerArgs,
    ) -> Result<LearnerState, ActorProcessingErr> {
        Ok(LearnerState {
            learner: Some(args.learner),
            settings: args.settings,
            ranks: args.ranks,
            engines: args.engines,
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
                // The other ranks take the samples before they are consumed.
                let request = state.ranks.as_ref().map(|_| RankRequest::Learn(samples.clone()));
                let engines = state.engines.clone();
                let out = state
                    .run(request, move |l, s, requests| {
                        learn(l, samples, s, requests, engines.as_ref())
                    })
                    .await?;
                let _ = reply.send(out);
            }
            LearnerMsg::Score(samples, reply) => {
                let request = state.ranks.as_ref().map(|_| RankRequest::Score(samples.clone()));
                let out = state
                    .run(request, move |l, s, requests| score(l, &samples, s, requests))
                    .await?;
                let _ = reply.send(out);
            }
            LearnerMsg::Save(dir, reply) => {
                let request = Some(RankRequest::Save(dir.clone()));
                let out = state
                    .run(request, move |l, _, _| {
                        l.save_checkpoint(&dir).map_err(anyhow::Error::from)
                    })
                    .await?;
                let _ = reply.send(out);
            }
            LearnerMsg::SaveModel(dir, reply) => {
                let request = Some(RankRequest::SaveModel(dir.clone()));
                let out = state
                    .run(request, move |l, _, _| {
                        l.save_model(&dir).map_err(anyhow::Error::from)
                    })
                    .await?;
                let _ = reply.send(out);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(n: usize) -> Vec<PolicySample> {
        (0..n)
            .map(|i| PolicySample {
                prompt_ids: vec![1],
                response_ids: vec![i as u32],
                logprobs: vec![0.0],
                proximal_logprobs: vec![],
                is_weights: vec![],
                advantages: vec![0.0],
                returns: vec![],
                values: vec![],
            })
            .collect()
    }

    #[test]
    fn every_rank_gets_the_same_number_of_micro_batches_and_together_every_sample() {
        for (n, micro, world) in [(32, 4, 2), (7, 2, 2), (3, 1, 2), (10, 3, 3), (5, 8, 4)] {
            let all = samples(n);
            let shares: Vec<Vec<&[PolicySample]>> = (0..world)
                .map(|r| share(&all, micro, r, world).unwrap())
                .collect();
            let counts: Vec<usize> = shares.iter().map(Vec::len).collect();
            assert!(
                counts.windows(2).all(|w| w[0] == w[1]),
                "{n} {micro} {world}: {counts:?}"
            );
            let seen: Vec<u32> = shares
                .iter()
                .flatten()
                .flat_map(|m| m.iter().map(|s| s.response_ids[0]))
                .collect();
            assert_eq!(seen, (0..n as u32).collect::<Vec<_>>(), "{n} {micro} {world}");
            assert!(
                shares.iter().flatten().all(|m| !m.is_empty()),
                "{n} {micro} {world}"
            );
        }
        assert!(share(&samples(1), 4, 0, 2).is_err());
    }
}
