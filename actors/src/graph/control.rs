//! The control socket of a running RLVR stage: `control.sock` in the run's directory (a Unix
//! socket only its owner may open), one JSON request per line and one JSON reply per line, for
//! `rlvr ctl`. Requests:
//!
//! - `{"cmd": "status"}`: the step and policy version the controller last finished, and each
//!   pool's live, busy and remote workers and its job counters.
//! - `{"cmd": "resize", "pool": "rollout" | "verifier", "workers": N}`: grow or shrink that pool's
//!   local workers to N (retired ones finish their current job first).
//!
//! A reply is `{"ok": true, ...}` or `{"ok": false, "error": "..."}`.
//!
//! A run directory too deep for a socket address (107 bytes) gets the socket in the temp
//! directory instead, and `control.sock.path` beside where it would have been names it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context, Result};
use ractor::ActorRef;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::pool::PoolMsg;
use super::rollout::RolloutWorker;
use super::verifier::VerifierWorker;

/// Where the controller's progress is published for `status`.
#[derive(Debug, Default)]
pub struct Progress {
    /// Steps finished.
    pub step: u64,
    /// Policy version.
    pub policy_version: u64,
}

/// What the socket talks to.
#[derive(Clone)]
pub struct Controls {
    /// The rollout pool.
    pub rollout: ActorRef<PoolMsg<RolloutWorker>>,
    /// The verifier pool.
    pub verifiers: ActorRef<PoolMsg<VerifierWorker>>,
    /// The controller's progress.
    pub progress: Arc<Mutex<Progress>>,
}

/// The socket, removed when dropped (with the file that points to it, if any).
pub struct ControlSocket {
    files: Vec<PathBuf>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// The longest path a Unix socket address holds (108 bytes with its NUL, on Linux).
const MAX_SOCKET_PATH: usize = 107;

/// The file beside `path` that names where the socket really is, when `path` is too long to
/// bind.
pub fn pointer_file(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".path");
    PathBuf::from(name)
}

impl ControlSocket {
    /// Listen at `path` (a stale socket there is replaced), serving `controls`. A `path` too
    /// long for a socket address is served from a short path in the temp directory instead,
    /// which [`pointer_file`] names.
    pub fn serve(path: &Path, controls: Controls) -> Result<Self> {
        let mut files = Vec::new();
        let socket = if path.as_os_str().len() > MAX_SOCKET_PATH {
            let short = std::env::temp_dir().join(format!("rlvr-ctl-{}.sock", std::process::id()));
            let pointer = pointer_file(path);
            std::fs::write(&pointer, short.as_os_str().as_encoded_bytes())
                .with_context(|| format!("writing {}", pointer.display()))?;
            files.push(pointer);
            short
        } else {
            path.to_path_buf()
        };
        let _ = std::fs::remove_file(&socket);
        let listener =
            UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", socket.display()))?;
        files.push(socket);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(session(stream, controls.clone()));
            }
        });
        Ok(Self { files, task })
    }
}

/// Answer one connection's requests, line by line.
async fn session(stream: UnixStream, controls: Controls) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let reply = match serde_json::from_str::<Value>(&line) {
            Ok(request) => answer(&request, &controls)
                .await
                .unwrap_or_else(|e| json!({"ok": false, "error": format!("{e:#}")})),
            Err(e) => json!({"ok": false, "error": format!("not a JSON request: {e}")}),
        };
        if write.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn answer(request: &Value, c: &Controls) -> Result<Value> {
    match request.get("cmd").and_then(Value::as_str) {
        Some("status") => {
            let rollout =
                ractor::call!(c.rollout, PoolMsg::Stats).map_err(|e| anyhow!("rollout pool: {e}"))?;
            let verify =
                ractor::call!(c.verifiers, PoolMsg::Stats).map_err(|e| anyhow!("verifier pool: {e}"))?;
            let (step, policy_version) = {
                let p = c.progress.lock().map_err(|_| anyhow!("progress poisoned"))?;
                (p.step, p.policy_version)
            };
            let rollout_busy = rollout.workers.iter().filter(|w| w.1.is_some()).count();
            let verify_busy = verify.workers.iter().filter(|w| w.1.is_some()).count();
            Ok(json!({
                "ok": true, "step": step, "policy_version": policy_version,
                "rollout": {"live": rollout.workers.len(), "busy": rollout_busy, "remote": rollout.adopted, "jobs_done": rollout.done, "restarts": rollout.restarts},
                "verifier": {"live": verify.workers.len(), "busy": verify_busy, "remote": verify.adopted, "jobs_done": verify.done, "restarts": verify.restarts},
            }))
        }
        Some("resize") => {
            let workers = request
                .get("workers")
                .and_then(Value::as_u64)
                .ok_or_else(|| anyhow!("resize needs \"workers\": a count"))?
                as usize;
            match request.get("pool").and_then(Value::as_str) {
                Some("rollout") => c.rollout.send_message(PoolMsg::Resize(workers))?,
                Some("verifier") => c.verifiers.send_message(PoolMsg::Resize(workers))?,
                other => return Err(anyhow!("pool {other:?}: expected \"rollout\" or \"verifier\"")),
            }
            Ok(json!({"ok": true, "resized": request["pool"], "workers": workers}))
        }
        other => Err(anyhow!("cmd {other:?}: expected \"status\" or \"resize\"")),
    }
}
