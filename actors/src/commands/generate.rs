//! `rlvr generate`: sample from a Hugging Face checkpoint — the first thing to run to see that a
//! checkpoint is sane. Prompts come as text (`--prompt`), as a user turn in the model's chat
//! template (`--chat`), as a conversation (`--messages`), one per line of a file
//! (`--prompt-file`, batched through the engine in one go), or as token ids (`--prompt-ids`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rlvr_core::{GenerationRequest, SamplingParams};
use rlvr_data::{ChatTemplate, Message, Tokenizer};
use rlvr_rollout::{Engine, NativeEngine};
use serde_json::{json, Value};

use crate::placement::Placement;
use crate::UsageError;

/// Arguments of `rlvr generate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model directory (config.json, safetensors, tokenizer.json) or hub model id.
    #[arg(long)]
    pub model: String,
    /// Prompt text, used as given (special tokens written in it are recognised); with
    /// `--chat`, the user's turn.
    #[arg(long, conflicts_with_all = ["messages", "prompt_file", "prompt_ids"])]
    pub prompt: Option<String>,
    /// Apply the model's chat template: `--prompt` (and each text line of `--prompt-file`)
    /// becomes a user turn, followed by the template's generation prompt.
    #[arg(long)]
    pub chat: bool,
    /// With `--chat`: a system turn before the user's.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// A JSON file holding one conversation (a list of `{"role", "content"}`), rendered with the
    /// model's chat template and its generation prompt.
    #[arg(long, conflicts_with_all = ["prompt_file", "prompt_ids"])]
    pub messages: Option<PathBuf>,
    /// One prompt per line: a JSON string (text; a user turn with `--chat`), a list of
    /// messages, or an object with `prompt` or `messages`. All go through the engine together;
    /// output is in input order.
    #[arg(long, conflicts_with = "prompt_ids")]
    pub prompt_file: Option<PathBuf>,
    /// Token ids as given, comma-separated: no tokenizer, template or BOS.
    #[arg(long, value_delimiter = ',')]
    pub prompt_ids: Option<Vec<u32>>,
    /// Completions per prompt.
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
    /// Stop when the text contains this string (repeatable); generation also stops on every
    /// end-of-sequence id of the model.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Seed; the same seed gives the same completions.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sequences the engine holds at once.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[command(flatten)]
    pub placement: Placement,
    /// One JSON object per completion: prompt_index, index, text, token_ids, logprobs,
    /// finish_reason.
    #[arg(long)]
    pub json: bool,
}

/// One prompt: its text when it has one (for display), and its token ids.
struct Prompt {
    text: Option<String>,
    ids: Vec<u32>,
}

/// Sample and print.
pub fn run(args: &Args) -> Result<()> {
    if args.temperature < 0.0 || !(args.top_p > 0.0 && args.top_p <= 1.0) {
        bail!(UsageError(
            "--temperature must be >= 0 and --top-p within (0, 1]".into()
        ));
    }
    if args.n == 0 || args.batch == 0 {
        bail!(UsageError("--n and --batch must be at least 1".into()));
    }
    let (device, kind) = args.placement.resolve()?;
    let dir = crate::stages::resolve_model(&args.model)?;
    let mut engine = NativeEngine::from_pretrained(&dir, device, kind, args.batch)
        .with_context(|| format!("loading {}", dir.display()))?;
    let tok = match engine.tokenizer() {
        Some(t) => t.clone(),
        None if args.prompt_ids.is_some() => Tokenizer::builtin_chars(),
        None => bail!(UsageError(format!(
            "--model {}: no tokenizer.json there (--prompt-ids needs none)",
            dir.display()
        ))),
    };
    let prompts = prompts(args, &tok)?;
    let vocab = engine.config().vocab_size;
    if let Some(p) = prompts
        .iter()
        .find(|p| p.ids.iter().any(|&t| i64::from(t) >= vocab))
    {
        bail!(UsageError(format!(
            "a prompt holds a token id outside the model's vocabulary (0..{vocab}): {:?}",
            p.ids
        )));
    }
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        max_new_tokens: args.max_new_tokens,
        stop_token_ids: rlvr_rollout::stop_token_ids(&tok, engine.config()),
        stop: args.stop.clone(),
    };
    let requests: Vec<GenerationRequest> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| GenerationRequest {
            id: i as u64,
            prompt_ids: p.ids.clone(),
            n: args.n,
            seed: args.seed.wrapping_add(i as u64),
        })
        .collect();
    for c in engine.generate(&requests, &params)? {
        let text = tok.decode(&c.token_ids);
        let prompt = &prompts[c.request_id as usize];
        if args.json {
            let obj = json!({
                "prompt_index": c.request_id, "index": c.index, "text": text,
                "token_ids": c.token_ids, "logprobs": c.logprobs, "finish_reason": c.finish_reason,
            });
            println!("{obj}");
        } else {
            println!(
                "--- prompt {}, completion {} ({:?}, {} tokens) ---",
                c.request_id,
                c.index,
                c.finish_reason,
                c.token_ids.len()
            );
            println!("{}{text}", prompt.text.as_deref().unwrap_or_default());
        }
    }
    Ok(())
}

/// The prompts the flags give, encoded.
fn prompts(args: &Args, tok: &Tokenizer) -> Result<Vec<Prompt>> {
    if let Some(ids) = &args.prompt_ids {
        if ids.is_empty() {
            bail!(UsageError("--prompt-ids: no ids".into()));
        }
        return Ok(vec![Prompt {
            text: None,
            ids: ids.clone(),
        }]);
    }
    let template = || -> Result<ChatTemplate> {
        if tok.chat_template().is_none() {
            bail!(UsageError(format!(
                "--model {}: its tokenizer_config.json has no chat_template",
                args.model
            )));
        }
        Ok(ChatTemplate::resolve("", tok)?)
    };
    let chat = |messages: &[Message]| -> Result<Prompt> {
        let text = template()?.render(messages, true)?;
        Ok(Prompt {
            ids: tok.encode_prompt(&text),
            text: Some(text),
        })
    };
    let plain = |text: &str| -> Result<Prompt> {
        if args.chat {
            let mut turns: Vec<Message> = args.system.iter().map(|s| Message::new("system", s)).collect();
            turns.push(Message::new("user", text));
            return chat(&turns);
        }
        Ok(Prompt {
            ids: tok.encode_prompt(text),
            text: Some(text.to_string()),
        })
    };
    if let Some(text) = &args.prompt {
        return Ok(vec![plain(text)?]);
    }
    if let Some(path) = &args.messages {
        let value: Value = serde_json::from_str(&read(path)?)
            .map_err(|e| UsageError(format!("--messages {}: not JSON: {e}", path.display())))?;
        return Ok(vec![chat(&messages_of(&value, path, 1)?)?]);
    }
    let Some(path) = &args.prompt_file else {
        bail!(UsageError(
            "give a prompt: --prompt, --messages, --prompt-file or --prompt-ids".into()
        ));
    };
    let text = read(path)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = i + 1;
        let value: Value = serde_json::from_str(line)
            .map_err(|e| UsageError(format!("{}:{at}: not JSON: {e}", path.display())))?;
        let prompt = match &value {
            Value::String(s) => plain(s)?,
            Value::Array(_) => chat(&messages_of(&value, path, at)?)?,
            Value::Object(o) => match (o.get("prompt"), o.get("messages")) {
                (Some(Value::String(s)), _) => plain(s)?,
                (_, Some(m)) => chat(&messages_of(m, path, at)?)?,
                _ => bail!(UsageError(format!(
                    "{}:{at}: an object needs a `prompt` string or `messages`",
                    path.display()
                ))),
            },
            _ => bail!(UsageError(format!(
                "{}:{at}: expected a string, a list of messages or an object",
                path.display()
            ))),
        };
        out.push(prompt);
    }
    if out.is_empty() {
        bail!(UsageError(format!("{}: no prompts", path.display())));
    }
    Ok(out)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| UsageError(format!("{}: {e}", path.display())).into())
}

/// A list of `{"role", "content"}` messages at `path`, line `at`.
fn messages_of(value: &Value, path: &Path, at: usize) -> Result<Vec<Message>> {
    let messages: Vec<Message> = serde_json::from_value(value.clone()).map_err(|e| {
        UsageError(format!(
            "{}:{at}: expected a list of {{\"role\", \"content\"}} messages: {e}",
            path.display()
        ))
    })?;
    if messages.is_empty() {
        bail!(UsageError(format!("{}:{at}: no messages", path.display())));
    }
    Ok(messages)
}
