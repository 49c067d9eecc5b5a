//! A worker node: rollout or verifier workers in this process that join a run's actor graph
//! from outside it, started by `rlvr worker` and by launched ranks past an RLVR stage's
//! learners (`stages/engine_ranks.rs`). Its workers join their role's process group, the node
//! connects to the run's, and it serves until the run closes the connection or refuses its
//! secret.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ractor::Actor;
use tch::Device;

use super::remote::{RemoteWorker, Role};
use super::weight_group::{Inbox, WeightGroup};
use super::wire::{ROLLOUT_GROUP, SYNCED_ROLLOUT_GROUP, VERIFIER_GROUP};
use crate::cluster::{connect, start_node, NodeEvent};

/// A node of workers joining a run.
pub struct Node {
    /// The run's address.
    pub run_addr: SocketAddr,
    /// What the workers do.
    pub role: Role,
    /// Workers on this node.
    pub workers: usize,
    /// The run's shared secret.
    pub cookie: String,
    /// Where rollout engines run.
    pub device: Device,
    /// How long to keep trying to reach the run.
    pub wait: Duration,
    /// The tensor-parallel group its one rollout worker leads.
    pub tensor_parallel: Option<WeightGroup>,
    /// Where its rollout workers' policy versions arrive, when it is a launched engine rank
    /// (the run's weight group); else they come as messages.
    pub inbox: Option<Arc<Inbox>>,
}

/// How a node's session with the run ended.
pub enum Ended {
    /// The run closed the connection (its RLVR stage ended).
    Closed,
    /// The run refused the node's secret.
    Refused,
}

/// Start `node`'s workers, join the run, and serve until the run closes the connection or
/// refuses the secret.
pub fn serve(node: &Node) -> Result<Ended> {
    // The run never connects back (its node is not transitive), so any local port will do.
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let run_addr = node.run_addr;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the actor runtime")?;
    let outcome = runtime.block_on(async {
        let role = match node.role {
            Role::Rollout => "rollout",
            Role::Verifier => "verifier",
        };
        let name = format!("rlvr-worker-{role}-{}", std::process::id());
        let (cluster, mut events) = start_node(name, listen, node.cookie.clone(), "worker", None).await?;
        let mut workers = Vec::with_capacity(node.workers);
        for _ in 0..node.workers {
            let worker = RemoteWorker {
                role: node.role,
                device: if node.role == Role::Rollout {
                    node.device
                } else {
                    Device::Cpu
                },
                tensor_parallel: node.tensor_parallel.clone(),
                inbox: node.inbox.clone(),
            };
            let (actor, _) = Actor::spawn(None, worker, ())
                .await
                .context("starting a worker")?;
            workers.push(actor);
        }
        let group = match (node.role, &node.inbox) {
            (Role::Rollout, None) => ROLLOUT_GROUP,
            (Role::Rollout, Some(_)) => SYNCED_ROLLOUT_GROUP,
            (Role::Verifier, _) => VERIFIER_GROUP,
        };
        ractor::pg::join(group.to_string(), workers.iter().map(|w| w.get_cell()).collect());
        connect(&cluster, run_addr, node.wait).await?;
        let mut joined = false;
        let ended = loop {
            match events.recv().await {
                Some(NodeEvent::Joined(_)) if !joined => {
                    joined = true;
                    tracing::info!(
                        "worker: {} {role} worker(s) joined the run at {run_addr}",
                        node.workers
                    );
                }
                Some(NodeEvent::Left(_)) => {
                    tracing::info!("worker: the run at {run_addr} closed the connection; exiting");
                    break Ended::Closed;
                }
                Some(NodeEvent::Refused(_)) => break Ended::Refused,
                Some(NodeEvent::Joined(_)) => {}
                None => bail!("the cluster node stopped"),
            }
        };
        // Stopped before returning, so a node started again in this process (after a refusal)
        // does not offer the run these workers, gone with this runtime, from the process-wide
        // groups.
        for worker in workers {
            let _ = worker.stop_and_wait(None, Some(Duration::from_secs(10))).await;
        }
        let _ = cluster.stop_and_wait(None, Some(Duration::from_secs(10))).await;
        Ok(ended)
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    outcome
}
