//! Language-model examples from data rows, with open-instruct's column names: SFT rows carry
//! `messages` (a conversation; the loss is taken on the assistant turns only) and pretraining
//! rows carry `text` (the loss is taken on every token). Other columns are ignored.

use rlvr_core::{Encoded, IGNORE};
use serde_json::Value;

use crate::files::At;
use crate::{ChatTemplate, DataError, Message, Tokenizer};

/// Encode one row: token ids (BOS first when the tokenizer adds one, cut to `max_len`) and
/// labels ([`IGNORE`] where no loss is taken). Conversations render with `template`; plain
/// text gets EOS appended. A malformed row is an error naming its file, line and field.
pub fn lm_row(
    row: &Value,
    at: At,
    template: &ChatTemplate,
    tok: &Tokenizer,
    max_len: usize,
) -> Result<Encoded, DataError> {
    let (mut ids, mut labels) = (Vec::new(), Vec::new());
    if let Some(messages) = row.get("messages") {
        let messages = messages_of(messages, at, "messages")?;
        if !messages.iter().any(|m| m.role == "assistant") {
            return Err(at.bad("messages", "no assistant turn to learn from"));
        }
        let chat = template
            .render_for_training(&messages)
            .map_err(|e| at.bad("messages", e.to_string()))?;
        let (tokens, trained) = tok.encode_chat(&chat);
        for (t, keep) in tokens.into_iter().zip(trained) {
            ids.push(i64::from(t));
            labels.push(if keep { i64::from(t) } else { IGNORE });
        }
    } else if let Some(text) = row.get("text") {
        let text = text
            .as_str()
            .ok_or_else(|| at.bad("text", format!("expected a string, found {text}")))?;
        ids.extend(tok.encode_prompt(text).into_iter().map(i64::from));
        ids.push(i64::from(tok.eos_id));
        // Every token is learned (the first is never predicted).
        labels = ids.clone();
    } else {
        return Err(at.bad("messages", "neither `messages` nor `text`"));
    }
    ids.truncate(max_len);
    labels.truncate(max_len);
    Ok((ids, labels))
}

/// A `messages` column: a list of `{role, content}` objects.
pub(crate) fn messages_of(value: &Value, at: At, field: &str) -> Result<Vec<Message>, DataError> {
    let messages: Vec<Message> =
        serde_json::from_value(value.clone()).map_err(|e| at.bad(field, e.to_string()))?;
    if messages.is_empty() {
        return Err(at.bad(field, "no messages"));
    }
    Ok(messages)
}
