//! Tokenizers through the Hugging Face `tokenizers` crate, and the character-level tokenizer
//! the tiny recipes use. It is an ordinary `tokenizer.json` (a BPE model with no merges), so
//! the checkpoints the tiny recipes write load in `transformers` like any other.

use std::path::Path;

use serde_json::json;

use crate::DataError;

/// Special tokens of the built-in character tokenizer, in id order from 0.
pub const SPECIALS: [&str; 6] = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"];

/// Characters of the built-in tokenizer, after the specials.
pub const CHARS: &str = "abcdefghijklmnopqrstuvwxyz0123456789 \n.?:+-*=#,";

/// A JSON file's contents, `None` when there is no such file.
fn read_json(path: &Path) -> Result<Option<serde_json::Value>, DataError> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| DataError::Tokenizer {
            path: path.display().to_string(),
            message: format!("not JSON: {e}"),
        })
}

/// A tokenizer with the ids rlvr needs to know.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// End-of-sequence id.
    pub eos_id: u32,
    /// Padding id.
    pub pad_id: u32,
    /// Beginning-of-sequence id, when the tokenizer has one.
    pub bos_id: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("eos_id", &self.eos_id)
            .finish()
    }
}

impl Tokenizer {
    /// The built-in character tokenizer of the tiny recipes.
    pub fn builtin_chars() -> Self {
        let vocab: serde_json::Map<String, serde_json::Value> = SPECIALS
            .iter()
            .map(|t| t.to_string())
            .chain(CHARS.chars().map(String::from))
            .enumerate()
            .map(|(id, t)| (t, json!(id)))
            .collect();
        let added: Vec<_> = SPECIALS
            .iter()
            .enumerate()
            .map(|(i, t)| {
                json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let spec = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": null,
            "post_processor": null,
            "decoder": {"type": "Fuse"},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": "<unk>",
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": []
            }
        });
        let inner: tokenizers::Tokenizer = spec
            .to_string()
            .parse()
            .expect("the built-in tokenizer spec is valid");
        Self {
            inner,
            eos_id: 2,
            pad_id: 0,
            bos_id: Some(1),
        }
    }

    /// Load `tokenizer.json` from a file or model directory. EOS is the `eos_token` of the
    /// `tokenizer_config.json` beside it, else the (first) `eos_token_id` of its
    /// `generation_config.json`, else `</s>`, `<|im_end|>`, `<|end_of_text|>` or
    /// `<|endoftext|>`, whichever the vocabulary has; padding is the config's `pad_token`, else
    /// `<pad>`, else EOS.
    pub fn from_file(path: &Path) -> Result<Self, DataError> {
        let file = if path.is_dir() {
            path.join("tokenizer.json")
        } else {
            path.to_path_buf()
        };
        let inner = tokenizers::Tokenizer::from_file(&file).map_err(|e| DataError::Tokenizer {
            path: file.display().to_string(),
            message: e.to_string(),
        })?;
        let find = |names: &[&str]| names.iter().find_map(|n| inner.token_to_id(n));
        let dir = file.parent().unwrap_or(Path::new("."));
        let config = read_json(&dir.join("tokenizer_config.json"))?;
        let generation = read_json(&dir.join("generation_config.json"))?;
        // A special token is a string or an AddedToken object with `content`.
        let special = |key: &str| {
            let v = config.as_ref()?.get(key)?;
            let text = v.as_str().or_else(|| v.get("content")?.as_str())?;
            inner.token_to_id(text)
        };
        let generation_eos = || {
            let v = generation.as_ref()?.get("eos_token_id")?;
            let id = v.as_u64().or_else(|| v.as_array()?.first()?.as_u64())?;
            u32::try_from(id).ok()
        };
        let eos_id = special("eos_token")
            .or_else(generation_eos)
            .or_else(|| find(&["</s>", "<|im_end|>", "<|end_of_text|>", "<|endoftext|>"]))
            .ok_or_else(|| DataError::Tokenizer {
                path: file.display().to_string(),
                message: "no end-of-sequence token found".into(),
            })?;
        let pad_id = special("pad_token")
            .or_else(|| find(&["<pad>", "<|finetune_right_pad_id|>"]))
            .unwrap_or(eos_id);
        let bos_id = find(&["<s>", "<|begin_of_text|>"]);
        Ok(Self {
            inner,
            eos_id,
            pad_id,
            bos_id,
        })
    }

    /// Write `tokenizer.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), DataError> {
        let path = dir.join("tokenizer.json");
        self.inner.save(&path, true).map_err(|e| DataError::Tokenizer {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Token ids of `text` (special tokens written in the text are recognised).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
    }

    /// Token ids of a rendered conversation and, per token, whether it belongs to an assistant
    /// turn (its first byte inside one of `chat.assistant`): the tokens SFT takes its loss on.
    pub fn encode_chat(&self, chat: &crate::RenderedChat) -> (Vec<u32>, Vec<bool>) {
        let Ok(encoding) = self.inner.encode(chat.text.as_str(), false) else {
            return (Vec::new(), Vec::new());
        };
        let trained = encoding
            .get_offsets()
            .iter()
            .map(|&(start, _)| chat.assistant.iter().any(|span| span.contains(&start)))
            .collect();
        (encoding.get_ids().to_vec(), trained)
    }

    /// Text of `ids`, special tokens dropped.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, true).unwrap_or_default()
    }

    /// Text of `ids` with special tokens written out, as a model sees it.
    pub fn decode_with_specials(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, false).unwrap_or_default()
    }

    /// The text of token `id` (special tokens included), if it exists.
    pub fn token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
