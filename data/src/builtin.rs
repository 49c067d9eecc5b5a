//! Data sets the project generates itself, named `builtin:NAME` in recipes.

use crate::arith::{self, Split};
use crate::constraints;
use crate::DataError;

/// A built-in data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// Arithmetic problems with worked answers as plain text (pretraining).
    Arith,
    /// The same problems as a user/assistant chat (SFT).
    ArithChat,
    /// The problems as prompts with the answer as ground truth (RLVR).
    ArithRlvr,
    /// The problems as preference pairs: the correct worked answer chosen, one with a typical
    /// mistake rejected (DPO).
    ArithPrefs,
    /// 24 rows of the Tülu 3 RLVR data (GSM8K, MATH, IF), compiled in (see [`Builtin::fixed_rows`]).
    RlvrSample,
    /// The one-step problems of [`Builtin::ArithRlvr`] in sentence case, as GSM8K rows
    /// (`question`, `answer` ending in `#### N`) for real models: they go through the stage's
    /// chat template and prompt format like GSM8K's own rows ([`Builtin::row`]).
    WordProblems,
    /// The word problems of [`Builtin::WordProblems`], each with an instruction-following
    /// constraint ([`crate::constraints`]) as a Tülu 3 IF row (`messages`, a `ground_truth`
    /// label, `dataset = "ifeval"`): only the constraint is scored, as in Tülu 3.
    IfWordProblems,
}

impl Builtin {
    /// Every built-in data set with its recipe name.
    pub const ALL: [(&'static str, Builtin); 7] = [
        ("builtin:arith", Builtin::Arith),
        ("builtin:arith-chat", Builtin::ArithChat),
        ("builtin:arith-rlvr", Builtin::ArithRlvr),
        ("builtin:arith-prefs", Builtin::ArithPrefs),
        ("builtin:rlvr-sample", Builtin::RlvrSample),
        ("builtin:word-problems", Builtin::WordProblems),
        ("builtin:if-word-problems", Builtin::IfWordProblems),
    ];

    /// The data set's recipe name (`builtin:…`).
    pub fn name(&self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, b)| b == self)
            .map_or("builtin", |(n, _)| n)
    }

    /// Look a data set up by its recipe name.
    pub fn parse(name: &str) -> Result<Self, DataError> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| *b)
            .ok_or_else(|| DataError::UnknownDataset {
                name: name.to_string(),
                known: Self::ALL.iter().map(|(n, _)| n.to_string()).collect(),
            })
    }

    /// The rows of a compiled-in data set ([`Builtin::RlvrSample`]: Tülu 3 RLVR rows), as the
    /// file rows they are; `None` for the generated data sets.
    pub fn fixed_rows(&self) -> Option<Vec<serde_json::Value>> {
        match self {
            Builtin::RlvrSample => Some(crate::rlvr_rows::rlvr_sample()),
            _ => None,
        }
    }

    /// Whether its rows are written for the built-in character tokenizer (the tiny recipes'
    /// arithmetic), so the model's vocabulary must hold that tokenizer's.
    pub fn for_char_tokenizer(&self) -> bool {
        matches!(
            self,
            Builtin::Arith | Builtin::ArithChat | Builtin::ArithRlvr | Builtin::ArithPrefs
        )
    }

    /// Data row `index` of a generated data set whose rows read like a file's
    /// ([`Builtin::WordProblems`]: GSM8K's `question` and `answer`; [`Builtin::IfWordProblems`]:
    /// a Tülu 3 IF row); `None` for the others.
    pub fn row(&self, seed: u64, index: u64, split: Split) -> Option<serde_json::Value> {
        match self {
            Builtin::WordProblems => {
                let p = arith::problem(seed, index, split);
                Some(serde_json::json!({
                    "question": sentence_case(&p.question),
                    "answer": p.solution,
                }))
            }
            Builtin::IfWordProblems => {
                let p = arith::problem(seed, index, split);
                let c = constraints::constrain(&sentence_case(&p.question), seed, index, split);
                Some(serde_json::json!({
                    "messages": [{"role": "user", "content": c.prompt}],
                    "ground_truth": c.label.to_string(),
                    "dataset": "ifeval",
                }))
            }
            _ => None,
        }
    }

    /// RL prompt `index` of a generated data set ([`Builtin::ArithRlvr`]: the question as a ChatML user turn, with
    /// its answer as the ground truth); `None` for the data sets that are trained on directly and for
    /// [`Builtin::RlvrSample`], whose rows are fixed ([`Builtin::fixed_rows`]).
    pub fn prompt(&self, seed: u64, index: u64, split: Split) -> Option<PromptRow> {
        let p = arith::problem(seed, index, split);
        match self {
            Builtin::ArithRlvr => Some(PromptRow {
                prompt: chat_prompt(&p.question),
                ground_truth: p.answer.to_string(),
                dataset: "builtin:arith-rlvr".to_string(),
            }),
            Builtin::Arith
            | Builtin::ArithChat
            | Builtin::ArithPrefs
            | Builtin::RlvrSample
            | Builtin::WordProblems
            | Builtin::IfWordProblems => None,
        }
    }

    /// Training example `index`: plain text for [`Builtin::Arith`] (no prompt, every token
    /// trained), a ChatML exchange for [`Builtin::ArithChat`] (loss on the assistant turn
    /// only); `None` for RLVR prompts, which are not trained on directly.
    pub fn example(&self, seed: u64, index: u64, split: Split) -> Option<Example> {
        let p = arith::problem(seed, index, split);
        match self {
            Builtin::Arith => Some(Example {
                prompt: String::new(),
                completion: p.text(),
            }),
            Builtin::ArithChat => Some(Example {
                prompt: chat_prompt(&p.question),
                completion: format!("{}<|im_end|>\n", p.demonstration),
            }),
            Builtin::ArithRlvr
            | Builtin::ArithPrefs
            | Builtin::RlvrSample
            | Builtin::WordProblems
            | Builtin::IfWordProblems => None,
        }
    }

    /// Preference pair `index` of [`Builtin::ArithPrefs`] (a ChatML prompt, the correct answer
    /// chosen, an answer with a typical mistake rejected); `None` for the other data sets.
    pub fn pair(&self, seed: u64, index: u64, split: Split) -> Option<Pair> {
        let p = arith::problem(seed, index, split);
        match self {
            Builtin::ArithPrefs => Some(Pair {
                prompt: chat_prompt(&p.question),
                chosen: format!("{}<|im_end|>\n", p.solution),
                rejected: format!("{}<|im_end|>\n", p.mistake),
            }),
            _ => None,
        }
    }
}

/// A lower-case problem in sentence case: each sentence and each name capitalised.
fn sentence_case(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut start = true;
    for word in text.split(' ') {
        if !out.is_empty() {
            out.push(' ');
        }
        let name = arith::NAMES.contains(&word.trim_end_matches(['.', '?']));
        let mut chars = word.chars();
        match chars.next() {
            Some(c) if start || name => {
                out.extend(c.to_uppercase());
                out.push_str(chars.as_str());
            }
            _ => out.push_str(word),
        }
        start = word.ends_with(['.', '?']);
    }
    out
}

/// A user turn in ChatML, opening the assistant's turn.
fn chat_prompt(question: &str) -> String {
    format!("<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
}

/// One RL prompt: text to complete and the label a verifier checks the answer against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptRow {
    /// The prompt, chat template applied.
    pub prompt: String,
    /// The label, as the data set stores it.
    pub ground_truth: String,
    /// The data set it came from (routes it to a verifier).
    pub dataset: String,
}

/// One preference pair: a prompt and two completions, the preferred one first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// Context shared by both completions (no loss).
    pub prompt: String,
    /// The preferred completion.
    pub chosen: String,
    /// The dispreferred completion.
    pub rejected: String,
}

impl Pair {
    /// Both sides encoded as [`Example::encode`] does: `(chosen, rejected)`.
    pub fn encode(&self, tok: &crate::Tokenizer, max_len: usize) -> (rlvr_core::Encoded, rlvr_core::Encoded) {
        let side = |completion: &str| {
            Example {
                prompt: self.prompt.clone(),
                completion: completion.to_string(),
            }
            .encode(tok, max_len)
        };
        (side(&self.chosen), side(&self.rejected))
    }
}

/// One training example: a prompt (no loss) and the completion the model learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Context the loss ignores.
    pub prompt: String,
    /// Text the loss is computed on.
    pub completion: String,
}

impl Example {
    /// Token ids (BOS when the tokenizer adds one, prompt, completion, EOS) and labels: [`rlvr_core::IGNORE`] on BOS and
    /// the prompt, the token itself elsewhere; cut to `max_len` tokens.
    pub fn encode(&self, tok: &crate::Tokenizer, max_len: usize) -> (Vec<i64>, Vec<i64>) {
        let mut ids: Vec<i64> = tok
            .encode_prompt(&self.prompt)
            .into_iter()
            .map(i64::from)
            .collect();
        let masked = ids.len();
        ids.extend(tok.encode(&self.completion).into_iter().map(i64::from));
        ids.push(i64::from(tok.eos_id));
        ids.truncate(max_len);
        let labels = ids
            .iter()
            .enumerate()
            .map(|(i, &t)| if i < masked { rlvr_core::IGNORE } else { t })
            .collect();
        (ids, labels)
    }
}
