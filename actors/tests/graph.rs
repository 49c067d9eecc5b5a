//! The actor graph's pools under faults: a rollout worker killed mid-step is restarted and its
//! prompts re-queued (none lost, none done twice), workers join while a step runs, a hanging
//! verifier is timed out, a broadcast reaches every worker before its next job, and a verifier
//! proxy scores on the run's node what its worker node cannot.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use rlvr_actors::graph::broadcast::{BroadcastMsg, Broadcaster, Weights};
use rlvr_actors::graph::pool::{Pool, PoolArgs, PoolMsg, PoolStats, Spawner};
use rlvr_actors::graph::proxy::{ProxyArgs, VerifierProxy};
use rlvr_actors::graph::remote::{RemoteWorker, Role};
use rlvr_actors::graph::rollout::{RolloutArgs, RolloutJob, RolloutWorker};
use rlvr_actors::graph::verifier::{VerifierWorker, VerifyArgs, VerifyJob};
use rlvr_actors::graph::wire::{encode, EngineOptions, VerifierSetup};
use rlvr_core::{GenerationRequest, SamplingParams, Verdict};
use rlvr_learner::model::Config;
use rlvr_learner::{Learner, LearnerConfig};
use rlvr_verifiers::{Registry, Truth, TruthError, Verifier};
use tch::Device;

/// A fresh directory, removed when it drops.
fn tmp(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("rlvr-graph-{name}-"))
        .tempdir()
        .unwrap()
}

fn learner(seed: i64) -> Learner {
    let config: Config = serde_json::from_value(serde_json::json!({
        "model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 60,
        "max_position_embeddings": 128, "tie_word_embeddings": true
    }))
    .unwrap();
    let cfg = LearnerConfig {
        max_grad_norm: None,
        ..LearnerConfig::constant(1e-3, Device::Cpu)
    };
    Learner::new(&config, cfg, seed)
}

struct Rollouts {
    model: std::path::PathBuf,
    broadcaster: ActorRef<BroadcastMsg>,
}

impl Spawner<RolloutWorker> for Rollouts {
    fn make(&self, _index: usize, pool: ActorRef<PoolMsg<RolloutWorker>>) -> (RolloutWorker, RolloutArgs) {
        let args = RolloutArgs {
            model: self.model.clone(),
            version: 0,
            device: Device::Cpu,
            kind: tch::Kind::Float,
            free_cache_between_jobs: false,
            max_batch: 8,
            options: EngineOptions {
                kv_cache_bytes: None,
                cuda_graphs: true,
            },
            pool,
            broadcaster: self.broadcaster.clone(),
            in_flight: None,
        };
        (RolloutWorker, args)
    }
}

async fn rollout_pool(
    dir: &Path,
    workers: usize,
) -> (ActorRef<PoolMsg<RolloutWorker>>, ActorRef<BroadcastMsg>) {
    learner(3).save_model(dir).unwrap();
    let (broadcaster, _) = Actor::spawn(
        None,
        Broadcaster {
            timeout: Duration::from_secs(60),
            in_flight: None,
            engines: None,
        },
        None,
    )
    .await
    .unwrap();
    let spawner = Rollouts {
        model: dir.to_path_buf(),
        broadcaster: broadcaster.clone(),
    };
    let args = PoolArgs {
        name: "rollout".into(),
        workers,
        spawner: Arc::new(spawner),
        max_restarts: 5,
    };
    let (pool, _) = Actor::spawn(None, Pool::<RolloutWorker>::default(), args)
        .await
        .unwrap();
    (pool, broadcaster)
}

/// `prompts` prompts, `n` samples each, one job per prompt.
fn jobs(prompts: u64, n: usize, tokens: usize) -> Vec<RolloutJob> {
    let params = Arc::new(SamplingParams {
        max_new_tokens: tokens,
        ..SamplingParams::default()
    });
    (0..prompts)
        .map(|id| RolloutJob {
            requests: vec![GenerationRequest {
                id,
                prompt_ids: vec![1, 5 + id as u32 % 40, 7],
                n,
                seed: id,
            }],
            params: params.clone(),
        })
        .collect()
}

async fn stats<W: rlvr_actors::graph::pool::PoolWorker>(pool: &ActorRef<PoolMsg<W>>) -> PoolStats<W> {
    ractor::call!(pool, PoolMsg::Stats).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_worker_killed_mid_step_is_restarted_and_no_prompt_is_lost_or_doubled() {
    tch::set_num_threads(1);
    let dir = tmp("kill");
    let (pool, _b) = rollout_pool(dir.path(), 2).await;
    let (prompts, n) = (24u64, 4usize);
    let pending = {
        let pool = pool.clone();
        tokio::spawn(async move { ractor::call!(pool, PoolMsg::Run, jobs(prompts, n, 64)).unwrap() })
    };
    // Kill a worker while it is generating.
    let victim = loop {
        let s = stats(&pool).await;
        if let Some((w, Some(_))) = s.workers.into_iter().find(|(_, job)| job.is_some()) {
            break w;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    victim.kill();
    let out = pending.await.unwrap();

    assert_eq!(out.len(), prompts as usize, "one output per job");
    for (id, generated) in out.iter().enumerate() {
        assert_eq!(generated.completions.len(), n, "prompt {id}: {n} completions");
        assert!(generated.completions.iter().all(|c| c.request_id == id as u64));
    }
    let s = stats(&pool).await;
    assert_eq!(s.restarts, 1, "the killed worker was restarted");
    assert_eq!(s.requeued, 1, "its job went back to the queue");
    assert_eq!(s.done, prompts, "every job finished exactly once");
    assert_eq!(s.workers.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_join_and_leave_while_a_step_runs() {
    tch::set_num_threads(1);
    let dir = tmp("resize");
    let (pool, _b) = rollout_pool(dir.path(), 1).await;
    let pending = {
        let pool = pool.clone();
        tokio::spawn(async move { ractor::call!(pool, PoolMsg::Run, jobs(16, 2, 32)).unwrap() })
    };
    pool.send_message(PoolMsg::Resize(3)).unwrap();
    let out = pending.await.unwrap();
    assert_eq!(out.len(), 16);
    assert_eq!(stats(&pool).await.workers.len(), 3);
    pool.send_message(PoolMsg::Resize(1)).unwrap();
    let out = ractor::call!(pool, PoolMsg::Run, jobs(4, 1, 8)).unwrap();
    assert_eq!(out.len(), 4);
    let s = stats(&pool).await;
    assert_eq!(s.workers.len(), 1);
    assert_eq!(s.restarts, 0, "retired workers are not restarted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_every_worker_and_later_completions_carry_its_version() {
    tch::set_num_threads(1);
    let dir = tmp("broadcast");
    let (pool, broadcaster) = rollout_pool(dir.path(), 2).await;
    let before = ractor::call!(pool, PoolMsg::Run, jobs(4, 1, 8)).unwrap();
    assert!(before
        .iter()
        .flat_map(|g| &g.completions)
        .all(|c| c.policy_version == 0));
    let new = learner(4);
    let weights = Arc::new(Weights::snapshot(&new, 5).unwrap());
    let report = ractor::call!(broadcaster, BroadcastMsg::Publish, weights).unwrap();
    assert_eq!(report.workers, 2);
    // A worker started after the broadcast subscribes and gets version 5 before any job.
    pool.send_message(PoolMsg::Resize(3)).unwrap();
    let after = ractor::call!(pool, PoolMsg::Run, jobs(12, 1, 8)).unwrap();
    assert!(after
        .iter()
        .flat_map(|g| &g.completions)
        .all(|c| c.policy_version == 5));
    assert_eq!(stats(&pool).await.workers.len(), 3);
}

/// A verifier that never answers for responses containing "hang" and panics on "boom".
struct Hangs;

impl Verifier for Hangs {
    fn name(&self) -> &str {
        "hangs"
    }
    fn parse_truth(&self, raw: &str) -> Result<Truth, TruthError> {
        Ok(Truth::Text(raw.to_string()))
    }
    fn verify(&self, response: &str, _truth: &Truth) -> Verdict {
        if response.contains("hang") {
            std::thread::sleep(Duration::from_secs(6));
        }
        assert!(!response.contains("boom"), "the verifier broke");
        Verdict::new(1.0, true, "ok")
    }
}

struct Verifiers;

impl Spawner<VerifierWorker> for Verifiers {
    fn make(&self, _index: usize, pool: ActorRef<PoolMsg<VerifierWorker>>) -> (VerifierWorker, VerifyArgs) {
        let worker = VerifierWorker {
            // Generous beside other tests' load; the hang lasts far longer.
            timeout: Duration::from_secs(1),
        };
        (worker, VerifyArgs { pool })
    }
}

/// A pool of `workers` local verifier workers (restarted up to 5 times).
async fn verifier_pool(workers: usize) -> ActorRef<PoolMsg<VerifierWorker>> {
    let args = PoolArgs {
        name: "verifier".into(),
        workers,
        spawner: Arc::new(Verifiers),
        max_restarts: 5,
    };
    Actor::spawn(None, Pool::<VerifierWorker>::default(), args)
        .await
        .unwrap()
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_panicking_verifier_is_scored_failed_with_a_reason() {
    let pool = verifier_pool(2).await;
    let gsm8k = Registry::new(Default::default()).get("gsm8k").unwrap().clone();
    let jobs = vec![
        VerifyJob {
            verifier: Arc::new(Hangs),
            truth: Arc::new(Truth::Text(String::new())),
            label: "".into(),
            responses: vec!["fine".into(), "boom".into(), "hang here".into()],
        },
        VerifyJob {
            truth: Arc::new(gsm8k.parse_truth("12").unwrap()),
            verifier: gsm8k,
            label: "12".into(),
            responses: vec!["so #### 12".into(), "#### 13".into()],
        },
    ];
    let started = std::time::Instant::now();
    let out = ractor::call!(pool, PoolMsg::Run, jobs).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the hang did not stall the step"
    );
    assert!(out[0][0].verified);
    assert!(!out[0][1].verified);
    assert!(out[0][1].reason.contains("panicked"), "{}", out[0][1].reason);
    assert!(!out[0][2].verified);
    assert!(out[0][2].reason.contains("timed out"), "{}", out[0][2].reason);
    let s = stats(&pool).await;
    assert_eq!(
        s.restarts, 0,
        "a panicking verifier call does not take its worker down"
    );
    assert!(out[1][0].verified && !out[1][1].verified);
}

/// A verifier proxy in front of a worker-node verifier (here in this process: the proxy talks
/// to it in the same messages as over the network): the node scores what its built-in
/// verifiers know, and a job it cannot score comes back to the run's node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_a_worker_node_cannot_score_is_scored_by_its_proxy() {
    let (remote, _) = Actor::spawn(
        None,
        RemoteWorker {
            role: Role::Verifier,
            device: Device::Cpu,
            tensor_parallel: None,
            inbox: None,
        },
        (),
    )
    .await
    .unwrap();
    let pool = verifier_pool(0).await;
    let setup = encode(&VerifierSetup {
        mode: Default::default(),
        timeout_s: 5.0,
    });
    let proxy = VerifierProxy {
        timeout: Duration::from_secs(5),
    };
    let args = ProxyArgs {
        remote,
        setup,
        pool: pool.clone(),
    };
    let (proxy, _) = Actor::spawn_linked(None, proxy, args, pool.get_cell())
        .await
        .unwrap();
    pool.send_message(PoolMsg::Adopt(proxy)).unwrap();
    let gsm8k = Registry::new(Default::default()).get("gsm8k").unwrap().clone();
    let jobs = vec![
        // `hangs` is no built-in: the node cannot score it.
        VerifyJob {
            verifier: Arc::new(Hangs),
            truth: Arc::new(Truth::Text(String::new())),
            label: "".into(),
            responses: vec!["fine".into()],
        },
        VerifyJob {
            truth: Arc::new(gsm8k.parse_truth("12").unwrap()),
            verifier: gsm8k,
            label: "12".into(),
            responses: vec!["so #### 12".into(), "#### 13".into()],
        },
    ];
    // Without the fallback the job would be re-queued with no worker left to take it.
    let out = ractor::call_t!(pool, PoolMsg::Run, 30_000, jobs).expect("every job scored");
    assert_eq!((out[0][0].verified, out[0][0].reason.as_str()), (true, "ok"));
    assert!(out[1][0].verified && !out[1][1].verified);
    let s = stats(&pool).await;
    assert_eq!((s.adopted, s.done, s.requeued, s.restarts), (1, 2, 0, 0));
}
