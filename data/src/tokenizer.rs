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

/// A special token of `tokenizer_config.json`: a string or an AddedToken object with
/// `content`.
fn special_text(config: &serde_json::Value, key: &str) -> Option<String> {
    let v = config.get(key)?;
    v.as_str()
        .or_else(|| v.get("content")?.as_str())
        .map(str::to_string)
}

/// A tokenizer with the ids rlvr needs to know, and the files that travel with it: its
/// `tokenizer_config.json` (special tokens, chat template) and `generation_config.json`
/// (end-of-sequence ids), written beside every model rlvr saves.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// End-of-sequence id: what ends a pretraining document, the template's `eos_token`.
    pub eos_id: u32,
    /// Padding id.
    pub pad_id: u32,
    /// Beginning-of-sequence id, when the tokenizer has one.
    pub bos_id: Option<u32>,
    /// Whether a prompt starts with BOS: the tokenizer's own rule (`add_bos_token`, or its
    /// post-processor adding one, as transformers' `tokenizer(text)` does).
    pub add_bos: bool,
    /// Every id generation stops on: EOS and each `eos_token_id` of `generation_config.json`.
    pub stop_ids: Vec<u32>,
    /// `tokenizer_config.json`.
    config: serde_json::Value,
    /// `generation_config.json`.
    generation: serde_json::Value,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("eos_id", &self.eos_id)
            .field("bos_id", &self.bos_id)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

impl Tokenizer {
    /// The built-in character tokenizer of the tiny recipes: BOS `<s>` starts every sequence
    /// (its post-processor adds it, so transformers' `tokenizer(text)` does too), EOS `</s>`.
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
            "post_processor": {
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
            },
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
            add_bos: true,
            stop_ids: vec![2],
            config: json!({
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>",
                "add_bos_token": true, "clean_up_tokenization_spaces": false,
            }),
            generation: json!({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}),
        }
    }

    /// Load `tokenizer.json` from a file or model directory, with the `tokenizer_config.json`
    /// and `generation_config.json` beside it. EOS is the config's `eos_token`, else the
    /// (first) `eos_token_id` of `generation_config.json`, else `</s>`, `<|im_end|>`,
    /// `<|end_of_text|>` or `<|endoftext|>`, whichever the vocabulary has; padding is the
    /// config's `pad_token`, else `<pad>`, else EOS. BOS is the config's `bos_token`, or the
    /// token the post-processor puts first; a prompt starts with it when the config says
    /// `add_bos_token`, or, without that key, when the post-processor adds it.
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
        let config = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(json!({}));
        let generation = read_json(&dir.join("generation_config.json"))?.unwrap_or(json!({}));
        let special = |key: &str| special_text(&config, key).and_then(|t| inner.token_to_id(&t));
        let generation_eos: Vec<u32> = match generation.get("eos_token_id") {
            Some(serde_json::Value::Array(ids)) => ids.iter().filter_map(|v| v.as_u64()).collect(),
            Some(v) => v.as_u64().into_iter().collect(),
            None => Vec::new(),
        }
        .into_iter()
        .filter_map(|id| u32::try_from(id).ok())
        .collect();
        let eos_id = special("eos_token")
            .or_else(|| generation_eos.first().copied())
            .or_else(|| find(&["</s>", "<|im_end|>", "<|end_of_text|>", "<|endoftext|>"]))
            .ok_or_else(|| DataError::Tokenizer {
                path: file.display().to_string(),
                message: "no end-of-sequence token found".into(),
            })?;
        let pad_id = special("pad_token")
            .or_else(|| find(&["<pad>", "<|finetune_right_pad_id|>"]))
            .unwrap_or(eos_id);
        let processed_first = {
            let plain = inner
                .encode("a", false)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_default();
            let with = inner
                .encode("a", true)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_default();
            (with.len() > plain.len())
                .then(|| with.first().copied())
                .flatten()
        };
        let bos_id = special("bos_token").or(processed_first);
        let add_bos = match config.get("add_bos_token").and_then(|v| v.as_bool()) {
            Some(flag) => flag && bos_id.is_some(),
            None => processed_first.is_some() && processed_first == bos_id,
        };
        let mut stop_ids = vec![eos_id];
        stop_ids.extend(generation_eos.iter().filter(|&&id| id != eos_id));
        Ok(Self {
            inner,
            eos_id,
            pad_id,
            bos_id,
            add_bos,
            stop_ids,
            config,
            generation,
        })
    }

    /// Write `tokenizer.json`, `tokenizer_config.json` and `generation_config.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), DataError> {
        let path = dir.join("tokenizer.json");
        self.inner.save(&path, true).map_err(|e| DataError::Tokenizer {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let mut generation = self.generation.clone();
        if generation.get("eos_token_id").is_none() {
            generation["eos_token_id"] = match self.stop_ids.as_slice() {
                [one] => json!(one),
                many => json!(many),
            };
        }
        for (name, value) in [
            ("tokenizer_config.json", &self.config),
            ("generation_config.json", &generation),
        ] {
            let path = dir.join(name);
            let text = serde_json::to_string_pretty(value).unwrap_or_default();
            std::fs::write(&path, text).map_err(|e| DataError::Tokenizer {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }

    /// The chat template of `tokenizer_config.json` (a string, or transformers' list of named
    /// templates, of which `default` is taken), if it has one.
    pub fn chat_template(&self) -> Option<String> {
        match self.config.get("chat_template")? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(named) => named
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .map(str::to_string),
            _ => None,
        }
    }

    /// Record `source` as the chat template saved with this tokenizer (the template a stage
    /// trained with goes with its model).
    pub fn set_chat_template(&mut self, source: &str) {
        if !self.config.is_object() {
            self.config = json!({});
        }
        self.config["chat_template"] = json!(source);
    }

    /// The text of a special token of `tokenizer_config.json` (`bos_token`, `eos_token`).
    pub fn special_token(&self, key: &str) -> Option<String> {
        special_text(&self.config, key)
    }

    /// Token ids of `text` (special tokens written in the text are recognised).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
    }

    /// Token ids of a prompt or document: `text` encoded, with BOS first when the tokenizer
    /// adds one and the text does not already begin with it (a template that writes
    /// `bos_token` itself, as Llama 3's does). BOS is never doubled.
    pub fn encode_prompt(&self, text: &str) -> Vec<u32> {
        let ids = self.encode(text);
        self.with_bos(ids)
    }

    /// `ids` with BOS first when the tokenizer adds one and they do not begin with it.
    pub fn with_bos(&self, mut ids: Vec<u32>) -> Vec<u32> {
        if let (true, Some(bos)) = (self.add_bos, self.bos_id) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        ids
    }

    /// Token ids of a rendered conversation and, per token, whether it belongs to an assistant
    /// turn (its first byte inside one of `chat.assistant`): the tokens SFT takes its loss on.
    /// BOS comes first as in [`Tokenizer::encode_prompt`] (not a trained token).
    pub fn encode_chat(&self, chat: &crate::RenderedChat) -> (Vec<u32>, Vec<bool>) {
        let Ok(encoding) = self.inner.encode(chat.text.as_str(), false) else {
            return (Vec::new(), Vec::new());
        };
        let mut trained: Vec<bool> = encoding
            .get_offsets()
            .iter()
            .map(|&(start, _)| chat.assistant.iter().any(|span| span.contains(&start)))
            .collect();
        let ids = self.with_bos(encoding.get_ids().to_vec());
        if ids.len() > trained.len() {
            trained.insert(0, false);
        }
        (ids, trained)
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

    /// The id of token `text`, if it is one token of the vocabulary.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
