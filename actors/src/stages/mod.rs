//! The stages `rlvr run` can execute, one module each. Until the actor graphs land, a stage is
//! driven directly: data → learner, with metrics, checkpoints and resume.

pub mod pretrain;

use std::path::{Path, PathBuf};

use anyhow::Result;
use rlvr_recipes::spec::StageKind;
use rlvr_recipes::Recipe;

use crate::metrics::MetricsLog;

/// Run one stage into `out`, starting from `init` (the previous stage's model) when given.
/// Returns the directory of the stage's final model.
pub fn run(
    stage: &Recipe,
    out: &Path,
    init: Option<&Path>,
    resume: bool,
    metrics: &mut MetricsLog,
) -> Result<PathBuf> {
    check_available(stage)?;
    pretrain::run(stage, out, init, resume, metrics)
}

/// Check that a stage can run in this build, before anything starts.
pub fn check_available(stage: &Recipe) -> Result<()> {
    match stage.kind {
        Some(StageKind::Pretrain) => pretrain::check(stage),
        Some(kind) => anyhow::bail!(
            "stage `{}` ({}) is not available yet: this build runs pretraining stages only (SFT, DPO, RM and RLVR arrive with the learner and actor work)",
            stage.name,
            kind.as_str()
        ),
        None => anyhow::bail!("`{}` is not a stage", stage.name),
    }
}
