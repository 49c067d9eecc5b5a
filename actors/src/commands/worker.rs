//! `rlvr worker`: a worker node. It joins a run started with `rlvr run --listen` and takes
//! rollout or verify jobs at once (the run gives a rollout worker its model's shape and
//! current weights); it exits when the run ends, and with an error when the run refuses its
//! secret or cannot be reached.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use tch::Device;

use crate::cluster::{cookie_file, read_cookie, resolve};
use crate::graph::node::{serve, Ended, Node};
use crate::graph::remote::Role;
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
    #[arg(long, value_parser = crate::placement::parse_device)]
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
    let device = match args.device {
        Some(d) => crate::placement::usable(d).map_err(|why| UsageError(format!("--device cuda: {why}")))?,
        None => rlvr_learner::runtime::default_device(),
    };
    let cookie = read_cookie(&cookie_file(args.cookie_file.as_ref())?)?;
    let node = Node {
        run_addr: resolve(&args.join, "--join")?,
        role: args.role,
        workers: args.workers,
        cookie,
        device,
        wait: Duration::from_secs(args.wait_s),
        tensor_parallel: None,
        inbox: None,
    };
    match serve(&node)? {
        Ended::Closed => Ok(()),
        Ended::Refused => bail!(
            "the run at {} refused this node: its cookie file does not hold the run's secret",
            node.run_addr
        ),
    }
}
