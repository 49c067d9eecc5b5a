//! Out-of-process verifiers in any language, speaking JSON lines over stdin/stdout.
//!
//! # Protocol
//!
//! rlvr starts the plug-in once and writes one request per line:
//!
//! ```json
//! {"id": 7, "response": "...", "ground_truth": "..."}
//! ```
//!
//! The plug-in answers each request with one line carrying the same `id`:
//!
//! ```json
//! {"id": 7, "verified": true, "score": 1.0, "reason": "exact match"}
//! ```
//!
//! `score` is optional (1 when verified, else 0) and `reason` too. Anything the plug-in writes to
//! stderr passes through. A plug-in may run as several processes, each serving one request at a
//! time, so calls from several threads run concurrently. A process that exits before it
//! answers is started again and the request sent again (up to three times: nothing is lost, and
//! nothing is scored twice, as only an answered request has a verdict). A reply that does not
//! come within the timeout or a malformed reply becomes a failed [`Verdict`] whose reason says
//! so, and the process is killed and started again for the next request, so a run never hangs
//! on it. `examples/plugin_verifier.py` is a complete plug-in.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::{Truth, TruthError, Verdict, Verifier};

/// A running plug-in process.
struct Process {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<std::io::Result<String>>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One reply line.
#[derive(Deserialize)]
struct Reply {
    id: u64,
    verified: bool,
    score: Option<f64>,
    #[serde(default)]
    reason: String,
}

/// Times a request is sent to a plug-in whose process exits before answering it.
const ATTEMPTS: usize = 3;

/// Why a call got no verdict.
enum CallError {
    /// The process exited (or its stdin closed) before answering: start another and retry.
    Exited(String),
    /// A timeout or a malformed reply: the request fails with this reason.
    Failed(String),
}

/// A verifier served by an external command, as one or more processes.
pub struct PluginVerifier {
    name: String,
    command: Vec<String>,
    timeout: Duration,
    processes: Vec<Mutex<Option<Process>>>,
    next_process: AtomicUsize,
    next_id: AtomicU64,
    restarts: AtomicU64,
}

impl std::fmt::Debug for PluginVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginVerifier")
            .field("name", &self.name)
            .field("command", &self.command)
            .finish()
    }
}

impl PluginVerifier {
    /// A plug-in named `name` run as `command` (program and arguments), with a per-call
    /// `timeout`. The process starts on the first request.
    pub fn new(name: &str, command: Vec<String>, timeout: Duration) -> Self {
        Self::with_processes(name, command, timeout, 1)
    }

    /// As [`PluginVerifier::new`], as `processes` processes (at least one) serving requests
    /// concurrently, each started on its first request.
    pub fn with_processes(name: &str, command: Vec<String>, timeout: Duration, processes: usize) -> Self {
        Self {
            name: name.to_string(),
            command,
            timeout,
            processes: (0..processes.max(1)).map(|_| Mutex::new(None)).collect(),
            next_process: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
        }
    }

    /// Processes started again after one exited, timed out or talked nonsense.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// A free process slot, or (all busy) the next in turn to wait for.
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Process>> {
        let n = self.processes.len();
        let start = self.next_process.fetch_add(1, Ordering::Relaxed);
        for k in 0..n {
            if let Ok(guard) = self.processes[(start + k) % n].try_lock() {
                return guard;
            }
        }
        self.processes[start % n]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn spawn(&self) -> Result<Process, String> {
        let (program, args) = self.command.split_first().ok_or("empty plug-in command")?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start `{}`: {e}", self.command.join(" ")))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Process { child, stdin, lines })
    }

    fn call(
        &self,
        process: &mut Process,
        id: u64,
        response: &str,
        truth: &str,
    ) -> Result<Verdict, CallError> {
        let request = json!({"id": id, "response": response, "ground_truth": truth});
        writeln!(process.stdin, "{request}")
            .and_then(|()| process.stdin.flush())
            .map_err(|e| CallError::Exited(format!("plug-in `{}` is gone: {e}", self.name)))?;
        let deadline = std::time::Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match process.lines.recv_timeout(left) {
                Ok(Ok(line)) => line,
                Ok(Err(e)) => {
                    return Err(CallError::Exited(format!(
                        "plug-in `{}`: reading its reply: {e}",
                        self.name
                    )))
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(CallError::Failed(format!(
                        "plug-in `{}` timed out after {:?}",
                        self.name, self.timeout
                    )))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = process.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(CallError::Exited(format!(
                        "plug-in `{}` exited ({status})",
                        self.name
                    )));
                }
            };
            let reply: Reply = serde_json::from_str(&line)
                .map_err(|e| CallError::Failed(format!("plug-in `{}` replied {line:?}: {e}", self.name)))?;
            if reply.id == id {
                let score = reply.score.unwrap_or(if reply.verified { 1.0 } else { 0.0 });
                return Ok(Verdict::new(score, reply.verified, reply.reason));
            }
            // A late reply to a request that already timed out: skip it.
        }
    }
}

impl Verifier for PluginVerifier {
    fn name(&self) -> &str {
        &self.name
    }

    fn parse_truth(&self, raw: &str) -> Result<Truth, TruthError> {
        Ok(Truth::Text(raw.to_string()))
    }

    fn verify(&self, response: &str, truth: &Truth) -> Verdict {
        let truth = match truth {
            Truth::Text(t) | Truth::Math { raw: t, .. } => t.clone(),
            Truth::Number(n) => n.to_string(),
            Truth::Constraint(c) => format!("{c:?}"),
            Truth::Instructions(p) => format!("{p:?}"),
            Truth::Parts(parts) => format!("{parts:?}"),
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut slot = self.slot();
        let mut exits = Vec::new();
        while exits.len() < ATTEMPTS {
            if slot.is_none() {
                match self.spawn() {
                    Ok(p) => *slot = Some(p),
                    Err(e) => return crate::verdict(false, e),
                }
            }
            let Some(process) = slot.as_mut() else {
                continue;
            };
            match self.call(process, id, response, &truth) {
                Ok(v) => return v,
                Err(CallError::Exited(reason)) => exits.push(reason),
                Err(CallError::Failed(reason)) => {
                    *slot = None;
                    self.restarts.fetch_add(1, Ordering::Relaxed);
                    return crate::verdict(false, reason);
                }
            }
            // Kill what is left of it; the retry starts a fresh one.
            *slot = None;
            self.restarts.fetch_add(1, Ordering::Relaxed);
        }
        crate::verdict(false, format!("{} times: {}", ATTEMPTS, exits.join("; ")))
    }
}
