//! `rlvr worker`: a worker node. It joins a run started with `rlvr run --listen` and takes
//! rollout or verify jobs at once (the run gives a rollout worker its model's shape and
//! current weights); it exits when the run ends, and with an error when the run refuses its
//! secret or cannot be reached.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ractor::Actor;
use tch::Device;

use crate::cluster::{connect, cookie_file, read_cookie, resolve, start_node, NodeEvent};
use crate::graph::remote::{RemoteWorker, Role};
use crate::graph::wire::{ROLLOUT_GROUP, VERIFIER_GROUP};
use crate::UsageError;

/// Arguments of `rlvr worker`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run's address, as its `--listen`.
    #[arg(long, value_name = "HOST:PORT")]
    pub join: String,
    /// What this node's workers do.
    #[arg(long, value_enum)]
    pub role: Role,
    /// Workers on this node.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// File holding the run's shared secret [default: $RLVR_COOKIE_FILE].
    #[arg(long)]
    pub cookie_file: Option<PathBuf>,
    /// Where a rollout node's engines run: `cpu`, `cuda` or `cuda:N` [default: the first GPU
    /// when there is one, else the CPU].
    #[arg(long, value_parser = crate::commands::placement::parse_device)]
    pub device: Option<Device>,
    /// Seconds to keep trying to reach the run (it may still be in an earlier stage).
    #[arg(long, default_value_t = 600)]
    pub wait_s: u64,
}

/// A node of workers joining a run.
pub(crate) struct Node {
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
}

/// How a node's session with the run ended.
pub(crate) enum Ended {
    /// The run closed the connection (its RLVR stage ended).
    Closed,
    /// The run refused the node's secret.
    Refused,
}

/// Join the run and serve until it ends.
pub fn run(args: &Args) -> Result<()> {
    if args.workers == 0 {
        return Err(UsageError("--workers must be at least 1".into()).into());
    }
    let device = match args.device {
        Some(d) => crate::commands::placement::usable(d)
            .map_err(|why| UsageError(format!("--device cuda: {why}")))?,
        None => rlvr_learner::runtime::default_device(),
    };
    let node = Node {
        run_addr: resolve(&args.join, "--join")?,
        role: args.role,
        workers: args.workers,
        cookie: read_cookie(&cookie_file(args.cookie_file.as_ref())?)?,
        device,
        wait: Duration::from_secs(args.wait_s),
    };
    match serve(&node)? {
        Ended::Closed => Ok(()),
        Ended::Refused => bail!(
            "the run at {} refused this node: its cookie file does not hold the run's secret",
            node.run_addr
        ),
    }
}

/// Start `node`'s workers, join the run, and serve until the run closes the connection or
/// refuses the secret.
pub(crate) fn serve(node: &Node) -> Result<Ended> {
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
        let mut cells = Vec::with_capacity(node.workers);
        for _ in 0..node.workers {
            let worker = RemoteWorker {
                role: node.role,
                device: if node.role == Role::Rollout {
                    node.device
                } else {
                    Device::Cpu
                },
            };
            let (actor, _) = Actor::spawn(None, worker, ())
                .await
                .context("starting a worker")?;
            cells.push(actor.get_cell());
        }
        let group = match node.role {
            Role::Rollout => ROLLOUT_GROUP,
            Role::Verifier => VERIFIER_GROUP,
        };
        ractor::pg::join(group.to_string(), cells.clone());
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
        for cell in cells {
            cell.stop(None);
        }
        Ok(ended)
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    outcome
}
