//! `reward.png`: the RLVR stage's training reward per step and held-out accuracy per
//! evaluation (and per verifier, when the held-out prompts go to several), drawn from
//! `metrics.jsonl` with plotters. Labels need a TrueType font; the
//! common system locations are searched, and without one the plot is skipped with a notice.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use serde_json::Value;

/// Where Linux and macOS keep a sans-serif TrueType font.
const FONTS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// Colours of the per-verifier held-out lines: dark enough on white, apart from the overall
/// line's red and the reward's blue.
const VERIFIER_COLORS: [RGBColor; 4] = [
    RGBColor(0, 140, 60),
    RGBColor(220, 120, 0),
    RGBColor(150, 0, 170),
    RGBColor(90, 90, 90),
];

fn font() -> Option<&'static str> {
    static FOUND: OnceLock<Option<&'static str>> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let path = FONTS.iter().find(|p| Path::new(p).is_file())?;
        let bytes: &'static [u8] = Box::leak(std::fs::read(path).ok()?.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).ok()?;
        Some(*path)
    })
}

/// Series of one stage from `metrics.jsonl`: `(step, value)` of `key`.
fn series(records: &[Value], stage: &str, key: &str) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter(|r| r.get("stage").and_then(Value::as_str) == Some(stage))
        .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(key)?.as_f64()?)))
        .collect()
}

/// Held-out accuracy per verifier (`eval_accuracy_per_verifier`) of one stage, by verifier
/// name; empty when the held-out prompts go to one verifier only (the overall line says it all).
fn per_verifier(records: &[Value], stage: &str) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut lines: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for r in records
        .iter()
        .filter(|r| r.get("stage").and_then(Value::as_str) == Some(stage))
    {
        let (Some(step), Some(Value::Object(each))) = (
            r.get("step").and_then(Value::as_f64),
            r.get("eval_accuracy_per_verifier"),
        ) else {
            continue;
        };
        for (name, accuracy) in each {
            if let Some(a) = accuracy.as_f64() {
                lines.entry(name.clone()).or_default().push((step, a));
            }
        }
    }
    if lines.len() < 2 {
        return Vec::new();
    }
    lines.into_iter().collect()
}

/// Draw the RLVR reward and held-out accuracy of `metrics` into `png` (overall, and per
/// verifier when the held-out prompts go to several). Returns false (having
/// drawn nothing) when no font is available.
pub fn reward_curve(metrics: &Path, png: &Path) -> Result<bool> {
    if font().is_none() {
        tracing::info!(
            "reward.png skipped: no TrueType font found (looked in {})",
            FONTS.join(", ")
        );
        return Ok(false);
    }
    let text = std::fs::read_to_string(metrics).with_context(|| format!("reading {}", metrics.display()))?;
    let records: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let reward = series(&records, "rlvr", "reward_mean");
    let accuracy = series(&records, "rlvr", "eval_accuracy");
    let verifiers = per_verifier(&records, "rlvr");
    let points = reward
        .iter()
        .chain(&accuracy)
        .chain(verifiers.iter().flat_map(|(_, line)| line));
    let steps = points.clone().map(|p| p.0).fold(1.0, f64::max);
    let (lo, hi) = points.fold((0.0f64, 1.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));

    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(png, (900, 540)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("RLVR: training reward and held-out accuracy", ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..steps, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("reward / accuracy")
            .draw()?;
        chart
            .draw_series(LineSeries::new(reward.iter().copied(), BLUE.mix(0.7)))?
            .label("training reward (mean)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        let red = RED.stroke_width(3);
        chart
            .draw_series(LineSeries::new(accuracy.iter().copied(), red).point_size(4))?
            .label("held-out accuracy (greedy)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        for (i, (name, line)) in verifiers.iter().enumerate() {
            let color = VERIFIER_COLORS[i % VERIFIER_COLORS.len()];
            chart
                .draw_series(LineSeries::new(line.iter().copied(), color.stroke_width(2)).point_size(3))?
                .label(format!("held-out accuracy: {name}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow!("drawing {}: {e}", png.display()))?;
    Ok(true)
}
