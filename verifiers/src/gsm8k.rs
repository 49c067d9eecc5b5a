//! GSM8K: the final number of the response against the label after `####`.
//!
//! Tülu 3 mode is open-instruct's `verify_gsm8k_sample` at the release: delete commas between
//! digits, take the last match of `[-+]?\d*\.\d+|\d+` (so a sign survives only on decimals and
//! `-10` reads as `10`), else the whole response, and compare lower-cased strings exactly
//! (`18.0` is not `18`). Default mode reads the answer the way a grader would, after the last
//! `<|assistant|>` marker as Tülu 3 mode does (a number of the prompt is no answer): the last
//! `#### N`, else "the answer is N" (digits or number words: "the answer is seventeen" is 17,
//! whatever digits came before), else the last `\boxed{N}`, else the last number. Numbers are
//! read in the forms models write — `$`, units, `%`, thousands grouped by commas, spaces or
//! European dots (`1.234.567`, `1.234,50`; one dot group, `3.430`, is an English decimal),
//! LaTeX fractions (`\frac{280}{2}`), scientific notation (`1.5 \times 10^{3}`, `1.5e3`) — and
//! compared as exact numbers. A label that is not a number is compared as text (the final
//! answer's words, ignoring case and punctuation).

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

/// A number as written in an answer: a LaTeX fraction (`\frac{280}{2}`); scientific notation
/// (`1.5 \times 10^{3}`, `1.5e3`); or an optional sign and `$`, then digits grouped in thousands
/// by commas or (thin) spaces (`1,234.5`, `1 234`), or in the European style by dots with an
/// optional decimal comma (`1.234.567`, `1.234,50`; a single dot group such as `3.430` reads as
/// an English decimal, 3.43), or plain digits with decimals, then an optional `/denominator`.
const NUMBER: &str = r"(?:\\[dt]?frac\s*\{\s*[-−]?\d+(?:\.\d+)?\s*\}\s*\{\s*\d+(?:\.\d+)?\s*\}|[-−]?\d+(?:\.\d+)?\s*(?:\\times|\\cdot|×|·)\s*10\s*\^\s*\{?\s*[-−+]?\d+\s*\}?|[-+−]?\s*\$?\s*(?:\d{1,3}(?:\.\d{3}){2,}(?:,\d+)?|\d{1,3}(?:\.\d{3})+,\d+|\d{1,3}(?:[,\x{202f}\x{a0}\x{2009} ]\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+)(?:\s*/\s*\d+)?)";
/// Spelled-out numbers (`seventeen`, `forty-two`), as a final answer after "the answer is".
const WORDS_RE: &str = r"(?:(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)(?:[-\s]+(?:one|two|three|four|five|six|seven|eight|nine))?)\b";
static HASHES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"####\s*({NUMBER})")).expect("valid regex"));
static ANSWER_IS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"(?i)answer\s*(?:is|:)\s*:?\s*(?:\\boxed\{{)?\s*\$?\s*({NUMBER}|{WORDS_RE})"
    ))
    .expect("valid regex")
});
static BOXED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"\\boxed\{{\s*({NUMBER})")).expect("valid regex"));
static ANY: LazyLock<Regex> = LazyLock::new(|| Regex::new(NUMBER).expect("valid regex"));
static FRACTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\\[dt]?frac\s*\{\s*([-−]?\d+(?:\.\d+)?)\s*\}\s*\{\s*(\d+(?:\.\d+)?)\s*\}$")
        .expect("valid regex")
});
static SCIENTIFIC: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([-−]?\d+(?:\.\d+)?)\s*(?:\\times|\\cdot|×|·)\s*10\s*\^\s*\{?\s*([-−+]?\d+)\s*\}?$")
        .expect("valid regex")
});

/// Parse a number as [`NUMBER`] writes it: `$1,234.50`, `-7`, `3/4`, `−2` (Unicode minus),
/// `1 234`, `1.234.567`, `1.234,50`, `\frac{7}{2}`, `1.5 \times 10^{3}`, `1.5e3`.
fn parse_number(text: &str) -> Option<Rational> {
    let text = text.trim().replace('−', "-");
    if let Some(c) = FRACTION.captures(&text) {
        return Rational::parse_decimal(&c[1])?.div(Rational::parse_decimal(&c[2])?);
    }
    if let Some(c) = SCIENTIFIC.captures(&text) {
        return Rational::parse_decimal(&format!("{}e{}", &c[1], &c[2]));
    }
    let t: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '$' | '\u{a0}' | '\u{202f}' | '\u{2009}'))
        .collect();
    // European grouping: two or more dot groups, or dots before a decimal comma.
    let european =
        t.matches('.').count() >= 2 || (t.contains('.') && t.contains(',') && t.rfind(',') > t.rfind('.'));
    let t = if european {
        t.replace('.', "").replace(',', ".")
    } else {
        t.replace(',', "")
    };
    match t.split_once('/') {
        Some((a, b)) => Rational::parse_decimal(a)?.div(Rational::parse_decimal(b)?),
        None => Rational::parse_decimal(&t),
    }
}

/// The last match of `re` in `text` that reads as a number (or number words), with its text.
fn last_number(re: &Regex, text: &str) -> Option<(Rational, String)> {
    re.captures_iter(text)
        .filter_map(|c| {
            let m = c.get(1).or_else(|| c.get(0))?.as_str();
            Some((parse_number(m).or_else(|| number_words(m))?, m.trim().to_string()))
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

/// Spelled-out numbers: `eighteen`, `forty-two`, `forty two`.
fn number_words(text: &str) -> Option<Rational> {
    let lower = text.to_lowercase();
    let mut total = 0i128;
    let mut seen = false;
    for word in lower
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| !w.is_empty())
    {
        let (_, v) = WORDS.iter().find(|(w, _)| *w == word)?;
        total += v;
        seen = true;
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
        // As in Tülu 3 mode, a response that carries its prompt is scored after the last
        // assistant marker: a number of the prompt is no answer.
        let response = tulu3_response(response);
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
            None => verdict(false, "no number in the response"),
        }
    }

    /// A label that is not a number (user data has them): the final answer's text — after the
    /// last `####`, "the answer is" or in the last `\boxed{}`, else the last line — compared
    /// with it word for word, ignoring case and punctuation.
    fn verify_text(response: &str, truth: &str) -> Verdict {
        static FINAL: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r"(?i)(?:####|answer\s*(?:is|:)|\\boxed\{)\s*:?\s*([^\n}]*)").expect("valid regex")
        });
        let response = tulu3_response(response);
        let answer = FINAL
            .captures_iter(response)
            .last()
            .map(|c| c[1].to_string())
            .unwrap_or_else(|| response.trim().lines().last().unwrap_or_default().to_string());
        let words = |s: &str| -> Vec<String> {
            s.split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .collect()
        };
        let ok = !words(truth).is_empty() && words(&answer) == words(truth);
        verdict(ok, format!("text answer {answer:?}, label {truth:?}"))
    }
}

impl Verifier for Gsm8k {
    fn name(&self) -> &str {
        "gsm8k"
    }

    fn parse_truth(&self, raw: &str) -> Result<Truth, TruthError> {
        match self.mode {
            Mode::Tulu3 => Ok(Truth::Text(raw.to_string())),
            Mode::Default if raw.trim().is_empty() => Err(TruthError {
                truth: raw.to_string(),
                message: "empty label".into(),
            }),
            Mode::Default => {
                Ok(parse_number(raw.trim())
                    .map_or_else(|| Truth::Text(raw.trim().to_string()), Truth::Number))
            }
        }
    }

    fn verify(&self, response: &str, truth: &Truth) -> Verdict {
        match (self.mode, truth) {
            (Mode::Tulu3, Truth::Text(t)) => Self::verify_tulu3(response, t),
            (Mode::Default, Truth::Number(n)) => Self::verify_default(response, *n),
            (Mode::Default, Truth::Text(t)) => Self::verify_text(response, t),
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
        assert!(v.parse_truth("").is_err());
        // A label that is not a number is compared as text.
        assert!(check(Mode::Default, "The answer is Tuesday.", "Tuesday"));
        assert!(!check(Mode::Default, "The answer is Monday.", "Tuesday"));
        // Forms of numbers models write.
        assert!(check(Mode::Default, "The answer is 1 234.", "1234"));
        assert!(check(Mode::Default, "The answer is 1.234.567.", "1234567"));
        assert!(check(Mode::Default, "The answer is 1.234,00.", "1234"));
        assert!(
            check(Mode::Default, "The answer is 3.430.", "3.43"),
            "one dot group is a decimal"
        );
        assert!(check(Mode::Default, "The answer is $\\frac{280}{2}$.", "140"));
        assert!(check(
            Mode::Default,
            "The answer is $1.5 \\times 10^{3}$.",
            "1500"
        ));
        assert!(check(Mode::Default, "The answer is 1.5e3.", "1500"));
        // The final answer, not the last digits: spelled out after "the answer is", and
        // nothing from before the assistant marker.
        assert!(!check(
            Mode::Default,
            "I got 18, but the answer is seventeen.",
            "18"
        ));
        assert!(!check(
            Mode::Default,
            "<|user|>\nIs it 18?\n<|assistant|>\nNo idea.",
            "18"
        ));
    }
}
