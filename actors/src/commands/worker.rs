//! `rlvr worker`: a worker node. It joins a run started with `rlvr run --listen` and takes
//! rollout or verify jobs at once (the run gives a rollout worker its model's shape and
//! current weights); it exits when the run ends, and with an error when the run refuses its
//! secret or cannot be reached.

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

/// Join the run and serve until it ends.
pub fn run(args: &Args) -> Result<()> {
    if args.workers == 0 {
        return Err(UsageError("--workers must be at least 1".into()).into());
    }
    let cookie = read_cookie(&cookie_file(args.cookie_file.as_ref())?)?;
    let run_addr = resolve(&args.join, "--join")?;
    // The run never connects back (its node is not transitive), so any local port will do.
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let device = match args.device {
        Some(d) => crate::commands::placement::usable(d)
            .map_err(|why| UsageError(format!("--device cuda: {why}")))?,
        None => rlvr_learner::runtime::default_device(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the actor runtime")?;
    let outcome = runtime.block_on(async {
        let role = match args.role {
            Role::Rollout => "rollout",
            Role::Verifier => "verifier",
        };
        let name = format!("rlvr-worker-{role}-{}", std::process::id());
        let (node, mut events) = start_node(name, listen, cookie, "worker", None).await?;
        let mut cells = Vec::with_capacity(args.workers);
        for _ in 0..args.workers {
            let worker = RemoteWorker {
                role: args.role,
                device: if args.role == Role::Rollout {
                    device
                } else {
                    Device::Cpu
                },
            };
            let (actor, _) = Actor::spawn(None, worker, ())
                .await
                .context("starting a worker")?;
            cells.push(actor.get_cell());
        }
        let group = match args.role {
            Role::Rollout => ROLLOUT_GROUP,
            Role::Verifier => VERIFIER_GROUP,
        };
        ractor::pg::join(group.to_string(), cells);
        connect(&node, run_addr, Duration::from_secs(args.wait_s)).await?;
        let mut joined = false;
        while let Some(event) = events.recv().await {
            match event {
                NodeEvent::Joined(_) if !joined => {
                    joined = true;
                    tracing::info!(
                        "worker: {} {role} worker(s) joined the run at {run_addr}",
                        args.workers
                    );
                }
                NodeEvent::Left(_) => {
                    tracing::info!("worker: the run at {run_addr} closed the connection; exiting");
                    return Ok(());
                }
                NodeEvent::Refused(_) => bail!(
                    "the run at {run_addr} refused this node: its cookie file does not hold the run's secret"
                ),
                NodeEvent::Joined(_) => {}
            }
        }
        bail!("the cluster node stopped")
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    outcome
}
