//! `rlvr generate`: sample from a Hugging Face checkpoint — the first thing to run to see that a
//! checkpoint is sane.

use std::path::PathBuf;

use anyhow::{Context, Result};
use rlvr_core::{GenerationRequest, SamplingParams};
use rlvr_rollout::{Engine, NativeEngine};
use serde_json::json;
use tch::{Device, Kind};

use crate::UsageError;

/// Arguments of `rlvr generate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory (config.json, model.safetensors or a sharded index, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt text (special tokens written in it are recognised).
    #[arg(long)]
    pub prompt: String,
    /// Completions to sample.
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    /// Most new tokens per completion.
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Keep the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Stop when the text contains this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Seed; the same seed gives the same completions.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// One JSON object per completion: text, token_ids, logprobs, finish_reason.
    #[arg(long)]
    pub json: bool,
}

/// Sample and print.
pub fn run(args: &Args) -> Result<()> {
    if !args.model.join("config.json").is_file() {
        return Err(UsageError(format!("--model {}: no config.json there", args.model.display())).into());
    }
    if !args.model.join("tokenizer.json").is_file() {
        return Err(UsageError(format!(
            "--model {}: no tokenizer.json there",
            args.model.display()
        ))
        .into());
    }
    if args.temperature < 0.0 || !(args.top_p > 0.0 && args.top_p <= 1.0) {
        return Err(UsageError("--temperature must be >= 0 and --top-p within (0, 1]".into()).into());
    }
    let device = rlvr_learner::runtime::default_device();
    let kind = if device == Device::Cpu {
        Kind::Float
    } else {
        Kind::BFloat16
    };
    let mut engine = NativeEngine::from_pretrained(&args.model, device, kind, args.n.max(1))
        .with_context(|| format!("loading {}", args.model.display()))?;
    let tok = engine.tokenizer().cloned().context("tokenizer")?;
    let prompt_ids = tok.encode_prompt(&args.prompt);
    let stop_ids = rlvr_rollout::stop_token_ids(&tok, engine.config());
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        max_new_tokens: args.max_new_tokens,
        stop_token_ids: stop_ids,
        stop: args.stop.clone(),
    };
    let request = GenerationRequest {
        id: 0,
        prompt_ids,
        n: args.n,
        seed: args.seed,
    };
    for c in engine.generate(&[request], &params)? {
        let text = tok.decode(&c.token_ids);
        if args.json {
            let obj = json!({
                "index": c.index, "text": text, "token_ids": c.token_ids,
                "logprobs": c.logprobs, "finish_reason": c.finish_reason,
            });
            println!("{obj}");
        } else {
            println!(
                "--- completion {} ({:?}, {} tokens) ---",
                c.index,
                c.finish_reason,
                c.token_ids.len()
            );
            println!("{}{text}", args.prompt);
        }
    }
    Ok(())
}
