//! Controller: the root of the supervision tree and the RL loop. It starts the data actor, the
//! rollout and verifier pools, the learner and the weight broadcaster as its children, then
//! runs one step per message: rollout → verify → advantages → learn → broadcast. In async mode
//! the rollout of step t+1 runs while step t learns (one step off-policy, as Tülu 3).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use indicatif::ProgressBar;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use rlvr_core::{FinishReason, PolicySample, SamplingParams};
use rlvr_data::Tokenizer;
use rlvr_learner::policy::{KlEstimator, PolicyMetrics};
use rlvr_learner::Learner;
use rlvr_verifiers::reward::{reward, Shaping};
use rlvr_verifiers::Mode;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::broadcast::{BroadcastMsg, Broadcaster, Weights};
use super::data::{DataActor, DataArgs, DataMsg, Prompt};
use super::learner::{LearnReport, LearnSettings, LearnerActor, LearnerMsg};
use super::pool::{Pool, PoolArgs, PoolMsg};
use super::recruiter::{Recruiter, RecruiterArgs};
use super::rollout::RolloutWorker;
use super::step::{accuracy, grpo_samples, ppo_samples, rollout_and_verify, samples, Roles, Scored};
use super::verifier::VerifierWorker;
use super::wire::{encode, RolloutSetup, VerifierSetup};
use crate::cluster::Listen;
use crate::evaluation::Questions;
use crate::metrics::MetricsLog;

mod evaluation;
mod spawners;

use spawners::{RolloutSpawner, VerifierSpawner};

/// The loop's settings, from the recipe.
#[derive(Debug, Clone)]
pub struct LoopSettings {
    /// RL steps to run.
    pub steps: u64,
    /// Prompts per step.
    pub prompts_per_step: usize,
    /// Responses per prompt.
    pub samples_per_prompt: usize,
    /// How responses are sampled for training.
    pub sampling: SamplingParams,
    /// Evaluate every this many steps (and at the start and end).
    pub eval_every: u64,
    /// Reward shaping.
    pub shaping: Shaping,
    /// Overlap the rollout of step t+1 with learning of step t.
    pub async_mode: bool,
    /// Seed of every sampled request.
    pub seed: u64,
    /// Save a checkpoint every this many steps (0: never).
    pub save_every: u64,
    /// GRPO: divide centred group rewards by the group's standard deviation (false: Dr. GRPO).
    pub scale_rewards: bool,
    /// How advantages are made: GRPO, or PPO with these settings.
    pub ppo: Option<Ppo>,
}

/// PPO's advantage settings (Tülu 3: KL in the reward, GAE, whitening).
#[derive(Debug, Clone, Copy)]
pub struct Ppo {
    /// KL coefficient β of the per-token reward penalty.
    pub beta: f64,
    /// KL estimator of the penalty.
    pub kl: KlEstimator,
    /// Discount γ.
    pub gamma: f64,
    /// GAE λ.
    pub lam: f64,
    /// Whiten advantages over the batch.
    pub whiten: bool,
}

/// Where a run starts: at zero, or where a checkpoint left off.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// RL steps taken.
    pub step: u64,
    /// Policy version (learner optimiser steps).
    pub policy_version: u64,
    /// Prompts the data actor has served.
    pub data_position: u64,
}

/// Everything the controller needs to start the graph.
pub struct ControllerArgs {
    /// The loop's settings.
    pub settings: LoopSettings,
    /// The policy (its reference already frozen when β > 0).
    pub learner: Learner,
    /// How the learner steps.
    pub learn: LearnSettings,
    /// Model directory the rollout engines start from.
    pub model_dir: PathBuf,
    /// Training prompts.
    pub prompts: Vec<Prompt>,
    /// Held-out prompts for evaluation (`data.eval_mix`).
    pub eval_prompts: Vec<Prompt>,
    /// Test sets scored as `rlvr eval` scores them (`eval.tasks`), if any.
    pub eval_tasks: Option<EvalTasks>,
    /// Decodes responses for the verifiers.
    pub tokenizer: Tokenizer,
    /// Rollout workers at start.
    pub rollout_workers: usize,
    /// Verifier workers.
    pub verifier_workers: usize,
    /// Longest one verifier call may take.
    pub verifier_timeout: Duration,
    /// Where the rollout engines run.
    pub device: tch::Device,
    /// Sequences each engine holds at once.
    pub engine_batch: usize,
    /// `metrics.jsonl`.
    pub metrics: MetricsLog,
    /// Checkpoint directory of the stage.
    pub checkpoints: PathBuf,
    /// Step counter shown to the user.
    pub bar: ProgressBar,
    /// Where the outcome goes when the loop ends.
    pub done: oneshot::Sender<Result<RunSummary>>,
    /// Where the final model is saved.
    pub model_out: PathBuf,
    /// Where the loop starts.
    pub start: Progress,
    /// Held-out accuracies logged before `start` (a resumed run's), as (step, accuracy).
    pub earlier_evals: Vec<(u64, f64)>,
    /// Where worker nodes join (`rlvr run --listen`), if they may.
    pub listen: Option<Listen>,
    /// The rules the verifiers follow (for verifier workers on other nodes).
    pub verifier_mode: Mode,
}

/// The test sets an RLVR stage evaluates on (`[eval]`), generated by the rollout pool and
/// scored with the code of `rlvr eval`.
pub struct EvalTasks {
    /// The questions, rendered and their labels parsed.
    pub questions: Arc<Questions>,
    /// How to sample their answers.
    pub sampling: SamplingParams,
    /// Every this many steps (0: with the held-out evaluations).
    pub every: u64,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Steps taken.
    pub steps: u64,
    /// Held-out accuracy at each evaluation: (step, accuracy).
    pub evals: Vec<(u64, f64)>,
}

/// Messages of the controller.
#[derive(ractor_cluster::RactorMessage)]
pub enum ControllerMsg {
    /// Run the next step.
    Step,
}

/// State of the controller.
pub struct ControllerState {
    roles: Roles,
    settings: LoopSettings,
    eval_prompts: Vec<Prompt>,
    eval_tasks: Option<EvalTasks>,
    tokenizer: Arc<Tokenizer>,
    metrics: MetricsLog,
    checkpoints: PathBuf,
    model_out: PathBuf,
    bar: ProgressBar,
    done: Option<oneshot::Sender<Result<RunSummary>>>,
    step: u64,
    version: u64,
    prefetched: Option<JoinHandle<Result<Scored>>>,
    evals: Vec<(u64, f64)>,
    started: Instant,
}

/// The controller actor.
pub struct Controller;

/// Restarts a pool allows before the run fails.
const MAX_RESTARTS: u64 = 20;

impl ControllerState {
    fn say(&self, line: String) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// Roll out and verify the prompts of `step` (a task of its own, so it can run ahead).
    fn rollout_and_verify(
        &self,
        step: u64,
    ) -> impl std::future::Future<Output = Result<Scored>> + Send + 'static {
        rollout_and_verify(
            self.roles.clone(),
            self.settings.clone(),
            self.tokenizer.clone(),
            step,
        )
    }

    /// One RL step: rollout → verify → advantages → learn → broadcast.
    async fn step(&mut self) -> Result<()> {
        let started = Instant::now();
        let scored = match self.prefetched.take() {
            Some(task) => task.await??,
            None => self.rollout_and_verify(self.step).await?,
        };
        if self.settings.async_mode && self.step + 1 < self.settings.steps {
            self.prefetched = Some(tokio::spawn(self.rollout_and_verify(self.step + 1)));
        }
        if self.step == 0 {
            self.warn_if_nothing_finished(&scored);
        }
        let (samples, rewards, reward_kl) = self.advantages(&scored).await?;
        let learned = ractor::call!(self.roles.learner, LearnerMsg::Learn, samples)
            .map_err(|e| anyhow!("learner: {e}"))??;
        let broadcast = ractor::call!(
            self.roles.broadcaster,
            BroadcastMsg::Publish,
            learned.weights.clone()
        )
        .map_err(|e| anyhow!("broadcaster: {e}"))?;

        let gap = scored
            .completions
            .iter()
            .map(|c| self.version.saturating_sub(c.policy_version))
            .max()
            .unwrap_or(0);
        self.version = learned.weights.version;
        self.step += 1;
        let workers = self.workers().await?;
        self.log_step(
            &scored,
            &rewards,
            &learned,
            reward_kl,
            gap,
            broadcast.seconds,
            started.elapsed().as_secs_f64(),
            workers,
        )
    }

    /// Say so, once, when every response of the first step got the same score and some were
    /// cut at the response length (the non-stop penalty's score): the reward teaches nothing
    /// until `rlvr.response_length` is raised.
    fn warn_if_nothing_finished(&self, scored: &Scored) {
        let shaping = &self.settings.shaping;
        let rewards: Vec<f64> = scored
            .completions
            .iter()
            .zip(&scored.verdicts)
            .map(|(c, v)| reward(v, c.finish_reason == FinishReason::Stop, shaping))
            .collect();
        let cut = scored
            .completions
            .iter()
            .filter(|c| c.finish_reason == FinishReason::Length)
            .count();
        let uniform = rewards.windows(2).all(|w| w[0] == w[1]);
        if !shaping.non_stop_penalty || cut == 0 || !uniform {
            return;
        }
        self.say(format!(
            "warning: the first step scored every one of its {} responses {}: {cut} ran past \
             rlvr.response_length = {} tokens and got the non-stop penalty, none was verified, so \
             the reward teaches nothing. Raise rlvr.response_length (or turn \
             rlvr.non_stop_penalty off).",
            scored.completions.len(),
            rewards.first().copied().unwrap_or_default(),
            self.settings.sampling.max_new_tokens,
        ));
    }

    /// Each pool's live workers (how many on other nodes) and its job counters so far.
    async fn workers(&self) -> Result<serde_json::Value> {
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

    /// GRPO's group-normalised advantages, or PPO's GAE over the value model's estimates with
    /// the KL to the reference in the reward (the learner scores the samples first; the mean
    /// KL of that reward comes back too).
    async fn advantages(&self, scored: &Scored) -> Result<(Vec<PolicySample>, Vec<f64>, Option<f64>)> {
        let Some(ppo) = self.settings.ppo else {
            let (samples, rewards) = grpo_samples(scored, &self.settings);
            return Ok((samples, rewards, None));
        };
        let scores = ractor::call!(
            self.roles.learner,
            LearnerMsg::Score,
            samples(scored, &self.settings)
        )
        .map_err(|e| anyhow!("learner: {e}"))??;
        let (samples, rewards, kl) = ppo_samples(scored, &scores, &self.settings, &ppo);
        Ok((samples, rewards, Some(kl)))
    }

    #[allow(clippy::too_many_arguments)]
    fn log_step(
        &mut self,
        scored: &Scored,
        rewards: &[f64],
        learned: &LearnReport,
        reward_kl: Option<f64>,
        gap: u64,
        broadcast_s: f64,
        step_s: f64,
        workers: serde_json::Value,
    ) -> Result<()> {
        let steps = &learned.steps;
        let n = rewards.len().max(1) as f64;
        let reward_mean = rewards.iter().sum::<f64>() / n;
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
        let record = json!({
            "stage": "rlvr", "step": self.step, "reward_mean": reward_mean, "accuracy": acc,
            "prompt_rows": rows, "verdicts": scored.verdicts.len(), "workers": workers,
            "accuracy_per_verifier": per, "kl": kl, "loss": mean(|m| m.loss),
            "pg_loss": mean(|m| m.pg_loss), "entropy": mean(|m| m.entropy), "clipfrac": mean(|m| m.clipfrac), "ratio": mean(|m| m.ratio),
            "vf_loss": mean(|m| m.vf_loss), "vf_clipfrac": mean(|m| m.vf_clipfrac),
            "grad_norm": mean(|m| m.grad_norm), "lr": last.lr,
            "response_length": tokens as f64 / n, "stop_rate": stopped as f64 / n,
            "rollout_tokens_per_s": tokens as f64 / scored.rollout_s.max(1e-9),
            "rollout_s": scored.rollout_s, "verify_s": scored.verify_s, "train_s": learned.train_s, "export_s": learned.export_s, "broadcast_s": broadcast_s,
            "step_s": step_s, "policy_version": self.version, "policy_version_gap": gap,
            "elapsed_s": self.started.elapsed().as_secs_f64(),
        });
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

    /// Save a checkpoint with the data position, for `--resume`.
    async fn checkpoint(&mut self) -> Result<()> {
        let dir = self.checkpoints.join(format!("step-{}", self.step));
        ractor::call!(self.roles.learner, LearnerMsg::Save, dir.clone())
            .map_err(|e| anyhow!("learner: {e}"))??;
        let position =
            ractor::call!(self.roles.data, DataMsg::Position).map_err(|e| anyhow!("data actor: {e}"))?;
        let state = json!({"step": self.step, "data_position": position, "policy_version": self.version});
        crate::stages::write_state(&dir.join("trainer_state.json"), &state)?;
        Ok(())
    }

    /// Run the next step (with its evaluation and checkpoint); true when the loop is over.
    async fn advance(&mut self) -> Result<bool> {
        let held_out = !self.eval_prompts.is_empty();
        if self.step == 0 {
            if held_out {
                self.evaluate().await?;
            }
            self.evaluate_tasks().await?;
        }
        self.step().await?;
        let (eval_every, save_every, steps) = (
            self.settings.eval_every,
            self.settings.save_every,
            self.settings.steps,
        );
        if held_out && (self.step.is_multiple_of(eval_every.max(1)) || self.step == steps) {
            self.evaluate().await?;
        }
        if self.tasks_due() {
            self.evaluate_tasks().await?;
        }
        if save_every > 0 && self.step.is_multiple_of(save_every) && self.step < steps {
            self.checkpoint().await?;
        }
        if self.step < self.settings.steps {
            return Ok(false);
        }
        ractor::call!(self.roles.learner, LearnerMsg::SaveModel, self.model_out.clone())
            .map_err(|e| anyhow!("learner: {e}"))??;
        Ok(true)
    }

    fn finish(&mut self, outcome: Result<RunSummary>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(outcome);
        }
    }
}

impl Actor for Controller {
    type Msg = ControllerMsg;
    type State = ControllerState;
    type Arguments = ControllerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ControllerMsg>,
        args: ControllerArgs,
    ) -> Result<ControllerState, ActorProcessingErr> {
        let cell = myself.get_cell();
        // A worker finishes its current job before it loads new weights: allow a long one.
        let timeout = Duration::from_secs(600);
        // Workers on other nodes cannot read the model directory: they start from these.
        let seed = match &args.listen {
            Some(_) => Some(Arc::new(Weights {
                version: args.start.policy_version,
                chunks: args.learner.export_weights(args.start.policy_version)?,
            })),
            None => None,
        };
        let (broadcaster, _) = Actor::spawn_linked(None, Broadcaster { timeout }, seed, cell.clone()).await?;
        let rollout_setup = encode(&RolloutSetup {
            config: args.learner.model().config().clone(),
            max_batch: args.engine_batch,
        });
        let rollout_spawner = RolloutSpawner {
            model: args.model_dir,
            version: args.start.policy_version,
            device: args.device,
            max_batch: args.engine_batch,
            broadcaster: broadcaster.clone(),
        };
        let (rollout, _) = Actor::spawn_linked(
            None,
            Pool::<RolloutWorker>::default(),
            PoolArgs {
                name: "rollout".into(),
                workers: args.rollout_workers,
                spawner: Arc::new(rollout_spawner),
                max_restarts: MAX_RESTARTS,
            },
            cell.clone(),
        )
        .await?;
        let (verifiers, _) = Actor::spawn_linked(
            None,
            Pool::<VerifierWorker>::default(),
            PoolArgs {
                name: "verifier".into(),
                workers: args.verifier_workers,
                spawner: Arc::new(VerifierSpawner(args.verifier_timeout)),
                max_restarts: MAX_RESTARTS,
            },
            cell.clone(),
        )
        .await?;
        let data_args = DataArgs {
            prompts: args.prompts,
            seed: args.settings.seed,
            position: args.start.data_position,
        };
        let (data, _) = Actor::spawn_linked(None, DataActor, data_args, cell.clone()).await?;
        if let Some(listen) = args.listen {
            let recruiter = RecruiterArgs {
                listen,
                rollout: rollout.clone(),
                verifiers: verifiers.clone(),
                broadcaster: broadcaster.clone(),
                rollout_setup,
                verifier_setup: encode(&VerifierSetup {
                    mode: args.verifier_mode,
                    timeout_s: args.verifier_timeout.as_secs_f64(),
                }),
                verifier_timeout: args.verifier_timeout,
            };
            Actor::spawn_linked(None, Recruiter, recruiter, cell.clone()).await?;
        }
        let (learner, _) = Actor::spawn_linked(None, LearnerActor, (args.learner, args.learn), cell).await?;
        myself.send_message(ControllerMsg::Step)?;
        Ok(ControllerState {
            roles: Roles {
                job_sequences: args.engine_batch.max(1),
                data,
                rollout,
                verifiers,
                learner,
                broadcaster,
            },
            settings: args.settings,
            eval_prompts: args.eval_prompts,
            eval_tasks: args.eval_tasks,
            tokenizer: Arc::new(args.tokenizer),
            metrics: args.metrics,
            checkpoints: args.checkpoints,
            model_out: args.model_out,
            bar: args.bar,
            done: Some(args.done),
            step: args.start.step,
            version: args.start.policy_version,
            prefetched: None,
            evals: args.earlier_evals,
            started: Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ControllerMsg>,
        message: ControllerMsg,
        state: &mut ControllerState,
    ) -> Result<(), ActorProcessingErr> {
        let ControllerMsg::Step = message;
        match state.advance().await {
            Ok(false) => myself.send_message(ControllerMsg::Step)?,
            Ok(true) => {
                let summary = RunSummary {
                    steps: state.step,
                    evals: state.evals.clone(),
                };
                state.finish(Ok(summary));
                myself.stop(None);
            }
            Err(e) => {
                state.finish(Err(e));
                myself.stop(None);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ControllerMsg>,
        event: SupervisionEvent,
        state: &mut ControllerState,
    ) -> Result<(), ActorProcessingErr> {
        let failure = match event {
            SupervisionEvent::ActorFailed(cell, err) => Some(format!("{} failed: {err}", cell.get_id())),
            SupervisionEvent::ActorTerminated(cell, _, reason) if state.done.is_some() => Some(format!(
                "{} stopped: {}",
                cell.get_id(),
                reason.unwrap_or_default()
            )),
            _ => None,
        };
        if let Some(why) = failure {
            state.finish(Err(anyhow!("actor {why}")));
            myself.stop(None);
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<ControllerMsg>,
        _state: &mut ControllerState,
    ) -> Result<(), ActorProcessingErr> {
        myself.stop_children(None);
        Ok(())
    }
}
