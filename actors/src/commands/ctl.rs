//! `rlvr ctl`: talk to a running RLVR stage through its control socket (`control.sock` in the
//! run's directory): print its status, or resize its rollout or verifier pool.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use serde_json::{json, Value};

use crate::UsageError;

/// Arguments of `rlvr ctl`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run's output directory (`rlvr run --out`).
    #[arg(long)]
    pub run: PathBuf,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// `rlvr ctl` actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// The step and policy version, and each pool's workers and jobs.
    Status,
    /// Grow or shrink a pool's local workers (retired ones finish their current job first).
    Resize {
        /// The pool.
        pool: Pool,
        /// Local workers wanted.
        workers: u64,
    },
}

/// The pools `rlvr ctl resize` can resize.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Pool {
    /// Rollout engines.
    Rollout,
    /// Verifier workers.
    Verifier,
}

/// Send the request, print the reply.
pub fn run(args: &Args) -> Result<()> {
    // A run directory too deep for a socket address names the socket's short path instead.
    let named = args.run.join("control.sock");
    let path = match std::fs::read(crate::graph::control::pointer_file(&named)) {
        Ok(bytes) => PathBuf::from(String::from_utf8_lossy(&bytes).into_owned()),
        Err(_) => named,
    };
    let request = match &args.action {
        Action::Status => json!({"cmd": "status"}),
        Action::Resize { pool, workers } => {
            let pool = match pool {
                Pool::Rollout => "rollout",
                Pool::Verifier => "verifier",
            };
            json!({"cmd": "resize", "pool": pool, "workers": workers})
        }
    };
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        UsageError(format!(
            "no running RLVR stage answers at {} ({e}); `rlvr run --out {}` opens it while an RLVR stage runs",
            path.display(),
            args.run.display()
        ))
    })?;
    writeln!(stream, "{request}").with_context(|| format!("writing to {}", path.display()))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .with_context(|| format!("reading from {}", path.display()))?;
    let reply: Value = serde_json::from_str(&line).with_context(|| format!("reply {line:?}"))?;
    if reply["ok"] != true {
        return Err(anyhow!(
            "{}",
            reply["error"].as_str().unwrap_or("request refused")
        ));
    }
    if args.json {
        println!("{reply}");
        return Ok(());
    }
    match &args.action {
        Action::Status => {
            println!(
                "step {}, policy version {}",
                reply["step"], reply["policy_version"]
            );
            for pool in ["rollout", "verifier"] {
                let p = &reply[pool];
                println!(
                    "{pool}: {} workers ({} busy, {} on other nodes), {} jobs done, {} restarts",
                    p["live"], p["busy"], p["remote"], p["jobs_done"], p["restarts"]
                );
            }
        }
        Action::Resize { .. } => println!(
            "{} pool resizing to {} workers",
            reply["resized"].as_str().unwrap_or(""),
            reply["workers"]
        ),
    }
    Ok(())
}
