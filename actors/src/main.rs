//! # rlvr
//!
//! The `rlvr` command: list, show, plan and run the recipes of `rlvr-recipes`, sample from a
//! checkpoint, verify responses, and benchmark. See [`rlvr_actors`] for the exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rlvr_actors::{commands, exit_code};

/// Post-train language models with reinforcement learning from verifiable rewards.
#[derive(Debug, Parser)]
#[command(name = "rlvr", version, about, long_about = None)]
struct Cli {
    /// How log lines are written to stderr (levels from `RUST_LOG`, default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Log line formats.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Time, level and message, for people.
    Text,
    /// One JSON object per line, for machines.
    Json,
}

/// Log through `tracing` to stderr, filtered by `RUST_LOG` (default: `info`, with the actor
/// framework's own spans and messages at `warn`).
fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,ractor=warn,ractor_cluster=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List every recipe with a one-line description.
    Recipes,
    /// Print a fully resolved recipe: stages, model, data mix, every hyperparameter.
    Show(commands::show::Args),
    /// Plan resources before launch: per-GPU memory, rollout memory, steps and tokens.
    Plan(commands::plan::Args),
    /// Run a recipe (a pipeline runs its stages in order).
    Run(commands::run::Args),
    /// Score responses with the verifiers (GSM8K, MATH, IF constraints, plug-ins), one verdict per line.
    Verify(commands::verify::Args),
    /// Sample completions from a Hugging Face checkpoint.
    Generate(commands::generate::Args),
    /// Score a model on GSM8K, MATH-500, IFEval or a file of RLVR rows.
    Eval(commands::eval::Args),
    /// Convert a GGUF file (llama.cpp) into a Hugging Face model directory.
    Convert(commands::convert::Args),
    /// Measure speed against a baseline, side by side.
    #[command(subcommand)]
    Bench(commands::bench::Bench),
    /// Join a run started with `run --listen` as a node of rollout or verifier workers.
    Worker(commands::worker::Args),
    /// Talk to a running RLVR stage: its status, or resize its rollout or verifier pool.
    Ctl(commands::ctl::Args),
    /// Draw a run's reward.png again from its metrics.jsonl.
    Plot(commands::plot::Args),
    /// Look at a recipe's data before training: rows, token lengths, rendered examples.
    #[command(subcommand)]
    Data(commands::data::Data),
    /// One learner rank of a stage that `rlvr run` spread over `learner.world_size` ranks.
    #[command(hide = true)]
    StageRank(commands::run::RankArgs),
}

fn main() -> ExitCode {
    // libtorch backs CPU buffers of 2 MiB and more with transparent huge pages when this is set
    // (read once, at its first such allocation). A decode step streams every weight from
    // memory, and huge pages spare it a TLB miss per 4 KiB; the gain measured is small (see
    // BENCHMARKS, "Generation"). Set here, before any thread starts, unless the user chose.
    if std::env::var_os("THP_MEM_ALLOC_ENABLE").is_none() {
        std::env::set_var("THP_MEM_ALLOC_ENABLE", "1");
    }
    rlvr_learner::runtime::init();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Recipes => commands::recipes::run(),
        Command::Show(args) => commands::show::run(&args),
        Command::Plan(args) => commands::plan::run(&args),
        Command::Run(args) => commands::run::run(&args),
        Command::Generate(args) => commands::generate::run(&args),
        Command::Eval(args) => commands::eval::run(&args),
        Command::Convert(args) => commands::convert::run(&args),
        Command::Verify(args) => commands::verify::run(&args),
        Command::Bench(bench) => commands::bench::run(&bench),
        Command::Data(data) => commands::data::run(&data),
        Command::Worker(args) => commands::worker::run(&args),
        Command::Ctl(args) => commands::ctl::run(&args),
        Command::Plot(args) => commands::plot::run(&args),
        Command::StageRank(args) => commands::run::rank(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}
