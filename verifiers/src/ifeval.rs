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

static WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b\w+\b").expect("valid regex"));
static CAPITAL_WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b[A-Z]+\b").expect("valid regex"));
static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\[(.*?)\]").expect("valid regex"));
static TITLE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"<<(.*?)>>").expect("valid regex"));
static HIGHLIGHT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\*(.*?)\*").expect("valid regex"));
fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Sentences as the release counted them: its split regex
/// `(?<![\w.][\w.])(?<![A-Z][a-z]\.)(?<=\.|\?)\s` breaks at one whitespace character after `.`
/// or `?` — but not when the two characters before it are word characters or dots, which is
/// nearly every sentence ending in a period ("late. The" does not split). Written as a scan:
/// the lookbehinds made the regex quadratic on megabyte inputs.
fn tulu3_sentences(text: &str) -> i64 {
    let c: Vec<char> = text.chars().collect();
    let splits = (1..c.len())
        .filter(|&p| {
            let before = |k: usize| p.checked_sub(k).map(|i| c[i]);
            c[p].is_whitespace()
                && matches!(before(1), Some('.' | '?'))
                && !(before(2).is_some_and(|x| is_word(x) || x == '.')
                    && before(1).is_some_and(|x| is_word(x) || x == '.'))
                && !(before(3).is_some_and(|x| x.is_ascii_uppercase())
                    && before(2).is_some_and(|x| x.is_ascii_lowercase())
                    && before(1) == Some('.'))
        })
        .count();
    splits as i64 + 1
}

/// Sentences, correctly: a break is whitespace after `.`, `?` or `!`, except after a title like
/// "Mr." or an initial like "J."; empty pieces do not count.
fn sentences(text: &str) -> i64 {
    let c: Vec<char> = text.chars().collect();
    let mut count = 0;
    let mut has_text = false;
    for p in 0..c.len() {
        let before = |k: usize| p.checked_sub(k).map(|i| c[i]);
        let boundary = c[p].is_whitespace()
            && matches!(before(1), Some('.' | '?' | '!'))
            && !(before(1) == Some('.')
                && before(2).is_some_and(|x| x.is_ascii_uppercase())
                && !before(3).is_some_and(is_word))
            && !(before(1) == Some('.')
                && before(2).is_some_and(|x| x.is_ascii_lowercase())
                && before(3).is_some_and(|x| x.is_ascii_uppercase()));
        if boundary {
            count += i64::from(has_text);
            has_text = false;
        } else if !c[p].is_whitespace() {
            has_text = true;
        }
    }
    count + i64::from(has_text)
}

/// Python's `str.splitlines()` line boundaries.
fn python_lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if matches!(
            c,
            '\n' | '\r' | '\x0b' | '\x0c' | '\x1c' | '\x1d' | '\x1e' | '\u{85}' | '\u{2028}' | '\u{2029}'
        ) {
            out.push(&text[start..i]);
            let mut end = i + c.len_utf8();
            if c == '\r' && chars.peek().map(|p| p.1) == Some('\n') {
                chars.next();
                end += 1;
            }
            start = end;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Python's `round` (half to even) for non-negative values.
fn round_half_even(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc() - 0.5).abs() < 1e-12 && r as i64 % 2 != 0 {
        r as i64 - 1
    } else {
        r as i64
    }
}

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
                let count = WORD.find_iter(&t).filter(|m| m.as_str() == w).count() as i64;
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
                let count = CAPITAL_WORD.find_iter(text).count() as i64;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn label(func: &str, args: serde_json::Value) -> String {
        let mut m = args.as_object().cloned().unwrap_or_default();
        m.insert("func_name".into(), func.into());
        m.insert("unused".into(), Value::Null);
        Value::Object(m).to_string()
    }

    fn check(mode: Mode, func: &str, args: serde_json::Value, response: &str) -> bool {
        let v = IfEval::new(mode);
        v.verify(response, &v.parse_truth(&label(func, args)).unwrap())
            .verified
    }

    #[test]
    fn each_function() {
        let d = Mode::Default;
        assert!(check(
            d,
            "verify_keywords",
            serde_json::json!({"keyword_list": ["Cat", "dog"]}),
            "a cat and a DOG"
        ));
        assert!(!check(
            d,
            "verify_keywords",
            serde_json::json!({"keyword_list": ["cat", "cow"]}),
            "a cat"
        ));
        assert!(check(
            d,
            "verify_keyword_frequency",
            serde_json::json!({"word": "the", "N": 2}),
            "The cat, the hat, theme."
        ));
        assert!(check(
            d,
            "validate_forbidden_words",
            serde_json::json!({"forbidden_words": ["bad"]}),
            "good"
        ));
        assert!(check(
            d,
            "verify_letter_frequency",
            serde_json::json!({"letter": "a", "N": 3}),
            "banana"
        ));
        assert!(check(
            d,
            "verify_paragraph_count",
            serde_json::json!({"N": 2}),
            "one\n* * *\ntwo"
        ));
        assert!(!check(
            d,
            "verify_paragraph_count",
            serde_json::json!({"N": 3}),
            "one\n* * *\n* * *\ntwo"
        ));
        assert!(check(
            d,
            "validate_word_constraint",
            serde_json::json!({"N": 10, "quantifier": "around"}),
            "a b c d e f g h i"
        ));
        let three = serde_json::json!({"N": 3, "quantifier": "at least"});
        assert!(check(
            d,
            "verify_sentence_constraint",
            three.clone(),
            "One. Mr. Two? Three!"
        ));
        assert!(
            !check(
                Mode::Tulu3,
                "verify_sentence_constraint",
                three,
                "One. Mr. Two? Three!"
            ),
            "the release counts 2"
        );
        assert!(check(
            d,
            "validate_paragraphs",
            serde_json::json!({"N": 2, "first_word": "However", "i": 2}),
            "Intro\n\nHowever, yes"
        ));
        assert!(check(
            d,
            "verify_postscript",
            serde_json::json!({"postscript_marker": "P.S."}),
            "Hi\nP.S. bye"
        ));
        assert!(!check(
            d,
            "verify_postscript",
            serde_json::json!({"postscript_marker": "P.S."}),
            "Hi P.S."
        ));
        assert!(check(
            d,
            "verify_bullet_points",
            serde_json::json!({"N": 2}),
            "* a\n- b\nc"
        ));
        assert!(check(
            d,
            "validate_title",
            serde_json::json!({}),
            "<<Title>> body"
        ));
        assert!(check(
            d,
            "validate_highlighted_sections",
            serde_json::json!({"N": 2}),
            "*a* and *b*"
        ));
        assert!(check(
            d,
            "validate_sections",
            serde_json::json!({"N": 2, "section_splitter": "SECTION"}),
            "SECTION 1 a SECTION 2 b"
        ));
        assert!(check(
            d,
            "validate_json_format",
            serde_json::json!({}),
            " {\"a\": 1} "
        ));
        assert!(check(
            d,
            "validate_repeat_prompt",
            serde_json::json!({"original_prompt": "Say hi"}),
            "Say hi. Hi!"
        ));
        assert!(check(
            d,
            "validate_two_responses",
            serde_json::json!({}),
            "one\n******\ntwo"
        ));
        assert!(!check(
            d,
            "validate_two_responses",
            serde_json::json!({}),
            "same\n******\nsame"
        ));
        assert!(check(d, "validate_uppercase", serde_json::json!({}), "HELLO 123"));
        assert!(check(d, "validate_lowercase", serde_json::json!({}), "hello 123"));
        assert!(check(
            d,
            "validate_frequency_capital_words",
            serde_json::json!({"N": 2, "quantifier": "at least"}),
            "AB cd EF"
        ));
        assert!(check(
            d,
            "validate_end",
            serde_json::json!({"end_phrase": "Any questions?"}),
            "Done. Any questions?"
        ));
        assert!(check(
            d,
            "validate_quotation",
            serde_json::json!({}),
            "\"quoted\""
        ));
        assert!(check(
            d,
            "validate_no_commas",
            serde_json::json!({}),
            "no commas here"
        ));
    }

    #[test]
    fn tulu3_defects_and_default_fixes() {
        let ph = serde_json::json!({"N": 3});
        assert!(check(
            Mode::Tulu3,
            "validate_placeholders",
            ph.clone(),
            "no placeholders"
        ));
        assert!(!check(
            Mode::Default,
            "validate_placeholders",
            ph.clone(),
            "no placeholders"
        ));
        assert!(check(Mode::Default, "validate_placeholders", ph, "[a] [b] [c]"));
        let opts = serde_json::json!({"options": ["My answer is yes.", "My answer is no."]});
        assert!(check(
            Mode::Default,
            "validate_choice",
            opts.clone(),
            "Thinking... My answer is yes."
        ));
        assert!(!check(
            Mode::Tulu3,
            "validate_choice",
            opts.clone(),
            "Thinking... My answer is yes."
        ));
        assert!(
            check(Mode::Tulu3, "validate_choice", opts, "yes"),
            "the reversed test"
        );
        // Tülu 3 scores the text after the last assistant marker, stripped.
        assert!(check(
            Mode::Tulu3,
            "validate_lowercase",
            serde_json::json!({}),
            "SYSTEM<|assistant|>\n  all lower  "
        ));
    }

    #[test]
    fn bad_labels_fail_at_load_time() {
        let v = IfEval::new(Mode::Default);
        for (raw, why) in [
            ("not json", "not JSON"),
            ("{\"N\": 2}", "func_name"),
            ("{\"func_name\": \"verify_magic\"}", "unknown func_name"),
            (
                "{\"func_name\": \"verify_bullet_points\", \"N\": null}",
                "needs `N`",
            ),
            (
                "{\"func_name\": \"verify_bullet_points\", \"N\": \"two\"}",
                "wrong type",
            ),
            (
                "{\"func_name\": \"verify_letter_frequency\", \"letter\": \"ab\", \"N\": 1}",
                "one character",
            ),
            (
                "{\"func_name\": \"validate_response_language\", \"language\": \"de\"}",
                "language detector",
            ),
        ] {
            let err = v.parse_truth(raw).unwrap_err().to_string();
            assert!(err.contains(why), "{raw}: {err}");
        }
        assert_eq!(tulu3_sentences("One. Two? Three."), 2);
        assert_eq!(tulu3_sentences("I went home. It was late. The end."), 1);
        assert_eq!(tulu3_sentences("Hello world. Bye now? Ok."), 2);
        assert_eq!(sentences("I went home. It was late. The end."), 3);
        assert_eq!(sentences("Mr. Smith met J. Doe. Fine!  "), 2);
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(3.5), 4);
        assert_eq!(python_lines("a\r\nb\rc\u{2028}d"), vec!["a", "b", "c", "d"]);
    }
}
