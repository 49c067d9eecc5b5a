//! Launched ranks beyond an RLVR stage's learners run its rollout engines. A launcher (torchrun,
//! `srun`) that starts `launch.gpus` ranks for a recipe whose learners take
//! `rlvr.actor_num_gpus_per_node` of them leaves the rest to engines, as open-instruct places
//! its vLLM engines on the GPUs its learners do not take. Ranks `0..learners` form the learner
//! group (rank 0 runs the actor graph, with no engine of its own); every later rank joins rank
//! 0's node as a rollout worker node on its own device (what `rlvr worker --role rollout`
//! does), at `MASTER_ADDR`, port `MASTER_PORT + 1`, with a secret rank 0 writes into the run's
//! output directory (which the ranks share, as they share checkpoints), and serves until the
//! stage ends. In the other stages every rank learns.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::Rng;
use rlvr_dist::Rendezvous;
use rlvr_learner::runtime::default_device;
use rlvr_recipes::spec::StageKind;
use rlvr_recipes::Recipe;

use crate::cluster::{read_cookie, resolve, Listen};
use crate::graph::node::{serve as serve_node, Ended, Node};
use crate::graph::remote::Role;

/// How long an engine rank waits for rank 0 to listen and write the secret.
const WAIT: Duration = Duration::from_secs(1800);

/// How a stage splits the launched ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Split {
    /// Ranks `0..learners` learn.
    pub learners: usize,
    /// Ranks after them run rollout engines.
    pub engines: usize,
}

/// How `stage` splits `world` ranks: on an RLVR stage's GPUs (`launch.gpus` above 1) its
/// learners take [`Recipe::learner_gpus`] and engines the rest; otherwise (every other stage,
/// and `learner.world_size` ranks on this machine's device) all learn.
pub(super) fn split(stage: &Recipe, world: usize) -> Split {
    let learners = stage.learner_gpus() as usize;
    match stage.kind {
        Some(StageKind::Rlvr) if stage.launch.gpus > 1 && world > learners => Split {
            learners,
            engines: world - learners,
        },
        _ => Split {
            learners: world,
            engines: 0,
        },
    }
}

/// The file rank 0 writes the engine ranks' secret into.
fn cookie_path(out: &Path) -> PathBuf {
    out.join(".engine-ranks.cookie")
}

/// Rank 0's port for engine ranks: the launcher's `MASTER_PORT`, plus one.
fn port(rdv: &Rendezvous) -> Result<u16> {
    rdv.port
        .checked_add(1)
        .context("MASTER_PORT is 65535: engine ranks join rank 0 at MASTER_PORT + 1")
}

/// Rank 0's side: a fresh secret in the run's directory (readable by its owner only), and the
/// address to listen on for the engine ranks.
pub(super) fn listen(rdv: &Rendezvous, out: &Path) -> Result<Listen> {
    let cookie: String = rand::thread_rng()
        .gen::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = cookie_path(out);
    let staged = path.with_extension("new");
    write_private(&staged, &cookie)?;
    std::fs::rename(&staged, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(Listen {
        addr: SocketAddr::from(([0, 0, 0, 0], port(rdv)?)),
        cookie,
    })
}

/// Write `text` into a new file at `path` that only its owner may read.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// An engine rank's side of `stage`: a rollout worker node on this rank's device (its
/// `LOCAL_RANK`'s GPU, or the CPU) that joins rank 0 and serves until the stage ends. A secret
/// left by an earlier run in the same directory is refused; the rank reads the file again
/// until rank 0 has written this run's.
pub(super) fn serve(stage: &Recipe, out: &Path, rdv: &Rendezvous) -> Result<()> {
    let device = match default_device() {
        tch::Device::Cuda(_) => tch::Device::Cuda(rdv.local_rank),
        d => d,
    };
    let run_addr = resolve(&format!("{}:{}", rdv.host, port(rdv)?), "MASTER_ADDR")?;
    let path = cookie_path(out);
    let deadline = Instant::now() + WAIT;
    tracing::info!(
        "stage `{}`: rank {} runs a rollout engine on {device:?} for the learners at {run_addr}",
        stage.name,
        rdv.rank
    );
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "stage `{}`: rank {} found no secret in {} that rank 0 accepts within {} s",
                stage.name,
                rdv.rank,
                path.display(),
                WAIT.as_secs()
            );
        }
        let Ok(cookie) = read_cookie(&path) else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let node = Node {
            run_addr,
            role: Role::Rollout,
            workers: 1,
            cookie,
            device,
            wait: left,
        };
        match serve_node(&node)? {
            Ended::Closed => return Ok(()),
            Ended::Refused => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}
