//! Language-model examples from JSON lines, with open-instruct's column names: SFT rows carry
//! `messages` (a conversation; the loss is taken on the assistant turns only) and pretraining
//! rows carry `text` (the loss is taken on every token). Other fields are ignored.

use std::path::Path;

use rlvr_core::{Encoded, IGNORE};

use crate::{ChatTemplate, DataError, Message, Tokenizer};

/// Read and encode every row of `path`: token ids (BOS first when the tokenizer has one, cut
/// to `max_len`) and labels ([`IGNORE`] where no loss is taken). Conversations render with
/// `template`; plain text gets EOS appended. A malformed row is an error naming the file, line
/// and field.
pub fn read_lm_jsonl(
    path: &Path,
    template: &ChatTemplate,
    tok: &Tokenizer,
    max_len: usize,
) -> Result<Vec<Encoded>, DataError> {
    let name = path.display().to_string();
    let bad = |line: usize, field: &str, message: String| DataError::Row {
        path: name.clone(),
        line,
        field: field.into(),
        message,
    };
    let body = std::fs::read_to_string(path).map_err(|e| bad(0, "", e.to_string()))?;
    let mut rows = Vec::new();
    for (i, raw) in body.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let row: serde_json::Value = serde_json::from_str(raw).map_err(|e| bad(line, "", e.to_string()))?;
        let mut ids: Vec<i64> = tok.bos_id.into_iter().map(i64::from).collect();
        let mut labels: Vec<i64> = ids.iter().map(|_| IGNORE).collect();
        if let Some(messages) = row.get("messages") {
            let messages: Vec<Message> =
                serde_json::from_value(messages.clone()).map_err(|e| bad(line, "messages", e.to_string()))?;
            if !messages.iter().any(|m| m.role == "assistant") {
                return Err(bad(line, "messages", "no assistant turn to learn from".into()));
            }
            let chat = template
                .render_for_training(&messages)
                .map_err(|e| bad(line, "messages", e.to_string()))?;
            let (tokens, trained) = tok.encode_chat(&chat);
            for (t, keep) in tokens.into_iter().zip(trained) {
                ids.push(i64::from(t));
                labels.push(if keep { i64::from(t) } else { IGNORE });
            }
        } else if let Some(text) = row.get("text") {
            let text = text
                .as_str()
                .ok_or_else(|| bad(line, "text", format!("expected a string, found {text}")))?;
            ids.extend(tok.encode(text).into_iter().map(i64::from));
            ids.push(i64::from(tok.eos_id));
            // Every token is learned (the first is never predicted).
            labels = ids.clone();
        } else {
            return Err(bad(line, "messages", "neither `messages` nor `text`".into()));
        }
        ids.truncate(max_len);
        labels.truncate(max_len);
        rows.push((ids, labels));
    }
    if rows.is_empty() {
        return Err(bad(0, "", "no rows".into()));
    }
    Ok(rows)
}
