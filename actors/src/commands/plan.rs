//! `rlvr plan`: memory and step counts per stage before launch; exits 1 when a stage does not
//! fit, saying what to change. Beside each stage it says whether this build runs it (the check
//! `rlvr run` makes), so "fits" never hides a refusal at launch.

use anyhow::{bail, Result};
use rlvr_recipes::plan::{plan_stage, render, PlanRequest};

use crate::UsageError;

/// Arguments of `rlvr plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Recipe name or path to a recipe .toml file.
    pub recipe: String,
    /// GPUs in all (for RLVR, the rollout engines' GPUs included).
    #[arg(long)]
    pub gpus: u64,
    /// Memory of one GPU in GiB.
    #[arg(long, default_value_t = 80.0)]
    pub gpu_mem_gib: f64,
    /// Machines the GPUs are spread over.
    #[arg(long, default_value_t = 1)]
    pub nodes: u64,
    /// Override a recipe value (repeatable), as in `rlvr show`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Plan every stage of the recipe.
pub fn run(args: &Args) -> Result<()> {
    if args.gpus == 0 || args.nodes == 0 || !args.gpus.is_multiple_of(args.nodes) {
        return Err(UsageError(format!(
            "--gpus {} must be positive and a multiple of --nodes {}",
            args.gpus, args.nodes
        ))
        .into());
    }
    if args.gpu_mem_gib.is_nan() || args.gpu_mem_gib <= 0.0 {
        return Err(UsageError(format!(
            "--gpu-mem-gib must be positive, got {}",
            args.gpu_mem_gib
        ))
        .into());
    }
    let resolved = rlvr_recipes::load(&args.recipe, &args.overrides)?;
    let req = PlanRequest {
        gpus: args.gpus,
        gpu_mem_gib: args.gpu_mem_gib,
        nodes: args.nodes,
    };
    let stages = resolved.stages();
    let plans: Vec<_> = stages.iter().map(|r| plan_stage(r, &req)).collect();
    // What fits is not always what this build runs: say so beside each stage, from the check
    // `rlvr run` makes before it starts.
    let refusals: Vec<Option<String>> = stages
        .iter()
        .map(|s| crate::stages::check_available(s).err().map(|e| format!("{e:#}")))
        .collect();
    if args.json {
        let mut out = serde_json::to_value(&plans)?;
        if let Some(items) = out.as_array_mut() {
            for (item, refusal) in items.iter_mut().zip(&refusals) {
                item["runs_in_this_build"] = serde_json::json!(refusal.is_none());
                if let Some(why) = refusal {
                    item["why_not"] = serde_json::json!(why);
                }
            }
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "plan for {} on {} GPU(s) of {} GiB, {} node(s)\n",
            resolved.name(),
            args.gpus,
            args.gpu_mem_gib,
            args.nodes
        );
        for (p, refusal) in plans.iter().zip(&refusals) {
            println!("{}", render(p, &req));
            if let Some(why) = refusal {
                println!("  this build does not run it yet: {why}\n");
            }
        }
    }
    let failing: Vec<&str> = plans
        .iter()
        .filter(|p| !p.fits)
        .map(|p| p.name.as_str())
        .collect();
    if !failing.is_empty() {
        bail!(
            "does not fit on {} GPU(s) of {} GiB: {}",
            args.gpus,
            args.gpu_mem_gib,
            failing.join(", ")
        );
    }
    Ok(())
}
