//! The 25 IFEval instructions: each id's kwargs parsed into a typed check, and each check as the
//! reference's `instructions.py` defines `check_following` (see the parent module for where we
//! depart from it).

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::language::{Detected, Language};
use crate::punkt::count_sentences;

/// `less than` or `at least`, the reference's two relations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Relation {
    LessThan,
    AtLeast,
}

impl Relation {
    fn holds(self, count: usize, n: usize) -> bool {
        match self {
            Relation::LessThan => count < n,
            Relation::AtLeast => count >= n,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Relation::LessThan => "less than",
            Relation::AtLeast => "at least",
        }
    }
}

/// One instruction's check with its arguments.
#[derive(Debug, Clone)]
pub(super) enum Check {
    Keywords(Vec<Regex>),
    KeywordFrequency {
        pattern: Regex,
        relation: Relation,
        n: usize,
    },
    ForbiddenWords(Vec<Regex>),
    LetterFrequency {
        letter: char,
        relation: Relation,
        n: usize,
    },
    Language(Language),
    Sentences {
        relation: Relation,
        n: usize,
    },
    Paragraphs(usize),
    Words {
        relation: Relation,
        n: usize,
    },
    NthParagraph {
        paragraphs: usize,
        nth: usize,
        first_word: String,
    },
    Placeholders(usize),
    Postscript(Regex),
    Bullets(usize),
    ConstrainedResponse,
    Highlights(usize),
    Sections {
        splitter: Regex,
        n: usize,
    },
    Json,
    Title,
    TwoResponses,
    RepeatPrompt(String),
    End(String),
    CapitalWords {
        relation: Relation,
        n: usize,
    },
    EnglishCapital,
    EnglishLowercase,
    NoComma,
    Quotation,
}

/// The 25 instruction ids.
pub const INSTRUCTION_IDS: [&str; 25] = [
    "keywords:existence",
    "keywords:frequency",
    "keywords:forbidden_words",
    "keywords:letter_frequency",
    "language:response_language",
    "length_constraints:number_sentences",
    "length_constraints:number_paragraphs",
    "length_constraints:number_words",
    "length_constraints:nth_paragraph_first_word",
    "detectable_content:number_placeholders",
    "detectable_content:postscript",
    "detectable_format:number_bullet_lists",
    "detectable_format:constrained_response",
    "detectable_format:number_highlighted_sections",
    "detectable_format:multiple_sections",
    "detectable_format:json_format",
    "detectable_format:title",
    "combination:two_responses",
    "combination:repeat_prompt",
    "startend:end_checker",
    "change_case:capital_word_frequency",
    "change_case:english_capital",
    "change_case:english_lowercase",
    "punctuation:no_comma",
    "startend:quotation",
];

const CONSTRAINED_OPTIONS: [&str; 3] = ["My answer is yes.", "My answer is no.", "My answer is maybe."];

/// The reference compiles user strings as Python regular expressions; one our engine cannot
/// compile (look-around, back-references) is matched literally instead.
fn pattern(prefix: &str, text: &str, suffix: &str) -> Regex {
    Regex::new(&format!("{prefix}{text}{suffix}"))
        .or_else(|_| Regex::new(&format!("{prefix}{}{suffix}", regex::escape(text))))
        .expect("an escaped pattern compiles")
}

/// The kwargs of one instruction, read with the reference's rule that falsy values are absent.
struct Args<'a> {
    id: &'a str,
    map: serde_json::Map<String, Value>,
}

impl Args<'_> {
    fn missing(&self, key: &str) -> String {
        format!("{} needs `{key}`", self.id)
    }

    fn get(&self, key: &str) -> Result<&Value, String> {
        self.map.get(key).ok_or_else(|| self.missing(key))
    }

    fn count(&self, key: &str) -> Result<usize, String> {
        let v = self.get(key)?;
        v.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| format!("{}: `{key}` must be a non-negative integer, got {v}", self.id))
    }

    fn text(&self, key: &str) -> Result<&str, String> {
        let v = self.get(key)?;
        v.as_str()
            .ok_or_else(|| format!("{}: `{key}` must be a string, got {v}", self.id))
    }

    fn texts(&self, key: &str) -> Result<Vec<&str>, String> {
        let v = self.get(key)?;
        v.as_array()
            .and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
            .ok_or_else(|| format!("{}: `{key}` must be a list of strings, got {v}", self.id))
    }

    fn relation(&self, key: &str) -> Result<Relation, String> {
        match self.text(key)? {
            "less than" => Ok(Relation::LessThan),
            "at least" => Ok(Relation::AtLeast),
            other => Err(format!(
                "{}: `{key}` must be \"less than\" or \"at least\", got {other:?}",
                self.id
            )),
        }
    }
}

impl Check {
    pub(super) fn parse(id: &str, kwargs: &Value) -> Result<Self, String> {
        let map = match kwargs {
            Value::Object(m) => m.clone(),
            Value::Null => serde_json::Map::new(),
            other => return Err(format!("{id}: kwargs must be an object, got {other}")),
        };
        let falsy = |v: &Value| match v {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
        };
        let map = map.into_iter().filter(|(_, v)| !falsy(v)).collect();
        let a = Args { id, map };
        Ok(match id {
            "keywords:existence" => Check::Keywords(
                a.texts("keywords")?
                    .into_iter()
                    .map(|k| pattern("(?i)", k, ""))
                    .collect(),
            ),
            "keywords:frequency" => Check::KeywordFrequency {
                pattern: pattern("(?i)", a.text("keyword")?.trim(), ""),
                relation: a.relation("relation")?,
                n: a.count("frequency")?,
            },
            "keywords:forbidden_words" => Check::ForbiddenWords(
                a.texts("forbidden_words")?
                    .into_iter()
                    .map(|w| pattern(r"(?i)\b", w, r"\b"))
                    .collect(),
            ),
            "keywords:letter_frequency" => {
                let letter = a.text("letter")?.trim().to_lowercase();
                let mut chars = letter.chars();
                let (Some(c), None) = (chars.next(), chars.next()) else {
                    return Err(format!("{id}: `letter` must be one character, got {letter:?}"));
                };
                Check::LetterFrequency {
                    letter: c,
                    relation: a.relation("let_relation")?,
                    n: a.count("let_frequency")?,
                }
            }
            "language:response_language" => {
                Check::Language(Language::from_code(a.text("language")?).map_err(|e| format!("{id}: {e}"))?)
            }
            "length_constraints:number_sentences" => Check::Sentences {
                relation: a.relation("relation")?,
                n: a.count("num_sentences")?,
            },
            "length_constraints:number_paragraphs" => Check::Paragraphs(a.count("num_paragraphs")?),
            "length_constraints:number_words" => Check::Words {
                relation: a.relation("relation")?,
                n: a.count("num_words")?,
            },
            "length_constraints:nth_paragraph_first_word" => {
                let (paragraphs, nth) = (a.count("num_paragraphs")?, a.count("nth_paragraph")?);
                if nth == 0 || nth > paragraphs {
                    return Err(format!(
                        "{id}: `nth_paragraph` {nth} is outside 1..={paragraphs} (`num_paragraphs`)"
                    ));
                }
                Check::NthParagraph {
                    paragraphs,
                    nth,
                    first_word: a.text("first_word")?.to_lowercase(),
                }
            }
            "detectable_content:number_placeholders" => Check::Placeholders(a.count("num_placeholders")?),
            "detectable_content:postscript" => {
                let marker = a.text("postscript_marker")?.trim();
                Check::Postscript(match marker {
                    "P.P.S" => Regex::new(r"(?m)\s*p\.\s?p\.\s?s.*$").expect("valid regex"),
                    "P.S." => Regex::new(r"(?m)\s*p\.\s?s\..*$").expect("valid regex"),
                    other => pattern(r"(?m)\s*", &other.to_lowercase(), ".*$"),
                })
            }
            "detectable_format:number_bullet_lists" => Check::Bullets(a.count("num_bullets")?),
            "detectable_format:constrained_response" => Check::ConstrainedResponse,
            "detectable_format:number_highlighted_sections" => Check::Highlights(a.count("num_highlights")?),
            "detectable_format:multiple_sections" => Check::Sections {
                splitter: pattern(r"\s?", a.text("section_spliter")?.trim(), r"\s?\d+\s?"),
                n: a.count("num_sections")?,
            },
            "detectable_format:json_format" => Check::Json,
            "detectable_format:title" => Check::Title,
            "combination:two_responses" => Check::TwoResponses,
            "combination:repeat_prompt" => {
                Check::RepeatPrompt(a.text("prompt_to_repeat")?.trim().to_lowercase())
            }
            "startend:end_checker" => Check::End(a.text("end_phrase")?.trim().to_lowercase()),
            "change_case:capital_word_frequency" => Check::CapitalWords {
                relation: a.relation("capital_relation")?,
                n: a.count("capital_frequency")?,
            },
            "change_case:english_capital" => Check::EnglishCapital,
            "change_case:english_lowercase" => Check::EnglishLowercase,
            "punctuation:no_comma" => Check::NoComma,
            "startend:quotation" => Check::Quotation,
            other => {
                return Err(format!(
                    "unknown instruction id `{other}`; known: {}",
                    INSTRUCTION_IDS.join(", ")
                ))
            }
        })
    }
}

macro_rules! regexes {
    ($($name:ident = $re:literal;)*) => {
        $(static $name: LazyLock<Regex> = LazyLock::new(|| Regex::new($re).expect("valid regex"));)*
    };
}

regexes! {
    WORD = r"\w+";
    PLACEHOLDER = r"\[.*?\]";
    STAR_BULLET = r"(?m)^\s*\*[^\*].*$";
    DASH_BULLET = r"(?m)^\s*-.*$";
    HIGHLIGHT = r"\*[^\n\*]*\*";
    DOUBLE_HIGHLIGHT = r"\*\*[^\n\*]*\*\*";
    PARAGRAPH_DIVIDER = r"\s?\*\*\*\s?";
    TITLE = r"<<[^\n]+>>";
    TOKEN = r"\w+(?:[-.'’]\w+)*";
}

/// Python's `str.isupper()`: some cased character, and no lower-case one.
fn is_upper(text: &str) -> bool {
    let mut cased = false;
    for c in text.chars() {
        if c.is_lowercase() {
            return false;
        }
        cased |= c.is_uppercase();
    }
    cased
}

/// Python's `str.islower()`.
fn is_lower(text: &str) -> bool {
    let mut cased = false;
    for c in text.chars() {
        if c.is_uppercase() {
            return false;
        }
        cased |= c.is_lowercase();
    }
    cased
}

/// Words as NLTK's `word_tokenize` splits them, approximately: runs of word characters joined by
/// `-`, `.` or an apostrophe, with a trailing contraction (`n't`, `'s`, `'m`, ...) split off.
fn word_tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for m in TOKEN.find_iter(text) {
        let t = m.as_str();
        let lower = t.to_lowercase();
        if lower.ends_with("n't") && t.len() > 3 {
            out.extend([&t[..t.len() - 3], &t[t.len() - 3..]]);
        } else if let Some(at) = t.rfind(['\'', '’']) {
            out.extend([&t[..at], &t[at..]]);
        } else {
            out.push(t);
        }
    }
    out
}

/// The reference's rule for an undetectable language: followed.
fn detected(language: Language, text: &str) -> bool {
    !matches!(language.detect(text), Detected::No(_))
}

impl Check {
    pub(super) fn follows(&self, value: &str) -> bool {
        match self {
            Check::Keywords(patterns) => patterns.iter().all(|p| p.is_match(value)),
            Check::KeywordFrequency { pattern, relation, n } => {
                relation.holds(pattern.find_iter(value).count(), *n)
            }
            Check::ForbiddenWords(patterns) => !patterns.iter().any(|p| p.is_match(value)),
            Check::LetterFrequency { letter, relation, n } => {
                relation.holds(value.to_lowercase().chars().filter(|c| c == letter).count(), *n)
            }
            Check::Language(language) => detected(*language, value),
            Check::Sentences { relation, n } => relation.holds(count_sentences(value), *n),
            Check::Paragraphs(n) => {
                let parts: Vec<&str> = PARAGRAPH_DIVIDER.split(value).collect();
                let mut count = parts.len();
                for (i, p) in parts.iter().enumerate() {
                    if p.trim().is_empty() {
                        if i == 0 || i == parts.len() - 1 {
                            count -= 1;
                        } else {
                            return false;
                        }
                    }
                }
                count == *n
            }
            Check::Words { relation, n } => relation.holds(WORD.find_iter(value).count(), *n),
            Check::NthParagraph {
                paragraphs,
                nth,
                first_word,
            } => {
                let parts: Vec<&str> = value.split("\n\n").collect();
                let count = parts.iter().filter(|p| !p.trim().is_empty()).count();
                if *nth > count {
                    return false;
                }
                // The reference indexes the split including empty pieces.
                let paragraph = parts[nth - 1].trim();
                let Some(word) = paragraph.split_whitespace().next() else {
                    return false;
                };
                let word: String = word
                    .trim_start_matches('\'')
                    .trim_start_matches('"')
                    .chars()
                    .take_while(|c| !matches!(c, '.' | ',' | '?' | '!' | '\'' | '"'))
                    .flat_map(char::to_lowercase)
                    .collect();
                count == *paragraphs && word == *first_word
            }
            Check::Placeholders(n) => PLACEHOLDER.find_iter(value).count() >= *n,
            Check::Postscript(p) => p.is_match(&value.to_lowercase()),
            Check::Bullets(n) => {
                STAR_BULLET.find_iter(value).count() + DASH_BULLET.find_iter(value).count() == *n
            }
            Check::ConstrainedResponse => {
                let v = value.trim();
                CONSTRAINED_OPTIONS.iter().any(|o| v.contains(o))
            }
            Check::Highlights(n) => {
                let single = HIGHLIGHT
                    .find_iter(value)
                    .filter(|m| !m.as_str().trim_matches('*').trim().is_empty())
                    .count();
                let double = DOUBLE_HIGHLIGHT
                    .find_iter(value)
                    .filter(|m| !m.as_str()[2..m.as_str().len() - 2].trim().is_empty())
                    .count();
                single + double >= *n
            }
            Check::Sections { splitter, n } => splitter.find_iter(value).count() >= *n,
            Check::Json => {
                let v = value.trim();
                let v = ["```json", "```Json", "```JSON", "```"]
                    .iter()
                    .find_map(|p| v.strip_prefix(p))
                    .unwrap_or(v);
                let v = v.strip_suffix("```").unwrap_or(v).trim();
                serde_json::from_str::<serde::de::IgnoredAny>(v).is_ok()
            }
            Check::Title => TITLE.find_iter(value).any(|m| {
                !m.as_str()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .trim()
                    .is_empty()
            }),
            Check::TwoResponses => {
                let parts: Vec<&str> = value.split("******").collect();
                let mut answers = Vec::new();
                for (i, p) in parts.iter().enumerate() {
                    if p.trim().is_empty() {
                        if i != 0 && i != parts.len() - 1 {
                            return false;
                        }
                    } else {
                        answers.push(p.trim());
                    }
                }
                answers.len() == 2 && answers[0] != answers[1]
            }
            Check::RepeatPrompt(prompt) => value.trim().to_lowercase().starts_with(prompt.as_str()),
            Check::End(phrase) => value
                .trim()
                .trim_matches('"')
                .to_lowercase()
                .ends_with(phrase.as_str()),
            Check::CapitalWords { relation, n } => {
                relation.holds(word_tokens(value).into_iter().filter(|w| is_upper(w)).count(), *n)
            }
            Check::EnglishCapital => is_upper(value) && detected(Language::ENGLISH, value),
            Check::EnglishLowercase => is_lower(value) && detected(Language::ENGLISH, value),
            Check::NoComma => !value.contains(','),
            Check::Quotation => {
                let v = value.trim();
                v.chars().count() > 1 && v.starts_with('"') && v.ends_with('"')
            }
        }
    }

    /// What was asked (and, for a language, what was found), for reasons.
    pub(super) fn describe(&self, response: &str) -> String {
        match self {
            Check::KeywordFrequency { relation, n, .. }
            | Check::LetterFrequency { relation, n, .. }
            | Check::Sentences { relation, n }
            | Check::Words { relation, n }
            | Check::CapitalWords { relation, n } => format!("{} {n}", relation.name()),
            Check::Language(l) => match l.detect(response) {
                Detected::No(found) => format!("{}, found {found}", l.code()),
                _ => l.code().to_string(),
            },
            Check::Paragraphs(n)
            | Check::Placeholders(n)
            | Check::Bullets(n)
            | Check::Highlights(n)
            | Check::Sections { n, .. } => n.to_string(),
            _ => String::new(),
        }
    }
}
