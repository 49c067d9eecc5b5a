//! The RLVR actor graph, one actor per file with its messages beside it:
//!
//! ```text
//! controller ─┬─ data actor          prompts in seeded epoch order
//!             ├─ rollout pool ─┬─ rollout workers (one engine each)
//!             │                └─ rollout proxies ── remote workers on worker nodes
//!             ├─ verifier pool ─┬─ verifier workers (per-call timeout)
//!             │                 └─ verifier proxies ── remote workers on worker nodes
//!             ├─ learner         policy + frozen reference
//!             ├─ broadcaster     new weights to every rollout worker and proxy (and,
//!             │                  to launched engine ranks, over the run's weight group)
//!             ├─ recruiter       (with --listen) the cluster node; adopts remote workers
//!             └─ control socket  `control.sock` for `rlvr ctl`: status, pool resizing
//! ```
//!
//! The pools ([`pool`]) restart a local worker that dies and re-queue its job, and re-queue the
//! job of a remote one whose node dies, so no prompt is lost or scored twice. Worker nodes
//! ([`node`]: `rlvr worker`, and launched engine ranks) run [`remote`] workers and talk to
//! their proxies in [`wire`] messages; launched engine ranks take each version over a c10d
//! group instead ([`weight_group`]).

pub mod broadcast;
pub mod control;
pub mod controller;
pub mod data;
pub mod learner;
pub(crate) mod memory;
pub mod node;
pub mod pool;
pub mod proxy;
pub mod recruiter;
pub mod remote;
pub mod rollout;
pub mod step;
pub mod tensor_parallel;
pub mod verifier;
pub mod weight_group;
pub mod wire;
