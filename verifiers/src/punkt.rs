//! NLTK's Punkt sentence tokenizer (Kiss & Strunk 2006) with its trained English model, as
//! NLTK's `PunktTokenizer("english")` applies it: the reference IFEval counts sentences with it.
//!
//! The algorithm follows `nltk/tokenize/punkt.py` (NLTK 3.9–3.10): candidate ends are `.`, `?`
//! and `!` followed by punctuation or by whitespace and a token; each candidate's context (the
//! word before it, the mark, the token after) is split into Punkt's word tokens and annotated in
//! two passes — known abbreviations, ellipses and initials first, then the collocation,
//! orthographic and frequent-sentence-starter heuristics — and a candidate ends a sentence when a
//! token other than the context's last is a sentence break. Closing quotes and brackets after a
//! break are moved back onto the sentence they close. Offsets are bytes where NLTK's are
//! characters; the decisions are the same.
//!
//! The model's four tables are NLTK data's `punkt_tab/english` (see `data/punkt-english/README`).

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

/// Python's `str.isspace()` and `\s` on `str` patterns: Unicode whitespace plus the four ASCII
/// information separators Python counts as space.
fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Punkt's `_re_non_word_chars`: punctuation that cannot appear inside a word token.
fn is_non_word(c: char) -> bool {
    matches!(
        c,
        ')' | '"'
            | ';'
            | '}'
            | ']'
            | '*'
            | ':'
            | '@'
            | '\''
            | '('
            | '{'
            | '['
            | '\u{2018}'
            | '\u{2019}'
            | '\u{201c}'
            | '\u{201d}'
            | '\u{ab}'
            | '\u{bb}'
            | '?'
            | '!'
    )
}

/// Characters Punkt's `_re_word_start` refuses as the first of a word token.
fn cannot_start_word(c: char) -> bool {
    matches!(
        c,
        '(' | '"' | '`' | '{' | '[' | ':' | ';' | '&' | '#' | '*' | '@' | ')' | '}' | ']' | '-' | ','
    )
}

/// Closing punctuation `re_boundary_realignment` moves back onto the previous sentence.
fn is_closing(c: char) -> bool {
    matches!(
        c,
        '"' | '\''
            | ')'
            | ']'
            | '}'
            | '\u{2018}'
            | '\u{2019}'
            | '\u{201c}'
            | '\u{201d}'
            | '\u{ab}'
            | '\u{bb}'
    )
}

fn char_at(text: &str, at: usize) -> Option<char> {
    text.get(at..).and_then(|rest| rest.chars().next())
}

/// The length of Punkt's multi-character punctuation `--+`, `..+` or `. . .` at `at`.
fn multi_char_len(text: &str, at: usize) -> Option<usize> {
    let rest = text.get(at..)?;
    let run = |mark: u8| rest.bytes().take_while(|&b| b == mark).count();
    if rest.starts_with("--") {
        return Some(run(b'-'));
    }
    if rest.starts_with("..") {
        return Some(run(b'.'));
    }
    // `(?:\.\s){2,}\.`: as many `.` + space pairs as there are, backing off one pair when no
    // period follows the last.
    let mut pairs = Vec::new();
    let mut at = 0;
    while rest[at..].starts_with('.') {
        match rest[at + 1..].chars().next() {
            Some(space) if is_space(space) => {
                at += 1 + space.len_utf8();
                pairs.push(at);
            }
            _ => break,
        }
    }
    let ends_in_period = |end: usize| rest[end..].starts_with('.');
    match pairs.len() {
        n if n >= 2 && ends_in_period(pairs[n - 1]) => Some(pairs[n - 1] + 1),
        n if n >= 3 => Some(pairs[n - 2] + 1),
        _ => None,
    }
}

/// Whether Punkt's word pattern ends a word before `at`: whitespace, the end, punctuation, or
/// a comma that is itself followed by one of those.
fn word_ends_at(text: &str, at: usize) -> bool {
    let ends = |at: usize| match char_at(text, at) {
        None => true,
        Some(c) => is_space(c) || is_non_word(c) || multi_char_len(text, at).is_some(),
    };
    ends(at) || char_at(text, at) == Some(',') && ends(at + 1)
}

/// Punkt's `word_tokenize` of one line: punctuation other than periods split from words.
fn word_tokens(line: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let mut at = 0;
    while let Some(c) = char_at(line, at) {
        let start = at;
        if is_space(c) {
            at += c.len_utf8();
            continue;
        }
        if let Some(len) = multi_char_len(line, at) {
            at += len;
        } else {
            at += c.len_utf8();
            if !cannot_start_word(c) {
                while !word_ends_at(line, at) {
                    at += char_at(line, at).map_or(1, char::len_utf8);
                }
            }
        }
        tokens.push(&line[start..at]);
    }
    tokens
}

/// Punkt's `PunktToken`, with the annotations the two passes make.
struct Token<'a> {
    text: &'a str,
    /// The lower-cased text, or `##number##` for a number.
    kind: String,
    sentence_break: bool,
    abbreviation: bool,
    ellipsis: bool,
}

impl<'a> Token<'a> {
    fn new(text: &'a str) -> Self {
        let lower = text.to_lowercase();
        let kind = if NUMBER.is_match(&lower) {
            "##number##".to_owned()
        } else {
            lower
        };
        Token {
            text,
            kind,
            sentence_break: false,
            abbreviation: false,
            ellipsis: false,
        }
    }

    fn period_final(&self) -> bool {
        self.text.ends_with('.')
    }

    fn kind_no_period(&self) -> &str {
        match self.kind.strip_suffix('.') {
            Some(stripped) if self.kind.chars().count() > 1 => stripped,
            _ => &self.kind,
        }
    }

    fn kind_no_sentence_period(&self) -> &str {
        if self.sentence_break {
            self.kind_no_period()
        } else {
            &self.kind
        }
    }

    fn first_upper(&self) -> bool {
        self.text.chars().next().is_some_and(char::is_uppercase)
    }

    fn first_lower(&self) -> bool {
        self.text.chars().next().is_some_and(char::is_lowercase)
    }

    fn is_initial(&self) -> bool {
        INITIAL.is_match(self.text)
    }

    /// `\.\.+`.
    fn is_ellipsis(&self) -> bool {
        self.text.len() >= 2 && self.text.bytes().all(|b| b == b'.')
    }
}

/// Punkt's number pattern (`_RE_NUMERIC`): a token typed `##number##`.
static NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^-?[\.,]?\d[\d,\.-]*\.?$").expect("valid regex"));

/// Punkt's `_RE_INITIAL`: one letter and a period.
static INITIAL: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[^\W\d]\.$").expect("valid regex"));

// Orthographic contexts a word type was seen in during training.
const BEGIN_UPPER: u32 = 1 << 1;
const MIDDLE_UPPER: u32 = 1 << 2;
const UNKNOWN_UPPER: u32 = 1 << 3;
const BEGIN_LOWER: u32 = 1 << 4;
const MIDDLE_LOWER: u32 = 1 << 5;
const UNKNOWN_LOWER: u32 = 1 << 6;
const UPPER: u32 = BEGIN_UPPER | MIDDLE_UPPER | UNKNOWN_UPPER;
const LOWER: u32 = BEGIN_LOWER | MIDDLE_LOWER | UNKNOWN_LOWER;

/// What the orthographic heuristic says of a token starting a sentence.
#[derive(PartialEq)]
enum Starts {
    Yes,
    No,
    Unknown,
}

/// A trained Punkt model: `PunktParameters`.
struct Model {
    abbreviations: HashSet<&'static str>,
    collocations: HashSet<(&'static str, &'static str)>,
    sentence_starters: HashSet<&'static str>,
    orthography: HashMap<&'static str, u32>,
}

static ENGLISH: LazyLock<Model> = LazyLock::new(|| {
    let lines = |text: &'static str| text.lines();
    let pair = |line: &'static str| line.split_once('\t');
    Model {
        abbreviations: lines(include_str!("../data/punkt-english/abbrev_types.txt")).collect(),
        collocations: lines(include_str!("../data/punkt-english/collocations.tab"))
            .filter_map(pair)
            .collect(),
        sentence_starters: lines(include_str!("../data/punkt-english/sent_starters.txt")).collect(),
        orthography: lines(include_str!("../data/punkt-english/ortho_context.tab"))
            .filter_map(pair)
            .filter_map(|(kind, flags)| Some((kind, flags.parse().ok()?)))
            .collect(),
    }
});

impl Model {
    /// `_first_pass_annotation`: decisions from the token alone.
    fn first_pass(&self, token: &mut Token) {
        let text = token.text;
        if matches!(text, "." | "?" | "!") {
            token.sentence_break = true;
        } else if token.is_ellipsis() {
            token.ellipsis = true;
        } else if token.period_final() && !text.ends_with("..") {
            let word = text[..text.len() - 1].to_lowercase();
            let last_part = word.rsplit('-').next().unwrap_or(&word);
            if self.abbreviations.contains(word.as_str()) || self.abbreviations.contains(last_part) {
                token.abbreviation = true;
            } else {
                token.sentence_break = true;
            }
        }
    }

    fn orthography(&self, kind: &str) -> u32 {
        self.orthography.get(kind).copied().unwrap_or(0)
    }

    /// `_ortho_heuristic`: whether `token` starts a sentence, by the cases its type was seen in.
    fn starts_sentence(&self, token: &Token) -> Starts {
        if matches!(token.text, ";" | ":" | "," | "." | "!" | "?") {
            return Starts::No;
        }
        let seen = self.orthography(token.kind_no_sentence_period());
        if token.first_upper() && seen & LOWER != 0 && seen & MIDDLE_UPPER == 0 {
            return Starts::Yes;
        }
        if token.first_lower() && (seen & UPPER != 0 || seen & BEGIN_LOWER == 0) {
            return Starts::No;
        }
        Starts::Unknown
    }

    /// `_second_pass_annotation`: revises `first`'s decision by the token after it.
    fn second_pass(&self, first: &mut Token, next: &Token) {
        if !first.period_final() {
            return;
        }
        let kind = first.kind_no_period().to_owned();
        let next_kind = next.kind_no_sentence_period();
        if self.collocations.contains(&(kind.as_str(), next_kind)) {
            first.sentence_break = false;
            first.abbreviation = true;
            return;
        }
        let initial = first.is_initial();
        if (first.abbreviation || first.ellipsis)
            && !initial
            && (self.starts_sentence(next) == Starts::Yes
                || next.first_upper() && self.sentence_starters.contains(next_kind))
        {
            first.sentence_break = true;
            return;
        }
        if initial || kind == "##number##" {
            let starts = self.starts_sentence(next);
            if starts == Starts::No {
                first.sentence_break = false;
                first.abbreviation = true;
                return;
            }
            if starts == Starts::Unknown
                && initial
                && next.first_upper()
                && self.orthography(next_kind) & LOWER == 0
            {
                first.sentence_break = false;
                first.abbreviation = true;
            }
        }
    }

    /// `text_contains_sentbreak`: whether a token other than the last of `context` breaks.
    fn breaks(&self, context: &str) -> bool {
        let mut tokens: Vec<Token> = context
            .split('\n')
            .filter(|line| line.chars().any(|c| !is_space(c)))
            .flat_map(word_tokens)
            .map(Token::new)
            .collect();
        for token in &mut tokens {
            self.first_pass(token);
        }
        for i in 1..tokens.len() {
            let (before, after) = tokens.split_at_mut(i);
            self.second_pass(&mut before[i - 1], &after[0]);
            if before[i - 1].sentence_break {
                return true;
            }
        }
        false
    }

    /// `_slices_from_text`: sentences before realignment.
    fn raw_sentences(&self, text: &str) -> Vec<Range<usize>> {
        let mut sentences = Vec::new();
        let mut last_break = 0;
        for candidate in end_candidates(text) {
            if self.breaks(&candidate.context) {
                sentences.push(last_break..candidate.end);
                last_break = candidate.next_token.unwrap_or(candidate.end);
            }
        }
        sentences.push(last_break..text.trim_end_matches(is_space).len());
        sentences
    }
}

/// A potential sentence end: the byte after the mark, where the token after it starts (when
/// whitespace separates them), and the text Punkt decides on.
struct Candidate {
    end: usize,
    next_token: Option<usize>,
    context: String,
}

/// One of `period_context_re`'s matches: a sentence-end mark, the text after it the pattern's
/// lookahead captured (`after_tok`), and where the token after whitespace starts (`next_tok`).
struct Mark {
    at: usize,
    after: Range<usize>,
    next_token: Option<usize>,
}

/// `period_context_re`'s matches: a mark followed by punctuation, or by whitespace and a token.
fn marks(text: &str) -> impl Iterator<Item = Mark> + '_ {
    text.char_indices().filter_map(move |(at, c)| {
        if !matches!(c, '.' | '?' | '!') {
            return None;
        }
        let after = at + 1;
        let next = char_at(text, after)?;
        if is_non_word(next) {
            let after = after..after + next.len_utf8();
            return Some(Mark {
                at,
                after,
                next_token: None,
            });
        }
        let token = after + text[after..].find(|c| !is_space(c))?;
        if token == after {
            return None;
        }
        let end = token + text[token..].find(is_space).unwrap_or(text.len() - token);
        Some(Mark {
            at,
            after: after..end,
            next_token: Some(token),
        })
    })
}

/// `_match_potential_end_contexts`: each mark with the word before it; of marks whose words
/// overlap (`acting!!!`), only the last.
fn end_candidates(text: &str) -> Vec<Candidate> {
    let candidate = |word: Range<usize>, mark: Mark| Candidate {
        end: mark.at + 1,
        next_token: mark.next_token,
        context: format!(
            "{}{}{}",
            &text[word],
            &text[mark.at..mark.at + 1],
            &text[mark.after]
        ),
    };
    let mut candidates = Vec::new();
    let mut previous: Option<(Range<usize>, Mark)> = None;
    let mut previous_word = 0..0;
    for mark in marks(text) {
        let before = &text[previous_word.end..mark.at];
        // `_get_last_whitespace_index`: ASCII whitespace only, and one at index 0 counts as none.
        let word_start = match before.rfind([' ', '\t', '\n', '\r', '\x0b', '\x0c']) {
            Some(space) if space > 0 => previous_word.end + space + 1,
            _ => previous_word.start,
        };
        let word = word_start..mark.at;
        if let Some((last_word, last_mark)) = previous.take() {
            if last_word.end <= word.start {
                candidates.push(candidate(last_word, last_mark));
            }
        }
        previous_word = word.clone();
        previous = Some((word, mark));
    }
    if let Some((word, mark)) = previous {
        candidates.push(candidate(word, mark));
    }
    candidates
}

/// The length of `re_boundary_realignment`'s match at the start of `text`: closing quotes or
/// brackets, then whitespace, `--` or the end. Returns (closing part, whole match).
fn closing_run(text: &str) -> Option<(usize, usize)> {
    let mut at = 0;
    for c in text.chars() {
        if !is_closing(c) {
            return None;
        }
        at += c.len_utf8();
        let rest = &text[at..];
        let spaces = rest.len() - rest.trim_start_matches(is_space).len();
        if spaces > 0 {
            return Some((at, at + spaces));
        }
        if rest.is_empty() || rest.starts_with("--") {
            return Some((at, at));
        }
    }
    None
}

/// The byte ranges of `text`'s sentences, as NLTK's English `PunktTokenizer.span_tokenize`.
pub(crate) fn sentence_spans(text: &str) -> Vec<Range<usize>> {
    let raw = ENGLISH.raw_sentences(text);
    let slice = |r: &Range<usize>| text.get(r.start.min(r.end)..r.end).unwrap_or("");
    let mut spans = Vec::new();
    let mut realign = 0;
    for (i, sentence) in raw.iter().enumerate() {
        let current = sentence.start + realign..sentence.end;
        let Some(next) = raw.get(i + 1) else {
            if !slice(&current).is_empty() {
                spans.push(current);
            }
            continue;
        };
        match closing_run(slice(next)) {
            Some((closing, whole)) => {
                spans.push(current.start..next.start + closing);
                realign = whole;
            }
            None => {
                realign = 0;
                if !slice(&current).is_empty() {
                    spans.push(current);
                }
            }
        }
    }
    spans
}

/// How many sentences NLTK's English Punkt model finds in `text`.
pub(crate) fn count_sentences(text: &str) -> usize {
    sentence_spans(text).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentences(text: &str) -> Vec<&str> {
        sentence_spans(text).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn word_tokens_split_punctuation_but_not_periods() {
        assert_eq!(
            word_tokens("Hello, world. (Yes) don't... ok-- fine"),
            ["Hello", ",", "world.", "(", "Yes", ")", "don", "'t", "...", "ok", "--", "fine"]
        );
        assert_eq!(word_tokens("a . . . b"), ["a", ". . .", "b"]);
        assert_eq!(word_tokens("1,000,000, and"), ["1,000,000", ",", "and"]);
    }

    #[test]
    fn nltk_examples() {
        // NLTK's own doctests for the English model.
        assert_eq!(
            sentences("Very bad acting!!! I promise."),
            ["Very bad acting!!!", "I promise."]
        );
        assert_eq!(
            sentences("(How does it deal with this parenthesis?)  \"It should be part of the previous sentence.\" \"(And the same with this one.)\" ('And this one!') \"('(And (this)) '?)\" [(and this. )]"),
            [
                "(How does it deal with this parenthesis?)",
                "\"It should be part of the previous sentence.\"",
                "\"(And the same with this one.)\"",
                "('And this one!')",
                "\"('(And (this)) '?)\"",
                "[(and this. )]",
            ]
        );
        assert_eq!(
            sentences("Mr. Smith went to Washington D.C. yesterday. He met Dr. J. Doe at 3 p.m. It rained."),
            [
                "Mr. Smith went to Washington D.C. yesterday.",
                "He met Dr. J. Doe at 3 p.m.",
                "It rained."
            ]
        );
    }

    #[test]
    fn empty_and_blank_text_has_no_sentences() {
        assert_eq!(count_sentences(""), 0);
        assert_eq!(count_sentences("   \n "), 0);
        assert_eq!(count_sentences("no mark at all"), 1);
    }
}
