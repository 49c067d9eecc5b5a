//! MATH: the final answer of a LaTeX solution against the label.
//!
//! Both modes extract candidates as open-instruct's `verify_math_sample` did: the last
//! `\boxed{}`/`\fbox{}`; Minerva's "Final Answer: The final answer is X. I hope it is correct."
//! line; else the text between the last two `$`; else the whole response.
//!
//! **Tülu 3 mode** then compares each candidate with Hendrycks' `strip_string` rules. The release
//! also tried a sympy equivalence (`is_equiv`); there is no sympy here, so that half is not
//! reproduced: a candidate sympy would have accepted but the string rules reject fails in this
//! mode.
//!
//! **Default mode** is correct where the string rules are not: after normalising (spacing,
//! `\left`/`\right`, `\dfrac`, `^\circ`, `\%`, `\text{}` units, `x = ...`), answers are equal
//! when their strings agree, when both are exact and agree — rationals (`0.5`, `\frac{1}{2}`,
//! `1/2`, `50\%` against `50`, `2\frac{1}{3}`, `1.5\times10^{3}`) and sums of square roots in
//! canonical form (`\frac{\sqrt{3}}{2}` equals `\frac12\sqrt3`, `\frac{1}{1+\sqrt2}` equals
//! `\sqrt2-1`; see `surd.rs`) — or, when either side is not exact (`\pi`, cube roots, nested
//! radicals), when both evaluate to the same real number within 1e-9 relative. An exact answer
//! never equals a decimal approximation of it (`1.4142` is not `\sqrt{2}`). Tuples and intervals compare element by element with their brackets, sets
//! (`\{...\}` or bare comma lists) as unordered collections, matrices (`pmatrix`, `bmatrix`)
//! entry by entry, and multiple-choice letters (`(B)`, `\text{B}`) by letter.
//!
//! Not handled: symbolic expressions with variables that are equal only after algebra
//! (`2(x+1)` against `2x+2`), inequalities, equations with several variables, and base
//! subscripts beyond string equality.

use crate::math_eval::{Eval, Value};
use crate::math_normalize::{
    get_unnormalized_answer, hendrycks_is_equiv, last_boxed_only_string, normalize_final_answer,
    remove_boxed, strip_string,
};
use crate::{tulu3_response, verdict, Mode, Truth, TruthError, Verdict, Verifier};

/// The MATH verifier.
#[derive(Debug, Clone, Copy)]
pub struct Math {
    mode: Mode,
}

impl Math {
    /// A MATH verifier following `mode`.
    pub fn new(mode: Mode) -> Self {
        Self { mode }
    }
}

/// Candidate answers in the order open-instruct tried them.
fn candidates(response: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(inner) = last_boxed_only_string(response).and_then(remove_boxed) {
        out.push(inner.to_string());
    }
    if let Some(minerva) = get_unnormalized_answer(response) {
        out.push(normalize_final_answer(&minerva));
    }
    if out.is_empty() {
        let dollars: Vec<usize> = response.match_indices('$').map(|(i, _)| i).collect();
        if let [.., a, b] = dollars.as_slice() {
            out.push(normalize_final_answer(&response[a + 1..*b]));
        }
    }
    if out.is_empty() {
        out.push(normalize_final_answer(response));
    }
    out
}

impl Verifier for Math {
    fn name(&self) -> &str {
        "math"
    }

    fn parse_truth(&self, raw: &str) -> Result<Truth, TruthError> {
        if raw.trim().is_empty() {
            return Err(TruthError {
                truth: raw.to_string(),
                message: "empty answer".into(),
            });
        }
        Ok(Truth::Math {
            raw: raw.to_string(),
            normalized: strip_string(raw).unwrap_or_else(|| raw.to_string()),
        })
    }

    fn verify(&self, response: &str, truth: &Truth) -> Verdict {
        let Truth::Math { raw, .. } = truth else {
            return verdict(false, format!("math cannot use ground truth {truth:?}"));
        };
        let response = match self.mode {
            Mode::Tulu3 => tulu3_response(response),
            Mode::Default => response,
        };
        let found = candidates(response);
        for c in &found {
            let ok = match self.mode {
                Mode::Tulu3 => hendrycks_is_equiv(c, raw),
                Mode::Default => equivalent(c, raw),
            };
            if ok {
                return verdict(true, format!("{c:?} matches {raw:?}"));
            }
        }
        verdict(false, format!("candidates {found:?} do not match {raw:?}"))
    }
}

/// Most nesting followed before giving up (pathological input stays bounded).
pub(crate) const MAX_DEPTH: usize = 64;
/// Most elements of a set compared pairwise.
const MAX_ELEMENTS: usize = 256;

/// Normalise an answer for comparison.
fn clean(s: &str) -> String {
    // Row breaks `\\` are kept apart from the `\ ` spacing command.
    let mut s = s.trim().trim_end_matches('.').replace("\\\\", "\u{1}");
    for (from, to) in [
        ("\\left", ""),
        ("\\right", ""),
        ("\\!", ""),
        ("\\,", ""),
        ("\\;", ""),
        ("\\:", ""),
        ("\\ ", ""),
        ("\\displaystyle", ""),
        ("dfrac", "frac"),
        ("tfrac", "frac"),
        ("^{\\circ}", ""),
        ("^\\circ", ""),
        ("\\%", ""),
        ("%", ""),
        ("\\$", ""),
        ("$", ""),
        ("\\cdot", "*"),
        ("\\times", "*"),
        ("\\infty", "∞"),
        ("\\mathrm", "\\text"),
        ("\\textbf", "\\text"),
        ("\\mbox", "\\text"),
        ("\n", ""),
        (" ", ""),
    ] {
        s = s.replace(from, to);
    }
    let s = s.replace('\u{1}', "\\\\");
    // `\text{...}`: a lone one is the answer (a letter, a word); next to a number, a unit.
    if let Some(inner) = s.strip_prefix("\\text{").and_then(|r| r.strip_suffix('}')) {
        if !inner.contains('{') {
            return inner.to_string();
        }
    }
    let mut s = s;
    while let Some(start) = s.find("\\text{") {
        let end = s[start..].find('}').map_or(s.len(), |e| start + e + 1);
        s.replace_range(start..end, "");
    }
    // `x = 5`, `k=-2`: the value (a short left side only, like the reference).
    if let Some((lhs, rhs)) = s.split_once('=') {
        if lhs.chars().count() <= 2 && !rhs.contains('=') {
            s = rhs.to_string();
        }
    }
    s
}

/// Split at top-level commas (outside any brackets).
fn split_top(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            c if c == sep && depth == 0 => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// `(B)`, `B`, `\text{(B)}` → `B`.
fn choice_letter(s: &str) -> Option<char> {
    let t = s.trim_start_matches('(').trim_end_matches(')');
    let mut chars = t.chars();
    let c = chars.next()?;
    (chars.next().is_none() && c.is_ascii_uppercase() && c <= 'E').then_some(c)
}

fn matrix_rows(s: &str) -> Option<Vec<Vec<String>>> {
    for env in ["pmatrix", "bmatrix"] {
        let begin = format!("\\begin{{{env}}}");
        let end = format!("\\end{{{env}}}");
        if let Some(body) = s
            .strip_prefix(begin.as_str())
            .and_then(|r| r.strip_suffix(end.as_str()))
        {
            return Some(
                body.split("\\\\")
                    .filter(|r| !r.is_empty())
                    .map(|r| r.split('&').map(str::to_string).collect())
                    .collect(),
            );
        }
    }
    None
}

/// Whether two answers are the same, recursively through tuples, sets and matrices.
pub(crate) fn equivalent(a: &str, b: &str) -> bool {
    equivalent_at(&clean(a), &clean(b), 0)
}

fn equivalent_at(a: &str, b: &str, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    if a == b {
        return true;
    }
    if let (Some(x), Some(y)) = (choice_letter(a), choice_letter(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (matrix_rows(a), matrix_rows(b)) {
        return x.len() == y.len()
            && x.iter().zip(&y).all(|(r, s)| {
                r.len() == s.len()
                    && r.iter()
                        .zip(s)
                        .all(|(p, q)| equivalent_at(&clean(p), &clean(q), depth + 1))
            });
    }
    // Sets: `\{1,2\}` or bare comma lists, unordered.
    let set = |s: &str| -> Option<Vec<String>> {
        let inner = s.strip_prefix("\\{").and_then(|r| r.strip_suffix("\\}"));
        let body = inner.unwrap_or(s);
        let parts = split_top(body, ',');
        (inner.is_some() || (parts.len() > 1 && !s.starts_with(['(', '['])))
            .then(|| parts.iter().map(|p| clean(p)).collect())
    };
    if let (Some(x), Some(y)) = (set(a), set(b)) {
        // Pairwise matching is quadratic: beyond MAX_ELEMENTS only exact strings count.
        return x.len() == y.len()
            && x.len() <= MAX_ELEMENTS
            && x.iter().all(|p| y.iter().any(|q| equivalent_at(p, q, depth + 1)));
    }
    // Tuples and intervals, brackets included; unions of intervals in order.
    let bracketed = |s: &str| -> Option<(char, Vec<String>, char)> {
        let open = s.chars().next().filter(|c| matches!(c, '(' | '['))?;
        let close = s.chars().last().filter(|c| matches!(c, ')' | ']'))?;
        let body = &s[1..s.len() - 1];
        let parts = split_top(body, ',');
        (parts.len() > 1).then(|| (open, parts.iter().map(|p| clean(p)).collect(), close))
    };
    if a.contains("\\cup") || b.contains("\\cup") {
        let (x, y): (Vec<&str>, Vec<&str>) = (a.split("\\cup").collect(), b.split("\\cup").collect());
        return x.len() == y.len() && x.iter().zip(&y).all(|(p, q)| equivalent_at(p, q, depth + 1));
    }
    if let (Some((o1, x, c1)), Some((o2, y, c2))) = (bracketed(a), bracketed(b)) {
        return o1 == o2
            && c1 == c2
            && x.len() == y.len()
            && x.iter().zip(&y).all(|(p, q)| equivalent_at(p, q, depth + 1));
    }
    if let (Some(x), Some(y)) = (strip_string(a), strip_string(b)) {
        if x == y {
            return true;
        }
    }
    match (Eval::value(a), Eval::value(b)) {
        (Some(Value::Exact(x)), Some(Value::Exact(y))) => x == y,
        (Some(x), Some(y)) => {
            let (x, y) = (x.to_f64(), y.to_f64());
            x.is_finite() && y.is_finite() && (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(mode: Mode, response: &str, truth: &str) -> bool {
        let v = Math::new(mode);
        v.verify(response, &v.parse_truth(truth).unwrap()).verified
    }

    #[test]
    fn default_mode_equivalences() {
        for (answer, label) in [
            ("0.5", "\\frac{1}{2}"),
            ("\\dfrac{1}{2}", "\\frac12"),
            ("1/2", "\\frac{1}{2}"),
            ("50\\%", "50"),
            ("2\\frac{1}{3}", "\\frac{7}{3}"),
            ("1.5\\times10^{3}", "1500"),
            ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}"),
            ("2\\pi", "\\pi\\cdot2"),
            ("\\sqrt{16}", "4"),
            ("x = -3", "-3"),
            ("10\\text{ cm}", "10"),
            ("90^\\circ", "90"),
            ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
            ("[2,5)", "[2, 5)"),
            ("\\{3, 1, 2\\}", "\\{1,2,3\\}"),
            ("2, -1", "-1, 2"),
            ("(-\\infty, 0) \\cup (1, \\infty)", "(-\\infty,0)\\cup(1,\\infty)"),
            (
                "\\begin{pmatrix} 1 \\\\ 0.5 \\end{pmatrix}",
                "\\begin{pmatrix}1\\\\\\frac{1}{2}\\end{pmatrix}",
            ),
            ("\\text{(B)}", "B"),
            ("1,000", "1000"),
            ("-\\frac{1}{2}", "-0.5"),
            ("\\frac{1}{1+\\sqrt{2}}", "\\sqrt{2}-1"),
            ("\\frac{\\sqrt{6}}{\\sqrt{3}}", "\\sqrt2"),
            ("2^{1/2}", "\\sqrt{2}"),
            ("\\sqrt{8}+\\sqrt{18}", "5\\sqrt{2}"),
            ("(\\sqrt{2}+\\sqrt{3})^2", "5+2\\sqrt{6}"),
            ("\\sqrt[3]{8}", "2"),
            ("\\frac{\\pi}{\\sqrt{2}}", "\\frac{\\sqrt{2}\\pi}{2}"),
        ] {
            assert!(equivalent(answer, label), "{answer} vs {label}");
        }
        for (answer, label) in [
            ("[2,5]", "[2,5)"),
            ("(1,2)", "(2,1)"),
            ("\\frac{1}{3}", "0.33"),
            ("x+1", "x+2"),
            ("(A)", "B"),
            // Within 1e-21 of each other: only exact arithmetic tells them apart.
            ("\\sqrt{10000000001}", "100000+\\frac{1}{200000}"),
            ("\\sqrt{2}", "1.41421356237309505"),
        ] {
            assert!(!equivalent(answer, label), "{answer} vs {label}");
        }
    }

    #[test]
    fn extraction_and_modes() {
        let r = "So the area is $\\boxed{\\dfrac{1}{2}}$.";
        assert!(check(Mode::Tulu3, r, "\\frac{1}{2}"));
        assert!(check(Mode::Default, r, "0.5"));
        assert!(check(
            Mode::Tulu3,
            "Final Answer: The final answer is $7$. I hope it is correct.",
            "7"
        ));
        assert!(check(Mode::Default, "We get $x = 3$ and then $x^2 = 9$", "9"));
        // The string rules cannot see that these are equal; default mode can.
        assert!(!check(
            Mode::Tulu3,
            "\\boxed{\\frac{\\sqrt{3}}{2}}",
            "\\frac{1}{2}\\sqrt{3}"
        ));
        assert!(check(
            Mode::Default,
            "\\boxed{\\frac{\\sqrt{3}}{2}}",
            "\\frac{1}{2}\\sqrt{3}"
        ));
        assert!(!check(Mode::Default, "no answer here", "5"));
    }

    #[test]
    fn pathological_input_stays_bounded() {
        let deep = format!("\\boxed{{{}1{}}}", "{".repeat(5000), "}".repeat(5000));
        assert!(!check(Mode::Default, &deep, "2"));
        let fracs = "\\frac{".repeat(3000);
        assert!(!equivalent(&fracs, "1"));
        assert!(!equivalent("\\sqrt", "1"));
        assert!(!equivalent("2^{99999999}", "3"));
    }
}
