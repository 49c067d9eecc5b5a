//! Instruction following: the 25 constraint functions of the Tülu 3 RLVR data's IF rows, whose
//! ground truth is JSON `{"func_name": ..., <arguments>}` (unused arguments are `null`).
//!
//! Tülu 3 mode is open-instruct's `if_functions.py` at the release, applied to the text after the
//! last `<|assistant|>\n`, stripped — with its two defects: `validate_placeholders` returned a
//! tuple, which is always true, and `validate_choice` tested whether the response is inside an
//! option instead of an option inside the response; and its sentence splitter does not split
//! after a period that follows a word (so "It was late. The end." is one sentence). Default
//! mode fixes all three. Labels are checked
//! when they load: an unknown function or a missing argument is an error then, not a silent zero
//! at reward time. `validate_response_language` needs a language detector (the release used
//! Python's `langdetect`) and is refused at load time; the RLVR data never uses it (its labels
//! carry no `language` argument).

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::text::{python_lines, round_half_even, sentences, tulu3_sentences, words};
use crate::{tulu3_response, verdict, Mode, Truth, TruthError, Verdict, Verifier};

/// The IF verifier.
#[derive(Debug, Clone, Copy)]
pub struct IfEval {
    mode: Mode,
}

impl IfEval {
    /// An IF verifier following `mode`.
    pub fn new(mode: Mode) -> Self {
        Self { mode }
    }
}

/// A parsed IF label: the function and its non-null arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    func: Func,
    args: serde_json::Map<String, Value>,
}

macro_rules! funcs {
    ($($variant:ident => $name:literal [$($arg:literal),*]),* $(,)?) => {
        /// The 25 functions.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        enum Func { $($variant),* }

        impl Func {
            fn parse(name: &str) -> Option<Self> {
                match name { $($name => Some(Func::$variant),)* _ => None }
            }
            fn name(self) -> &'static str {
                match self { $(Func::$variant => $name),* }
            }
            fn required(self) -> &'static [&'static str] {
                match self { $(Func::$variant => &[$($arg),*]),* }
            }
            const NAMES: &'static [&'static str] = &[$($name),*];
        }
    };
}

funcs! {
    Keywords => "verify_keywords" ["keyword_list"],
    KeywordFrequency => "verify_keyword_frequency" ["word", "N"],
    ForbiddenWords => "validate_forbidden_words" ["forbidden_words"],
    LetterFrequency => "verify_letter_frequency" ["letter", "N"],
    ResponseLanguage => "validate_response_language" ["language"],
    ParagraphCount => "verify_paragraph_count" ["N"],
    WordConstraint => "validate_word_constraint" ["N", "quantifier"],
    SentenceConstraint => "verify_sentence_constraint" ["N", "quantifier"],
    Paragraphs => "validate_paragraphs" ["N", "first_word", "i"],
    Postscript => "verify_postscript" ["postscript_marker"],
    Placeholders => "validate_placeholders" ["N"],
    BulletPoints => "verify_bullet_points" ["N"],
    Title => "validate_title" [],
    Choice => "validate_choice" ["options"],
    HighlightedSections => "validate_highlighted_sections" ["N"],
    Sections => "validate_sections" ["N", "section_splitter"],
    JsonFormat => "validate_json_format" [],
    RepeatPrompt => "validate_repeat_prompt" ["original_prompt"],
    TwoResponses => "validate_two_responses" [],
    Uppercase => "validate_uppercase" [],
    Lowercase => "validate_lowercase" [],
    CapitalWords => "validate_frequency_capital_words" ["N", "quantifier"],
    End => "validate_end" ["end_phrase"],
    Quotation => "validate_quotation" [],
    NoCommas => "validate_no_commas" [],
}

impl Constraint {
    /// Parse a label (JSON text), checking the function and its arguments.
    pub fn parse(raw: &str) -> Result<Self, TruthError> {
        let err = |message: String| TruthError {
            truth: raw.chars().take(200).collect(),
            message,
        };
        let value: Value = serde_json::from_str(raw).map_err(|e| err(format!("not JSON: {e}")))?;
        let Value::Object(mut map) = value else {
            return Err(err("not a JSON object".into()));
        };
        let name = map
            .remove("func_name")
            .and_then(|v| v.as_str().map(str::to_string));
        let name = name.ok_or_else(|| err("no `func_name`".into()))?;
        let func = Func::parse(&name).ok_or_else(|| {
            err(format!(
                "unknown func_name `{name}`; known: {}",
                Func::NAMES.join(", ")
            ))
        })?;
        map.retain(|_, v| !v.is_null());
        if let Some(missing) = func.required().iter().find(|a| !map.contains_key(**a)) {
            return Err(err(format!("{name} needs `{missing}`")));
        }
        let c = Constraint { func, args: map };
        for key in func.required() {
            let ok = match *key {
                "N" | "i" => c.int(key).is_some(),
                "keyword_list" | "forbidden_words" => c.strings(key).is_some(),
                "options" => c.args[*key].is_array() || c.args[*key].is_string(),
                _ => c.str(key).is_some(),
            };
            if !ok {
                return Err(err(format!(
                    "{name}: `{key}` has the wrong type: {}",
                    c.args[*key]
                )));
            }
        }
        if func == Func::LetterFrequency && c.str("letter").map(|l| l.chars().count()) != Some(1) {
            return Err(err(
                "verify_letter_frequency: `letter` must be one character".into()
            ));
        }
        if func == Func::Sections && c.str("section_splitter") == Some("") {
            return Err(err("validate_sections: empty `section_splitter`".into()));
        }
        if func == Func::ResponseLanguage {
            return Err(err(
                "validate_response_language needs a language detector, which rlvr does not ship".into(),
            ));
        }
        Ok(c)
    }

    fn int(&self, key: &str) -> Option<i64> {
        let v = self.args.get(key)?;
        v.as_i64()
            .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
    }

    fn str(&self, key: &str) -> Option<&str> {
        self.args.get(key)?.as_str()
    }

    fn strings(&self, key: &str) -> Option<Vec<String>> {
        self.args
            .get(key)?
            .as_array()?
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect()
    }
}

static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\[(.*?)\]").expect("valid regex"));
static TITLE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"<<(.*?)>>").expect("valid regex"));
static HIGHLIGHT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\*(.*?)\*").expect("valid regex"));
fn quantified(count: i64, n: i64, quantifier: &str, around: i64) -> bool {
    match quantifier {
        "at least" => count >= n,
        "at most" => count <= n,
        "around" => (count - n).abs() <= around,
        _ => false,
    }
}

impl IfEval {
    /// Whether `text` satisfies `c`, with what was counted.
    fn check(&self, text: &str, c: &Constraint) -> (bool, String) {
        let n = c.int("N").unwrap_or(0);
        let s = |k: &str| c.str(k).unwrap_or_default();
        let lower = || text.to_lowercase();
        match c.func {
            Func::Keywords => {
                let t = lower();
                let missing: Vec<String> = c
                    .strings("keyword_list")
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|k| !t.contains(&k.to_lowercase()))
                    .collect();
                (missing.is_empty(), format!("missing keywords {missing:?}"))
            }
            Func::KeywordFrequency => {
                let (t, w) = (lower(), s("word").to_lowercase());
                let count = words(&t).filter(|m| *m == w).count() as i64;
                (count == n, format!("`{w}` appears {count} times, want {n}"))
            }
            Func::ForbiddenWords => {
                let t = lower();
                let found: Vec<String> = c
                    .strings("forbidden_words")
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|w| t.contains(&w.to_lowercase()))
                    .collect();
                (found.is_empty(), format!("forbidden words present: {found:?}"))
            }
            Func::LetterFrequency => {
                let count = text.matches(s("letter")).count() as i64;
                (
                    count == n,
                    format!("letter {:?} appears {count} times, want {n}", s("letter")),
                )
            }
            Func::ResponseLanguage => (false, "language detection is not supported".into()),
            Func::ParagraphCount => {
                let cleaned = python_lines(text)
                    .iter()
                    .map(|l| l.trim())
                    .collect::<Vec<_>>()
                    .join("\n");
                let paragraphs: Vec<&str> = cleaned.trim().split("* * *").collect();
                let empty = paragraphs.iter().any(|p| p.trim().is_empty());
                let count = paragraphs.len() as i64;
                (
                    !empty && count == n,
                    format!("{count} paragraphs (empty ones: {empty}), want {n}"),
                )
            }
            Func::WordConstraint => {
                let count = text.split_whitespace().count() as i64;
                let tolerance = round_half_even(n as f64 * 0.1).max(1);
                (
                    quantified(count, n, s("quantifier"), tolerance),
                    format!("{count} words, want {} {n}", s("quantifier")),
                )
            }
            Func::SentenceConstraint => {
                let count = match self.mode {
                    Mode::Tulu3 => tulu3_sentences(text),
                    Mode::Default => sentences(text),
                };
                (
                    quantified(count, n, s("quantifier"), 1),
                    format!("{count} sentences, want {} {n}", s("quantifier")),
                )
            }
            Func::Paragraphs => {
                let paragraphs: Vec<&str> = text.split("\n\n").collect();
                let i = c.int("i").unwrap_or(0);
                let idx = if i >= 1 {
                    Some(i as usize - 1)
                } else {
                    paragraphs.len().checked_sub((1 - i) as usize)
                };
                let first_ok = idx
                    .and_then(|k| paragraphs.get(k))
                    .is_some_and(|p| p.trim().starts_with(s("first_word")));
                let ok = paragraphs.len() as i64 == n && first_ok;
                (
                    ok,
                    format!(
                        "{} paragraphs, want {n}; paragraph {i} starts with {:?}: {first_ok}",
                        paragraphs.len(),
                        s("first_word")
                    ),
                )
            }
            Func::Postscript => {
                let marker = s("postscript_marker");
                let ok = text
                    .find(marker)
                    .is_some_and(|at| text[at..].trim().chars().count() > marker.chars().count());
                (ok, format!("postscript {marker:?} with text after it: {ok}"))
            }
            Func::Placeholders => {
                let count = PLACEHOLDER.find_iter(text).count() as i64;
                match self.mode {
                    Mode::Tulu3 => (
                        true,
                        format!("tulu3: always passes ({count} placeholders, want {n})"),
                    ),
                    Mode::Default => (count >= n, format!("{count} placeholders, want at least {n}")),
                }
            }
            Func::BulletPoints => {
                let count = text
                    .split('\n')
                    .filter(|l| l.trim().starts_with(['*', '-']))
                    .count() as i64;
                (count == n, format!("{count} bullet points, want {n}"))
            }
            Func::Title => (TITLE.is_match(text), "a <<title>>".into()),
            Func::Choice => {
                let options: Vec<String> = match &c.args["options"] {
                    Value::Array(a) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
                    // Python iterates a string option list character by character.
                    Value::String(s) => s.chars().map(String::from).collect(),
                    _ => Vec::new(),
                };
                let ok = match self.mode {
                    Mode::Tulu3 => options.iter().any(|o| o.contains(text)),
                    Mode::Default => options.iter().any(|o| !o.is_empty() && text.contains(o.as_str())),
                };
                (ok, format!("one of {} options: {ok}", options.len()))
            }
            Func::HighlightedSections => {
                let count = HIGHLIGHT.find_iter(text).count() as i64;
                (
                    count >= n,
                    format!("{count} highlighted sections, want at least {n}"),
                )
            }
            Func::Sections => {
                let mut sections: Vec<&str> = text.split(s("section_splitter")).collect();
                if sections.first() == Some(&"") {
                    sections.remove(0);
                }
                (
                    sections.len() as i64 == n,
                    format!("{} sections, want {n}", sections.len()),
                )
            }
            Func::JsonFormat => {
                let ok = serde_json::from_str::<Value>(text).is_ok();
                (ok, format!("valid JSON: {ok}"))
            }
            Func::RepeatPrompt => (
                text.starts_with(s("original_prompt")),
                "starts with the prompt".into(),
            ),
            Func::TwoResponses => {
                let ok = text.matches("******").count() == 1
                    && text
                        .split_once("******")
                        .is_some_and(|(a, b)| a.trim() != b.trim());
                (ok, "two different responses split by ******".into())
            }
            Func::Uppercase => (text == text.to_uppercase(), "all upper case".into()),
            Func::Lowercase => (text == text.to_lowercase(), "all lower case".into()),
            Func::CapitalWords => {
                // `\b[A-Z]+\b`: words made only of ASCII capitals.
                let count = words(text)
                    .filter(|w| w.bytes().all(|b| b.is_ascii_uppercase()))
                    .count() as i64;
                (
                    quantified(count, n, s("quantifier"), 0),
                    format!("{count} capital words, want {} {n}", s("quantifier")),
                )
            }
            Func::End => (
                text.ends_with(s("end_phrase")),
                format!("ends with {:?}", s("end_phrase")),
            ),
            Func::Quotation => (
                text.starts_with('"') && text.ends_with('"'),
                "wrapped in double quotes".into(),
            ),
            Func::NoCommas => (!text.contains(','), "no commas".into()),
        }
    }
}

impl Verifier for IfEval {
    fn name(&self) -> &str {
        "ifeval"
    }

    fn parse_truth(&self, raw: &str) -> Result<Truth, TruthError> {
        Constraint::parse(raw).map(|c| Truth::Constraint(Box::new(c)))
    }

    fn verify(&self, response: &str, truth: &Truth) -> Verdict {
        let Truth::Constraint(c) = truth else {
            return verdict(false, format!("ifeval cannot use ground truth {truth:?}"));
        };
        let text = match self.mode {
            Mode::Tulu3 => tulu3_response(response).trim(),
            Mode::Default => response.trim(),
        };
        let (ok, why) = self.check(text, c);
        verdict(ok, format!("{}: {why}", c.func.name()))
    }
}
