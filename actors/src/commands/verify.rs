//! `rlvr verify`: score a JSONL file of responses with the verifiers, one verdict per line, in
//! order; a bad line gets an error object and the rest are still scored. IFEval benchmark rows
//! (`google_ifeval`) also get per-instruction `strict` and `loose` results and, on stderr, the
//! benchmark's four accuracies.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use rlvr_verifiers::{Following, GoogleIfEval, IfEvalPrompt, Mode, PluginVerifier, Registry, Verifier};
use serde_json::{json, Value};

/// Arguments of `rlvr verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// JSONL input: per line `dataset` (the verifier), `response`, `ground_truth`; for
    /// `google_ifeval`, `instruction_id_list`, `kwargs` and `prompt` instead of `ground_truth`.
    #[arg(long)]
    pub input: PathBuf,
    /// `default` (correct) or `tulu3` (the Tülu 3 release's rules, defects included).
    #[arg(long, value_enum, default_value_t = ModeArg::Default)]
    pub mode: ModeArg,
    /// Where to write the verdicts (`-` for standard output).
    #[arg(long, default_value = "-")]
    pub output: String,
    /// Add an out-of-process verifier: `NAME=PROGRAM[,ARG...]`, e.g.
    /// `contains=python3,examples/plugin_verifier.py` (repeatable; see the protocol in
    /// verifiers/src/plugin.rs).
    #[arg(long, value_name = "NAME=COMMAND")]
    pub plugin: Vec<String>,
    /// Seconds a plug-in may take per answer before it fails and is restarted.
    #[arg(long, default_value_t = 10.0)]
    pub plugin_timeout_s: f64,
}

/// Verifier modes on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ModeArg {
    /// Correct checking.
    Default,
    /// Tülu 3's rules.
    Tulu3,
}

fn field<'a>(row: &'a Value, name: &str, line: usize) -> Result<&'a str, String> {
    match row.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(format!(
            "line {line}: field `{name}` must be a string, got {other}"
        )),
        None => Err(format!("line {line}: missing field `{name}`")),
    }
}

/// IFEval's four accuracies: prompt- and instruction-level, strict and loose.
#[derive(Default)]
struct IfEvalTotals {
    prompts: usize,
    prompts_strict: usize,
    prompts_loose: usize,
    instructions: usize,
    instructions_strict: usize,
    instructions_loose: usize,
}

impl IfEvalTotals {
    fn add(&mut self, f: &Following) {
        let count = |v: &[bool]| v.iter().filter(|b| **b).count();
        self.prompts += 1;
        self.prompts_strict += usize::from(f.strict.iter().all(|b| *b));
        self.prompts_loose += usize::from(f.loose.iter().all(|b| *b));
        self.instructions += f.strict.len();
        self.instructions_strict += count(&f.strict);
        self.instructions_loose += count(&f.loose);
    }
}

/// The IFEval label of a `google_ifeval` line: its `ground_truth` (the row as JSON text) when
/// present, else the line's own `instruction_id_list`, `kwargs` and `prompt`.
fn ifeval_prompt(row: &Value, line: usize) -> Result<IfEvalPrompt, String> {
    let parsed = match row.get("ground_truth") {
        Some(Value::String(raw)) => serde_json::from_str(raw)
            .map_err(|e| format!("field `ground_truth`: not JSON: {e}"))
            .and_then(|label| IfEvalPrompt::from_row(&label)),
        _ => IfEvalPrompt::from_row(row),
    };
    parsed.map_err(|e| format!("line {line}: {e}"))
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Default => Mode::Default,
            ModeArg::Tulu3 => Mode::Tulu3,
        }
    }
}

/// Score every line.
pub fn run(args: &Args) -> Result<()> {
    let mut registry = Registry::new(args.mode.into());
    if !(args.plugin_timeout_s > 0.0 && args.plugin_timeout_s.is_finite()) {
        return Err(crate::UsageError("--plugin-timeout-s must be a positive number".into()).into());
    }
    for spec in &args.plugin {
        let (name, command) = spec
            .split_once('=')
            .filter(|(n, c)| !n.is_empty() && !c.is_empty())
            .ok_or_else(|| crate::UsageError(format!("--plugin {spec:?}: expected NAME=PROGRAM[,ARG...]")))?;
        let command = command.split(',').map(str::to_string).collect();
        let timeout = std::time::Duration::from_secs_f64(args.plugin_timeout_s);
        registry.register(std::sync::Arc::new(PluginVerifier::new(name, command, timeout)));
    }
    let file = std::fs::File::open(&args.input)
        .map_err(|e| crate::UsageError(format!("--input {}: {e}", args.input.display())))?;
    let mut out: Box<dyn Write> = if args.output == "-" {
        Box::new(BufWriter::new(std::io::stdout().lock()))
    } else {
        Box::new(BufWriter::new(
            std::fs::File::create(&args.output).with_context(|| format!("creating {}", args.output))?,
        ))
    };
    let started = Instant::now();
    let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut errors = 0u64;
    let mut ifeval = IfEvalTotals::default();
    let mut reader = BufReader::new(file);
    let mut bytes = Vec::new();
    for n in 1.. {
        bytes.clear();
        let read = reader
            .read_until(b'\n', &mut bytes)
            .with_context(|| format!("reading {} line {n}", args.input.display()))?;
        if read == 0 {
            break;
        }
        // Each line stands alone: invalid UTF-8 or JSON gets an error object, the rest go on.
        let result = std::str::from_utf8(&bytes)
            .map_err(|e| format!("line {n}: not UTF-8: {e}"))
            .and_then(|line| {
                serde_json::from_str::<Value>(line).map_err(|e| format!("line {n}: not JSON: {e}"))
            })
            .and_then(|row| {
                let dataset = field(&row, "dataset", n)?;
                let response = field(&row, "response", n)?;
                let verifier = registry.get(dataset).map_err(|e| format!("line {n}: {e}"))?;
                if verifier.name() == GoogleIfEval.name() {
                    let (verdict, following) = GoogleIfEval.judge(response, &ifeval_prompt(&row, n)?);
                    return Ok((dataset.to_string(), verdict, Some(following)));
                }
                let truth = field(&row, "ground_truth", n)?;
                let verdict = registry
                    .verify(dataset, response, truth)
                    .map_err(|e| format!("line {n}: {e}"))?;
                Ok((dataset.to_string(), verdict, None))
            });
        let record = match result {
            Ok((dataset, v, following)) => {
                let c = counts.entry(dataset).or_default();
                c.0 += 1;
                c.1 += u64::from(v.verified);
                let mut record = json!({"verified": v.verified, "score": v.score, "reason": v.reason});
                if let Some(f) = following {
                    ifeval.add(&f);
                    record["strict"] = json!(f.strict);
                    record["loose"] = json!(f.loose);
                }
                record
            }
            Err(message) => {
                errors += 1;
                json!({"error": message})
            }
        };
        writeln!(out, "{record}")?;
    }
    out.flush()?;
    let secs = started.elapsed().as_secs_f64();
    let total: u64 = counts.values().map(|c| c.0).sum();
    for (name, (n, ok)) in &counts {
        tracing::info!("{name}: {ok}/{n} verified");
    }
    if ifeval.prompts > 0 {
        let frac = |a: usize, b: usize| a as f64 / b.max(1) as f64;
        tracing::info!(
            "IFEval: prompt-level strict {:.4} loose {:.4}, instruction-level strict {:.4} loose {:.4}",
            frac(ifeval.prompts_strict, ifeval.prompts),
            frac(ifeval.prompts_loose, ifeval.prompts),
            frac(ifeval.instructions_strict, ifeval.instructions),
            frac(ifeval.instructions_loose, ifeval.instructions),
        );
    }
    tracing::info!(
        "{total} scored, {errors} bad lines, {:.3} s ({:.0} answers/s)",
        secs,
        total as f64 / secs.max(1e-9)
    );
    Ok(())
}
