//! `rlvr data inspect`: what a recipe's stages will train on, before any compute is spent —
//! each stage's data set and row count, token lengths (percentiles, rows cut at the maximum
//! length), and examples as the model sees them, chat template applied.

use anyhow::Result;
use rlvr_core::{Encoded, IGNORE};
use rlvr_data::Tokenizer;
use rlvr_recipes::spec::{Amount, StageKind};
use rlvr_recipes::{Recipe, Resolved};

use crate::stages;

/// Data commands.
#[derive(Debug, clap::Subcommand)]
pub enum Data {
    /// Per stage of a recipe: the data set, rows, token-length percentiles, rows cut at the
    /// maximum length, and examples rendered as the model sees them.
    Inspect(InspectArgs),
}

/// Arguments of `rlvr data inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Recipe name (see `rlvr recipes`) or path to a recipe .toml file.
    pub recipe: String,
    /// Override a value, as in `rlvr show` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Examples to print per stage.
    #[arg(long, default_value_t = 3)]
    pub examples: usize,
}

/// Run a data command.
pub fn run(data: &Data) -> Result<()> {
    let Data::Inspect(args) = data;
    let stages: Vec<Recipe> = match rlvr_recipes::load(&args.recipe, &args.overrides)? {
        Resolved::Stage(r) => vec![*r],
        Resolved::Pipeline(p) => p.stages,
    };
    let mut failed = Vec::new();
    for stage in &stages {
        if let Err(e) = inspect(stage, args.examples) {
            println!("  not available here: {e:#}");
            failed.push((stage.name.clone(), e));
        }
        println!();
    }
    // A stage reported as unusable is a failed command: exit 2 where the input is at fault.
    match failed.into_iter().next() {
        None => Ok(()),
        Some((name, e)) => Err(e.context(format!("stage `{name}` cannot be inspected here"))),
    }
}

/// Lengths at the 50th, 90th and 99th percentiles and the longest.
fn percentiles(mut lengths: Vec<usize>) -> String {
    if lengths.is_empty() {
        return "no rows".into();
    }
    lengths.sort_unstable();
    let at = |q: f64| lengths[((lengths.len() - 1) as f64 * q).round() as usize];
    format!(
        "p50 {}  p90 {}  p99 {}  max {}",
        at(0.5),
        at(0.9),
        at(0.99),
        lengths[lengths.len() - 1]
    )
}

/// The resolved mix of a stage's record (`data.mix` as [`rlvr_data::mix::MixReport`] writes it).
fn show_mix(mix: &serde_json::Value) {
    for e in mix["entries"].as_array().into_iter().flatten() {
        let available = e["available"]
            .as_u64()
            .map_or("generated".into(), |n| format!("of {n}"));
        println!(
            "  resolved: {} [{}] ({}): {} rows {available}; {} filtered, {} bad skipped",
            e["dataset"].as_str().unwrap_or(""),
            e["split"].as_str().unwrap_or(""),
            e["source"].as_str().unwrap_or(""),
            e["taken"],
            e["filtered"],
            e["skipped"],
        );
    }
}

/// An example as the model sees it, indented.
fn show(tok: &Tokenizer, ids: &[u32]) {
    for line in tok.decode_with_specials(ids).lines() {
        println!("    | {line}");
    }
}

fn ids(e: &Encoded) -> Vec<u32> {
    e.0.iter().map(|&t| t as u32).collect()
}

fn learned(e: &Encoded) -> usize {
    e.1.iter().skip(1).filter(|&&l| l != IGNORE).count()
}

fn inspect(stage: &Recipe, examples: usize) -> Result<()> {
    let kind = stage.kind.map_or("stage", |k| k.as_str());
    println!("stage {} ({kind})", stage.name);
    let template = if stage.data.chat_template.is_empty() {
        "the model's own (chatml when it has none)"
    } else {
        &stage.data.chat_template
    };
    println!(
        "  chat template: {template}; max_seq_length {}",
        stage.data.max_seq_length
    );
    for entry in &stage.data.mix {
        let amount = match entry.amount {
            Amount::Count(n) => format!("{n} rows"),
            Amount::Fraction(f) => format!("fraction {f}"),
        };
        println!("  data.mix: {} ({amount})", entry.dataset);
    }
    // The starting model's tokenizer: a local directory, or a hub model's tokenizer files (not
    // its weights); a stage that starts from the previous stage's model (or from scratch) has
    // none yet.
    let name = &stage.model.name_or_path;
    let fetched = match name.is_empty() {
        true => None,
        false => Some(stages::resolve_tokenizer(name)?),
    };
    let init = fetched.as_deref();
    let max_len = stage.data.max_seq_length as usize;
    let shown = match stage.kind {
        Some(StageKind::Pretrain | StageKind::Sft) => {
            stages::lm::inspect(stage, init).map(|(tok, texts)| {
                show_mix(&texts.record["data.mix"]);
                let rows = texts.train();
                println!("  rows: {}", rows.len());
                let lengths: Vec<usize> = rows.iter().map(|e| e.0.len()).collect();
                let cut = lengths.iter().filter(|&&l| l >= max_len).count();
                println!(
                    "  tokens per row: {}; {cut} at the maximum length (cut)",
                    percentiles(lengths)
                );
                let w = texts.waste;
                println!(
                "  padding: {:.1}% of positions in batches of {}; {:.1}% packed into {} rows of {max_len}{}",
                100.0 * w.unpacked,
                stage.train.per_device_train_batch_size,
                100.0 * w.packed,
                w.packed_rows,
                if stage.data.packing { " (data.packing = true)" } else { "" }
            );
                for (i, e) in rows.iter().take(examples).enumerate() {
                    println!(
                        "  example {} ({} tokens, {} learned):",
                        i + 1,
                        e.0.len(),
                        learned(e)
                    );
                    show(&tok, &ids(e));
                }
            })
        }
        Some(StageKind::Dpo | StageKind::Rm) => {
            stages::preference::inspect(stage, init).map(|(tok, pairs)| {
                show_mix(&pairs.record["data.mix"]);
                println!("  pairs: {}", pairs.train.len());
                let prompt = |e: &Encoded| e.1.iter().take_while(|&&l| l == IGNORE).count();
                let prompts: Vec<usize> = pairs.train.iter().map(|(c, _)| prompt(c)).collect();
                let chosen: Vec<usize> = pairs.train.iter().map(|(c, _)| learned(c)).collect();
                let rejected: Vec<usize> = pairs.train.iter().map(|(_, r)| learned(r)).collect();
                println!("  prompt tokens: {}", percentiles(prompts));
                println!("  chosen answer tokens: {}", percentiles(chosen));
                println!("  rejected answer tokens: {}", percentiles(rejected));
                for (i, (chosen, rejected)) in pairs.train.iter().take(examples).enumerate() {
                    println!("  pair {} chosen ({} answer tokens):", i + 1, learned(chosen));
                    show(&tok, &ids(chosen));
                    println!("  pair {} rejected ({} answer tokens):", i + 1, learned(rejected));
                    show(&tok, &ids(rejected));
                }
            })
        }
        Some(StageKind::Rlvr) => stages::rlvr::inspect(stage, init).map(|(tok, prompts, limit, mix)| {
            show_mix(&serde_json::to_value(&mix).unwrap_or_default());
            println!("  prompts: {}", prompts.len());
            let mut per_verifier: std::collections::BTreeMap<&str, usize> = Default::default();
            for p in &prompts {
                *per_verifier.entry(p.verifier.name()).or_default() += 1;
            }
            let counts: Vec<String> = per_verifier.iter().map(|(v, n)| format!("{v} {n}")).collect();
            println!("  prompts per verifier: {}", counts.join(", "));
            let lengths: Vec<usize> = prompts.iter().map(|p| p.prompt_ids.len()).collect();
            let over = lengths.iter().filter(|&&l| l > limit).count();
            println!(
                "  tokens per prompt: {}; {over} over {limit}, the smaller of rlvr.max_prompt_token_length and rlvr.max_token_length (dropped)",
                percentiles(lengths)
            );
            for (i, p) in prompts.iter().take(examples).enumerate() {
                println!(
                    "  prompt {} ({} tokens), verifier {}, ground truth {:?}:",
                    i + 1,
                    p.prompt_ids.len(),
                    p.verifier.name(),
                    &*p.label
                );
                let parsed = format!("{:?}", p.truth);
                let cut: String = parsed.chars().take(300).collect();
                let more = if cut.len() < parsed.len() { " …" } else { "" };
                println!("    parsed: {cut}{more}");
                show(&tok, &p.prompt_ids);
            }
        }),
        None => Ok(()),
    };
    shown
}
