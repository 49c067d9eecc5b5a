//! `rlvr bench verify`: verifier throughput on a JSONL file.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;

use crate::UsageError;

/// Arguments of `rlvr bench verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// JSONL input, as for `rlvr verify`.
    #[arg(long)]
    pub input: PathBuf,
    /// Verifier mode.
    #[arg(long, value_enum, default_value_t = crate::commands::verify::ModeArg::Default)]
    pub mode: crate::commands::verify::ModeArg,
    /// Passes over the input; the best is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Threads sharing the rows.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

pub(super) fn verify(args: &VerifyArgs) -> Result<()> {
    let registry = rlvr_verifiers::Registry::new(args.mode.into());
    let text = std::fs::read_to_string(&args.input)
        .map_err(|e| UsageError(format!("--input {}: {e}", args.input.display())))?;
    let mut rows: std::collections::BTreeMap<String, Vec<(String, rlvr_verifiers::Truth)>> =
        Default::default();
    for (i, line) in text.lines().enumerate() {
        let row: serde_json::Value =
            serde_json::from_str(line).map_err(|e| UsageError(format!("line {}: {e}", i + 1)))?;
        let get = |k: &str| {
            row[k]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| UsageError(format!("line {}: `{k}`", i + 1)))
        };
        let (dataset, response, truth) = (get("dataset")?, get("response")?, get("ground_truth")?);
        let parsed = registry.parse_truth(&dataset, &truth)?;
        rows.entry(dataset).or_default().push((response, parsed));
    }
    for (dataset, items) in &rows {
        let verifier = registry.get(dataset)?;
        let threads = args.threads.max(1);
        // The reward path (what the RL loop calls) and `rlvr verify`'s, which writes reasons.
        let (seconds, verified) = best_pass(items, threads, args.repeats, |r, t| {
            verifier.verify_score(r, t).verified
        });
        let (explained, _) = best_pass(items, threads, args.repeats, |r, t| {
            verifier.verify(r, t).verified
        });
        // The slowest single answer, from one more pass that times each.
        let slowest = items
            .iter()
            .map(|(response, truth)| {
                let one = Instant::now();
                std::hint::black_box(verifier.verify(response, truth));
                one.elapsed().as_secs_f64()
            })
            .fold(0f64, f64::max);
        println!(
            "{}",
            json!({"dataset": dataset, "threads": threads, "rows": items.len(), "verified": verified,
                   "seconds": seconds, "answers_per_s": items.len() as f64 / seconds,
                   "answers_per_s_with_reasons": items.len() as f64 / explained,
                   "slowest_ms": slowest * 1e3})
        );
    }
    Ok(())
}

/// The fastest of `repeats` passes of `judge` over `items` (seconds) and how many it verified.
/// Rows are dealt to `threads` scoped threads in contiguous chunks; no clock is read per answer.
fn best_pass(
    items: &[(String, rlvr_verifiers::Truth)],
    threads: usize,
    repeats: usize,
    judge: impl Fn(&str, &rlvr_verifiers::Truth) -> bool + Sync,
) -> (f64, usize) {
    let (mut best, mut verified) = (f64::INFINITY, 0usize);
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        let counts: Vec<usize> = std::thread::scope(|scope| {
            let handles: Vec<_> = items
                .chunks(items.len().div_ceil(threads).max(1))
                .map(|chunk| {
                    let judge = &judge;
                    scope.spawn(move || chunk.iter().filter(|(r, t)| judge(r, t)).count())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).collect()
        });
        best = best.min(t.elapsed().as_secs_f64());
        verified = counts.iter().sum();
    }
    (best, verified)
}
