//! The string rules of the MATH answer checkers Tülu 3 used, ported line by line: Hendrycks et
//! al.'s `last_boxed_only_string`, `remove_boxed` and `strip_string`, and Minerva's (Lewkowycz et
//! al.) `get_unnormalized_answer` and `normalize_final_answer`. Where the Python raises (and its
//! caller then falls back to comparing raw strings), these return `None`.

use std::sync::LazyLock;

use regex::Regex;

/// The last `\boxed{...}` (or `\fbox{...}`) with balanced braces, markers included — or, as the
/// release's version first checks, when the text holds `\boxed ` (with a space), `\boxed ` and
/// what follows its last occurrence up to the next `$`.
pub fn last_boxed_only_string(s: &str) -> Option<std::borrow::Cow<'_, str>> {
    if let Some((_, after)) = s.rsplit_once("\\boxed ") {
        let inner = after.split('$').next().unwrap_or_default();
        return Some(format!("\\boxed {inner}").into());
    }
    let idx = s.rfind("\\boxed").or_else(|| s.rfind("\\fbox"))?;
    let end = closing_brace(&s[idx..], 0)?;
    Some(s[idx..idx + end + 1].into())
}

/// The byte index of the `}` that closes `s`, counting `open` braces already open before it
/// (the first `}` that brings the count to zero).
pub(crate) fn closing_brace(s: &str, open: i64) -> Option<usize> {
    let mut open = open;
    for (i, c) in s.char_indices() {
        match c {
            '{' => open += 1,
            '}' => {
                open -= 1;
                if open == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The content of `\boxed{...}` (or `\boxed X`).
pub fn remove_boxed(s: &str) -> Option<&str> {
    if let Some(rest) = s.strip_prefix("\\boxed ") {
        return Some(rest);
    }
    s.strip_prefix("\\boxed{")?.strip_suffix('}')
}

/// Minerva's answer line: the text between "Final Answer: The final answer is" and
/// ". I hope it is correct.", or `None` (Python's `[invalidanswer]`).
pub fn get_unnormalized_answer(text: &str) -> Option<String> {
    static RE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"Final Answer: The final answer is(.*?). I hope it is correct.").expect("valid regex")
    });
    let text = format!("{text}I hope it is correct.");
    RE.captures(&text).map(|c| c[1].trim().to_string())
}

const SUBSTITUTIONS: [(&str, &str); 10] = [
    ("an ", ""),
    ("a ", ""),
    (".$", "$"),
    ("\\$", ""),
    ("\\ ", ""),
    (" ", ""),
    ("mbox", "text"),
    (",\\text{and}", ","),
    ("\\text{and}", ","),
    ("\\text{m}", "\\text{}"),
];

const REMOVED_EXPRESSIONS: [&str; 42] = [
    "square",
    "ways",
    "integers",
    "dollars",
    "mph",
    "inches",
    "ft",
    "hours",
    "km",
    "units",
    "\\ldots",
    "sue",
    "points",
    "feet",
    "minutes",
    "digits",
    "cents",
    "degrees",
    "cm",
    "gm",
    "pounds",
    "meters",
    "meals",
    "edges",
    "students",
    "childrentickets",
    "multiples",
    "\\text{s}",
    "\\text{.}",
    "\\text{\ns}",
    "\\text{}^2",
    "\\text{}^3",
    "\\text{\n}",
    "\\text{}",
    "\\mathrm{th}",
    "^\\circ",
    "^{\\circ}",
    "\\;",
    ",\\!",
    "{,}",
    "\"",
    "\\dots",
];

/// Minerva's `normalize_final_answer`.
pub fn normalize_final_answer(answer: &str) -> String {
    static DOLLARS: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(.*?)(\$)(.*?)(\$)(.*)").expect("valid regex"));
    static TEXT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(\\text\{)(.*?)(\})").expect("valid regex"));
    static TEXTBF: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(\\textbf\{)(.*?)(\})").expect("valid regex"));
    static OVERLINE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(\\overline\{)(.*?)(\})").expect("valid regex"));
    static BOXED: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(\\boxed\{)(.*)(\})").expect("valid regex"));
    static FRAC: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(frac)([^{])(.)").expect("valid regex"));
    static SQRT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(sqrt)([^{])").expect("valid regex"));

    let mut s = answer.rsplit('=').next().unwrap_or(answer).to_string();
    for (before, after) in SUBSTITUTIONS {
        s = s.replace(before, after);
    }
    for expr in REMOVED_EXPRESSIONS {
        s = s.replace(expr, "");
    }
    s = DOLLARS.replace_all(&s, "$$${3}$$").into_owned();
    s = TEXT.replace_all(&s, "${2}").into_owned();
    s = TEXTBF.replace_all(&s, "${2}").into_owned();
    s = OVERLINE.replace_all(&s, "${2}").into_owned();
    s = BOXED.replace_all(&s, "${2}").into_owned();
    s = FRAC.replace_all(&s, "frac{${2}}{${3}}").into_owned();
    s = SQRT.replace_all(&s, "sqrt{${2}}").into_owned();
    s = s.replace('$', "");
    let no_commas = s.replace(',', "");
    if !no_commas.is_empty() && no_commas.chars().all(char::is_numeric) {
        s = no_commas;
    }
    s
}

fn fix_fracs(s: &str) -> Option<String> {
    let mut parts = s.split("\\frac");
    let mut out = parts.next().unwrap_or_default().to_string();
    for sub in parts {
        out.push_str("\\frac");
        let mut chars = sub.chars();
        let a = chars.next()?; // Python: IndexError on an empty piece
        if a == '{' {
            out.push_str(sub);
            continue;
        }
        let Some(b) = chars.next() else {
            return Some(s.to_string()); // Python: assertion failed, string returned unchanged
        };
        let rest = chars.as_str();
        if b != '{' {
            out.push_str(&format!("{{{a}}}{{{b}}}{rest}"));
        } else {
            out.push_str(&format!("{{{a}}}{b}{rest}"));
        }
    }
    Some(out)
}

/// Python's `int(text)` (sign, ASCII digits, single `_` between digits), as an integer.
fn python_int(text: &str) -> Option<i128> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    let ok = !digits.is_empty()
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__")
        && digits.chars().all(|c| c.is_ascii_digit() || c == '_');
    if !ok {
        return None;
    }
    let n: i128 = digits.replace('_', "").parse().ok()?;
    Some(if text.starts_with('-') { -n } else { n })
}

/// `fix_a_slash_b`: `a/b` of two integers becomes `\frac{a}{b}`. `None` where the Python raises:
/// two pieces of which one is not an integer (`int()` raises `ValueError`, which only the
/// `AssertionError` handler is meant for).
fn fix_a_slash_b(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split('/').collect();
    if let [a, b] = parts.as_slice() {
        let (x, y) = (python_int(a)?, python_int(b)?);
        if s == format!("{x}/{y}") {
            return Some(format!("\\frac{{{x}}}{{{y}}}"));
        }
    }
    Some(s.to_string())
}

fn fix_sqrt(s: &str) -> Option<String> {
    if !s.contains("\\sqrt") {
        return Some(s.to_string());
    }
    let mut parts = s.split("\\sqrt");
    let mut out = parts.next().unwrap_or_default().to_string();
    for sub in parts {
        let first = sub.chars().next()?; // Python: IndexError
        if first != '{' {
            out.push_str(&format!("\\sqrt{{{first}}}{}", &sub[first.len_utf8()..]));
        } else {
            out.push_str("\\sqrt");
            out.push_str(sub);
        }
    }
    Some(out)
}

fn remove_right_units(s: &str) -> Option<String> {
    if s.contains("\\text{ ") {
        let splits: Vec<&str> = s.split("\\text{ ").collect();
        return (splits.len() == 2).then(|| splits[0].to_string()); // Python asserts 2 pieces
    }
    Some(s.to_string())
}

/// Hendrycks' `strip_string`; `None` where the Python raises.
pub fn strip_string(s: &str) -> Option<String> {
    let mut s = s.replace('\n', "").replace("\\!", "").replace("\\\\", "\\");
    s = s.replace("tfrac", "frac").replace("dfrac", "frac");
    s = s.replace("\\left", "").replace("\\right", "");
    s = s.replace("^{\\circ}", "").replace("^\\circ", "");
    s = s.replace("\\$", "");
    s = remove_right_units(&s)?;
    s = s.replace("\\%", "");
    s = s.replace(" .", " 0.").replace("{.", "{0.");
    if s.is_empty() {
        return Some(s);
    }
    if s.starts_with('.') {
        s = format!("0{s}");
    }
    let eq: Vec<&str> = s.split('=').collect();
    if eq.len() == 2 && eq[0].chars().count() <= 2 {
        s = eq[1].to_string();
    }
    s = fix_sqrt(&s)?;
    s = s.replace(' ', "");
    s = fix_fracs(&s)?;
    if s == "0.5" {
        s = "\\frac{1}{2}".to_string();
    }
    fix_a_slash_b(&s)
}

/// Hendrycks' `is_equiv`: equal after `strip_string`, or equal raw strings when stripping fails.
pub fn hendrycks_is_equiv(a: &str, b: &str) -> bool {
    match (strip_string(a), strip_string(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxed_extraction() {
        let s = "so $x = \\boxed{\\frac{1}{2}}$ and not \\boxed{3";
        assert_eq!(
            last_boxed_only_string("a \\boxed{1} b \\boxed{\\frac{2}{3}} c").as_deref(),
            Some("\\boxed{\\frac{2}{3}}")
        );
        assert_eq!(last_boxed_only_string(s), None, "the last box is unbalanced");
        assert_eq!(remove_boxed("\\boxed{\\frac{2}{3}}"), Some("\\frac{2}{3}"));
        assert_eq!(remove_boxed("\\fbox{2}"), None);
        assert_eq!(
            last_boxed_only_string("so $\\boxed 5$. and \\boxed{6}").as_deref(),
            Some("\\boxed 5"),
            "the release looks for `\\boxed ` first"
        );
    }

    #[test]
    fn strip_string_matches_the_reference_rules() {
        assert_eq!(strip_string("\\dfrac{1}{2}").as_deref(), Some("\\frac{1}{2}"));
        assert_eq!(strip_string("0.5").as_deref(), Some("\\frac{1}{2}"));
        assert_eq!(strip_string("\\frac12").as_deref(), Some("\\frac{1}{2}"));
        assert_eq!(strip_string("3/4").as_deref(), Some("\\frac{3}{4}"));
        assert_eq!(strip_string("x = 5").as_deref(), Some("5"));
        assert_eq!(strip_string("\\sqrt3").as_deref(), Some("\\sqrt{3}"));
        assert_eq!(strip_string("90^\\circ").as_deref(), Some("90"));
        assert_eq!(
            strip_string("\\left( 3, \\frac{\\pi}{2} \\right)").as_deref(),
            Some("(3,\\frac{\\pi}{2})")
        );
        assert_eq!(strip_string("10\\text{ cm}").as_deref(), Some("10"));
        assert_eq!(
            strip_string("a\\sqrt").as_deref(),
            None,
            "Python raises IndexError"
        );
        assert!(hendrycks_is_equiv("\\tfrac{1}{2}", "0.5"));
        assert_eq!(strip_string("x/2"), None, "int('x') raises ValueError");
        assert_eq!(
            strip_string("+3/4").as_deref(),
            Some("+3/4"),
            "an assertion, caught"
        );
    }

    #[test]
    fn minerva_normalisation() {
        assert_eq!(normalize_final_answer("x = \\$5.00"), "5.00");
        assert_eq!(normalize_final_answer("10 inches"), "10");
        assert_eq!(normalize_final_answer("\\text{(A)}"), "(A)");
        assert_eq!(normalize_final_answer("1,000"), "1000");
        assert_eq!(normalize_final_answer("\\frac12"), "\\frac{1}{2}");
        assert_eq!(
            get_unnormalized_answer("Final Answer: The final answer is $7$. I hope it is correct.")
                .as_deref(),
            Some("$7$")
        );
        assert_eq!(get_unnormalized_answer("no final line"), None);
    }
}
