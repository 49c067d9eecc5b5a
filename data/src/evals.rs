//! The standard evaluation sets, embedded so evaluation works offline — GSM8K test (1,319),
//! MATH-500 and IFEval's 541 prompts (sources and licences in `data/eval/README.md`) — and the
//! prompts each [`Preset`] asks them with. A task is one of those names, `builtin:word-problems`
//! (the held-out split of the generated one-step word problems, asked like GSM8K: the held-out
//! set of a recipe that trains on them, given the recipe's seed), `builtin:if-word-problems`
//! (the same held-out problems, each with an instruction-following constraint, scored by the
//! `ifeval` verifier on the constraint alone), or a JSON-lines file of RLVR rows (`messages` or
//! `prompt`, `ground_truth`, `dataset`).
//!
//! The prompts, as one user turn rendered with the model's chat template:
//!
//! | task | `chat` (zero-shot) | `tulu3` |
//! | --- | --- | --- |
//! | `gsm8k` | the question, then `Let's think step by step and output the final answer after "####".` | the eight chain-of-thought exemplars ([`crate::GSM8K_FEW_SHOT`]), then `Question: ` and the question |
//! | `math500` | the problem, then `Let's think step by step and output the final answer within \boxed{}.` | the four Minerva exemplars ([`crate::MATH_FEW_SHOT`]), then `Question: ` and the problem |
//! | `ifeval` | the prompt as given | the same |
//!
//! The zero-shot instructions are verl's (`examples/data_preprocess/gsm8k.py`, `math_dataset.py`);
//! the few-shot prompts are the Tülu 3 RLVR rows' own (open-instruct's
//! `create_ground_truth_data.py`), which is how Tülu 3 asked GSM8K (8-shot CoT) and MATH (4-shot
//! Minerva). IFEval's headline for Tülu 3 is prompt-level loose accuracy.

use serde_json::Value;

use crate::arith::Split;
use crate::builtin::Builtin;
use crate::files::{At, RowFile};
use crate::{gsm8k_question, math_question, DataError, Message, PromptFormat};

/// GSM8K's test split, as released.
const GSM8K_TEST: &str = include_str!("../eval/gsm8k-test.jsonl");
/// MATH-500, as released in PRM800K.
const MATH500: &str = include_str!("../eval/math500.jsonl");
/// IFEval's prompts, as released.
const IFEVAL: &str = include_str!("../eval/ifeval.jsonl");

/// The built-in task names.
pub const TASKS: [&str; 5] = [
    "gsm8k",
    "math500",
    "ifeval",
    "builtin:word-problems",
    "builtin:if-word-problems",
];

/// Questions in the `builtin:word-problems` and `builtin:if-word-problems` tasks (their
/// generator has no end).
pub const WORD_PROBLEMS: u64 = 1000;

/// How the evaluation asks its questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preset {
    /// Zero-shot, each question a user turn with an instruction on the answer's form.
    #[default]
    Chat,
    /// Tülu 3's settings: GSM8K 8-shot chain of thought, MATH 4-shot Minerva.
    Tulu3,
}

impl Preset {
    /// How the preset asks GSM8K and MATH questions.
    pub fn format(self) -> PromptFormat {
        match self {
            Preset::Chat => PromptFormat::ZeroShot,
            Preset::Tulu3 => PromptFormat::FewShot,
        }
    }
}

/// One question of a task: the conversation that asks it, the verifier that scores it and its
/// label in that verifier's form.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalItem {
    /// The question's id in its set (a row number, or IFEval's `key`).
    pub id: String,
    /// The turns that ask it (a user turn, or a file row's own messages).
    pub messages: Vec<Message>,
    /// The verifier (`gsm8k`, `math`, `google_ifeval`, or a file row's `dataset`).
    pub verifier: String,
    /// The label: a number, a MATH answer, or an IFEval row as JSON.
    pub ground_truth: String,
}

/// The items of task `name` (a built-in name or a JSON-lines file of RLVR rows) asked as
/// `preset` says; `seed` picks the generated task's questions.
pub fn task(name: &str, preset: Preset, seed: u64) -> Result<Vec<EvalItem>, DataError> {
    let embedded = |text: &'static str| text.lines().filter(|l| !l.trim().is_empty());
    let parse = |origin: &str, i: usize, line: &str| -> Result<Value, DataError> {
        serde_json::from_str(line).map_err(|e| DataError::Row {
            path: origin.into(),
            line: i + 1,
            field: String::new(),
            message: format!("not JSON: {e}"),
        })
    };
    let user = |text: String| vec![Message::new("user", &text)];
    match name {
        "gsm8k" => embedded(GSM8K_TEST)
            .enumerate()
            .map(|(i, line)| {
                let row = parse("gsm8k", i, line)?;
                let (question, answer) = (str_field(&row, "question"), str_field(&row, "answer"));
                let label = answer.rsplit("####").next().unwrap_or_default().trim();
                let prompt = gsm8k_question(question, preset.format());
                Ok(EvalItem {
                    id: i.to_string(),
                    messages: user(prompt),
                    verifier: "gsm8k".into(),
                    ground_truth: label.to_string(),
                })
            })
            .collect(),
        "math500" => embedded(MATH500)
            .enumerate()
            .map(|(i, line)| {
                let row = parse("math500", i, line)?;
                let problem = str_field(&row, "problem");
                let prompt = math_question(problem, preset.format());
                Ok(EvalItem {
                    id: str_field(&row, "unique_id").to_string(),
                    messages: user(prompt),
                    verifier: "math".into(),
                    ground_truth: str_field(&row, "answer").to_string(),
                })
            })
            .collect(),
        "ifeval" => embedded(IFEVAL)
            .enumerate()
            .map(|(i, line)| {
                let row = parse("ifeval", i, line)?;
                Ok(EvalItem {
                    id: row.get("key").map_or(i.to_string(), Value::to_string),
                    messages: user(str_field(&row, "prompt").to_string()),
                    verifier: "google_ifeval".into(),
                    ground_truth: line.to_string(),
                })
            })
            .collect(),
        "builtin:word-problems" => (0..WORD_PROBLEMS)
            .filter_map(|i| Some((i, Builtin::WordProblems.row(seed, i, Split::Test)?)))
            .map(|(i, row)| {
                let answer = str_field(&row, "answer");
                let label = answer.rsplit("####").next().unwrap_or_default().trim();
                Ok(EvalItem {
                    id: i.to_string(),
                    messages: user(gsm8k_question(str_field(&row, "question"), preset.format())),
                    verifier: "gsm8k".into(),
                    ground_truth: label.to_string(),
                })
            })
            .collect(),
        "builtin:if-word-problems" => (0..WORD_PROBLEMS)
            .filter_map(|i| Some((i, Builtin::IfWordProblems.row(seed, i, Split::Test)?)))
            .map(|(i, row)| {
                let at = At {
                    path: name,
                    row: i as usize + 1,
                };
                rlvr_item(&row, at, i.to_string())
            })
            .collect(),
        path => file_task(path),
    }
}

/// A string field of an embedded row (the embedded files are known to have them).
fn str_field<'a>(row: &'a Value, key: &str) -> &'a str {
    row.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The items of a data file of RLVR rows (JSON lines, JSON or Parquet): each row's own
/// messages (or its `prompt` as a user turn), its `ground_truth` and its `dataset` as the
/// verifier. A row without them is an error naming the file, line and field.
fn file_task(path: &str) -> Result<Vec<EvalItem>, DataError> {
    let file = std::path::Path::new(path);
    if !file.is_file() {
        return Err(DataError::UnknownDataset {
            name: path.into(),
            known: TASKS
                .iter()
                .map(|t| t.to_string())
                .chain(["a data file of RLVR rows".into()])
                .collect(),
        });
    }
    let rows = RowFile::open(file)?;
    let all: Vec<usize> = (0..rows.len()).collect();
    rows.rows(&all)?
        .into_iter()
        .map(|(line, parsed)| {
            let at = At {
                path: rows.name(),
                row: line,
            };
            rlvr_item(&parsed?, at, line.to_string())
        })
        .collect()
}

/// One RLVR row (its `messages`, or its `prompt` as a user turn; its `ground_truth`; its
/// `dataset` as the verifier) as the item `id`; a missing field is an error naming `at`.
fn rlvr_item(row: &Value, at: At<'_>, id: String) -> Result<EvalItem, DataError> {
    let messages = match (row.get("messages"), row.get("prompt")) {
        (Some(m), _) => crate::lm_rows::messages_of(m, at, "messages")?,
        (None, Some(Value::String(p))) => vec![Message::new("user", p)],
        _ => return Err(at.bad("messages", "neither `messages` nor a `prompt` string")),
    };
    let dataset = row
        .get("dataset")
        .and_then(Value::as_str)
        .ok_or_else(|| at.bad("dataset", "missing: it names the verifier"))?;
    let ground_truth = match row.get("ground_truth") {
        Some(Value::String(s)) => s.clone(),
        Some(v) if !v.is_null() => v.to_string(),
        _ => return Err(at.bad("ground_truth", "missing")),
    };
    Ok(EvalItem {
        id,
        messages,
        verifier: dataset.to_string(),
        ground_truth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_problems_are_the_held_out_split_the_seed_picks() {
        let asked = task("builtin:word-problems", Preset::Chat, 1).unwrap();
        assert_eq!(asked.len(), WORD_PROBLEMS as usize);
        assert!(asked
            .iter()
            .all(|q| q.verifier == "gsm8k" && q.ground_truth.parse::<i64>().is_ok()));
        // The rows a recipe with `seed = 1` holds out, in its order.
        for (i, q) in asked.iter().enumerate().take(5) {
            let row = Builtin::WordProblems.row(1, i as u64, Split::Test).unwrap();
            assert!(q.messages[0].content.starts_with(str_field(&row, "question")));
        }
        assert_eq!(asked, task("builtin:word-problems", Preset::Chat, 1).unwrap());
        assert_ne!(asked, task("builtin:word-problems", Preset::Chat, 2).unwrap());
    }

    #[test]
    fn if_word_problems_are_the_held_out_problems_each_with_a_constraint_label() {
        let asked = task("builtin:if-word-problems", Preset::Chat, 1).unwrap();
        assert_eq!(asked.len(), WORD_PROBLEMS as usize);
        for (i, q) in asked.iter().enumerate().take(50) {
            let row = Builtin::WordProblems.row(1, i as u64, Split::Test).unwrap();
            assert!(q.messages[0].content.contains(str_field(&row, "question")));
            assert_eq!(q.verifier, "ifeval");
            let label: Value = serde_json::from_str(&q.ground_truth).unwrap();
            assert!(label["func_name"].is_string(), "{label}");
        }
    }
}
