//! `rlvr bench weight-sync --over cluster`: a learner's weights to a rollout worker node — a
//! `rlvr worker` process joined over `ractor_cluster`, the path of `rlvr run --listen` — in
//! buckets of whole tensors, loaded in place, against a memory copy of the same bytes. The
//! worker's greedy completion after the last sync must equal a local engine's with the same
//! weights, token for token and log-prob for log-prob.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ractor::ActorRef;
use rlvr_core::{Completion, GenerationRequest, SamplingParams};
use rlvr_learner::{Learner, LearnerConfig};
use rlvr_rollout::{Engine, NativeEngine};
use serde_json::json;
use tch::{Device, Kind};

use super::weights::WeightSyncArgs;
use super::{copy_bandwidth, shape};
use crate::cluster::start_node;
use crate::graph::broadcast::Weights;
use crate::graph::proxy::{call, call_status, send_weights, SETUP_TIMEOUT};
use crate::graph::wire::{
    decode, encode, Completions, EngineOptions, RemoteMsg, RolloutRequest, RolloutSetup, ROLLOUT_GROUP,
};

/// Kills the worker node when the benchmark ends, however it ends.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first worker of another node in the rollout group, waiting up to a minute for it.
async fn remote_worker() -> Result<ActorRef<RemoteMsg>> {
    let started = Instant::now();
    loop {
        let members = ractor::pg::get_members(&ROLLOUT_GROUP.to_string());
        if let Some(cell) = members.into_iter().find(|c| !c.get_id().is_local()) {
            return Ok(cell.into());
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the worker node did not join within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Spawn a worker node, sync `args.repeats` weight versions to it, and print the best time.
pub fn worker_sync(args: &WeightSyncArgs) -> Result<()> {
    let config = shape(&args.model.shape_from)?;
    let learner = Learner::new(&config, LearnerConfig::constant(1e-5, Device::Cpu), 0);
    let dir = std::env::temp_dir().join(format!("rlvr-bench-worker-sync-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cookie_file = dir.join("cookie");
    let cookie = format!("bench-{:x}", rand::random::<u64>());
    std::fs::write(&cookie_file, &cookie)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cookie_file, std::fs::Permissions::from_mode(0o600))?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome = runtime.block_on(async {
        let (_node, _events) = start_node("rlvr-bench".into(), addr, cookie, "bench", None).await?;
        let _worker = Node(
            Command::new(std::env::current_exe()?)
                .args([
                    "worker",
                    "--join",
                    &addr.to_string(),
                    "--role",
                    "rollout",
                    "--cookie-file",
                ])
                .arg(&cookie_file)
                .stderr(Stdio::null())
                .spawn()
                .context("starting a worker node")?,
        );
        let remote = remote_worker().await?;
        let setup = encode(&RolloutSetup {
            config: config.clone(),
            max_batch: 1,
            engine: EngineOptions {
                kv_cache_bytes: None,
                cuda_graphs: true,
            },
            bf16: false,
            in_flight: false,
        });
        call_status(&remote, |r| RemoteMsg::Setup(setup, r))
            .await
            .map_err(|e| anyhow!("worker set-up: {e}"))?;
        let mut best = (f64::INFINITY, 0);
        let mut last = None;
        for version in 1..=args.repeats as u64 {
            let t = Instant::now();
            // As a run does: the learner's snapshot, made host bytes for the node.
            let w = Weights::snapshot(&learner, version)?;
            let buckets = send_weights(&remote, &w, args.bucket_mib << 20)
                .await
                .map_err(|e| anyhow!("weight sync: {e}"))?;
            let seconds = t.elapsed().as_secs_f64();
            if seconds < best.0 {
                best = (seconds, buckets);
            }
            last = Some(w);
        }
        let w = last.context("--repeats is positive")?;
        let job = RolloutRequest {
            requests: vec![GenerationRequest {
                id: 0,
                prompt_ids: vec![1, 2, 3, 4, 5],
                n: 1,
                seed: 0,
            }],
            params: SamplingParams {
                temperature: 0.0,
                max_new_tokens: 16,
                ..SamplingParams::default()
            },
        };
        let request = encode(&job);
        let reply = call(&remote, |r| RemoteMsg::Generate(request, r), SETUP_TIMEOUT)
            .await
            .map_err(|e| anyhow!("worker generation: {e}"))?;
        let theirs = decode::<Completions>(&reply, "completions").map_err(|e| anyhow!(e))?;
        let theirs = theirs.map_err(|e| anyhow!("worker generation: {e}"))?.completions;
        Ok::<_, anyhow::Error>((best, w, job, theirs))
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_dir_all(&dir);
    let ((seconds, buckets), w, job, theirs) = outcome?;

    let mut engine = NativeEngine::new(&config, Device::Cpu, Kind::Float, 1, 0);
    engine.load_weights(w.chunks()?, w.version)?;
    let ours: Vec<Completion> = engine.generate(&job.requests, &job.params)?;
    if ours != theirs {
        bail!("the worker node's completion differs from a local engine's with the same weights");
    }
    let bytes: usize = w.chunks()?.iter().map(|c| c.data.len()).sum();
    let copy_s = bytes as f64 / (copy_bandwidth(Device::Cpu) / 2.0);
    println!(
        "{}",
        json!({
            "transport": "ractor_cluster", "bytes": bytes, "buckets": buckets, "bucket_mib": args.bucket_mib,
            "sync_ms": seconds * 1e3, "memcpy_ms": copy_s * 1e3, "sync_over_memcpy": seconds / copy_s,
            "completions_equal": true, "version": w.version,
        })
    );
    Ok(())
}
