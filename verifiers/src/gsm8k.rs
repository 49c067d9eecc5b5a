//! GSM8K: the final number of the response against the label after `####`.
//!
//! Tülu 3 mode is open-instruct's `verify_gsm8k_sample` at the release: delete commas between
//! digits, take the last match of `[-+]?\d*\.\d+|\d+` (so a sign survives only on decimals and
//! `-10` reads as `10`), else the whole response, and compare lower-cased strings exactly
//! (`18.0` is not `18`). Default mode reads the answer the way a grader would: the last
//! `#### N`, else "the answer is N", else the last `\boxed{N}`, else the last number; `$`,
//! units, `%` and thousands separators are ignored on both sides, negatives and decimals
//! compare as exact numbers, and a response without digits may answer in number words.

use std::sync::LazyLock;

use regex::Regex;

use crate::number::Rational;
use crate::{tulu3_response, verdict, Mode, Truth, TruthError, Verdict, Verifier};

/// The GSM8K verifier.
#[derive(Debug, Clone, Copy)]
pub struct Gsm8k {
    mode: Mode,
}

impl Gsm8k {
    /// A GSM8K verifier following `mode`.
    pub fn new(mode: Mode) -> Self {
        Self { mode }
    }
}

static TULU_COMMA: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(\d),(\d)").expect("valid regex"));
static TULU_NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[-+]?\d*\.\d+|\d+").expect("valid regex"));

/// A number as written in an answer: sign, optional `$`, digits with optional thousands
/// separators, optional decimals, optional `/denominator`.
const NUMBER: &str = r"[-+−]?\s*\$?\s*(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:\s*/\s*\d+)?";
static HASHES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"####\s*({NUMBER})")).expect("valid regex"));
static ANSWER_IS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i)answer\s*(?:is|:)\s*:?\s*(?:\\boxed\{{)?\s*({NUMBER})"
    ))
    .expect("valid regex")
});
static BOXED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"\\boxed\{{\s*({NUMBER})")).expect("valid regex"));
static ANY: LazyLock<Regex> = LazyLock::new(|| Regex::new(NUMBER).expect("valid regex"));

/// Parse a number as written: `$1,234.50`, `-7`, `3/4`, `−2` (Unicode minus).
fn parse_number(text: &str) -> Option<Rational> {
    let t: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '$' | ',' | '\u{a0}'))
        .collect();
    let t = t.replace('−', "-");
    match t.split_once('/') {
        Some((a, b)) => Rational::parse_decimal(a)?.div(Rational::parse_decimal(b)?),
        None => Rational::parse_decimal(&t),
    }
}

fn last_number(re: &Regex, text: &str) -> Option<(Rational, String)> {
    re.captures_iter(text)
        .filter_map(|c| {
            let m = c.get(1).or_else(|| c.get(0))?.as_str();
            Some((parse_number(m)?, m.trim().to_string()))
        })
        .last()
}

const WORDS: [(&str, i128); 28] = [
    ("zero", 0),
    ("one", 1),
    ("two", 2),
    ("three", 3),
    ("four", 4),
    ("five", 5),
    ("six", 6),
    ("seven", 7),
    ("eight", 8),
    ("nine", 9),
    ("ten", 10),
    ("eleven", 11),
    ("twelve", 12),
    ("thirteen", 13),
    ("fourteen", 14),
    ("fifteen", 15),
    ("sixteen", 16),
    ("seventeen", 17),
    ("eighteen", 18),
    ("nineteen", 19),
    ("twenty", 20),
    ("thirty", 30),
    ("forty", 40),
    ("fifty", 50),
    ("sixty", 60),
    ("seventy", 70),
    ("eighty", 80),
    ("ninety", 90),
];

/// "the answer is eighteen" / "forty-two": number words after "answer is", when the response
/// has no digits at all (anything else is ambiguous).
fn number_words(text: &str) -> Option<Rational> {
    let lower = text.to_lowercase();
    let after = lower.rsplit_once("answer is")?.1;
    let mut total = 0i128;
    let mut seen = false;
    for word in after
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
        .take(3)
    {
        match WORDS.iter().find(|(w, _)| *w == word) {
            Some((_, v)) => {
                total += v;
                seen = true;
            }
            None if seen => break,
            None => return None,
        }
    }
    seen.then(|| Rational::int(total))
}

/// The release's prediction: the last match of `[-+]?\d*\.\d+|\d+` after
/// `re.sub(r"(\d),(\d)", r"\1\2", response)`, or the whole (joined) response when there is none.
/// A byte scanner equal to those two regexes (a property test checks it), which it leaves to the
/// regexes when the text holds non-ASCII digits (Python's `\d` is any Unicode decimal digit).
fn tulu3_prediction(response: &str) -> std::borrow::Cow<'_, str> {
    if response.chars().any(|c| !c.is_ascii() && c.is_numeric()) {
        return tulu3_prediction_regex(response);
    }
    let b = response.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    // Non-overlapping, leftmost `d,d` pairs lose their comma.
    let joined: std::borrow::Cow<'_, [u8]> = if b.contains(&b',') {
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if digit(i) && b.get(i + 1) == Some(&b',') && digit(i + 2) {
                out.extend([b[i], b[i + 2]]);
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out.into()
    } else {
        b.into()
    };
    let j = &joined[..];
    let digits_from = |mut k: usize| {
        while j.get(k).is_some_and(u8::is_ascii_digit) {
            k += 1;
        }
        k
    };
    let (mut last, mut i) = (None, 0);
    while i < j.len() {
        // First alternative: optional sign, digits, a dot, at least one digit.
        let unsigned = i + usize::from(matches!(j[i], b'-' | b'+'));
        let dot = digits_from(unsigned);
        let end = if j.get(dot) == Some(&b'.') && digits_from(dot + 1) > dot + 1 {
            Some(digits_from(dot + 1))
        } else if j[i].is_ascii_digit() {
            Some(digits_from(i))
        } else {
            None
        };
        match end {
            Some(end) => {
                last = Some((i, end));
                i = end;
            }
            None => i += 1,
        }
    }
    // Both cuts fall on ASCII bytes, so they are character boundaries.
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match last {
        Some((start, end)) => text(&j[start..end]).into(),
        None => match joined {
            std::borrow::Cow::Borrowed(_) => response.into(),
            std::borrow::Cow::Owned(v) => text(&v).into(),
        },
    }
}

/// [`tulu3_prediction`] with the release's two regexes.
fn tulu3_prediction_regex(response: &str) -> std::borrow::Cow<'_, str> {
    let joined = TULU_COMMA.replace_all(response, "$1$2");
    match TULU_NUMBER.find_iter(&joined).last() {
        Some(m) => m.as_str().to_string().into(),
        None => joined,
    }
}

impl Gsm8k {
    fn verify_tulu3(response: &str, truth: &str) -> Verdict {
        let response = tulu3_response(response);
        let prediction = tulu3_prediction(response);
        let ok = prediction.to_lowercase() == truth.to_lowercase();
        verdict(ok, format!("tulu3: extracted {prediction:?}, label {truth:?}"))
    }

    fn verify_default(response: &str, truth: Rational) -> Verdict {
        let found = [
            (&*HASHES, "#### N"),
            (&*ANSWER_IS, "the answer is N"),
            (&*BOXED, "\\boxed{N}"),
            (&*ANY, "last number"),
        ]
        .into_iter()
        .find_map(|(re, how)| last_number(re, response).map(|(n, text)| (n, text, how)));
        match found {
            Some((n, text, how)) => verdict(
                n == truth,
                format!("{how}: extracted {text:?} = {n}, label {truth}"),
            ),
            None => match number_words(response) {
                Some(n) => verdict(n == truth, format!("number words: {n}, label {truth}")),
                None => verdict(false, "no number in the response"),
            },
        }
    }
}

impl Verifier for Gsm8k {
    fn name(&self) -> &str {
        "gsm8k"
    }

    fn parse_truth(&self, raw: &str) -> Result<Truth, TruthError> {
        match self.mode {
            Mode::Tulu3 => Ok(Truth::Text(raw.to_string())),
            Mode::Default => parse_number(raw.trim())
                .map(Truth::Number)
                .ok_or_else(|| TruthError {
                    truth: raw.to_string(),
                    message: "not a number".into(),
                }),
        }
    }

    fn verify(&self, response: &str, truth: &Truth) -> Verdict {
        match (self.mode, truth) {
            (Mode::Tulu3, Truth::Text(t)) => Self::verify_tulu3(response, t),
            (Mode::Default, Truth::Number(n)) => Self::verify_default(response, *n),
            (_, other) => verdict(false, format!("gsm8k cannot use ground truth {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 4096, ..Default::default() })]
        #[test]
        fn tulu3_scanner_equals_the_release_regexes(s in "[0-9,.+ a-z\\-٣]{0,40}") {
            proptest::prop_assert_eq!(tulu3_prediction(&s), tulu3_prediction_regex(&s));
        }
    }

    fn check(mode: Mode, response: &str, truth: &str) -> bool {
        let v = Gsm8k::new(mode);
        v.verify(response, &v.parse_truth(truth).unwrap()).verified
    }

    #[test]
    fn tulu3_keeps_the_release_defects() {
        assert!(check(Mode::Tulu3, "so 9 * 2 = 18 dollars", "18"));
        assert!(check(Mode::Tulu3, "It costs 1,234 in total", "1234"));
        assert!(!check(Mode::Tulu3, "The answer is 18.0", "18"), "exact strings");
        assert!(
            !check(Mode::Tulu3, "The answer is -10", "-10"),
            "sign dropped on integers"
        );
        assert!(
            check(Mode::Tulu3, "The answer is -0.5", "-0.5"),
            "sign kept on decimals"
        );
        assert!(
            !check(Mode::Tulu3, "#### 2,125", "2,125"),
            "a label with a comma never matches"
        );
        assert!(check(
            Mode::Tulu3,
            "<|assistant|>\n7 then <|assistant|>\nIt is 8",
            "8"
        ));
        assert!(!check(
            Mode::Tulu3,
            "<|assistant|>\nIt is 8<|assistant|>\nno digits",
            "8"
        ));
    }

    #[test]
    fn default_reads_answers_like_a_grader() {
        assert!(check(Mode::Default, "The answer is 18.0", "18"));
        assert!(check(Mode::Default, "The answer is -10.", "-10"));
        assert!(check(Mode::Default, "She pays $1,234.", "1234"));
        assert!(check(Mode::Default, "#### 2,125", "2,125"));
        assert!(check(Mode::Default, "3 + 4 = 7\n#### 7\nI checked 5 times", "7"));
        assert!(check(Mode::Default, "so the answer is $5.50 per cup", "5.5"));
        assert!(check(Mode::Default, "Total: \\boxed{42}", "42"));
        assert!(check(Mode::Default, "It is 3/4 of the cake", "0.75"));
        assert!(check(Mode::Default, "The answer is eighteen.", "18"));
        assert!(check(Mode::Default, "The answer is forty-two", "42"));
        assert!(check(Mode::Default, "It grows by 25%", "25"));
        assert!(!check(Mode::Default, "The answer is 17", "18"));
        assert!(!check(Mode::Default, "I do not know", "18"));
        let v = Gsm8k::new(Mode::Default);
        assert!(v.parse_truth("eighteen").is_err());
    }
}
