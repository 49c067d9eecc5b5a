//! `rlvr convert`: a GGUF file (llama.cpp's format) into a Hugging Face model directory that
//! rlvr and transformers load — the way to a real model where the hub cannot be reached.

use std::path::PathBuf;

use anyhow::Result;

/// Arguments of `rlvr convert`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The GGUF file (architecture llama; tensors F32, F16, BF16, Q4_0, Q4_1, Q8_0).
    pub gguf: PathBuf,
    /// Directory to write: config.json, model.safetensors (f32), tokenizer.json,
    /// tokenizer_config.json, generation_config.json.
    #[arg(long)]
    pub out: PathBuf,
}

/// Convert and say what was written.
pub fn run(args: &Args) -> Result<()> {
    let done = rlvr_data::gguf::convert(&args.gguf, &args.out)?;
    tracing::info!(
        "converted `{}`: {} tensors, {} parameters (f32) -> {}",
        done.name,
        done.tensors,
        done.parameters,
        args.out.display()
    );
    Ok(())
}
