//! `rlvr recipes`: every recipe with its one-line description.

use anyhow::Result;
use rlvr_recipes::{catalog, load, Resolved};

/// Print the catalogue, pipelines marked with their stages.
pub fn run() -> Result<()> {
    let names = catalog::names();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
    for name in names {
        let resolved = load(name, &[])?;
        let (kind, description) = match &resolved {
            Resolved::Stage(r) => (
                r.kind.map_or("", |k| k.as_str()).to_string(),
                r.description.clone(),
            ),
            Resolved::Pipeline(p) => ("pipeline".to_string(), p.description.clone()),
        };
        println!("{name:<width$}  {kind:<8}  {description}");
    }
    Ok(())
}
