//! The pieces of one RL step the controller strings together: deal prompts to the rollout
//! pool, score the responses with the verifier pool, turn rewards into GRPO samples, and
//! measure accuracy per verifier.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Result};
use ractor::ActorRef;
use rlvr_core::{Completion, FinishReason, GenerationRequest, PolicySample, SamplingParams, Verdict};
use rlvr_data::Tokenizer;
use rlvr_learner::advantage::{gae, group_centered, group_normalized, whiten};
use rlvr_verifiers::reward::reward;

use super::broadcast::BroadcastMsg;
use super::controller::{LoopSettings, Ppo};
use super::data::{DataMsg, Prompt};
use super::learner::{LearnerMsg, Scores};
use super::pool::PoolMsg;
use super::rollout::{RolloutJob, RolloutWorker};
use super::verifier::{VerifierWorker, VerifyJob};

/// Handles on the graph's children.
#[derive(Clone)]
pub struct Roles {
    /// Sequences one rollout job asks for: an engine's batch (`rollout.engine_batch`), so each
    /// job fills the engine it lands on and the workers share a step's jobs.
    pub job_sequences: usize,
    /// Data actor.
    pub data: ActorRef<DataMsg>,
    /// Rollout pool.
    pub rollout: ActorRef<PoolMsg<RolloutWorker>>,
    /// Verifier pool.
    pub verifiers: ActorRef<PoolMsg<VerifierWorker>>,
    /// Learner.
    pub learner: ActorRef<LearnerMsg>,
    /// Weight broadcaster.
    pub broadcaster: ActorRef<BroadcastMsg>,
}

/// One step's prompts with their responses and verdicts.
pub struct Scored {
    /// The step's prompts.
    pub prompts: Vec<Prompt>,
    /// `samples_per_prompt` completions per prompt, prompt-major.
    pub completions: Vec<Completion>,
    /// One verdict per completion.
    pub verdicts: Vec<Verdict>,
    /// Seconds spent generating.
    pub rollout_s: f64,
    /// Seconds spent verifying.
    pub verify_s: f64,
}

/// Complete `prompts` `n` times each with the rollout pool; completions come back prompt-major.
pub async fn rollout(
    roles: &Roles,
    prompts: &[Prompt],
    n: usize,
    params: &SamplingParams,
    seed: u64,
) -> Result<Vec<Completion>> {
    let requests: Vec<GenerationRequest> = prompts
        .iter()
        .map(|p| GenerationRequest {
            id: p.row,
            prompt_ids: p.prompt_ids.clone(),
            n,
            seed: seed ^ p.row.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        })
        .collect();
    rollout_requests(roles, requests, params).await
}

/// Complete `requests` with the rollout pool, dealt out in jobs of about an engine's batch of
/// sequences each (at least one request); completions come back in request order.
pub async fn rollout_requests(
    roles: &Roles,
    requests: Vec<GenerationRequest>,
    params: &SamplingParams,
) -> Result<Vec<Completion>> {
    let params = Arc::new(params.clone());
    let per_request = requests.first().map_or(1, |r| r.n.max(1));
    let per_job = (roles.job_sequences / per_request).max(1);
    let jobs: Vec<RolloutJob> = requests
        .chunks(per_job)
        .map(|chunk| RolloutJob {
            requests: chunk.to_vec(),
            params: params.clone(),
        })
        .collect();
    let out = ractor::call!(roles.rollout, PoolMsg::Run, jobs).map_err(|e| anyhow!("rollout pool: {e}"))?;
    Ok(out.into_iter().flatten().collect())
}

/// Score every completion with its prompt's verifier (one job per prompt).
pub async fn verify(
    roles: &Roles,
    tok: &Tokenizer,
    prompts: &[Prompt],
    completions: &[Completion],
) -> Result<Vec<Verdict>> {
    let n = completions.len() / prompts.len().max(1);
    let jobs: Vec<VerifyJob> = prompts
        .iter()
        .zip(completions.chunks(n.max(1)))
        .map(|(p, group)| VerifyJob {
            verifier: p.verifier.clone(),
            truth: p.truth.clone(),
            label: p.label.clone(),
            responses: group.iter().map(|c| response_text(tok, c)).collect(),
        })
        .collect();
    let out =
        ractor::call!(roles.verifiers, PoolMsg::Run, jobs).map_err(|e| anyhow!("verifier pool: {e}"))?;
    Ok(out.into_iter().flatten().collect())
}

/// The response's text without its stop token.
fn response_text(tok: &Tokenizer, c: &Completion) -> String {
    let ids = match c.finish_reason {
        FinishReason::Stop => &c.token_ids[..c.token_ids.len().saturating_sub(1)],
        FinishReason::Length => &c.token_ids[..],
    };
    tok.decode(ids)
}

/// Take the next prompts, roll them out and verify them.
pub async fn rollout_and_verify(
    roles: Roles,
    settings: LoopSettings,
    tok: Arc<Tokenizer>,
    step: u64,
) -> Result<Scored> {
    let prompts = ractor::call!(roles.data, DataMsg::Next, settings.prompts_per_step)
        .map_err(|e| anyhow!("data actor: {e}"))?;
    let t = Instant::now();
    let seed = settings.seed ^ step.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let completions = rollout(
        &roles,
        &prompts,
        settings.samples_per_prompt,
        &settings.sampling,
        seed,
    )
    .await?;
    let rollout_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let verdicts = verify(&roles, &tok, &prompts, &completions).await?;
    Ok(Scored {
        prompts,
        completions,
        verdicts,
        rollout_s,
        verify_s: t.elapsed().as_secs_f64(),
    })
}

/// Each response's shaped reward (verified reward, non-stop penalty).
fn rewards(scored: &Scored, settings: &LoopSettings) -> Vec<f64> {
    scored
        .completions
        .iter()
        .zip(&scored.verdicts)
        .map(|(c, v)| reward(v, c.finish_reason == FinishReason::Stop, &settings.shaping))
        .collect()
}

/// The step's responses as samples for the learner, advantages not yet filled in.
pub fn samples(scored: &Scored, settings: &LoopSettings) -> Vec<PolicySample> {
    scored
        .completions
        .iter()
        .enumerate()
        .map(|(i, c)| PolicySample {
            prompt_ids: scored.prompts[i / settings.samples_per_prompt].prompt_ids.clone(),
            response_ids: c.token_ids.clone(),
            logprobs: c.logprobs.clone(),
            advantages: Vec::new(),
            returns: Vec::new(),
            values: Vec::new(),
        })
        .collect()
}

/// GRPO: each response's shaped reward, centred within its prompt's group (and divided by the
/// group's standard deviation unless `scale_rewards` is off, as in Dr. GRPO), on every token.
pub fn grpo_samples(scored: &Scored, settings: &LoopSettings) -> (Vec<PolicySample>, Vec<f64>) {
    let rewards = rewards(scored, settings);
    let advantages = if settings.scale_rewards {
        group_normalized(&rewards, settings.samples_per_prompt)
    } else {
        group_centered(&rewards, settings.samples_per_prompt)
    };
    let mut samples = samples(scored, settings);
    for (s, a) in samples.iter_mut().zip(&advantages) {
        s.advantages = vec![*a as f32; s.response_ids.len()];
    }
    (samples, rewards)
}

/// PPO as Tülu 3: per-token reward −β·KL(old ‖ reference), the shaped score added at the last
/// token; GAE over the value model's estimates; advantages whitened over the batch. `scores`
/// holds each response's reference log-probs and value estimates, token by token. Also returns
/// the mean per-token KL of the batch.
pub fn ppo_samples(
    scored: &Scored,
    scores: &[Scores],
    settings: &LoopSettings,
    ppo: &Ppo,
) -> (Vec<PolicySample>, Vec<f64>, f64) {
    let rewards = rewards(scored, settings);
    let mut samples = samples(scored, settings);
    let (mut kl_sum, mut tokens) = (0.0, 0usize);
    for ((s, scores), score) in samples.iter_mut().zip(scores).zip(&rewards) {
        let kl: Vec<f64> = s
            .logprobs
            .iter()
            .zip(&scores.reference)
            .map(|(&lp, &r)| ppo.kl.per_token(f64::from(lp), f64::from(r)))
            .collect();
        kl_sum += kl.iter().sum::<f64>();
        tokens += kl.len();
        let mut per_token: Vec<f32> = kl.iter().map(|k| (-ppo.beta * k) as f32).collect();
        if let Some(last) = per_token.last_mut() {
            *last += *score as f32;
        }
        let (advantages, returns) = gae(&per_token, &scores.values, ppo.gamma, ppo.lam);
        s.advantages = advantages;
        s.returns = returns;
        s.values = scores.values.clone();
    }
    if ppo.whiten {
        let mut all: Vec<Vec<f32>> = samples
            .iter_mut()
            .map(|s| std::mem::take(&mut s.advantages))
            .collect();
        whiten(&mut all);
        for (s, a) in samples.iter_mut().zip(all) {
            s.advantages = a;
        }
    }
    (samples, rewards, kl_sum / tokens.max(1) as f64)
}

/// Accuracy per verifier name, and overall.
pub fn accuracy(prompts: &[Prompt], verdicts: &[Verdict]) -> (f64, BTreeMap<String, f64>) {
    let n = verdicts.len() / prompts.len().max(1);
    let mut per: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (p, group) in prompts.iter().zip(verdicts.chunks(n.max(1))) {
        let e = per.entry(p.verifier.name().to_string()).or_default();
        e.0 += group.iter().filter(|v| v.verified).count() as f64;
        e.1 += group.len() as f64;
    }
    let (hit, all) = per.values().fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    let per = per.into_iter().map(|(k, (h, a))| (k, h / a.max(1.0))).collect();
    (hit / all.max(1.0), per)
}
