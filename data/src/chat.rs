//! Chat templates: a conversation (`messages`, open-instruct's column) rendered to the text a
//! model trains on or continues. A model's own Jinja `chat_template` (from its
//! `tokenizer_config.json`) renders with `minijinja` under transformers' semantics — blocks
//! trimmed and left-stripped, `add_generation_prompt`, `bos_token`, `eos_token`,
//! `raise_exception`, Python string methods — and two templates are built in: `tulu`
//! (open-instruct's training format, `<|user|>\n…\n<|assistant|>\n…EOS`) and `chatml`
//! (`<|im_start|>role\n…<|im_end|>\n`, SmolLM2's format without its default system prompt).

use std::ops::Range;
use std::path::Path;

use minijinja::{Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::{DataError, Tokenizer};

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant` (a model's template may accept more).
    pub role: String,
    /// The text of the turn.
    pub content: String,
}

impl Message {
    /// A turn of `role` saying `content`.
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// open-instruct's `tulu` template: each assistant turn ends with EOS (and a newline unless it
/// is the last message); the generation prompt is `<|assistant|>\n`.
const TULU: &str = "{% for message in messages %}\
{% if message.role == 'system' %}{{ '<|system|>\\n' + message.content + '\\n' }}\
{% elif message.role == 'user' %}{{ '<|user|>\\n' + message.content + '\\n' }}\
{% elif message.role == 'assistant' %}{{ '<|assistant|>\\n' + message.content + eos_token }}{% if not loop.last %}{{ '\\n' }}{% endif %}\
{% else %}{{ raise_exception('the tulu template has no role ' + message.role) }}{% endif %}\
{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

/// ChatML: `<|im_start|>ROLE\nCONTENT<|im_end|>\n` per turn.
const CHATML: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}\
{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// The built-in templates, by name.
pub const BUILTIN_TEMPLATES: &[&str] = &["tulu", "chatml"];

/// A compiled chat template with the special tokens it may name.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
    origin: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("origin", &self.origin)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

/// A conversation rendered for training: its text and the byte ranges of its assistant turns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedChat {
    /// The whole conversation as text.
    pub text: String,
    /// Byte ranges of `text` written by the assistant (the generation prompt excluded, the
    /// template's end-of-turn tokens included).
    pub assistant: Vec<Range<usize>>,
}

fn raise_exception(message: String) -> Result<String, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

fn template_error(origin: &str, e: &Error) -> DataError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        message.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    DataError::Template {
        origin: origin.into(),
        message,
    }
}

impl ChatTemplate {
    /// Compile Jinja `source` (named `origin` in errors) with transformers' environment
    /// settings; `bos_token` and `eos_token` are what the template sees under those names.
    pub fn from_jinja(
        source: &str,
        origin: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<Self, DataError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| template_error(origin, &e))?;
        Ok(Self {
            env,
            source: source.to_string(),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
            origin: origin.into(),
        })
    }

    /// A built-in template (`tulu`, `chatml`) with this EOS token.
    pub fn builtin(name: &str, eos_token: &str) -> Result<Self, DataError> {
        let source = match name {
            "tulu" => TULU,
            "chatml" => CHATML,
            _ => {
                return Err(DataError::Template {
                    origin: name.into(),
                    message: format!(
                        "no built-in chat template of this name; built in: {}, or give a model directory whose tokenizer_config.json has a chat_template",
                        BUILTIN_TEMPLATES.join(", ")
                    ),
                })
            }
        };
        Self::from_jinja(source, name, "", eos_token)
    }

    /// The template a recipe's `data.chat_template` names for a model whose tokenizer is
    /// `tok`: empty for the model's own (the `chat_template` of its `tokenizer_config.json`,
    /// ChatML when it has none), `tulu` or `chatml`, or another model directory (or its
    /// `tokenizer_config.json`) whose template is used. The built-in templates end assistant
    /// turns with `tok`'s EOS text.
    pub fn resolve(spec: &str, tok: &Tokenizer) -> Result<Self, DataError> {
        let eos_token = tok.token(tok.eos_id).unwrap_or_default();
        let eos_token = eos_token.as_str();
        match spec {
            "" => match tok.chat_template() {
                Some(source) => Self::from_jinja(
                    &source,
                    "the model's tokenizer_config.json",
                    &tok.special_token("bos_token").unwrap_or_default(),
                    &tok.special_token("eos_token")
                        .unwrap_or_else(|| eos_token.to_string()),
                ),
                None => Self::builtin("chatml", eos_token),
            },
            name if BUILTIN_TEMPLATES.contains(&name) => Self::builtin(name, eos_token),
            path => {
                let path = Path::new(path);
                let file = if path.is_dir() {
                    path.join("tokenizer_config.json")
                } else {
                    path.to_path_buf()
                };
                if !file.is_file() {
                    return Err(DataError::Template {
                        origin: spec.into(),
                        message: format!(
                            "neither a built-in template ({}) nor a model directory or tokenizer_config.json",
                            BUILTIN_TEMPLATES.join(", ")
                        ),
                    });
                }
                Self::from_tokenizer_config(&file)
            }
        }
    }

    /// The `chat_template` of a model's `tokenizer_config.json` (a string, or transformers'
    /// list of named templates, of which `default` is taken), with its `bos_token` and
    /// `eos_token` (strings or `{"content": ...}` objects).
    pub fn from_tokenizer_config(path: &Path) -> Result<Self, DataError> {
        let origin = path.display().to_string();
        let bad = |message: String| DataError::Template {
            origin: origin.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let config: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let token = |key: &str| match &config[key] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Object(o) => o
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        };
        let source = match &config["chat_template"] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(named) => named
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .map(str::to_string)
                .ok_or_else(|| bad("`chat_template` lists no template named `default`".into()))?,
            _ => return Err(bad("no `chat_template` string".into())),
        };
        Self::from_jinja(&source, &origin, &token("bos_token"), &token("eos_token"))
    }

    /// Render `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// next turn begins.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, DataError> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| template_error(&self.origin, &e))?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| template_error(&self.origin, &e))
    }

    /// Render `messages` for SFT: the text and the byte range of each assistant turn (what the
    /// loss is taken on), found as open-instruct does — the text before a turn is the render
    /// of the turns before it with the generation prompt, the text through it the render of the
    /// turns through it. A template for which those are not prefixes of the whole is an error.
    pub fn render_for_training(&self, messages: &[Message]) -> Result<RenderedChat, DataError> {
        let text = self.render(messages, false)?;
        let mut assistant = Vec::new();
        for (i, m) in messages.iter().enumerate().filter(|(_, m)| m.role == "assistant") {
            let before = self.render(&messages[..i], true)?;
            let through = self.render(&messages[..=i], false)?;
            if !through.starts_with(&before) || !text.starts_with(&through) {
                return Err(DataError::Template {
                    origin: self.origin.clone(),
                    message: format!(
                        "turn {} ({}) does not render as a prefix of the whole conversation, so its tokens cannot be told apart",
                        i + 1,
                        m.role
                    ),
                });
            }
            assistant.push(before.len()..through.len());
        }
        Ok(RenderedChat { text, assistant })
    }

    /// The EOS token the template appends to assistant turns (when it does).
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// The Jinja source, as `tokenizer_config.json` stores it.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Where the template came from (a built-in name or a file).
    pub fn origin(&self) -> &str {
        &self.origin
    }
}
