//! Ranks as threads of one process: a Gloo group on 127.0.0.1 whose every rank is a thread,
//! over a real `TCPStore` and real Gloo pairs. How the crates' tests (and anything else that
//! wants ranks without processes) run collectives.

use std::net::TcpListener;
use std::time::Duration;

use crate::{Backend, DistError, ProcessGroup, Rendezvous, Result};

/// Run `f(group)` on `world` ranks at once, each a thread with its own Gloo group on
/// 127.0.0.1 (a free port); each rank's result, in rank order. A rank that cannot join is an
/// error; a rank whose `f` panics panics the caller.
pub fn on_thread_ranks<T: Send>(world: usize, f: impl Fn(ProcessGroup) -> T + Sync) -> Result<Vec<T>> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| DistError::C10d(format!("no free port on 127.0.0.1: {e}")))?;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                let f = &f;
                s.spawn(move || {
                    let rdv = Rendezvous {
                        host: "127.0.0.1".into(),
                        port,
                        rank,
                        world_size: world,
                        local_rank: rank,
                    };
                    ProcessGroup::new(&rdv, Backend::Gloo, "threads", Duration::from_secs(30)).map(f)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}
