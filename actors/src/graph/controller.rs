//! Controller: the root of the supervision tree and the RL loop. It starts the data actor, the
//! rollout and verifier pools, the learner and the weight broadcaster as its children, then
//! runs one step per message: rollout → verify → advantages → learn → broadcast. Off-policy,
//! the rollouts of the next `prefetch` steps run while step t learns (one step with Tülu 3's
//! async mode; more with `rlvr.max_staleness`, whose engines also take new weights between
//! decode steps).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use indicatif::ProgressBar;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use rlvr_core::{PolicySample, SamplingParams};
use rlvr_data::Tokenizer;
use rlvr_learner::advantage::Estimator;
use rlvr_learner::policy::KlEstimator;
use rlvr_learner::Learner;
use rlvr_verifiers::reward::{Composition, Reward};
use rlvr_verifiers::Mode;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::broadcast::{BroadcastMsg, Broadcaster, LatestWeights, Weights};
use super::control::{self, ControlSocket, Controls};
use super::data::{DataActor, DataArgs, DataMsg, Prompt};
use super::learner::{LearnSettings, LearnerActor, LearnerArgs, LearnerMsg, RankRequest, Ranks};
use super::pool::{Pool, PoolArgs};
use super::recruiter::{Recruiter, RecruiterArgs};
use super::rollout::RolloutWorker;
use super::step::{policy_samples, rollout_and_verify, samples, Roles, Scored};
use super::verifier::VerifierWorker;
use super::weight_group::WeightGroup;
use super::wire::{encode, EngineOptions, RolloutSetup, VerifierSetup};
use crate::cluster::Listen;
use crate::evaluation::Questions;
use crate::metrics::MetricsLog;

mod evaluation;
mod report;
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
    /// How each response's reward is composed.
    pub reward: Composition,
    /// Rollouts of this many later steps run while a step learns (0: on-policy).
    pub prefetch: usize,
    /// Rollout engines take new weights between decode steps.
    pub in_flight: bool,
    /// Seed of every sampled request.
    pub seed: u64,
    /// Save a checkpoint every this many steps (0: never).
    pub save_every: u64,
    /// Keep only the newest this many checkpoints (`None`: all).
    pub keep_checkpoints: Option<u64>,
    /// How advantages are made from per-token rewards.
    pub estimator: Estimator,
    /// The KL penalty to the reference when it is in the reward (PPO, REINFORCE++); `None`
    /// when it is in the loss or off.
    pub kl_in_reward: Option<KlPenalty>,
    /// Dynamic sampling: drop groups whose rewards are all equal and refill, in at most this
    /// many rollout rounds per step.
    pub dynamic_sampling: Option<u64>,
    /// Leave responses cut at the length budget out of the loss.
    pub mask_truncated: bool,
}

/// The KL penalty to the reference policy, per token of the reward.
#[derive(Debug, Clone, Copy)]
pub struct KlPenalty {
    /// Coefficient β.
    pub beta: f64,
    /// Estimator.
    pub kl: KlEstimator,
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
    /// The other learner ranks, when the learner is spread over several.
    pub ranks: Option<Ranks>,
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
    /// Where the rollout engines run: worker `i` on entry `i` modulo their number.
    pub engine_devices: Vec<tch::Device>,
    /// Element type of the engines' weights and KV cache.
    pub engine_kind: tch::Kind,
    /// Sequences each engine holds at once.
    pub engine_batch: usize,
    /// Each engine's KV cache and decode steps.
    pub engine_options: EngineOptions,
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
    /// The weight group to the launched engine ranks, if there are some.
    pub engine_weights: Option<WeightGroup>,
    /// The rules the verifiers follow (for verifier workers on other nodes).
    pub verifier_mode: Mode,
    /// Where to open the control socket for `rlvr ctl`, if anywhere.
    pub control: Option<PathBuf>,
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
    prefetched: VecDeque<JoinHandle<Result<Scored>>>,
    evals: Vec<(u64, f64)>,
    started: Instant,
    /// The control socket (closed when the state drops) and the progress it reports.
    control: Option<(ControlSocket, Arc<Mutex<control::Progress>>)>,
}

/// The controller actor.
pub struct Controller;

/// Restarts a pool allows before the run fails.
const MAX_RESTARTS: u64 = 20;

impl ControllerState {
    /// Take the prompts of `step` from the data actor now, in step order, and return the task
    /// that rolls them out and verifies them (spawned, so it can run ahead).
    async fn rollout_and_verify(
        &self,
        step: u64,
    ) -> Result<impl std::future::Future<Output = Result<Scored>> + Send + 'static> {
        let prompts = ractor::call!(self.roles.data, DataMsg::Next, self.settings.prompts_per_step)
            .map_err(|e| anyhow!("data actor: {e}"))?;
        Ok(rollout_and_verify(
            self.roles.clone(),
            self.settings.clone(),
            self.tokenizer.clone(),
            step,
            prompts,
        ))
    }

    /// One RL step: rollout → verify → advantages → learn → broadcast.
    async fn step(&mut self) -> Result<()> {
        let started = Instant::now();
        let scored = self.next_rollout().await?;
        let (samples, rewards, reward_kl) = self.advantages(&scored).await?;
        if self.step == 0 {
            self.warn_if_nothing_finished(&scored, &rewards);
        }
        if samples.is_empty() {
            return self.skip_step(&scored, &rewards);
        }
        let left_out = scored.completions.len() - samples.len();
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
        self.finish_step();
        let workers = self.workers().await?;
        self.log_step(
            &scored,
            &rewards,
            &learned,
            reward_kl,
            gap,
            left_out,
            broadcast.seconds,
            started.elapsed().as_secs_f64(),
            workers,
        )
    }

    /// Count the step done, and tell the control socket.
    fn finish_step(&mut self) {
        self.step += 1;
        if let Some((_, progress)) = &self.control {
            if let Ok(mut p) = progress.lock() {
                (p.step, p.policy_version) = (self.step, self.version);
            }
        }
    }

    /// This step's rollout: rolled out ahead, or now; then the rollouts of the steps after it
    /// started, up to `prefetch` ahead.
    async fn next_rollout(&mut self) -> Result<Scored> {
        let scored = match self.prefetched.pop_front() {
            Some(task) => task.await??,
            None => self.rollout_and_verify(self.step).await?.await?,
        };
        loop {
            let next = self.step + 1 + self.prefetched.len() as u64;
            if self.prefetched.len() >= self.settings.prefetch || next >= self.settings.steps {
                return Ok(scored);
            }
            self.prefetched
                .push_back(tokio::spawn(self.rollout_and_verify(next).await?));
        }
    }

    /// The step's samples with their advantages, with each response's reward and the mean KL
    /// of the penalty when it is in the reward. The learner scores the samples first (reference
    /// log-probs, value estimates, the reward model's score) when the penalty, the estimator or
    /// the reward needs it.
    async fn advantages(&self, scored: &Scored) -> Result<(Vec<PolicySample>, Vec<Reward>, Option<f64>)> {
        let s = &self.settings;
        let learned_reward = s.reward.reward_model_multiplier != 0.0;
        let scores = if s.estimator.needs_values() || s.kl_in_reward.is_some() || learned_reward {
            let samples = samples(scored, s);
            let scores = ractor::call!(self.roles.learner, LearnerMsg::Score, samples)
                .map_err(|e| anyhow!("learner: {e}"))??;
            Some(scores)
        } else {
            None
        };
        let (samples, rewards, kl) = policy_samples(scored, scores.as_deref(), s);
        Ok((samples, rewards, kl))
    }

    /// Save a checkpoint with the data position, for `--resume`.
    async fn checkpoint(&mut self) -> Result<()> {
        let dir = self.checkpoints.join(format!("step-{}", self.step));
        ractor::call!(self.roles.learner, LearnerMsg::Save, dir.clone())
            .map_err(|e| anyhow!("learner: {e}"))??;
        let position =
            ractor::call!(self.roles.data, DataMsg::Position).map_err(|e| anyhow!("data actor: {e}"))?;
        // The prompts of steps rolled out ahead are served again after a resume (their
        // rollouts, from older weights, are not kept). Prompts drawn to refill them under dynamic
        // sampling are not counted back.
        let ahead = (self.prefetched.len() * self.settings.prompts_per_step) as u64;
        let position = position.saturating_sub(ahead);
        let state = json!({"step": self.step, "data_position": position, "policy_version": self.version});
        crate::stages::write_state(&dir.join("trainer_state.json"), &state)?;
        crate::stages::prune_checkpoints(&self.checkpoints, self.settings.keep_checkpoints)
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
        // Workers on other nodes cannot read the model directory: they start from these
        // (gathered with the other learner ranks, when the learner is spread over several).
        // A ZeRO-3 learner sends them (and every later version) to launched engine ranks as
        // its ranks gather them, and they are held nowhere here.
        let only_at_engine_ranks = args.engine_weights.is_some() && args.learner.is_sharded();
        let seed = match &args.listen {
            Some(_) => {
                let version = args.start.policy_version;
                if let Some(ranks) = &args.ranks {
                    ranks.send(&RankRequest::Export(version))?;
                }
                Some(Arc::new(match &args.engine_weights {
                    Some(group) if only_at_engine_ranks => {
                        group.send_learner(&args.learner, version)?;
                        Weights::at_engine_ranks(version)
                    }
                    _ => Weights::from_chunks(version, args.learner.export_weights(version)?),
                }))
            }
            None => None,
        };
        let in_flight = args
            .settings
            .in_flight
            .then(|| Arc::new(LatestWeights::default()));
        let broadcaster = Broadcaster {
            timeout,
            in_flight: in_flight.clone(),
            engines: args.engine_weights.clone(),
        };
        let (broadcaster, _) = Actor::spawn_linked(None, broadcaster, seed, cell.clone()).await?;
        let rollout_setup = encode(&RolloutSetup {
            config: args.learner.model().config().clone(),
            max_batch: args.engine_batch,
            engine: args.engine_options,
            bf16: args.engine_kind == tch::Kind::BFloat16,
            in_flight: args.settings.in_flight,
        });
        let rollout_spawner = RolloutSpawner {
            model: args.model_dir,
            version: args.start.policy_version,
            devices: args.engine_devices,
            kind: args.engine_kind,
            learner_device: args.learner.model().device(),
            max_batch: args.engine_batch,
            options: args.engine_options,
            broadcaster: broadcaster.clone(),
            in_flight: in_flight.map(|slot| slot as Arc<dyn rlvr_rollout::WeightFeed>),
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
                weights_only_at_engine_ranks: only_at_engine_ranks,
            };
            Actor::spawn_linked(None, Recruiter, recruiter, cell.clone()).await?;
        }
        let learner_args = LearnerArgs {
            learner: args.learner,
            settings: args.learn,
            ranks: args.ranks,
            engines: args.engine_weights,
        };
        let (learner, _) = Actor::spawn_linked(None, LearnerActor, learner_args, cell).await?;
        let control = match &args.control {
            Some(path) => {
                let progress = Arc::new(Mutex::new(control::Progress {
                    step: args.start.step,
                    policy_version: args.start.policy_version,
                }));
                let controls = Controls {
                    rollout: rollout.clone(),
                    verifiers: verifiers.clone(),
                    progress: progress.clone(),
                };
                match ControlSocket::serve(path, controls) {
                    Ok(socket) => Some((socket, progress)),
                    Err(e) => {
                        tracing::warn!("no control socket for `rlvr ctl`: {e:#}");
                        None
                    }
                }
            }
            None => None,
        };
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
            prefetched: VecDeque::new(),
            evals: args.earlier_evals,
            started: Instant::now(),
            control,
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
