//! `rlvr show`: the fully resolved recipe as TOML or JSON, or what a recipe key means.

use anyhow::Result;
use serde_json::Value;

/// Arguments of `rlvr show`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Recipe name (see `rlvr recipes`) or path to a recipe .toml file (optional with
    /// `--explain`).
    #[arg(required_unless_present = "explain")]
    pub recipe: Option<String>,
    /// Override a value, e.g. `--set train.learning_rate=1e-6` (for a pipeline, prefix a stage
    /// kind or name: `--set sft.train.seed=1`). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Print JSON instead of TOML.
    #[arg(long)]
    pub json: bool,
    /// Say what a key means (its doc, its type, and with a recipe the value each stage
    /// resolves it to), e.g. `--explain rlvr.beta`; a table (`--explain rlvr`) lists its keys,
    /// and `--explain ''` the top-level ones.
    #[arg(long, value_name = "KEY")]
    pub explain: Option<String>,
}

/// Print the resolved recipe, or explain a key.
pub fn run(args: &Args) -> Result<()> {
    let resolved = match &args.recipe {
        Some(recipe) => Some(rlvr_recipes::load(recipe, &args.overrides)?),
        None => None,
    };
    if let Some(key) = &args.explain {
        return explain(key, resolved.as_ref());
    }
    let Some(resolved) = resolved else {
        anyhow::bail!("name a recipe to show");
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&resolved)?);
    } else {
        print!("{}", resolved.to_toml());
    }
    Ok(())
}

/// Print what `key` means, and its value in each stage of `resolved`.
fn explain(key: &str, resolved: Option<&rlvr_recipes::Resolved>) -> Result<()> {
    let doc = rlvr_recipes::explain(key)?;
    let name = if doc.key.is_empty() {
        "(top level)"
    } else {
        doc.key.as_str()
    };
    println!("{name}: {}", doc.kind);
    for line in doc.doc.lines() {
        println!("  {line}");
    }
    if let Some(resolved) = resolved.filter(|_| doc.keys.is_empty()) {
        for stage in resolved.stages() {
            let mut value = serde_json::to_value(stage)?;
            for part in doc.key.split('.') {
                value = value.get(part).cloned().unwrap_or(Value::Null);
            }
            let shown = match value {
                Value::Null => "(not set)".to_string(),
                v => v.to_string(),
            };
            println!("  {}: {shown}", stage.name);
        }
    }
    let width = doc.keys.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, first) in &doc.keys {
        println!("  {k:width$}  {first}");
    }
    Ok(())
}
