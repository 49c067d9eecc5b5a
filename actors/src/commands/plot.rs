//! `rlvr plot`: draw a run's `reward.png` again from its `metrics.jsonl` (while it runs, or after
//! a newer rlvr draws more).

use std::path::PathBuf;

use anyhow::Result;

use crate::UsageError;

/// Arguments of `rlvr plot`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run's `--out` directory (holding `metrics.jsonl`).
    pub run: PathBuf,
    /// Where the picture goes [default: RUN/reward.png].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Draw the curve, or say why not.
pub fn run(args: &Args) -> Result<()> {
    let metrics = args.run.join("metrics.jsonl");
    if !metrics.is_file() {
        return Err(UsageError(format!(
            "{}: no such file (is RUN a run's --out directory?)",
            metrics.display()
        ))
        .into());
    }
    let png = args.out.clone().unwrap_or_else(|| args.run.join("reward.png"));
    if crate::plot::reward_curve(&metrics, &png)? {
        println!("{}", png.display());
    }
    Ok(())
}
