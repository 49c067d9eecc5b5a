//! MATH default mode's comparison of two final answers (see `math.rs` for the whole rule):
//! both sides normalised without damaging LaTeX, then equal when their strings agree or —
//! recursively through tuples, column vectors, intervals and inequalities, sets, `\pm` lists,
//! matrices and multiple-choice letters — when their values agree (`surd.rs` exactly, else
//! `math_expr.rs`'s identity test), bounded in depth and set size.

use std::borrow::Cow;

use crate::latex::{read, Dialect, Reading};
use crate::math_eval::{Eval, Value};
use crate::math_expr::same_value;
use crate::math_normalize::strip_string;

/// Most nesting followed before giving up (pathological input stays bounded).
pub(crate) const MAX_DEPTH: usize = 64;
/// Most elements of a set compared pairwise.
const MAX_ELEMENTS: usize = 256;

/// Unicode as LaTeX: `−` `√` `π` `°` `≈` `∞` `≤` `≥` `×` `·`.
fn unicode_as_latex(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '−' | '–' => out.push('-'),
            '√' => out.push_str("\\sqrt"),
            'π' => out.push_str("\\pi "),
            '°' => out.push_str("^\\circ"),
            '≈' => out.push_str("\\approx "),
            '∞' => out.push_str("\\infty "),
            '≤' => out.push_str("\\le "),
            '≥' => out.push_str("\\ge "),
            '×' | '·' | '⋅' => out.push_str("\\cdot "),
            '\u{a0}' | '\u{2009}' | '\u{202f}' => out.push(' '),
            c => out.push(c),
        }
    }
    out.into()
}

/// Whole words a number may carry as its unit (`18 inches`, `5.4 cents`, `90 degrees`).
fn is_unit_word(w: &str) -> bool {
    w.len() >= 2 && w.chars().all(|c| c.is_ascii_alphabetic()) && !matches!(w, "pi" | "or" | "and")
}

/// Normalise an answer for comparison, keeping its LaTeX intact: spacing and sizing commands,
/// `\displaystyle`, `\dfrac`, degrees, `$`, a leading `x =` or `\approx`, `\text{}` units after a
/// number and plain unit words after one are removed; a lone `\text{word}` is the word.
fn clean(s: &str) -> String {
    let s = unicode_as_latex(s);
    // Row breaks `\\` are kept apart from the `\ ` spacing command.
    let mut s = s.trim().trim_end_matches('.').replace("\\\\", "\u{1}");
    for (from, to) in [
        ("\\left", ""),
        ("\\right", ""),
        ("\\!", ""),
        ("\\,", " "),
        ("\\;", " "),
        ("\\:", " "),
        ("\\ ", " "),
        ("\\displaystyle", ""),
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("^{\\circ}", ""),
        ("^\\circ", ""),
        ("\\circ", ""),
        ("\\$", ""),
        ("$", ""),
        ("\\mathrm", "\\text"),
        ("\\textbf", "\\text"),
        ("\\mbox", "\\text"),
        ("\n", " "),
    ] {
        s = s.replace(from, to);
    }
    let mut s = s.replace('\u{1}', "\\\\").trim().to_string();
    // A lone `\text{...}` is the answer (a word, a letter): compared without case.
    if let Some(inner) = s.strip_prefix("\\text{").and_then(|r| r.strip_suffix('}')) {
        if !inner.contains('{') {
            return inner.trim().to_lowercase();
        }
    }
    // `\text{ units}` after a number.
    while let Some(start) = s.find("\\text{") {
        let end = s[start..].find('}').map_or(s.len(), |e| start + e + 1);
        s.replace_range(start..end, " ");
    }
    // `x = 5`, `x_1 = 4`, `k=-2`, `\approx 3`: the value (a short left side only).
    let s = s.trim().to_string();
    let s = match s.split_once("\\approx") {
        Some((lhs, rhs)) if lhs.trim().chars().count() <= 6 => rhs.trim().to_string(),
        _ => s,
    };
    let mut s = match s.split_once('=') {
        Some((lhs, rhs))
            if !rhs.contains('=')
                && !lhs.contains(['<', '>'])
                && !lhs.contains("\\le")
                && !lhs.contains("\\ge")
                && is_short_name(lhs.trim()) =>
        {
            rhs.trim().to_string()
        }
        _ => s,
    };
    // A trailing unit word after a number: `18 inches`, `5 cm`.
    if let Some((head, last)) = s.trim_end().rsplit_once(' ') {
        let head_t = head.trim_end();
        if is_unit_word(last) && head_t.ends_with(|c: char| c.is_ascii_digit() || c == '}') {
            s = head_t.to_string();
        }
    }
    s.trim().to_string()
}

/// A variable name: a letter or Greek command, optionally subscripted (`x`, `x_1`, `a_{n}`).
fn is_short_name(lhs: &str) -> bool {
    let base = lhs.split('_').next().unwrap_or(lhs);
    let ok_base = base.chars().count() == 1 && base.chars().all(|c| c.is_alphabetic())
        || (base.starts_with('\\') && base[1..].chars().all(|c| c.is_ascii_alphabetic()));
    ok_base && lhs.chars().count() <= 8
}

/// Split at top-level `sep` (outside any brackets).
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
    let c = chars.next()?.to_ascii_uppercase();
    (chars.next().is_none() && ('A'..='E').contains(&c)).then_some(c)
}

/// The rows of a `pmatrix`/`bmatrix`, or of a tuple written as a column vector's entries.
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
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(|r| r.split('&').map(|x| x.trim().to_string()).collect())
                    .collect(),
            );
        }
    }
    None
}

/// An interval from an inequality in one variable: `2 \le x < 5` → `[2,5)`, `x \ge 3` →
/// `[3,\infty)`, `x < -1` → `(-\infty,-1)`.
fn inequality_interval(s: &str) -> Option<String> {
    let t = s
        .replace("\\leq", "\\le")
        .replace("\\geq", "\\ge")
        .replace("<=", "\\le")
        .replace(">=", "\\ge");
    let mut parts = Vec::new();
    let mut rest = t.as_str();
    loop {
        let next = ["\\le", "\\ge", "<", ">"]
            .iter()
            .filter_map(|op| rest.find(op).map(|i| (i, *op)))
            .min_by_key(|(i, _)| *i);
        match next {
            Some((i, op)) => {
                parts.push(rest[..i].trim().to_string());
                parts.push(op.to_string());
                rest = &rest[i + op.len()..];
            }
            None => {
                parts.push(rest.trim().to_string());
                break;
            }
        }
    }
    let var = |p: &str| p.chars().count() == 1 && p.chars().all(char::is_alphabetic);
    let closed = |op: &str| op == "\\le" || op == "\\ge";
    match parts.as_slice() {
        [a, op1, x, op2, b]
            if var(x)
                && matches!(op1.as_str(), "<" | "\\le")
                && op1.len() + op2.len() > 0
                && matches!(op2.as_str(), "<" | "\\le") =>
        {
            Some(format!(
                "{}{a},{b}{}",
                if closed(op1) { '[' } else { '(' },
                if closed(op2) { ']' } else { ')' }
            ))
        }
        [x, op, b] if var(x) => Some(match op.as_str() {
            "\\ge" => format!("[{b},\\infty)"),
            ">" => format!("({b},\\infty)"),
            "\\le" => format!("(-\\infty,{b}]"),
            _ => format!("(-\\infty,{b})"),
        }),
        [b, op, x] if var(x) => Some(match op.as_str() {
            "\\le" => format!("[{b},\\infty)"),
            "<" => format!("({b},\\infty)"),
            "\\ge" => format!("(-\\infty,{b}]"),
            _ => format!("(-\\infty,{b})"),
        }),
        _ => None,
    }
}

/// `a \pm b` → the list `a+b, a-b`.
fn plus_minus(s: &str) -> Option<String> {
    let (a, b) = s.split_once("\\pm")?;
    (!b.contains("\\pm")).then(|| format!("{a}+{b},{a}-{b}"))
}

/// Whether two answers are the same (see the module overview).
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
    // Words compare without case (`East`, `east`); single letters keep theirs (variables).
    let letters = a.chars().filter(|c| c.is_alphabetic()).count();
    if !a.contains('\\') && letters > 1 && a.eq_ignore_ascii_case(b) {
        return true;
    }
    if let (Some(x), Some(y)) = (choice_letter(a), choice_letter(b)) {
        return x == y;
    }
    let recurse = |p: &str, q: &str| equivalent_at(&clean(p), &clean(q), depth + 1);
    // `a \pm b` is the list of its two values; an inequality is its interval.
    if let Some(x) = plus_minus(a) {
        return recurse(&x, b);
    }
    if let Some(y) = plus_minus(b) {
        return recurse(a, &y);
    }
    if let Some(x) = inequality_interval(a) {
        if inequality_interval(b).is_none() {
            return recurse(&x, b);
        }
    }
    if let Some(y) = inequality_interval(b) {
        if inequality_interval(a).is_none() {
            return recurse(a, &y);
        }
    }
    // Matrices entry by entry; a column vector equals the tuple of its entries.
    match (matrix_rows(a), matrix_rows(b)) {
        (Some(x), Some(y)) => {
            return x.len() == y.len()
                && x.iter()
                    .zip(&y)
                    .all(|(r, s)| r.len() == s.len() && r.iter().zip(s).all(|(p, q)| recurse(p, q)));
        }
        (Some(x), None) if x.iter().all(|r| r.len() == 1) => {
            return recurse(
                &format!(
                    "({})",
                    x.iter().map(|r| r[0].clone()).collect::<Vec<_>>().join(",")
                ),
                b,
            );
        }
        (None, Some(y)) if y.iter().all(|r| r.len() == 1) => {
            return recurse(
                a,
                &format!(
                    "({})",
                    y.iter().map(|r| r[0].clone()).collect::<Vec<_>>().join(",")
                ),
            );
        }
        _ => {}
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
        return x.len() == y.len() && x.iter().zip(&y).all(|(p, q)| recurse(p, q));
    }
    if let (Some((o1, x, c1)), Some((o2, y, c2))) = (bracketed(a), bracketed(b)) {
        return o1 == o2
            && c1 == c2
            && x.len() == y.len()
            && x.iter().zip(&y).all(|(p, q)| equivalent_at(p, q, depth + 1));
    }
    // A percent is its number or its hundredth.
    for (p, q) in [(a, b), (b, a)] {
        if let Some(number) = p.strip_suffix("\\%").or_else(|| p.strip_suffix('%')) {
            return recurse(number, q) || recurse(&format!("\\frac{{{number}}}{{100}}"), q);
        }
    }
    // A base subscript may be left off: `1011_2` is `1011`.
    let unbased = |s: &str| -> Option<String> {
        let (digits, base) = s.split_once('_')?;
        let base = base.trim_start_matches('{').trim_end_matches('}');
        (digits.chars().all(|c| c.is_ascii_alphanumeric())
            && base.chars().all(|c| c.is_ascii_digit())
            && !base.is_empty())
        .then(|| digits.to_string())
    };
    match (unbased(a), unbased(b)) {
        (Some(x), Some(y)) => {
            return x == y
                && a.split('_').nth(1).map(|s| s.trim_matches(['{', '}']))
                    == b.split('_').nth(1).map(|s| s.trim_matches(['{', '}']));
        }
        (Some(x), None) => return x == b,
        (None, Some(y)) => return a == y,
        _ => {}
    }
    if let (Some(x), Some(y)) = (strip_string(a), strip_string(b)) {
        if x == y && !x.is_empty() {
            return true;
        }
    }
    let (na, nb) = (a.replace(' ', ""), b.replace(' ', ""));
    match (Eval::value(&na), Eval::value(&nb)) {
        (Some(Value::Exact(x)), Some(Value::Exact(y))) => return x == y,
        (Some(x), Some(y)) => {
            let (x, y) = (x.to_f64(), y.to_f64());
            if x.is_finite() && y.is_finite() && (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0) {
                return true;
            }
        }
        _ => {}
    }
    match (read(a, Dialect::Reader), read(b, Dialect::Reader)) {
        (Some(Reading::Expr(x)), Some(Reading::Expr(y))) => same_value(&x, &y),
        _ => false,
    }
}
