//! Launched ranks beyond an RLVR stage's learners run its rollout engines. A launcher (torchrun,
//! `srun`) that starts `launch.gpus` ranks for a recipe whose learners take
//! `rlvr.actor_num_gpus_per_node` of them leaves the rest to engines, as open-instruct places
//! its vLLM engines on the GPUs its learners do not take. Ranks `0..learners` form the learner
//! group (rank 0 runs the actor graph, with no engine of its own); every later rank joins rank
//! 0's node as a rollout worker node on its own device (what `rlvr worker --role rollout`
//! does), at `MASTER_ADDR`, port `MASTER_PORT + 1`, with a secret rank 0 writes into the run's
//! output directory (which the ranks share, as they share checkpoints), and serves until the
//! stage ends. With `rlvr.vllm_tensor_parallel_size = N` every N consecutive engine ranks are
//! one engine split over them: the first joins rank 0 and relays to the others
//! (`graph/tensor_parallel.rs`). In the other stages every rank learns.
//!
//! Weights do not travel as actor messages: rank 0 and the first rank of each engine form the
//! run's weight group (c10d: NCCL between GPUs, Gloo on the CPU; its store at `MASTER_ADDR`,
//! port `MASTER_PORT + 2`), over which rank 0 broadcasts each policy version once to every
//! engine (`graph/weight_group.rs`); a tensor-parallel engine's group has its store on the
//! engine's node at port `MASTER_PORT + 3 +` the engine's index.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::Rng;
use rlvr_dist::{Backend, ProcessGroup, Rendezvous};
use rlvr_learner::runtime::default_device;
use rlvr_recipes::spec::StageKind;
use rlvr_recipes::Recipe;

use crate::cluster::{read_cookie, resolve, Listen};
use crate::graph::node::{serve as serve_node, Ended, Node};
use crate::graph::remote::Role;
use crate::graph::tensor_parallel::{follow, Relayed};
use crate::graph::weight_group::{Inbox, WeightGroup};
use crate::UsageError;

/// How long an engine rank waits for rank 0 to listen and write the secret.
const WAIT: Duration = Duration::from_secs(1800);
/// How long a group whose ranks wait for each other through a whole learner step waits.
const GROUP_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long an engine rank waits, once rank 0 has closed the run, for the end of its weights.
const END_WAIT: Duration = Duration::from_secs(60);

/// How a stage splits the launched ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Split {
    /// Ranks `0..learners` learn.
    pub learners: usize,
    /// Ranks after them run rollout engines.
    pub engines: usize,
    /// Engine ranks per engine (`rlvr.vllm_tensor_parallel_size`): consecutive engine ranks
    /// form one engine's tensor-parallel group.
    pub tensor_parallel: usize,
}

/// How `stage` splits `world` ranks: on an RLVR stage's GPUs (`launch.gpus` above 1) its
/// learners take [`Recipe::learner_gpus`] and engines the next `rlvr.vllm_num_engines` ×
/// `rlvr.vllm_tensor_parallel_size` (as many as are left); otherwise (every other stage, and
/// `learner.world_size` ranks on this machine's device) all learn.
pub(super) fn split(stage: &Recipe, world: usize) -> Split {
    let learners = stage.learner_gpus() as usize;
    match (stage.kind, &stage.rlvr) {
        (Some(StageKind::Rlvr), Some(rl)) if stage.launch.gpus > 1 => {
            let tensor_parallel = rl.vllm_tensor_parallel_size.max(1) as usize;
            let asked = rl.vllm_num_engines.max(1) as usize * tensor_parallel;
            Split {
                learners: learners.min(world),
                engines: asked.min(world.saturating_sub(learners)),
                tensor_parallel,
            }
        }
        _ => Split {
            learners: world,
            engines: 0,
            tensor_parallel: 1,
        },
    }
}

/// Refuse a split of `world` ranks that cannot make whole engines: engine ranks that are not a
/// multiple of `rlvr.vllm_tensor_parallel_size`, or a split engine with no engine rank left.
pub(super) fn check(stage: &Recipe, world: usize) -> Result<()> {
    let s = split(stage, world);
    let tp = s.tensor_parallel;
    if stage.kind == Some(StageKind::Rlvr) && tp > 1 && s.engines == 0 {
        bail!(UsageError(format!(
            "stage `{}`: rlvr.vllm_tensor_parallel_size = {tp} splits each engine over {tp} launched              ranks, and the {} learners (rlvr.actor_num_gpus_per_node) leave none of the {world}:              give the stage more GPUs (launch.gpus) or set it to 1",
            stage.name, s.learners
        )));
    }
    if !s.engines.is_multiple_of(tp) {
        bail!(UsageError(format!(
            "stage `{}`: {} engine ranks do not make engines of rlvr.vllm_tensor_parallel_size =              {tp} ranks; launch a multiple of {tp} ranks past the {} learners",
            stage.name, s.engines, s.learners
        )));
    }
    Ok(())
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
/// `LOCAL_RANK`'s GPU, or the CPU) that joins rank 0 and serves until the stage ends. It joins
/// the run's weight group first, which rank 0 joins after writing this run's secret, so it
/// reads that secret; one it still finds stale (a shared file system's cache) is refused, and
/// the rank reads the file again.
pub(super) fn serve(stage: &Recipe, out: &Path, rdv: &Rendezvous) -> Result<()> {
    let device = match default_device() {
        tch::Device::Cuda(_) => tch::Device::Cuda(rdv.local_rank),
        d => d,
    };
    let tensor_parallel = tensor_parallel_group(stage, rdv, device)?;
    if let Some(g) = tensor_parallel.as_ref().filter(|g| g.group.rank() > 0) {
        tracing::info!(
            "stage `{}`: rank {} holds part {} of {} of a tensor-parallel rollout engine",
            stage.name,
            rdv.rank,
            g.group.rank() + 1,
            g.group.world_size()
        );
        return follow(g);
    }
    let inbox = Inbox::start(weight_group(stage, rdv, rdv.world_size, device)?);
    let run_addr = resolve(&format!("{}:{}", rdv.host, port(rdv)?), "MASTER_ADDR")?;
    let path = cookie_path(out);
    let deadline = Instant::now() + WAIT;
    let split_over = match &tensor_parallel {
        Some(g) => format!(" (part 1 of {}, tensor parallel)", g.group.world_size()),
        None => String::new(),
    };
    tracing::info!(
        "stage `{}`: rank {} runs a rollout engine{split_over} on {device:?} for the learners at {run_addr}",
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
            tensor_parallel: tensor_parallel.clone(),
            inbox: Some(inbox.clone()),
        };
        match serve_node(&node)? {
            Ended::Closed => {
                if let Some(g) = &tensor_parallel {
                    g.relay(&Relayed::Stop)?;
                }
                if !inbox.wait_end(END_WAIT) {
                    tracing::warn!(
                        "stage `{}`: rank {} heard no end of the run's weights within {} s of the run closing; exiting",
                        stage.name,
                        rdv.rank,
                        END_WAIT.as_secs()
                    );
                }
                return Ok(());
            }
            Ended::Refused => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

/// The run's weight group, joined by launched rank `rdv.rank` of `world`: rank 0 (the group's
/// rank 0, which sends) or the first rank of an engine (rank 1 + the engine's index).
pub(super) fn weight_group(
    stage: &Recipe,
    rdv: &Rendezvous,
    world: usize,
    device: tch::Device,
) -> Result<WeightGroup> {
    let split = split(stage, world);
    let engines = split.engines / split.tensor_parallel;
    let rank = match rdv.rank {
        0 => 0,
        r => 1 + (r - split.learners) / split.tensor_parallel,
    };
    let group_rdv = Rendezvous {
        host: rdv.host.clone(),
        port: rdv
            .port
            .checked_add(2)
            .context("MASTER_PORT too high for the weight group's port above it")?,
        rank,
        world_size: 1 + engines,
        local_rank: rdv.local_rank,
    };
    let group = ProcessGroup::new(&group_rdv, Backend::for_device(device), "weights", GROUP_TIMEOUT)?;
    Ok(WeightGroup {
        group: Arc::new(group),
        device,
    })
}

/// The tensor-parallel group of this engine rank's engine, when the stage splits its engines
/// (`rlvr.vllm_tensor_parallel_size` above 1): consecutive engine ranks on one node, the first
/// leading, the group's store at 127.0.0.1, port `MASTER_PORT + 3 +` the engine's index.
fn tensor_parallel_group(
    stage: &Recipe,
    rdv: &Rendezvous,
    device: tch::Device,
) -> Result<Option<WeightGroup>> {
    let split = split(stage, rdv.world_size);
    let tp = split.tensor_parallel;
    if tp <= 1 {
        return Ok(None);
    }
    let index = rdv.rank - split.learners;
    let (engine, part) = (index / tp, index % tp);
    if rdv.local_rank < part {
        bail!(
            "stage `{}`: rank {}'s tensor-parallel engine spans two nodes (its LOCAL_RANK is {}); place a multiple of {tp} engine ranks on each node",
            stage.name,
            rdv.rank,
            rdv.local_rank
        );
    }
    let port = rdv
        .port
        .checked_add(3 + engine as u16)
        .context("MASTER_PORT too high for the tensor-parallel groups' ports above it")?;
    let group_rdv = Rendezvous {
        host: "127.0.0.1".into(),
        port,
        rank: part,
        world_size: tp,
        local_rank: rdv.local_rank,
    };
    // Followers wait for the leader's next message through a whole learner step: no short timeout.
    let group = ProcessGroup::new(
        &group_rdv,
        Backend::for_device(device),
        "tensor-parallel",
        GROUP_TIMEOUT,
    )?;
    Ok(Some(WeightGroup {
        group: Arc::new(group),
        device,
    }))
}
