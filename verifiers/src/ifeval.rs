//! Instruction following: the 25 constraint functions of the Tülu 3 RLVR data's IF rows, whose
//! ground truth is JSON `{"func_name": ..., <arguments>}` (unused arguments are `null`).
//!
//! Tülu 3 mode is open-instruct's `if_functions.py` at the release, applied to the text after the
//! last `<|assistant|>\n`, stripped — with its two defects: `validate_placeholders` returned a
//! tuple, which is always true, and `validate_choice` tested whether the response is inside an
//! option instead of an option inside the response — and its sentence regex,
//! `(?<!\w\.\w.)(?<![A-Z][a-z]\.)(?<=\.|\?)\s`, which splits after `Jan.` but not after `p.m.` or
//! `Dr.`. Default mode fixes the two defects and counts sentences with [`crate::text`]'s splitter
//! (`!` ends a sentence; titles and initials do not). `validate_response_language` compares the
//! language whatlang detects, coded as `langdetect` (the release's detector) codes it (`en`,
//! `zh-cn`, ...), with the label in both modes; on the corpus it agrees with `langdetect`
//! (BENCHMARKS.md, "Verifier fidelity"). Labels are checked when they load: an unknown function
//! or a missing argument is an error then, not a silent zero at reward time.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use std::fmt::Write;

use crate::text::{
    ascii_capital_words, ascii_word_count, find_ascii_ignoring_case, is_ascii_word, is_lowercase,
    is_uppercase, lowercase, paragraph_count, paragraphs, round_half_even, sentences, tulu3_sentences,
    whitespace_words, words,
};
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

/// A parsed IF label: the function and its non-null arguments, with the arguments a check
/// reads taken out into typed fields at load time (no lookups when answers are scored).
#[derive(Debug, Clone, PartialEq)]
pub struct Constraint {
    func: Func,
    args: serde_json::Map<String, Value>,
    /// `N` (0 when the function has none).
    n: i64,
    /// `i` of `validate_paragraphs` (0 otherwise).
    i: i64,
    /// `quantifier` (empty when the function has none).
    quantifier: String,
    /// The function's string argument: `letter`, `postscript_marker`, `first_word`,
    /// `section_splitter`, `original_prompt` or `end_phrase` (empty for the others).
    text: String,
    /// `keyword_list`, `forbidden_words` or `[word]`, lower-cased.
    lowered: Vec<String>,
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
        let mut c = Constraint {
            func,
            args: map,
            n: 0,
            i: 0,
            quantifier: String::new(),
            text: String::new(),
            lowered: Vec::new(),
        };
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
        c.n = c.int("N").unwrap_or(0);
        c.i = c.int("i").unwrap_or(0);
        c.quantifier = c.str("quantifier").unwrap_or_default().to_string();
        let text_arg = match func {
            Func::LetterFrequency => "letter",
            Func::Postscript => "postscript_marker",
            Func::Paragraphs => "first_word",
            Func::Sections => "section_splitter",
            Func::RepeatPrompt => "original_prompt",
            Func::End => "end_phrase",
            Func::ResponseLanguage => "language",
            _ => "",
        };
        c.text = c.str(text_arg).unwrap_or_default().to_string();
        c.lowered = match func {
            Func::Keywords => c.strings("keyword_list").unwrap_or_default(),
            Func::ForbiddenWords => c.strings("forbidden_words").unwrap_or_default(),
            Func::KeywordFrequency => c.str("word").map(str::to_string).into_iter().collect(),
            _ => Vec::new(),
        }
        .iter()
        .map(|w| w.to_lowercase())
        .collect();
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

/// The separator of `validate_two_responses`.
static SEPARATOR: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new("******"));
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

/// Python's `needle in text.lower()` for a lower-cased `needle`: searched ignoring case
/// without a copy when both are ASCII.
fn contains_lowered(text: &str, needle: &str) -> bool {
    if text.is_ascii() && needle.is_ascii() {
        needle.is_empty() || find_ascii_ignoring_case(text.as_bytes(), needle.as_bytes(), 0).is_some()
    } else {
        lowercase(text).contains(needle)
    }
}

/// Append what was counted to the reason, when one is wanted, and pass the result through.
fn say(why: &mut Option<String>, ok: bool, what: std::fmt::Arguments) -> bool {
    if let Some(why) = why {
        let _ = why.write_fmt(what);
    }
    ok
}

impl IfEval {
    /// Whether `text` satisfies `c`; what was counted is appended to `why`, if given.
    fn check(&self, text: &str, c: &Constraint, why: &mut Option<String>) -> bool {
        let (n, quantifier, arg) = (c.n, c.quantifier.as_str(), c.text.as_str());
        match c.func {
            Func::Keywords => {
                let missing = || c.lowered.iter().filter(|k| !contains_lowered(text, k));
                let ok = missing().next().is_none();
                if ok || why.is_none() {
                    return say(why, ok, format_args!("every keyword present"));
                }
                let missing: Vec<&String> = missing().collect();
                say(why, ok, format_args!("missing keywords {missing:?}"))
            }
            Func::ForbiddenWords => {
                let found = || c.lowered.iter().filter(|k| contains_lowered(text, k));
                let ok = found().next().is_none();
                if ok || why.is_none() {
                    return say(why, ok, format_args!("no forbidden word present"));
                }
                let found: Vec<&String> = found().collect();
                say(why, ok, format_args!("forbidden words present: {found:?}"))
            }
            Func::KeywordFrequency => {
                let w = c.lowered.first().map_or("", String::as_str);
                // ASCII text and word: a vectorised search for the word, hits checked for word
                // boundaries.
                let count = if text.is_ascii() && is_ascii_word(w) {
                    ascii_word_count(text, w)
                } else {
                    words(&lowercase(text)).filter(|m| *m == w).count()
                } as i64;
                say(
                    why,
                    count == n,
                    format_args!("`{w}` appears {count} times, want {n}"),
                )
            }
            Func::LetterFrequency => {
                let letter = arg;
                let count = match letter.as_bytes() {
                    &[byte] => memchr::memchr_iter(byte, text.as_bytes()).count(),
                    _ => text.matches(letter).count(),
                } as i64;
                say(
                    why,
                    count == n,
                    format_args!("letter {:?} appears {count} times, want {n}", arg),
                )
            }
            Func::ResponseLanguage => {
                let detected = crate::language::detect_code(text);
                say(
                    why,
                    detected == Some(arg),
                    format_args!("detected {}, want {arg}", detected.unwrap_or("nothing")),
                )
            }
            Func::ParagraphCount => {
                let (count, empty) = paragraph_count(text);
                say(
                    why,
                    !empty && count == n,
                    format_args!("{count} paragraphs (empty ones: {empty}), want {n}"),
                )
            }
            Func::WordConstraint => {
                let count = whitespace_words(text);
                let tolerance = round_half_even(n as f64 * 0.1).max(1);
                say(
                    why,
                    quantified(count, n, quantifier, tolerance),
                    format_args!("{count} words, want {} {n}", quantifier),
                )
            }
            Func::SentenceConstraint => {
                let count = match self.mode {
                    Mode::Tulu3 => tulu3_sentences(text),
                    Mode::Default => sentences(text),
                };
                say(
                    why,
                    quantified(count, n, quantifier, 1),
                    format_args!("{count} sentences, want {} {n}", quantifier),
                )
            }
            Func::Paragraphs => {
                let pieces = paragraphs(text);
                let count = pieces.len();
                let i = c.i;
                let idx = if i >= 1 {
                    Some(i as usize - 1)
                } else {
                    count.checked_sub((1 - i) as usize)
                };
                let first_ok = idx
                    .and_then(|k| pieces.get(k))
                    .is_some_and(|p| p.trim().starts_with(arg));
                say(
                    why,
                    count as i64 == n && first_ok,
                    format_args!(
                        "{count} paragraphs, want {n}; paragraph {i} starts with {:?}: {first_ok}",
                        arg
                    ),
                )
            }
            Func::Postscript => {
                let marker = arg;
                let ok = memchr::memmem::find(text.as_bytes(), marker.as_bytes())
                    .is_some_and(|at| text[at..].trim().chars().count() > marker.chars().count());
                say(
                    why,
                    ok,
                    format_args!("postscript {marker:?} with text after it: {ok}"),
                )
            }
            Func::Placeholders => {
                let count = PLACEHOLDER.find_iter(text).count() as i64;
                match self.mode {
                    Mode::Tulu3 => say(
                        why,
                        true,
                        format_args!("tulu3: always passes ({count} placeholders, want {n})"),
                    ),
                    Mode::Default => say(
                        why,
                        count >= n,
                        format_args!("{count} placeholders, want at least {n}"),
                    ),
                }
            }
            Func::BulletPoints => {
                let count = text
                    .split('\n')
                    .filter(|l| l.trim().starts_with(['*', '-']))
                    .count() as i64;
                say(why, count == n, format_args!("{count} bullet points, want {n}"))
            }
            Func::Title => say(why, TITLE.is_match(text), format_args!("a <<title>>")),
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
                say(why, ok, format_args!("one of {} options: {ok}", options.len()))
            }
            Func::HighlightedSections => {
                let count = HIGHLIGHT.find_iter(text).count() as i64;
                say(
                    why,
                    count >= n,
                    format_args!("{count} highlighted sections, want at least {n}"),
                )
            }
            Func::Sections => {
                let splitter = arg;
                // The pieces of `text.split(splitter)`, less a leading empty one.
                let leading_empty = text.is_empty() || text.starts_with(splitter);
                let count = memchr::memmem::find_iter(text.as_bytes(), splitter.as_bytes()).count() as i64
                    + 1
                    - i64::from(leading_empty);
                say(why, count == n, format_args!("{count} sections, want {n}"))
            }
            Func::JsonFormat => {
                let ok = serde_json::from_str::<Value>(text).is_ok();
                say(why, ok, format_args!("valid JSON: {ok}"))
            }
            Func::RepeatPrompt => say(why, text.starts_with(arg), format_args!("starts with the prompt")),
            Func::TwoResponses => {
                let mut hits = SEPARATOR.find_iter(text.as_bytes());
                let ok = match (hits.next(), hits.next()) {
                    (Some(at), None) => text[..at].trim() != text[at + "******".len()..].trim(),
                    _ => false,
                };
                say(why, ok, format_args!("two different responses split by ******"))
            }
            Func::Uppercase => say(why, is_uppercase(text), format_args!("all upper case")),
            Func::Lowercase => say(why, is_lowercase(text), format_args!("all lower case")),
            Func::CapitalWords => {
                // `\b[A-Z]+\b`: words made only of ASCII capitals.
                let count = if text.is_ascii() {
                    ascii_capital_words(text.as_bytes())
                } else {
                    words(text)
                        .filter(|w| w.bytes().all(|b| b.is_ascii_uppercase()))
                        .count()
                } as i64;
                say(
                    why,
                    quantified(count, n, quantifier, 0),
                    format_args!("{count} capital words, want {} {n}", quantifier),
                )
            }
            Func::End => say(why, text.ends_with(arg), format_args!("ends with {:?}", arg)),
            Func::Quotation => say(
                why,
                text.starts_with('"') && text.ends_with('"'),
                format_args!("wrapped in double quotes"),
            ),
            Func::NoCommas => say(why, !text.contains(','), format_args!("no commas")),
        }
    }

    /// The verdict on `response`, with what was counted as its reason when `explain`.
    fn judge(&self, response: &str, truth: &Truth, explain: bool) -> Verdict {
        let Truth::Constraint(c) = truth else {
            return verdict(false, format!("ifeval cannot use ground truth {truth:?}"));
        };
        let text = match self.mode {
            Mode::Tulu3 => tulu3_response(response).trim(),
            Mode::Default => response.trim(),
        };
        let mut why = explain.then(|| {
            let mut why = String::with_capacity(64);
            why.push_str(c.func.name());
            why.push_str(": ");
            why
        });
        let ok = self.check(text, c, &mut why);
        verdict(ok, why.unwrap_or_default())
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
        self.judge(response, truth, true)
    }

    fn verify_score(&self, response: &str, truth: &Truth) -> Verdict {
        self.judge(response, truth, false)
    }
}
