//! `rlvr eval`: score a model on GSM8K, MATH-500, IFEval or a file of RLVR rows — generation
//! through the rollout engine in one batch, scoring through the verifiers — and write
//! `OUT/results.json` and `OUT/samples.jsonl`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rlvr_data::evals::Preset;
use rlvr_rollout::NativeEngine;
use rlvr_verifiers::Mode;
use serde_json::json;

use crate::commands::verify::ModeArg;
use crate::evaluation::{self, Settings};
use crate::placement::Placement;
use crate::UsageError;

/// How questions are asked (see `rlvr_data::evals` for the prompts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PresetArg {
    /// Zero-shot, the model's chat template, an instruction on the answer's form.
    Chat,
    /// Tülu 3's settings: GSM8K 8-shot chain of thought, MATH 4-shot Minerva; IFEval's
    /// headline is prompt-level loose accuracy.
    Tulu3,
}

impl From<PresetArg> for Preset {
    fn from(p: PresetArg) -> Self {
        match p {
            PresetArg::Chat => Preset::Chat,
            PresetArg::Tulu3 => Preset::Tulu3,
        }
    }
}

/// Arguments of `rlvr eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory or hub model id.
    #[arg(long)]
    pub model: String,
    /// Comma-separated tasks: gsm8k, math500, ifeval, builtin:word-problems (the generated
    /// one-step word problems' held-out split, picked by --seed as by a recipe's `seed`),
    /// builtin:if-word-problems (the same problems, each with an instruction-following
    /// constraint; only the constraint is scored), or data files of RLVR rows (`messages` or
    /// `prompt`, `ground_truth`, `dataset`).
    #[arg(long, value_delimiter = ',', default_value = "gsm8k,math500,ifeval")]
    pub tasks: Vec<String>,
    /// The first N questions of each task.
    #[arg(long)]
    pub limit: Option<usize>,
    /// How questions are asked.
    #[arg(long, value_enum, default_value_t = PresetArg::Chat)]
    pub preset: PresetArg,
    /// The chat template: `tulu`, `chatml`, or a model directory [default: the model's own].
    #[arg(long, default_value = "")]
    pub chat_template: String,
    /// Completions per question; pass@k is reported for k = N.
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Most new tokens per completion.
    #[arg(long, default_value_t = 512)]
    pub max_new_tokens: usize,
    /// Verifier rules: `default` (correct) or `tulu3` (the release's, defects included).
    #[arg(long, value_enum, default_value_t = ModeArg::Default)]
    pub mode: ModeArg,
    /// Seed of the sampling and of builtin:word-problems' questions: the same seed gives the
    /// same numbers.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sequences the engine holds at once.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[command(flatten)]
    pub placement: Placement,
    /// Where to write results.json and samples.jsonl.
    #[arg(long)]
    pub out: PathBuf,
}

/// Evaluate, write, print.
pub fn run(args: &Args) -> Result<()> {
    if args.n == 0 || args.batch == 0 || args.max_new_tokens == 0 {
        bail!(UsageError(
            "--n, --batch and --max-new-tokens must be at least 1".into()
        ));
    }
    if args.temperature < 0.0 {
        bail!(UsageError("--temperature must be >= 0".into()));
    }
    let started = Instant::now();
    let (device, kind) = args.placement.resolve()?;
    let dir = crate::stages::resolve_model(&args.model)?;
    let mut engine = NativeEngine::from_pretrained(&dir, device, kind, args.batch)
        .with_context(|| format!("loading {}", dir.display()))?;
    let tok = engine
        .tokenizer()
        .cloned()
        .ok_or_else(|| UsageError(format!("--model {}: no tokenizer.json there", dir.display())))?;
    let settings = Settings {
        tasks: args.tasks.clone(),
        limit: args.limit,
        preset: args.preset.into(),
        chat_template: args.chat_template.clone(),
        samples: args.n,
        temperature: args.temperature,
        max_new_tokens: args.max_new_tokens,
        mode: Mode::from(args.mode),
        seed: args.seed,
        stop: Vec::new(),
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("eval [{bar:30}] {pos}/{len} completions  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let report = evaluation::evaluate(&mut engine, &tok, &settings, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let (scores, samples) = (report.scores, report.samples);
    let seconds = started.elapsed().as_secs_f64();
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let mut file = std::io::BufWriter::new(std::fs::File::create(args.out.join("samples.jsonl"))?);
    for s in &samples {
        writeln!(file, "{}", serde_json::to_string(s)?)?;
    }
    file.flush()?;
    let results = json!({
        "model": args.model, "preset": format!("{:?}", args.preset).to_lowercase(),
        "mode": format!("{:?}", args.mode).to_lowercase(), "n": args.n,
        "temperature": args.temperature, "max_new_tokens": args.max_new_tokens,
        "limit": args.limit, "seed": args.seed,
        "tasks": evaluation::scores_json(&scores), "seconds": seconds,
    });
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    println!(
        "{:<28} {:>6} {:>9} {:>9} {:>10}",
        "task", "n", "accuracy", "pass@k", "truncated"
    );
    for (task, s) in &scores {
        let pass = s.pass_at_k.map_or("-".into(), |p| format!("{p:.4}"));
        println!(
            "{task:<28} {:>6} {:>9.4} {pass:>9} {:>10}",
            s.n,
            evaluation::headline(s, settings.preset),
            s.truncated
        );
        if let Some(i) = &s.ifeval {
            println!(
                "  prompt-level strict {:.4} loose {:.4}, instruction-level strict {:.4} loose {:.4}",
                i.prompt_strict, i.prompt_loose, i.instruction_strict, i.instruction_loose
            );
        }
    }
    println!(
        "{} completions in {seconds:.1} s -> {}",
        samples.len(),
        args.out.join("results.json").display()
    );
    Ok(())
}
