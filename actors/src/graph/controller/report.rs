//! What the controller tells the user and `metrics.jsonl` about each step: the step's record
//! (reward and its components, accuracy, losses, the train/rollout mismatch, timings, workers), a skipped step's
//! reason, and a warning when the first step can teach nothing.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use rlvr_core::FinishReason;
use rlvr_learner::policy::PolicyMetrics;
use serde_json::json;

use super::ControllerState;
use crate::graph::learner::LearnReport;
use crate::graph::pool::PoolMsg;
use rlvr_verifiers::reward::Reward;

use crate::graph::step::{accuracy, Scored};

impl ControllerState {
    /// A line for the user: logged at INFO, or printed above the progress bar while it shows.
    pub(super) fn say(&self, line: String) {
        if self.bar.is_hidden() {
            tracing::info!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// A warning: logged at WARN, or printed above the progress bar while it shows.
    fn warn(&self, line: String) {
        if self.bar.is_hidden() {
            tracing::warn!("{line}");
        } else {
            self.bar.println(format!("warning: {line}"));
        }
    }

    /// A step left nothing to learn from (dynamic sampling found no group whose rewards
    /// differ, or every response was cut and truncated ones are left out): no update, the step
    /// is logged with the reason.
    pub(super) fn skip_step(&mut self, scored: &Scored, rewards: &[Reward]) -> Result<()> {
        let why = match scored.filtered {
            Some(f) if scored.completions.is_empty() => format!(
                "dynamic sampling found no group whose rewards differ in {} rounds ({} groups)",
                f.rounds, f.groups_sampled
            ),
            _ => format!(
                "every response was cut at rlvr.response_length = {} and \
                 rlvr.mask_truncated_completions leaves them out",
                self.settings.sampling.max_new_tokens
            ),
        };
        self.finish_step();
        let reward_mean = rewards.iter().map(|r| r.total).sum::<f64>() / rewards.len().max(1) as f64;
        let mut record = json!({
            "stage": "rlvr", "step": self.step, "skipped": why, "reward_mean": reward_mean,
            "policy_version": self.version, "elapsed_s": self.started.elapsed().as_secs_f64(),
        });
        if let Some(f) = scored.filtered {
            record["sampling"] = json!(f);
        }
        self.metrics.write(&record)?;
        self.bar.set_position(self.step);
        self.say(format!(
            "rlvr step {:>4}/{}  skipped: {why}",
            self.step, self.settings.steps
        ));
        Ok(())
    }

    /// Say so, once, when every response of the first step got the same score and some were
    /// cut at the response length (the non-stop penalty's score): the reward teaches nothing
    /// until `rlvr.response_length` is raised.
    pub(super) fn warn_if_nothing_finished(&self, scored: &Scored, rewards: &[Reward]) {
        let cut = scored
            .completions
            .iter()
            .filter(|c| c.finish_reason == FinishReason::Length)
            .count();
        let uniform = rewards.windows(2).all(|w| w[0].total == w[1].total);
        if self.settings.reward.non_stop_penalty.is_none() || cut == 0 || !uniform {
            return;
        }
        self.warn(format!(
            "the first step scored every one of its {} responses {}: {cut} ran past \
             rlvr.response_length = {} tokens and got the non-stop penalty, none was verified, so \
             the reward teaches nothing. Raise rlvr.response_length (or turn \
             rlvr.non_stop_penalty off).",
            scored.completions.len(),
            rewards.first().map_or(0.0, |r| r.total),
            self.settings.sampling.max_new_tokens,
        ));
    }

    /// Each pool's live workers (how many on other nodes) and its job counters so far.
    pub(super) async fn workers(&self) -> Result<serde_json::Value> {
        let rollout =
            ractor::call!(self.roles.rollout, PoolMsg::Stats).map_err(|e| anyhow!("rollout pool: {e}"))?;
        let verify =
            ractor::call!(self.roles.verifiers, PoolMsg::Stats).map_err(|e| anyhow!("verifier pool: {e}"))?;
        let counts = |live: usize, remote: usize, done: u64, requeued: u64, restarts: u64| json!({"live": live, "remote": remote, "jobs_done": done, "jobs_requeued": requeued, "restarts": restarts});
        Ok(json!({
            "rollout": counts(rollout.workers.len(), rollout.adopted, rollout.done, rollout.requeued, rollout.restarts),
            "verifier": counts(verify.workers.len(), verify.adopted, verify.done, verify.requeued, verify.restarts),
        }))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn log_step(
        &mut self,
        scored: &Scored,
        rewards: &[Reward],
        learned: &LearnReport,
        reward_kl: Option<f64>,
        gap: u64,
        left_out: usize,
        broadcast_s: f64,
        step_s: f64,
        workers: serde_json::Value,
    ) -> Result<()> {
        let steps = &learned.steps;
        let n = rewards.len().max(1) as f64;
        let reward_mean = rewards.iter().map(|r| r.total).sum::<f64>() / n;
        let (acc, per) = accuracy(&scored.prompts, &scored.verdicts);
        let tokens: usize = scored.completions.iter().map(|c| c.token_ids.len()).sum();
        let stopped = scored
            .completions
            .iter()
            .filter(|c| c.finish_reason == FinishReason::Stop)
            .count();
        let last = steps.last().copied().unwrap_or_default();
        let mean =
            |f: fn(&PolicyMetrics) -> f64| steps.iter().map(f).sum::<f64>() / steps.len().max(1) as f64;
        // GRPO's KL is a loss term the learner measures; PPO's is in the reward.
        let kl = reward_kl.unwrap_or_else(|| mean(|m| m.kl));
        let rows: Vec<u64> = scored.prompts.iter().map(|p| p.row).collect();
        let mismatch = &learned.mismatch;
        let mut record = json!({
            "stage": "rlvr", "step": self.step, "reward_mean": reward_mean, "accuracy": acc,
            "prompt_rows": rows, "verdicts": scored.verdicts.len(), "workers": workers,
            "accuracy_per_verifier": per, "kl": kl, "loss": mean(|m| m.loss),
            "pg_loss": mean(|m| m.pg_loss), "entropy": mean(|m| m.entropy), "clipfrac": mean(|m| m.clipfrac), "ratio": mean(|m| m.ratio), "approx_kl": mean(|m| m.approx_kl),
            "vf_loss": mean(|m| m.vf_loss), "vf_clipfrac": mean(|m| m.vf_clipfrac),
            "grad_norm": mean(|m| m.grad_norm), "lr": last.lr,
            "response_length": tokens as f64 / n, "stop_rate": stopped as f64 / n,
            "rollout_tokens_per_s": tokens as f64 / scored.rollout_s.max(1e-9),
            "rollout_s": scored.rollout_s, "rollout_peak_sequences": scored.peak_sequences, "verify_s": scored.verify_s, "proximal_s": learned.proximal_s, "train_s": learned.train_s, "export_s": learned.export_s, "broadcast_s": broadcast_s,
            "mismatch_max_abs_logprob_diff": mismatch.max_abs_logprob_diff, "mismatch_mean_abs_logprob_diff": mismatch.mean_abs_logprob_diff,
            "mismatch_kl": mismatch.kl, "mismatch_corrected_fraction": mismatch.corrected_fraction,
            "truncated_left_out": left_out,
            "completions_spanning_versions": scored.completions.iter().filter(|c| c.token_versions.windows(2).any(|w| w[0] != w[1])).count(),
            "step_s": step_s, "policy_version": self.version, "policy_version_gap": gap,
            "elapsed_s": self.started.elapsed().as_secs_f64(),
            "learner_ranks": learned.ranks_memory,
        });
        if let Some(f) = scored.filtered {
            record["sampling"] = json!(f);
        }
        self.reward_breakdown(scored, rewards, &mut record);
        self.metrics.write(&record)?;
        self.bar.set_position(self.step);
        self.bar.set_message(format!("reward {reward_mean:.3}"));
        self.say(format!(
            "rlvr step {:>4}/{}  reward {reward_mean:.3}  acc {acc:.3}  kl {:.4}  len {:.1}  {:.0} tok/s  v{}  gap {gap}  {step_s:.2}s",
            self.step,
            self.settings.steps,
            kl,
            tokens as f64 / n,
            tokens as f64 / scored.rollout_s.max(1e-9),
            self.version,
        ));
        Ok(())
    }

    /// The reward's parts into `record`: the mean of each component that is on
    /// (`reward_components`), the mean reward of the responses each verifier scored
    /// (`reward_per_verifier`), the mean weighted score of each part of a weighted sum
    /// (`verifier_parts`, as `SUM.PART`), and how many responses had the format.
    fn reward_breakdown(&self, scored: &Scored, rewards: &[Reward], record: &mut serde_json::Value) {
        let composition = &self.settings.reward;
        let n = rewards.len().max(1) as f64;
        let mean = |f: fn(&Reward) -> f64| rewards.iter().map(f).sum::<f64>() / n;
        let mut components = serde_json::Map::new();
        let on = [
            (
                "verifiable",
                composition.verified_reward.is_some(),
                mean(|r| r.verifiable),
            ),
            (
                "reward_model",
                composition.reward_model_multiplier != 0.0,
                mean(|r| r.reward_model),
            ),
            ("format", composition.format.is_some(), mean(|r| r.format)),
            ("length", composition.length_penalty != 0.0, mean(|r| r.length)),
            (
                "non_stop",
                composition.non_stop_penalty.is_some(),
                mean(|r| r.non_stop),
            ),
            ("overlong", composition.overlong.is_some(), mean(|r| r.overlong)),
        ];
        for (name, _, value) in on.iter().filter(|c| c.1) {
            components.insert(name.to_string(), json!(value));
        }
        record["reward_components"] = components.into();
        if composition.format.is_some() {
            record["format_rate"] = json!(rewards.iter().filter(|r| r.formatted).count() as f64 / n);
        }
        let per_prompt = rewards.len() / scored.prompts.len().max(1);
        let mut per_verifier: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        let mut parts: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for (i, (reward, verdict)) in rewards.iter().zip(&scored.verdicts).enumerate() {
            let verifier = scored.prompts[i / per_prompt.max(1)].verifier.name();
            let e = per_verifier.entry(verifier.to_string()).or_default();
            (e.0, e.1) = (e.0 + reward.total, e.1 + 1.0);
            for part in &verdict.parts {
                let e = parts.entry(format!("{verifier}.{}", part.verifier)).or_default();
                (e.0, e.1) = (e.0 + part.weight * part.score, e.1 + 1.0);
            }
        }
        let means = |m: BTreeMap<String, (f64, f64)>| -> serde_json::Map<String, serde_json::Value> {
            m.into_iter()
                .map(|(k, (sum, count))| (k, json!(sum / count.max(1.0))))
                .collect()
        };
        record["reward_per_verifier"] = means(per_verifier).into();
        if !parts.is_empty() {
            record["verifier_parts"] = means(parts).into();
        }
    }
}
