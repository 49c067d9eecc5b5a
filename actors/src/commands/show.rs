//! `rlvr show`: the fully resolved recipe as TOML or JSON.

use anyhow::Result;

/// Arguments of `rlvr show`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Recipe name (see `rlvr recipes`) or path to a recipe .toml file.
    pub recipe: String,
    /// Override a value, e.g. `--set train.learning_rate=1e-6` (for a pipeline, prefix a stage
    /// kind or name: `--set sft.train.seed=1`). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Print JSON instead of TOML.
    #[arg(long)]
    pub json: bool,
}

/// Print the resolved recipe.
pub fn run(args: &Args) -> Result<()> {
    let resolved = rlvr_recipes::load(&args.recipe, &args.overrides)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&resolved)?);
    } else {
        print!("{}", resolved.to_toml());
    }
    Ok(())
}
