//! RL prompts from JSON lines in the format of allenai/RLVR-GSM-MATH-IF-Mixed-Constraints:
//! `messages` (the conversation so far, `role` and `content`), `ground_truth` (a string) and
//! `dataset` (which routes the row to a verifier). Any other fields are ignored.

use std::path::Path;

use serde::Deserialize;

use crate::{ChatTemplate, DataError, Message, PromptRow};

#[derive(Deserialize)]
struct Row {
    messages: Vec<Message>,
    ground_truth: serde_json::Value,
    dataset: serde_json::Value,
}

/// A field that must be a string, or a one-element list of strings (the dataset stores some
/// labels that way).
fn text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(a) if a.len() == 1 => a[0].as_str().map(str::to_string),
        _ => None,
    }
}

/// The 24 rows of `data/assets/rlvr-sample.jsonl` (8 GSM8K, 8 MATH, 8 IF; see the README
/// beside it), compiled in: the `builtin:rlvr-sample` data set.
pub fn rlvr_sample() -> Vec<PromptRow> {
    const SAMPLE: &str = include_str!("../assets/rlvr-sample.jsonl");
    let chatml = ChatTemplate::builtin("chatml", "<|im_end|>").expect("the built-in template compiles");
    parse_rlvr_jsonl(SAMPLE, "builtin:rlvr-sample", &chatml).expect("the compiled-in sample parses")
}

/// Read every row of `path`; the conversation is rendered with `template` and the assistant's
/// turn opened. A malformed row is an error naming the file, line and field.
pub fn read_rlvr_jsonl(path: &Path, template: &ChatTemplate) -> Result<Vec<PromptRow>, DataError> {
    let body = std::fs::read_to_string(path).map_err(|e| DataError::Row {
        path: path.display().to_string(),
        line: 0,
        field: String::new(),
        message: e.to_string(),
    })?;
    parse_rlvr_jsonl(&body, &path.display().to_string(), template)
}

/// Parse JSON lines read from `path` (used in error messages).
fn parse_rlvr_jsonl(body: &str, path: &str, template: &ChatTemplate) -> Result<Vec<PromptRow>, DataError> {
    let bad = |line: usize, field: &str, message: String| DataError::Row {
        path: path.to_string(),
        line,
        field: field.to_string(),
        message,
    };
    let mut rows = Vec::new();
    for (i, raw) in body.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let row: Row = serde_json::from_str(raw).map_err(|e| {
            let field = ["messages", "ground_truth", "dataset", "role", "content"]
                .into_iter()
                .find(|f| e.to_string().contains(&format!("`{f}`")))
                .unwrap_or("");
            bad(line, field, e.to_string())
        })?;
        if row.messages.is_empty() {
            return Err(bad(line, "messages", "no messages".into()));
        }
        let ground_truth = text(&row.ground_truth).ok_or_else(|| {
            bad(
                line,
                "ground_truth",
                format!("expected a string, found {}", row.ground_truth),
            )
        })?;
        let dataset = text(&row.dataset).ok_or_else(|| {
            bad(
                line,
                "dataset",
                format!("expected a string, found {}", row.dataset),
            )
        })?;
        let prompt = template
            .render(&row.messages, true)
            .map_err(|e| bad(line, "messages", e.to_string()))?;
        rows.push(PromptRow {
            prompt,
            ground_truth,
            dataset,
        });
    }
    Ok(rows)
}
