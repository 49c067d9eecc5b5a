//! RL prompts from data rows. Three layouts are read, told apart by their columns:
//!
//! - the Tülu 3 RLVR format (allenai/RLVR-GSM-MATH-IF-Mixed-Constraints): `messages` (the
//!   conversation so far), `ground_truth` and `dataset` (which routes the row to a verifier);
//! - GSM8K as OpenAI released it (`question`, `answer` ending in `#### N`): the ground truth is
//!   the text after the last `####`, the data set `gsm8k`;
//! - MATH (`problem`, and `answer` or a `solution` with a final `\boxed{}`): the boxed answer,
//!   the data set `MATH`.
//!
//! GSM8K and MATH questions are asked as [`PromptFormat`] says: few-shot — the eight-shot
//! chain-of-thought prefix (four-shot Minerva for MATH) and `Question: …`, the rows
//! open-instruct's `create_ground_truth_data.py` made for Tülu 3 — or zero-shot, the question
//! and an instruction on the answer's form, as `rlvr eval`'s `chat` preset asks
//! ([`gsm8k_question`], [`math_question`]). Other columns are ignored.

use serde_json::Value;

use crate::files::At;
use crate::lm_rows::messages_of;
use crate::{ChatTemplate, DataError, Message, PromptRow};

/// The eight GSM8K exemplars that open a GSM8K prompt (see `assets/README.md`).
pub const GSM8K_FEW_SHOT: &str = include_str!("../assets/gsm8k-8shot.txt");
/// The four MATH exemplars that open a MATH prompt (see `assets/README.md`).
pub const MATH_FEW_SHOT: &str = include_str!("../assets/math-4shot.txt");

/// The 24 rows of `data/assets/rlvr-sample.jsonl` (8 GSM8K, 8 MATH, 8 IF; see the README
/// beside it), compiled in: the `builtin:rlvr-sample` data set.
pub(crate) fn rlvr_sample() -> Vec<Value> {
    const SAMPLE: &str = include_str!("../assets/rlvr-sample.jsonl");
    SAMPLE
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("the compiled-in sample is JSON"))
        .collect()
}

/// How GSM8K and MATH questions become a user turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PromptFormat {
    /// The few-shot exemplars, then `Question: ` and the question (Tülu 3's RLVR rows).
    #[default]
    FewShot,
    /// The question, then an instruction on the answer's form (verl's zero-shot prompts).
    ZeroShot,
}

/// The user turn asking GSM8K question `question`.
pub fn gsm8k_question(question: &str, format: PromptFormat) -> String {
    match format {
        PromptFormat::FewShot => format!("{GSM8K_FEW_SHOT}Question: {question}"),
        PromptFormat::ZeroShot => {
            format!("{question}\nLet's think step by step and output the final answer after \"####\".")
        }
    }
}

/// The user turn asking MATH problem `problem`.
pub fn math_question(problem: &str, format: PromptFormat) -> String {
    match format {
        PromptFormat::FewShot => format!("{MATH_FEW_SHOT}Question: {problem}"),
        PromptFormat::ZeroShot => {
            format!("{problem}\nLet's think step by step and output the final answer within \\boxed{{}}.")
        }
    }
}

/// A field that must be a string, or a one-element list of strings (the dataset stores some
/// labels that way).
fn text(row: &Value, field: &str, at: At) -> Result<String, DataError> {
    let v = row.get(field).ok_or_else(|| at.bad(field, "missing"))?;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) if a.len() == 1 => a[0].as_str().map(str::to_string),
        _ => None,
    }
    .ok_or_else(|| at.bad(field, format!("expected a string, found {v}")))
}

/// The content of the last `\boxed{…}` (or `\fbox{…}`) of `s`, braces balanced.
fn last_boxed(s: &str) -> Option<&str> {
    let start = ["\\boxed{", "\\fbox{"]
        .iter()
        .filter_map(|m| s.rfind(m).map(|i| i + m.len()))
        .max()?;
    let mut depth = 1;
    for (i, c) in s[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&s[start..start + i]);
                }
            }
            _ => {}
        }
    }
    None
}

/// One RL prompt from a row in any of the three layouts, GSM8K and MATH questions asked as
/// `format` says; the conversation is rendered with `template` and the assistant's turn
/// opened. A malformed row is an error naming its file, line and field.
pub fn rlvr_row(
    row: &Value,
    at: At,
    template: &ChatTemplate,
    format: PromptFormat,
) -> Result<PromptRow, DataError> {
    let (messages, ground_truth, dataset) = if let Some(messages) = row.get("messages") {
        (
            messages_of(messages, at, "messages")?,
            text(row, "ground_truth", at)?,
            text(row, "dataset", at)?,
        )
    } else if row.get("question").is_some() {
        let question = text(row, "question", at)?;
        let answer = text(row, "answer", at)?;
        let Some((_, label)) = answer.rsplit_once("####") else {
            return Err(at.bad("answer", "a GSM8K answer ends with `#### N`; none found"));
        };
        let content = gsm8k_question(&question, format);
        (
            vec![Message::new("user", &content)],
            label.trim().to_string(),
            "gsm8k".to_string(),
        )
    } else if row.get("problem").is_some() {
        let problem = text(row, "problem", at)?;
        let label = match row.get("answer") {
            Some(_) => text(row, "answer", at)?,
            None => {
                let solution = text(row, "solution", at)?;
                last_boxed(&solution)
                    .ok_or_else(|| at.bad("solution", "no \\boxed{} answer in the solution"))?
                    .to_string()
            }
        };
        let content = math_question(&problem, format);
        (vec![Message::new("user", &content)], label, "MATH".to_string())
    } else {
        return Err(at.bad(
            "messages",
            "neither `messages` (with `ground_truth`, `dataset`), `question` and `answer` (GSM8K), nor `problem` (MATH)",
        ));
    };
    let prompt = template
        .render(&messages, true)
        .map_err(|e| at.bad("messages", e.to_string()))?;
    Ok(PromptRow {
        prompt,
        ground_truth,
        dataset,
    })
}
