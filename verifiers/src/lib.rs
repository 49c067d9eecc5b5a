//! # rlvr-verifiers
//!
//! The verifiable reward: checkers that decide whether a response's final answer is right.
//! Pure and synchronous, no tensors, no async runtime and no actors: a user can depend on this
//! crate alone.
//!
//! - [`Verifier`]: parse a ground truth once when data loads ([`Verifier::parse_truth`], which
//!   fails with a reason on a malformed label), then [`Verifier::verify`] responses against it.
//!   Unparseable responses are a [`Verdict`] with a reason, never an error or a panic.
//! - Two [`Mode`]s: [`Mode::Tulu3`] reproduces the rules Tülu 3 trained with, defects included;
//!   [`Mode::Default`] is correct.
//! - [`Registry`]: verifiers by name (`gsm8k`, `math` alias `MATH`, `ifeval`,
//!   `google_ifeval`), custom ones registered
//!   beside them, dataset names remapped to verifiers.
//! - [`PluginVerifier`]: a verifier in any language, as a process speaking JSON lines.
//! - [`WeightedSum`]: several verifiers scoring one response, their scores weighted and summed.
//! - [`reward`]: how a response's reward is composed (Tülu 3's verified reward and non-stop
//!   penalty, a reward model's score, a format reward, length penalties).

mod google_ifeval;
mod gsm8k;
mod ifeval;
mod language;
mod latex;
mod math;
mod math_equiv;
mod math_eval;
mod math_expr;
mod math_normalize;
mod number;
mod plugin;
mod punkt;
mod registry;
pub mod reward;
mod sum;
mod surd;
mod text;

pub use google_ifeval::{Following, GoogleIfEval, IfEvalPrompt, INSTRUCTION_IDS};
pub use gsm8k::Gsm8k;
pub use ifeval::{Constraint, IfEval};
pub use math::Math;
pub use plugin::PluginVerifier;
pub use registry::Registry;
pub use rlvr_core::{Verdict, VerdictPart};
pub use sum::WeightedSum;

/// Which rules a verifier follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Correct checking (negative numbers, thousands separators, `18.0` = `18`, units, ...).
    #[default]
    Default,
    /// The Tülu 3 release's rules, defects included, for reproducing its runs.
    Tulu3,
}

/// A ground truth parsed when the data loads.
#[derive(Debug, Clone, PartialEq)]
pub enum Truth {
    /// The label as given (Tülu 3 mode compares strings).
    Text(String),
    /// An exact number.
    Number(number::Rational),
    /// An instruction-following constraint.
    Constraint(Box<ifeval::Constraint>),
    /// An IFEval benchmark prompt's instructions.
    Instructions(Box<google_ifeval::IfEvalPrompt>),
    /// A MATH answer: the label and its normalised form.
    Math {
        /// The label as given.
        raw: String,
        /// `strip_string` of the label.
        normalized: String,
    },
    /// A weighted sum's labels: the same ground truth parsed by each of its verifiers, in order.
    Parts(Vec<Truth>),
}

/// A malformed ground truth.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ground truth {truth:?}: {message}")]
pub struct TruthError {
    /// The label.
    pub truth: String,
    /// What is wrong with it.
    pub message: String,
}

/// A checker of one family of answers.
pub trait Verifier: Send + Sync {
    /// Registry name.
    fn name(&self) -> &str;

    /// Parse a label once, when the data loads.
    fn parse_truth(&self, raw: &str) -> Result<Truth, TruthError>;

    /// Judge `response` against a parsed label.
    fn verify(&self, response: &str, truth: &Truth) -> Verdict;

    /// What a reward needs: [`Verifier::verify`]'s score and `verified`, the reason possibly
    /// left empty. Verifiers whose reasons take time to write override it (the Tülu IF
    /// functions: about a fifth of their time); the default is `verify`.
    fn verify_score(&self, response: &str, truth: &Truth) -> Verdict {
        self.verify(response, truth)
    }
}

/// A verdict.
pub(crate) fn verdict(verified: bool, reason: impl Into<String>) -> Verdict {
    Verdict::new(if verified { 1.0 } else { 0.0 }, verified, reason)
}

/// Tülu 3 scored only the text after the last `<|assistant|>\n`.
pub(crate) fn tulu3_response(response: &str) -> &str {
    const MARKER: &[u8] = b"<|assistant|>\n";
    /// Where the marker's second `|` sits in it.
    const BAR: usize = 11;
    // A vectorised scan for `|`, which answers seldom contain (GSM8K's `<<4*2=8>>` make `<` a
    // poor key), each hit checked for the whole marker. On rows of a check that reads little
    // else (`validate_no_commas`) this ran 3x the rows per second of a prepared substring
    // search for the marker.
    let bytes = response.as_bytes();
    let mut last = None;
    for start in memchr::memchr_iter(b'|', bytes).filter_map(|bar| bar.checked_sub(BAR)) {
        if bytes[start..].starts_with(MARKER) {
            last = Some(start);
        }
    }
    // The marker is ASCII, so the cut after it is a character boundary.
    last.map_or(response, |start| &response[start + MARKER.len()..])
}

/// Errors of the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifierError {
    /// No verifier of that name; lists the known ones.
    #[error("unknown verifier `{name}`; known verifiers: {}", known.join(", "))]
    Unknown {
        /// The name asked for.
        name: String,
        /// Every registered name.
        known: Vec<String>,
    },
    /// A label that does not parse.
    #[error(transparent)]
    Truth(#[from] TruthError),
}

#[cfg(test)]
mod tests {
    #[test]
    fn tulu3_response_is_the_text_after_the_last_marker() {
        use super::tulu3_response as r;
        assert_eq!(r("a <b> <|assistant|>\nx <|assistant|>\ny < z"), "y < z");
        assert_eq!(r("<|assistant|>\n"), "");
        assert_eq!(
            r("no marker <|assistant|> here <"),
            "no marker <|assistant|> here <"
        );
    }

    proptest::proptest! {
        #[test]
        fn tulu3_response_is_what_rfind_finds(text in "(<\\|assistant\\|>\n|[<|a>\n x])*") {
            const MARKER: &str = "<|assistant|>\n";
            let want = text.rfind(MARKER).map_or(text.as_str(), |i| &text[i + MARKER.len()..]);
            proptest::prop_assert_eq!(super::tulu3_response(&text), want);
        }
    }
}
