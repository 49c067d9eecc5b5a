//! The RLVR actor graph, one actor per file with its messages beside it:
//!
//! ```text
//! controller ─┬─ data actor          prompts in seeded epoch order
//!             ├─ rollout pool ── rollout workers (one engine each)
//!             ├─ verifier pool ── verifier workers (per-call timeout)
//!             ├─ learner         policy + frozen reference
//!             └─ broadcaster     new weights to every rollout worker
//! ```
//!
//! The pools ([`pool`]) restart a worker that dies and re-queue its job, so no prompt is lost
//! or scored twice.

pub mod broadcast;
pub mod controller;
pub mod data;
pub mod learner;
pub mod pool;
pub mod rollout;
pub mod step;
pub mod verifier;
