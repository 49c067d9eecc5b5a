//! A supervised pool of workers fed from one queue. Jobs go to whichever worker is idle, so a
//! faster worker takes more of them. A worker that panics, fails or is killed mid-job is
//! restarted, and its job goes back to the front of the queue: no job is lost, and since a job
//! is finished by the first result that comes back for it, none is counted twice. Workers can
//! be added or retired while jobs are running, and workers started elsewhere — proxies of
//! workers on other nodes — can be adopted: their jobs are re-queued when they die, but they
//! are not restarted (their node is gone).
//!
//! (ractor's factory routes jobs to workers too, but drops a dead worker's in-flight job; RL
//! cannot lose prompts, so the pool keeps every job until its result is in.)

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SupervisionEvent};

/// A job's id within its pool.
pub type JobId = u64;

/// An actor the pool can run jobs on. It must send [`PoolMsg::Done`] to its pool when a job
/// assigned through [`PoolWorker::assign`] is finished.
pub trait PoolWorker: Actor {
    /// What one job needs (kept by the pool until the job is done, to re-queue it).
    type Job: Clone + Send + Sync + 'static;
    /// What one job produces.
    type Output: Send + 'static;

    /// The message that hands `job` to this worker.
    fn assign(id: JobId, job: Self::Job) -> Self::Msg;
}

/// Builds the pool's workers.
pub trait Spawner<W: PoolWorker>: Send + Sync + 'static {
    /// The actor and its start-up arguments for worker number `index` of `pool`.
    fn make(&self, index: usize, pool: ActorRef<PoolMsg<W>>) -> (W, W::Arguments);
}

/// Messages of a pool.
#[derive(ractor_cluster::RactorMessage)]
pub enum PoolMsg<W: PoolWorker> {
    /// Run `jobs`; the reply carries their outputs in the same order.
    Run(Vec<W::Job>, RpcReplyPort<Vec<W::Output>>),
    /// A worker finished a job.
    Done {
        /// The job.
        job: JobId,
        /// Its output.
        output: W::Output,
    },
    /// Grow or shrink to this many local workers (retired workers finish their current job
    /// first; adopted ones are not counted).
    Resize(usize),
    /// Take jobs on a worker spawned elsewhere, linked to this pool (so the pool hears when it
    /// dies); it is never restarted.
    Adopt(ActorRef<W::Msg>),
    /// Counters and the live workers.
    Stats(RpcReplyPort<PoolStats<W>>),
}

/// A snapshot of a pool.
pub struct PoolStats<W: PoolWorker> {
    /// Live workers, and the job each is running.
    pub workers: Vec<(ActorRef<W::Msg>, Option<JobId>)>,
    /// Adopted workers among `workers`.
    pub adopted: usize,
    /// Workers restarted after a failure.
    pub restarts: u64,
    /// Jobs put back in the queue because their worker died.
    pub requeued: u64,
    /// Jobs finished.
    pub done: u64,
}

struct Slot<W: PoolWorker> {
    actor: ActorRef<W::Msg>,
    index: usize,
    job: Option<JobId>,
    retiring: bool,
    adopted: bool,
}

struct Pending {
    batch: u64,
    position: usize,
}

struct Batch<O> {
    outputs: Vec<Option<O>>,
    missing: usize,
    reply: RpcReplyPort<Vec<O>>,
}

/// State of a pool.
pub struct PoolState<W: PoolWorker> {
    name: String,
    spawner: Arc<dyn Spawner<W>>,
    workers: BTreeMap<ActorId, Slot<W>>,
    queue: VecDeque<JobId>,
    jobs: HashMap<JobId, (W::Job, Pending)>,
    batches: HashMap<u64, Batch<W::Output>>,
    next_job: JobId,
    next_batch: u64,
    next_index: usize,
    max_restarts: u64,
    restarts: u64,
    requeued: u64,
    done: u64,
}

/// Start-up arguments of a pool.
pub struct PoolArgs<W: PoolWorker> {
    /// Name used in logs and worker names (`rollout`, `verifier`).
    pub name: String,
    /// Workers at start.
    pub workers: usize,
    /// Builds workers.
    pub spawner: Arc<dyn Spawner<W>>,
    /// Restarts allowed over the pool's life before it gives up (a worker that fails at every
    /// job would otherwise loop forever).
    pub max_restarts: u64,
}

/// The pool actor.
pub struct Pool<W>(std::marker::PhantomData<fn() -> W>);

impl<W> Default for Pool<W> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<W: PoolWorker> PoolState<W> {
    async fn spawn(&mut self, myself: &ActorRef<PoolMsg<W>>, index: usize) -> Result<(), ActorProcessingErr> {
        let (worker, args) = self.spawner.make(index, myself.clone());
        let (actor, _) = Actor::spawn_linked(None, worker, args, myself.get_cell())
            .await
            .map_err(|e| format!("{} worker {index} did not start: {e}", self.name))?;
        self.workers.insert(
            actor.get_id(),
            Slot {
                actor,
                index,
                job: None,
                retiring: false,
                adopted: false,
            },
        );
        Ok(())
    }

    /// Hand queued jobs to idle workers.
    fn dispatch(&mut self) {
        for slot in self.workers.values_mut() {
            if slot.job.is_some() || slot.retiring {
                continue;
            }
            let Some(id) = self.queue.pop_front() else {
                return;
            };
            let job = self.jobs[&id].0.clone();
            if slot.actor.send_message(W::assign(id, job)).is_ok() {
                slot.job = Some(id);
            } else {
                // Dead already: its supervision event will remove it.
                self.queue.push_front(id);
            }
        }
    }

    fn finish(&mut self, id: JobId, output: W::Output) {
        let Some((_, pending)) = self.jobs.remove(&id) else {
            return; // finished already by another worker
        };
        self.queue.retain(|&q| q != id);
        self.done += 1;
        if let Some(batch) = self.batches.get_mut(&pending.batch) {
            batch.outputs[pending.position] = Some(output);
            batch.missing -= 1;
            if batch.missing == 0 {
                let batch = self.batches.remove(&pending.batch).expect("batch present");
                let outputs = batch.outputs.into_iter().flatten().collect();
                let _ = batch.reply.send(outputs);
            }
        }
    }

    async fn lost(
        &mut self,
        myself: &ActorRef<PoolMsg<W>>,
        id: ActorId,
        why: String,
    ) -> Result<(), ActorProcessingErr> {
        let Some(slot) = self.workers.remove(&id) else {
            return Ok(());
        };
        if let Some(job) = slot.job.filter(|j| self.jobs.contains_key(j)) {
            self.queue.push_front(job);
            self.requeued += 1;
        }
        if slot.adopted {
            tracing::info!(
                "{} worker {} (remote) {why}{}",
                self.name,
                slot.index,
                if slot.job.is_some() {
                    "; its job re-queued"
                } else {
                    ""
                }
            );
        } else if !slot.retiring {
            self.restarts += 1;
            if self.restarts > self.max_restarts {
                return Err(format!(
                    "{} pool: {} worker restarts, giving up (last: worker {}: {why})",
                    self.name, self.restarts, slot.index
                )
                .into());
            }
            tracing::info!(
                "{} worker {} {why}; restarting it{}",
                self.name,
                slot.index,
                if slot.job.is_some() {
                    ", its job re-queued"
                } else {
                    ""
                }
            );
            self.spawn(myself, slot.index).await?;
        }
        self.dispatch();
        Ok(())
    }

    async fn resize(
        &mut self,
        myself: &ActorRef<PoolMsg<W>>,
        target: usize,
    ) -> Result<(), ActorProcessingErr> {
        let live: Vec<ActorId> = self
            .workers
            .iter()
            .filter(|(_, s)| !s.retiring && !s.adopted)
            .map(|(id, _)| *id)
            .collect();
        for _ in live.len()..target {
            self.next_index += 1;
            self.spawn(myself, self.next_index - 1).await?;
        }
        // Retire idle workers first, then busy ones (which stop once their job is done).
        let local = self
            .workers
            .values()
            .filter(|s| !s.retiring && !s.adopted)
            .count();
        let mut order = live;
        order.sort_by_key(|id| self.workers[id].job.is_some());
        for id in order.into_iter().take(local.saturating_sub(target)) {
            let slot = self.workers.get_mut(&id).expect("live worker");
            slot.retiring = true;
            if slot.job.is_none() {
                slot.actor.stop(None);
            }
        }
        self.dispatch();
        Ok(())
    }
}

impl<W: PoolWorker> Actor for Pool<W> {
    type Msg = PoolMsg<W>;
    type State = PoolState<W>;
    type Arguments = PoolArgs<W>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: PoolArgs<W>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = PoolState {
            name: args.name,
            spawner: args.spawner,
            workers: BTreeMap::new(),
            queue: VecDeque::new(),
            jobs: HashMap::new(),
            batches: HashMap::new(),
            next_job: 0,
            next_batch: 0,
            next_index: 0,
            max_restarts: args.max_restarts,
            restarts: 0,
            requeued: 0,
            done: 0,
        };
        state.resize(&myself, args.workers).await?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PoolMsg::Run(jobs, reply) => {
                if jobs.is_empty() {
                    let _ = reply.send(Vec::new());
                    return Ok(());
                }
                let batch = state.next_batch;
                state.next_batch += 1;
                state.batches.insert(
                    batch,
                    Batch {
                        outputs: (0..jobs.len()).map(|_| None).collect(),
                        missing: jobs.len(),
                        reply,
                    },
                );
                for (position, job) in jobs.into_iter().enumerate() {
                    let id = state.next_job;
                    state.next_job += 1;
                    state.jobs.insert(id, (job, Pending { batch, position }));
                    state.queue.push_back(id);
                }
                state.dispatch();
            }
            PoolMsg::Done { job, output } => {
                state.finish(job, output);
                let finished = state.workers.values_mut().find(|s| s.job == Some(job));
                if let Some(slot) = finished {
                    slot.job = None;
                    if slot.retiring {
                        slot.actor.stop(None);
                    }
                }
                state.dispatch();
            }
            PoolMsg::Resize(n) => state.resize(&myself, n).await?,
            PoolMsg::Adopt(actor) => {
                if matches!(actor.get_status(), ActorStatus::Stopping | ActorStatus::Stopped) {
                    return Ok(()); // died before it was adopted
                }
                state.next_index += 1;
                state.workers.insert(
                    actor.get_id(),
                    Slot {
                        actor,
                        index: state.next_index - 1,
                        job: None,
                        retiring: false,
                        adopted: true,
                    },
                );
                state.dispatch();
            }
            PoolMsg::Stats(reply) => {
                let _ = reply.send(PoolStats {
                    workers: state.workers.values().map(|s| (s.actor.clone(), s.job)).collect(),
                    adopted: state.workers.values().filter(|s| s.adopted).count(),
                    restarts: state.restarts,
                    requeued: state.requeued,
                    done: state.done,
                });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                state.lost(&myself, cell.get_id(), format!("failed: {err}")).await
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let why = reason.map_or("was stopped".to_string(), |r| format!("stopped: {r}"));
                state.lost(&myself, cell.get_id(), why).await
            }
            _ => Ok(()),
        }
    }
}
