//! Preference pairs from data rows with open-instruct's columns: `chosen` and `rejected`, each a
//! whole conversation (message list) that ends with the assistant's answer; the turns before
//! it are the prompt and must be the same on both sides. Other columns (a `prompt` string, the
//! scores) are ignored.
//!
//! Each side is rendered with the chat template and tokenized whole; the tokens of the prompt
//! (rendered with the assistant's turn opened) are masked, as open-instruct's DPO
//! tokenization does, and the sequence is cut at `max_len` tokens. A pair whose prompt leaves
//! one side no answer token within `max_len` is filtered out (`Ok(None)`), as open-instruct
//! filters it.

use rlvr_core::{Encoded, IGNORE};
use serde_json::Value;

use crate::files::At;
use crate::lm_rows::messages_of;
use crate::{ChatTemplate, DataError, Message, Tokenizer};

/// One side of a pair, encoded: token ids and labels ([`IGNORE`] on BOS and the prompt).
fn side(
    messages: &[Message],
    prompt_text: &str,
    at: At,
    field: &str,
    template: &ChatTemplate,
    tok: &Tokenizer,
    max_len: usize,
) -> Result<Option<Encoded>, DataError> {
    let full = template
        .render(messages, false)
        .map_err(|e| at.bad(field, e.to_string()))?;
    if !full.starts_with(prompt_text) {
        return Err(at.bad(
            field,
            "the chat template renders the conversation so that the prompt is not its prefix",
        ));
    }
    let masked = tok.encode_prompt(prompt_text).len();
    let mut ids: Vec<i64> = tok.encode_prompt(&full).into_iter().map(i64::from).collect();
    ids.truncate(max_len);
    if ids.len() <= masked {
        return Ok(None);
    }
    let labels = ids
        .iter()
        .enumerate()
        .map(|(i, &t)| if i < masked { IGNORE } else { t })
        .collect();
    Ok(Some((ids, labels)))
}

/// One pair `(chosen, rejected)` from a row, or `None` when its prompt fills `max_len`.
pub fn preference_row(
    row: &Value,
    at: At,
    template: &ChatTemplate,
    tok: &Tokenizer,
    max_len: usize,
) -> Result<Option<(Encoded, Encoded)>, DataError> {
    let get = |field: &str| -> Result<Vec<Message>, DataError> {
        let value = row.get(field).ok_or_else(|| at.bad(field, "missing"))?;
        let messages = messages_of(value, at, field)?;
        if messages.last().is_none_or(|m| m.role != "assistant") {
            return Err(at.bad(field, "the conversation must end with the assistant's answer"));
        }
        Ok(messages)
    };
    let (chosen, rejected) = (get("chosen")?, get("rejected")?);
    let prompt = &chosen[..chosen.len() - 1];
    if prompt != &rejected[..rejected.len() - 1] {
        return Err(at.bad(
            "rejected",
            "the turns before the answer differ from `chosen`'s (a pair shares its prompt)",
        ));
    }
    let prompt_text = template
        .render(prompt, true)
        .map_err(|e| at.bad("chosen", e.to_string()))?;
    let chosen = side(&chosen, &prompt_text, at, "chosen", template, tok, max_len)?;
    let rejected = side(&rejected, &prompt_text, at, "rejected", template, tok, max_len)?;
    Ok(chosen.zip(rejected))
}
