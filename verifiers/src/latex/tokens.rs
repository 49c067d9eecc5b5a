//! The LaTeX reader's tokens: digits, letters, commands, operators and relations, lexed as
//! each [`Dialect`] lexes them.

use super::Dialect;

/// One token of LaTeX math.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    /// Digits, maybe with a decimal part (thousands commas removed).
    Num(String),
    Letter(char),
    Cmd(String),
    Op(char),
    Rel,
}

/// The tokens of `s` as `dialect` lexes it; `None` where it does not lex.
pub(super) fn tokenize(s: &str, dialect: Dialect) -> Option<Vec<Tok>> {
    let c: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        match ch {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '0'..='9' | '.' => {
                let start = i;
                let mut text = String::new();
                while i < c.len() && c[i].is_ascii_digit() {
                    text.push(c[i]);
                    i += 1;
                }
                // sympy's NUMBER groups thousands: `1,000`, `12,345.6`.
                if dialect == Dialect::Sympy {
                    while c.get(i) == Some(&',')
                        && c.get(i + 1..i + 4)
                            .is_some_and(|d| d.iter().all(char::is_ascii_digit))
                    {
                        text.extend(&c[i + 1..i + 4]);
                        i += 4;
                    }
                }
                if i < c.len() && c[i] == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit) {
                    text.push('.');
                    i += 1;
                    while i < c.len() && c[i].is_ascii_digit() {
                        text.push(c[i]);
                        i += 1;
                    }
                }
                if text.is_empty() || text == "." || i == start {
                    return None; // a lone `.`
                }
                out.push(Tok::Num(text));
            }
            'a'..='z' | 'A'..='Z' => {
                out.push(Tok::Letter(ch));
                i += 1;
            }
            '\\' => {
                let start = i + 1;
                let mut j = start;
                while j < c.len() && c[j].is_ascii_alphabetic() {
                    j += 1;
                }
                if j == start {
                    // `\,` `\;` `\:` `\!` `\ ` are spacing; `\{` `\}` group; anything else
                    // (`\%`, `\$`) does not lex.
                    match c.get(start) {
                        Some(',' | ';' | ':' | '!' | ' ') => {}
                        Some('{') => out.push(Tok::Op('(')),
                        Some('}') => out.push(Tok::Op(')')),
                        _ => return None,
                    }
                    i = start + 1;
                    continue;
                }
                let name: String = c[start..j].iter().collect();
                i = j;
                match name.as_str() {
                    "left" | "right" | "displaystyle" | "quad" | "qquad" | "big" | "Big" | "bigl"
                    | "bigr" => {}
                    "le" | "leq" | "ge" | "geq" | "lt" | "gt" | "ne" | "neq" | "leqslant" | "geqslant" => {
                        out.push(Tok::Rel)
                    }
                    "cdot" | "times" => out.push(Tok::Op('*')),
                    "div" => out.push(Tok::Op('/')),
                    _ => out.push(Tok::Cmd(name)),
                }
            }
            '+' | '-' | '*' | '/' | '^' | '_' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '!' | ',' => {
                out.push(Tok::Op(ch));
                i += 1;
            }
            '=' | '<' | '>' => {
                out.push(Tok::Rel);
                i += 1;
            }
            _ if dialect == Dialect::Reader => {
                match ch {
                    '−' | '–' => out.push(Tok::Op('-')),
                    '×' | '·' | '⋅' => out.push(Tok::Op('*')),
                    '÷' => out.push(Tok::Op('/')),
                    'π' => out.push(Tok::Cmd("pi".into())),
                    '∞' => out.push(Tok::Cmd("infty".into())),
                    '√' => out.push(Tok::Cmd("sqrt".into())),
                    '≤' | '≥' | '≠' => out.push(Tok::Rel),
                    _ => return None,
                }
                i += 1;
            }
            _ => return None,
        }
    }
    Some(out)
}
