//! # rlvr-actors
//!
//! The `rlvr` command and the actor graphs that wire the role crates (data, verifiers, learner,
//! rollout) together. Only this crate knows of actors:
//!
//! - [`graph`]: the RLVR actor graph on `ractor` — a controller at the root of the supervision
//!   tree, a data actor, supervised rollout and verifier pools fed from queues, the learner and
//!   the weight broadcaster.
//! - [`cluster`]: nodes across processes and machines (`rlvr run --listen`, `rlvr worker`) on
//!   `ractor_cluster`, authenticated by a shared secret.
//! - [`plot`]: `reward.png` from `metrics.jsonl`; [`metrics`] the log itself, and
//!   [`tensorboard`] the event files written beside it.
//! - [`stages`]: what `rlvr run` executes per stage kind.
//! - [`evaluation`]: scoring a model on evaluation sets, for `rlvr eval` and inside stages.
//! - [`commands`]: one module per subcommand.
//!
//! Exit codes: 0 success, 2 usage or bad input (unknown recipe, key or value; the message lists
//! the valid choices), 1 a failure while running (including a plan that does not fit).

pub mod cluster;
pub mod commands;
pub mod evaluation;
pub mod graph;
pub mod metrics;
pub mod placement;
pub mod plot;
pub mod ranks;
pub mod stages;
pub mod tensorboard;

/// An error caused by what the user typed or supplied (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The process exit code for an error: 2 for usage and bad input (a recipe, data or model
/// rlvr refuses), 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    use rlvr_learner::LearnerError;
    use rlvr_rollout::RolloutError;
    let usage = err.chain().any(|e| {
        e.is::<UsageError>()
            || e.is::<rlvr_recipes::RecipeError>()
            || e.is::<rlvr_data::DataError>()
            || e.downcast_ref::<LearnerError>()
                .is_some_and(LearnerError::is_bad_input)
            || match e.downcast_ref::<RolloutError>() {
                Some(RolloutError::Model(m)) => m.is_bad_input(),
                Some(RolloutError::Tokenizer(_)) => true,
                _ => false,
            }
    });
    if usage {
        2
    } else {
        1
    }
}
