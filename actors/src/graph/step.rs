//! The pieces of one RL step the controller strings together: deal prompts to the rollout
//! pool, score the responses with the verifier pool (refilling the step when dynamic sampling
//! drops groups that teach nothing), turn rewards into advantages, and measure accuracy per
//! verifier.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, Result};
use ractor::ActorRef;
use rlvr_core::{Completion, FinishReason, GenerationRequest, PolicySample, SamplingParams, Verdict};
use rlvr_data::Tokenizer;
use rlvr_verifiers::reward::{Response, Reward};

use super::broadcast::BroadcastMsg;
use super::controller::LoopSettings;
use super::data::{DataMsg, Prompt};
use super::learner::{LearnerMsg, Scores};
use super::pool::PoolMsg;
use super::rollout::{RolloutJob, RolloutWorker};
use super::verifier::{VerifierWorker, VerifyJob};
use super::wire::Generated;

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
    /// Each completion's text, as the verifiers read it (its stop token left out).
    pub texts: Vec<String>,
    /// One verdict per completion.
    pub verdicts: Vec<Verdict>,
    /// Seconds spent generating.
    pub rollout_s: f64,
    /// Most sequences one engine's decode step carried (its in-flight batch).
    pub peak_sequences: usize,
    /// Seconds spent verifying.
    pub verify_s: f64,
    /// What dynamic sampling did, when it is on.
    pub filtered: Option<Filtered>,
}

/// What dynamic sampling did in one step.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Filtered {
    /// Rollout rounds (the first included).
    pub rounds: u64,
    /// Groups sampled over the rounds.
    pub groups_sampled: u64,
    /// Groups dropped because every response got the same reward.
    pub groups_dropped: u64,
}

/// Complete `prompts` `n` times each with the rollout pool; completions come back prompt-major.
pub async fn rollout(
    roles: &Roles,
    prompts: &[Prompt],
    n: usize,
    params: &SamplingParams,
    seed: u64,
) -> Result<Generated> {
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
/// sequences each (at least one request); completions come back in request order, with the
/// largest in-flight batch of any job.
pub async fn rollout_requests(
    roles: &Roles,
    requests: Vec<GenerationRequest>,
    params: &SamplingParams,
) -> Result<Generated> {
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
    Ok(Generated {
        peak_sequences: out.iter().map(|g| g.peak_sequences).max().unwrap_or(0),
        completions: out.into_iter().flat_map(|g| g.completions).collect(),
    })
}

/// Score every completion with its prompt's verifier (one job per prompt); returns each
/// completion's text as the verifiers read it, and its verdict.
pub async fn verify(
    roles: &Roles,
    tok: &Tokenizer,
    prompts: &[Prompt],
    completions: &[Completion],
) -> Result<(Vec<String>, Vec<Verdict>)> {
    let texts: Vec<String> = completions.iter().map(|c| response_text(tok, c)).collect();
    let n = completions.len() / prompts.len().max(1);
    let jobs: Vec<VerifyJob> = prompts
        .iter()
        .zip(texts.chunks(n.max(1)))
        .map(|(p, group)| VerifyJob {
            verifier: p.verifier.clone(),
            truth: p.truth.clone(),
            label: p.label.clone(),
            responses: group.to_vec(),
        })
        .collect();
    let out =
        ractor::call!(roles.verifiers, PoolMsg::Run, jobs).map_err(|e| anyhow!("verifier pool: {e}"))?;
    Ok((texts, out.into_iter().flatten().collect()))
}

/// The response's text without its stop token.
fn response_text(tok: &Tokenizer, c: &Completion) -> String {
    let ids = match c.finish_reason {
        FinishReason::Stop => &c.token_ids[..c.token_ids.len().saturating_sub(1)],
        FinishReason::Length => &c.token_ids[..],
    };
    tok.decode(ids)
}

/// Roll out a step's `prompts` and verify them. With dynamic sampling, groups whose responses
/// all got the same reward are dropped and more prompts are drawn from the data actor, round
/// after round, until the step has its prompts or its rounds are spent.
pub async fn rollout_and_verify(
    roles: Roles,
    settings: LoopSettings,
    tok: Arc<Tokenizer>,
    step: u64,
    prompts: Vec<Prompt>,
) -> Result<Scored> {
    let mut scored = sample_round(&roles, &settings, &tok, step, prompts).await?;
    let Some(max_rounds) = settings.dynamic_sampling else {
        return Ok(scored);
    };
    let n = settings.samples_per_prompt;
    let mut filtered = Filtered::default();
    let mut kept = Scored {
        prompts: Vec::new(),
        completions: Vec::new(),
        texts: Vec::new(),
        verdicts: Vec::new(),
        rollout_s: 0.0,
        peak_sequences: 0,
        verify_s: 0.0,
        filtered: None,
    };
    loop {
        filtered.rounds += 1;
        filtered.groups_sampled += scored.prompts.len() as u64;
        // Dynamic sampling runs without a reward model (the recipe check refuses the two).
        let rewards = rewards(&scored, None, &settings);
        kept.rollout_s += scored.rollout_s;
        kept.peak_sequences = kept.peak_sequences.max(scored.peak_sequences);
        kept.verify_s += scored.verify_s;
        let groups = scored.prompts.into_iter().zip(
            scored
                .completions
                .chunks(n)
                .zip(scored.texts.chunks(n))
                .zip(scored.verdicts.chunks(n))
                .zip(rewards.chunks(n)),
        );
        for (prompt, (((completions, texts), verdicts), rewards)) in groups {
            // A round draws only the prompts still missing, so every kept group fits.
            if rewards.windows(2).all(|w| w[0].total == w[1].total) {
                filtered.groups_dropped += 1;
            } else {
                kept.prompts.push(prompt);
                kept.completions.extend_from_slice(completions);
                kept.texts.extend_from_slice(texts);
                kept.verdicts.extend_from_slice(verdicts);
            }
        }
        let missing = settings.prompts_per_step - kept.prompts.len();
        if missing == 0 || filtered.rounds >= max_rounds {
            break;
        }
        let more =
            ractor::call!(roles.data, DataMsg::Next, missing).map_err(|e| anyhow!("data actor: {e}"))?;
        scored = sample_round(&roles, &settings, &tok, step, more).await?;
    }
    kept.filtered = Some(filtered);
    Ok(kept)
}

/// Roll out `prompts` and verify them.
async fn sample_round(
    roles: &Roles,
    settings: &LoopSettings,
    tok: &Tokenizer,
    step: u64,
    prompts: Vec<Prompt>,
) -> Result<Scored> {
    let t = Instant::now();
    let seed = settings.seed ^ step.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let Generated {
        completions,
        peak_sequences,
    } = rollout(
        roles,
        &prompts,
        settings.samples_per_prompt,
        &settings.sampling,
        seed,
    )
    .await?;
    let rollout_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (texts, verdicts) = verify(roles, tok, &prompts, &completions).await?;
    Ok(Scored {
        prompts,
        completions,
        texts,
        verdicts,
        rollout_s,
        peak_sequences,
        verify_s: t.elapsed().as_secs_f64(),
        filtered: None,
    })
}

/// Each response's reward and its components (see [`rlvr_verifiers::reward`]);
/// `reward_model` holds the reward model's score of each response when it scores.
pub fn rewards(scored: &Scored, reward_model: Option<&[f64]>, settings: &LoopSettings) -> Vec<Reward> {
    scored
        .completions
        .iter()
        .zip(&scored.texts)
        .zip(&scored.verdicts)
        .enumerate()
        .map(|(i, ((c, text), verdict))| {
            settings.reward.reward(&Response {
                verdict,
                text,
                tokens: c.token_ids.len(),
                stopped: c.finish_reason == FinishReason::Stop,
                reward_model: reward_model.map(|m| m[i]),
            })
        })
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
            proximal_logprobs: Vec::new(),
            is_weights: Vec::new(),
            advantages: Vec::new(),
            returns: Vec::new(),
            values: Vec::new(),
        })
        .collect()
}

/// A step's samples with their advantages, each response's reward, and the mean per-token KL
/// of the penalty when it is in the reward. Each response's per-token rewards are its reward on
/// the last token, minus β·KL(old ‖ reference) on every token when the penalty is in the
/// reward; the loop's estimator turns them into advantages. `scores` holds each response's
/// reference log-probs, value estimates and reward-model score when the KL, the estimator or
/// the reward needs them. With `mask_truncated`, responses cut at the length budget are left
/// out.
pub fn policy_samples(
    scored: &Scored,
    scores: Option<&[Scores]>,
    settings: &LoopSettings,
) -> (Vec<PolicySample>, Vec<Reward>, Option<f64>) {
    let reward_model: Option<Vec<f64>> =
        scores.and_then(|s| s.iter().map(|s| s.reward_model.map(f64::from)).collect());
    let rewards = rewards(scored, reward_model.as_deref(), settings);
    let mut samples = samples(scored, settings);
    let (mut kl_sum, mut kl_tokens) = (0.0, 0usize);
    let token_rewards: Vec<Vec<f64>> = samples
        .iter()
        .zip(&rewards)
        .enumerate()
        .map(|(i, (s, reward))| {
            let mut per_token = vec![0.0; s.response_ids.len()];
            if let (Some(penalty), Some(scores)) = (settings.kl_in_reward, scores) {
                for ((r, &lp), &reference) in per_token.iter_mut().zip(&s.logprobs).zip(&scores[i].reference)
                {
                    let kl = penalty.kl.per_token(f64::from(lp), f64::from(reference));
                    kl_sum += kl;
                    kl_tokens += 1;
                    *r = -penalty.beta * kl;
                }
            }
            if let Some(last) = per_token.last_mut() {
                *last += reward.total;
            }
            per_token
        })
        .collect();
    let values: Vec<Vec<f32>> =
        scores.map_or_else(Vec::new, |s| s.iter().map(|s| s.values.clone()).collect());
    let estimated = settings
        .estimator
        .estimate(&token_rewards, &values, settings.samples_per_prompt);
    let mut returns = estimated.returns.into_iter();
    for ((s, advantages), i) in samples.iter_mut().zip(estimated.advantages).zip(0..) {
        s.advantages = advantages;
        if settings.estimator.needs_values() {
            s.returns = returns.next().unwrap_or_default();
            s.values = values.get(i).cloned().unwrap_or_default();
        }
    }
    if settings.mask_truncated {
        let finished = scored
            .completions
            .iter()
            .map(|c| c.finish_reason == FinishReason::Stop);
        samples = samples
            .into_iter()
            .zip(finished)
            .filter_map(|(s, f)| f.then_some(s))
            .collect();
    }
    let kl = settings.kl_in_reward.map(|_| kl_sum / kl_tokens.max(1) as f64);
    (samples, rewards, kl)
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
