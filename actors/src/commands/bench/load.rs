//! `rlvr bench load`: loading a model directory as `rlvr generate` and the stages do — the
//! weights read from the safetensors files straight into the run's element type on its device
//! — timed against reading the same files with `cat > /dev/null` in the same run, with the
//! resident memory the load adds against the weights' size in that type.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};
use rlvr_rollout::NativeEngine;
use serde_json::json;

use super::{best_of, peak_rss_mb, reset_peak_rss, rss_mb, sync};
use crate::placement::Placement;

/// Arguments of `rlvr bench load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Model directory (config.json and safetensors) or hub model id.
    #[arg(long)]
    pub model: String,
    #[command(flatten)]
    pub placement: Placement,
    /// Timed rounds of each side (the best counts; memory is the first load's).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The safetensors files of a model directory.
fn weight_files(dir: &std::path::Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    Ok(files)
}

/// Measure and print.
pub fn load(args: &LoadArgs) -> Result<()> {
    let (device, kind) = args.placement.resolve()?;
    let dir = crate::stages::resolve_model(&args.model)?;
    let files = weight_files(&dir)?;
    let file_bytes: u64 = files.iter().map(|f| f.metadata().map_or(0, |m| m.len())).sum();
    let cat = || {
        let status = Command::new("cat").args(&files).stdout(Stdio::null()).status();
        debug_assert!(status.is_ok_and(|s| s.success()));
    };
    cat(); // the files in the page cache, as for every load below
    let load_once = || -> Result<(NativeEngine, f64)> {
        let t = Instant::now();
        let engine = NativeEngine::from_pretrained(&dir, device, kind, 1)
            .with_context(|| format!("loading {}", dir.display()))?;
        sync(device);
        Ok((engine, t.elapsed().as_secs_f64()))
    };
    reset_peak_rss();
    let before = rss_mb();
    let (engine, first_s) = load_once()?;
    let added_mb = peak_rss_mb() - before;
    let weight_bytes = engine.weight_bytes() as f64;
    drop(engine);
    let mut load_s = first_s;
    let mut cat_s = f64::INFINITY;
    for _ in 0..args.rounds.max(1) {
        cat_s = cat_s.min(best_of(1, cat));
        load_s = load_s.min(load_once()?.1);
    }
    let weight_mb = weight_bytes / (1 << 20) as f64;
    let report = json!({
        "model": dir.display().to_string(), "device": format!("{device:?}"),
        "dtype": crate::placement::dtype_name(kind),
        "file_mb": file_bytes as f64 / (1 << 20) as f64, "weights_mb": weight_mb,
        "load_s": load_s, "cat_s": cat_s, "load_over_cat": load_s / cat_s,
        "rss_added_mb": added_mb, "rss_added_over_weights": added_mb / weight_mb,
        "rss_peak_mb": peak_rss_mb(),
    });
    if args.json {
        println!("{report}");
        return Ok(());
    }
    println!(
        "load {}: {:.0} MiB of files -> {:.0} MiB of {} weights on {device:?}",
        dir.display(),
        file_bytes as f64 / (1 << 20) as f64,
        weight_mb,
        crate::placement::dtype_name(kind)
    );
    println!(
        "  time    {load_s:.3} s (best of {}), cat > /dev/null {cat_s:.3} s: {:.2}x",
        args.rounds.max(1) + 1,
        load_s / cat_s
    );
    println!(
        "  memory  +{added_mb:.0} MiB resident at peak during the first load: {:.2}x the weights",
        added_mb / weight_mb
    );
    Ok(())
}
