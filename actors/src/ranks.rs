//! Local ranks: run this same binary N times on this machine with torchrun's variables (`RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR=127.0.0.1`, `MASTER_PORT`), as torchrun would, so
//! a command can be launched by torchrun, Slurm or k8s, or spread over local ranks by itself.

use std::ffi::OsString;
use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// The rank variable of this process: torchrun's `RANK`, or Slurm's `SLURM_PROCID` under `srun`.
fn rank_var() -> Option<String> {
    std::env::var("RANK")
        .or_else(|_| std::env::var("SLURM_PROCID"))
        .ok()
}

/// Whether this process was started as one rank of a group (by torchrun, `srun`, or `rlvr`
/// itself: `RANK` or `SLURM_PROCID` is set).
pub fn is_rank() -> bool {
    rank_var().is_some()
}

/// Whether this process speaks for its group: not a rank, or rank 0.
pub fn is_lead() -> bool {
    rank_var().is_none_or(|r| r.trim() == "0")
}

/// Run this binary with its own arguments as `world` local ranks, which split the machine's
/// cores between them (`OMP_NUM_THREADS`, unless set), and wait for all of them.
/// Returns rank 0's standard output; the ranks' standard error passes through. When one rank
/// fails, the others are killed and the error names the rank.
pub fn spawn_local(world: usize) -> Result<String> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    spawn_local_with(world, &args)
}

/// [`spawn_local`] with other arguments.
pub fn spawn_local_with(world: usize, args: &[OsString]) -> Result<String> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port for the rendezvous")?
        .port();
    // The ranks split this machine's cores (as torchrun sets OMP_NUM_THREADS), unless the
    // caller chose a thread count; each would otherwise take every core.
    let threads = match std::env::var("OMP_NUM_THREADS") {
        Ok(set) => set,
        Err(_) => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / world).max(1).to_string()
        }
    };
    let mut children: Vec<Child> = Vec::with_capacity(world);
    for rank in 0..world {
        let child = Command::new(&exe)
            .args(args)
            .env("OMP_NUM_THREADS", &threads)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("LOCAL_WORLD_SIZE", world.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .stdout(if rank == 0 { Stdio::piped() } else { Stdio::null() })
            .spawn();
        match child {
            Ok(c) => children.push(c),
            Err(e) => {
                kill_all(&mut children);
                return Err(e).with_context(|| format!("starting rank {rank}"));
            }
        }
    }
    let stdout = children.first_mut().and_then(|c| c.stdout.take());
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut out) = stdout {
            let _ = out.read_to_string(&mut text);
        }
        text
    });
    // Poll every rank, so one that fails stops the others at once instead of leaving them
    // waiting in a collective until its timeout.
    loop {
        let mut running = false;
        for rank in 0..children.len() {
            match children[rank].try_wait() {
                Ok(Some(status)) if !status.success() => {
                    kill_all(&mut children);
                    bail!("rank {rank} of {world} failed ({status})");
                }
                Ok(Some(_)) => {}
                Ok(None) => running = true,
                Err(e) => {
                    kill_all(&mut children);
                    return Err(e).with_context(|| format!("waiting for rank {rank}"));
                }
            }
        }
        if !running {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    reader.join().map_err(|_| anyhow!("reading rank 0's output"))
}

fn kill_all(children: &mut [Child]) {
    for c in children.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
}
