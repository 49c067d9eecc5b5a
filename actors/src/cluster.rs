//! Nodes of a run across processes and machines, on `ractor_cluster`: the run listens (`rlvr
//! run --listen`), worker nodes join it (`rlvr worker --join`). Nodes prove they belong to the
//! run with a shared secret read from a cookie file — never from the command line — and a node
//! with another secret is refused, and the refusal logged, by the node it tried.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use ractor::{Actor, ActorCell, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};
use tokio::sync::mpsc;

use crate::UsageError;

/// Where a run takes worker nodes, and their secret.
#[derive(Debug, Clone)]
pub struct Listen {
    /// Address the run's node listens on.
    pub addr: SocketAddr,
    /// The shared secret.
    pub cookie: String,
}

impl Listen {
    /// `addr` (HOST:PORT) with the secret in `cookie_file`.
    pub fn new(addr: &str, cookie_file: &Path) -> Result<Self> {
        let addr = resolve(addr, "--listen")?;
        Ok(Self {
            addr,
            cookie: read_cookie(cookie_file)?,
        })
    }
}

/// HOST:PORT as one socket address.
pub fn resolve(addr: &str, flag: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| UsageError(format!("{flag} {addr}: not a HOST:PORT address")).into())
}

/// The secret in `path`: its contents without surrounding whitespace, not empty.
pub fn read_cookie(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cookie file {}: {e}", path.display())))?;
    let cookie = text.trim();
    if cookie.is_empty() {
        return Err(UsageError(format!("cookie file {} is empty", path.display())).into());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "cookie file {} can be read by other users (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
    Ok(cookie.to_string())
}

/// The cookie file named by `--cookie-file` or `RLVR_COOKIE_FILE`.
pub fn cookie_file(flag: Option<&PathBuf>) -> Result<PathBuf> {
    flag.cloned()
        .or_else(|| std::env::var_os("RLVR_COOKIE_FILE").map(PathBuf::from))
        .ok_or_else(|| {
            UsageError("nodes need a shared secret: pass --cookie-file FILE or set RLVR_COOKIE_FILE".into())
                .into()
        })
}

/// A node's session events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A peer proved it knows the secret.
    Joined(String),
    /// A peer that had joined went away.
    Left(String),
    /// A peer closed or was closed before proving it knows the secret.
    Refused(String),
}

/// Turns the node server's callbacks into [`NodeEvent`]s, logging each.
struct Events {
    role: &'static str,
    joined: Mutex<HashSet<u64>>,
    tx: mpsc::UnboundedSender<NodeEvent>,
}

fn peer(ses: &NodeServerSessionInformation) -> String {
    match &ses.peer_name {
        Some(name) => format!("{} ({})", name.name, ses.peer_addr),
        None => ses.peer_addr.clone(),
    }
}

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}

    fn node_session_authenicated(&self, ses: NodeServerSessionInformation) {
        if let Ok(mut joined) = self.joined.lock() {
            joined.insert(ses.node_id);
        }
        tracing::info!("{}: node {} joined", self.role, peer(&ses));
        let _ = self.tx.send(NodeEvent::Joined(peer(&ses)));
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let had_joined = self
            .joined
            .lock()
            .map(|mut j| j.remove(&ses.node_id))
            .unwrap_or(false);
        let event = if had_joined {
            tracing::info!("{}: node {} left", self.role, peer(&ses));
            NodeEvent::Left(peer(&ses))
        } else {
            if ses.is_server {
                tracing::info!(
                    "{}: refused node {}: it did not prove the shared secret (wrong cookie file?)",
                    self.role,
                    peer(&ses)
                );
            } else {
                tracing::info!(
                    "{}: {} closed the session before it was authenticated",
                    self.role,
                    peer(&ses)
                );
            }
            NodeEvent::Refused(peer(&ses))
        };
        let _ = self.tx.send(event);
    }
}

/// Start this process's node, listening on `addr` (port 0: any free port), as a child of
/// `supervisor` when given. Returns the node and its session events.
pub async fn start_node(
    name: String,
    addr: SocketAddr,
    cookie: String,
    role: &'static str,
    supervisor: Option<ActorCell>,
) -> Result<(ActorRef<NodeServerMessage>, mpsc::UnboundedReceiver<NodeEvent>)> {
    let hostname = addr.ip().to_string();
    let server = NodeServer::new(addr.port(), cookie, name, hostname, None, None).with_listen_addr(addr.ip());
    let (node, _) = match supervisor {
        Some(cell) => Actor::spawn_linked(None, server, (), cell).await,
        None => Actor::spawn(None, server, ()).await,
    }
    .with_context(|| format!("starting the cluster node on {addr}"))?;
    let (tx, rx) = mpsc::unbounded_channel();
    let events = Events {
        role,
        joined: Mutex::new(HashSet::new()),
        tx,
    };
    node.cast(NodeServerMessage::SubscribeToEvents {
        id: "rlvr".into(),
        subscription: Box::new(events),
    })?;
    Ok((node, rx))
}

/// Connect `node` to the run at `addr`, retrying until `wait` has passed (the run may not have
/// reached its RLVR stage yet).
pub async fn connect(
    node: &ActorRef<NodeServerMessage>,
    addr: SocketAddr,
    wait: std::time::Duration,
) -> Result<()> {
    let started = std::time::Instant::now();
    loop {
        match ractor_cluster::client_connect(node, addr).await {
            Ok(()) => return Ok(()),
            Err(_) if started.elapsed() < wait => {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(e) => bail!(
                "could not reach the run at {addr} within {}s: {e}",
                wait.as_secs()
            ),
        }
    }
}
