//! LaTeX math read into [`Expr`], in two dialects:
//!
//! - [`Dialect::Sympy`] reads as sympy 1.12's `parse_latex` (antlr4 4.11) does, which the Tülu 3
//!   release's `is_equiv` called: every letter, `e`, `i` and `\pi` included, is a free symbol, as is
//!   any unknown command (`\text`, `\boxed`, `\pm`, `\circ`); a letter before `(` is a function
//!   applied; implicit products bind tighter than `/`; numbers may group thousands with commas
//!   (`1,000`); `\frac12` takes single digits; a relation (`=`, `<`, `\le`) cannot be subtracted;
//!   non-ASCII text or an unknown escape (`\%`, `\$`) does not lex; and at the top level the
//!   longest readable prefix is the answer — `3\sqrt2` reads as `3`, `1011_2` as `1011`,
//!   `1,2` as `1` — while inside brackets anything unreadable fails.
//! - [`Dialect::Reader`] reads answers as a mathematician would: `e`, `i` and `\pi` are the
//!   constants, Unicode `−`, `×`, `·`, `√`, `π`, `∞` are understood, `\sqrt2` is √2, a letter
//!   before `(` multiplies, and anything unreadable anywhere is no expression.

use crate::math_expr::{Expr, Func};
use crate::number::Rational;

mod tokens;

use tokens::{tokenize, Tok};

/// How to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// sympy 1.12's `parse_latex`, quirks included.
    Sympy,
    /// Answers as written by people and models.
    Reader,
}

/// What a reading gives.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reading {
    /// An expression.
    Expr(Expr),
    /// A relation (`x = 5`, `x < 3`): sympy cannot subtract one.
    Relation,
}

/// Nesting followed before giving up.
const MAX_DEPTH: usize = 100;

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    dialect: Dialect,
    depth: usize,
}

/// Read `s` in `dialect`; `None` when it does not read.
pub(crate) fn read(s: &str, dialect: Dialect) -> Option<Reading> {
    let toks = tokenize(s, dialect)?;
    if toks.is_empty() {
        return None;
    }
    let mut p = Parser {
        toks,
        pos: 0,
        dialect,
        depth: 0,
    };
    let first = p.expr()?;
    if p.peek() == Some(&Tok::Rel) {
        p.pos += 1;
        // A relation reads when its other side does (sympy); the reader has no use for one.
        return match dialect {
            Dialect::Sympy => p.expr().map(|_| Reading::Relation),
            Dialect::Reader => None,
        };
    }
    if p.pos < p.toks.len() && dialect == Dialect::Reader {
        return None;
    }
    Some(Reading::Expr(first))
}

fn num(text: &str) -> Option<Expr> {
    Rational::parse_decimal(text).map(Expr::Num)
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn eat_op(&mut self, op: char) -> bool {
        if self.peek() == Some(&Tok::Op(op)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// `additive`: terms joined by `+` and `-`.
    fn expr(&mut self) -> Option<Expr> {
        self.enter()?;
        let mut terms = vec![self.term()?];
        loop {
            let save = self.pos;
            if self.eat_op('+') {
                match self.term() {
                    Some(t) => terms.push(t),
                    None => {
                        self.pos = save;
                        break;
                    }
                }
            } else if self.eat_op('-') {
                match self.term() {
                    Some(t) => terms.push(Expr::Neg(Box::new(t))),
                    None => {
                        self.pos = save;
                        break;
                    }
                }
            } else {
                break;
            }
        }
        self.depth -= 1;
        Some(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Expr::Add(terms)
        })
    }

    /// `mp`: factors joined by `*` and `/` (explicit operators).
    fn term(&mut self) -> Option<Expr> {
        let mut v = self.unary()?;
        loop {
            let save = self.pos;
            if self.eat_op('*') {
                match self.unary() {
                    Some(u) => v = Expr::Mul(vec![v, u]),
                    None => {
                        self.pos = save;
                        break;
                    }
                }
            } else if self.eat_op('/') {
                match self.unary() {
                    Some(u) => v = Expr::Div(Box::new(v), Box::new(u)),
                    None => {
                        self.pos = save;
                        break;
                    }
                }
            } else {
                break;
            }
        }
        Some(v)
    }

    /// `unary`: signs, then one or more postfix expressions multiplied (implicit products).
    fn unary(&mut self) -> Option<Expr> {
        self.enter()?;
        let v = if self.eat_op('-') {
            Expr::Neg(Box::new(self.unary()?))
        } else if self.eat_op('+') {
            self.unary()?
        } else {
            let mut factors = vec![self.postfix()?];
            loop {
                let save = self.pos;
                if !self.starts_factor() {
                    break;
                }
                match self.postfix() {
                    Some(f) => factors.push(f),
                    None => {
                        self.pos = save;
                        break;
                    }
                }
            }
            if factors.len() == 1 {
                factors.remove(0)
            } else {
                Expr::Mul(factors)
            }
        };
        self.depth -= 1;
        Some(v)
    }

    fn starts_factor(&self) -> bool {
        match self.peek() {
            Some(Tok::Num(_) | Tok::Letter(_) | Tok::Cmd(_)) => true,
            Some(Tok::Op(c)) => matches!(c, '(' | '[' | '{' | '|'),
            _ => false,
        }
    }

    /// `postfix`: a power chain, then factorials.
    fn postfix(&mut self) -> Option<Expr> {
        let mut v = self.power()?;
        while self.eat_op('!') {
            v = Expr::Call(Func::Factorial, vec![v]);
        }
        Some(v)
    }

    fn power(&mut self) -> Option<Expr> {
        self.enter()?;
        let mut base = self.comp()?;
        loop {
            let save = self.pos;
            if !self.eat_op('^') {
                break;
            }
            match self.exponent() {
                Some(e) => base = Expr::Pow(Box::new(base), Box::new(e)),
                None => {
                    self.pos = save;
                    break;
                }
            }
        }
        self.depth -= 1;
        Some(base)
    }

    /// After `^`: a braced expression, or one atom (a number, a letter, a command).
    fn exponent(&mut self) -> Option<Expr> {
        if self.peek() == Some(&Tok::Op('{')) {
            return self.group();
        }
        if self.dialect == Dialect::Reader && self.eat_op('-') {
            return Some(Expr::Neg(Box::new(self.exponent()?)));
        }
        match self.peek()?.clone() {
            Tok::Num(t) if self.dialect == Dialect::Reader && t.len() > 1 && !t.contains('.') => {
                // `x^23` is x²·3 to a reader? No: LaTeX takes one digit. Keep the first.
                self.split_num(1).and_then(|d| num(&d))
            }
            Tok::Num(t) => {
                self.pos += 1;
                num(&t)
            }
            Tok::Letter(l) => {
                self.pos += 1;
                Some(self.letter(l))
            }
            Tok::Cmd(_) => self.comp(),
            _ => None,
        }
    }

    /// Take the first `k` characters of the number token at the cursor (leaving the rest).
    fn split_num(&mut self, k: usize) -> Option<String> {
        let Some(Tok::Num(t)) = self.toks.get(self.pos).cloned() else {
            return None;
        };
        if t.len() <= k {
            self.pos += 1;
            return Some(t);
        }
        let (head, rest) = t.split_at(k);
        self.toks[self.pos] = Tok::Num(rest.to_string());
        Some(head.to_string())
    }

    fn group(&mut self) -> Option<Expr> {
        let close = match self.peek()? {
            Tok::Op('(') => ')',
            Tok::Op('[') => ']',
            Tok::Op('{') => '}',
            _ => return None,
        };
        self.pos += 1;
        let v = self.expr()?;
        self.eat_op(close).then_some(v)
    }

    fn letter(&self, l: char) -> Expr {
        match (self.dialect, l) {
            (Dialect::Reader, 'e') => Expr::E,
            (Dialect::Reader, 'i') => Expr::I,
            _ => Expr::Sym(l.to_string()),
        }
    }

    /// A subscript after a symbol: `_1`, `_{12}`, `_x`, as text.
    fn subscript(&mut self) -> Option<String> {
        if !self.eat_op('_') {
            return None;
        }
        let start = self.pos;
        match self.peek()? {
            Tok::Op('{') => {
                let mut depth = 0;
                while let Some(t) = self.peek() {
                    match t {
                        Tok::Op('{') => depth += 1,
                        Tok::Op('}') => {
                            depth -= 1;
                            if depth == 0 {
                                self.pos += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    self.pos += 1;
                }
            }
            _ => self.pos += 1,
        }
        Some(format!("{:?}", &self.toks[start..self.pos]))
    }

    /// `comp`: a group, `|x|`, a function, or an atom.
    fn comp(&mut self) -> Option<Expr> {
        self.enter()?;
        let v = match self.peek()?.clone() {
            Tok::Op('(' | '[' | '{') => self.group(),
            Tok::Op('|') => {
                self.pos += 1;
                let x = self.expr()?;
                self.eat_op('|').then(|| Expr::Call(Func::Abs, vec![x]))
            }
            Tok::Num(t) => {
                self.pos += 1;
                // A base subscript on a number (`1011_2`): the reader keeps the digits; sympy
                // stops there (the top level then ignores the rest).
                if self.dialect == Dialect::Reader && self.peek() == Some(&Tok::Op('_')) {
                    self.subscript();
                }
                num(&t)
            }
            Tok::Letter(l) => {
                self.pos += 1;
                let sub = self.subscript();
                let sym = match sub {
                    Some(s) => Expr::Sym(format!("{l}_{s}")),
                    None => self.letter(l),
                };
                if self.dialect == Dialect::Sympy && self.peek() == Some(&Tok::Op('(')) {
                    // sympy applies a function named by the letter: `f(x)`, and `x(x+1)` too.
                    let arg = self.group()?;
                    Some(Expr::Apply(format!("{sym:?}"), Box::new(arg)))
                } else {
                    Some(sym)
                }
            }
            Tok::Cmd(name) => {
                self.pos += 1;
                self.command(&name)
            }
            _ => None,
        };
        self.depth -= 1;
        v
    }

    fn command(&mut self, name: &str) -> Option<Expr> {
        let func = match name {
            "sin" => Some(Func::Sin),
            "cos" => Some(Func::Cos),
            "tan" => Some(Func::Tan),
            "cot" => Some(Func::Cot),
            "sec" => Some(Func::Sec),
            "csc" => Some(Func::Csc),
            "arcsin" => Some(Func::Asin),
            "arccos" => Some(Func::Acos),
            "arctan" => Some(Func::Atan),
            "ln" => Some(Func::Ln),
            "exp" => Some(Func::Exp),
            "log" => Some(Func::Log),
            _ => None,
        };
        if let Some(f) = func {
            return self.function(f);
        }
        match name {
            "frac" | "dfrac" | "tfrac" => {
                let n = self.frac_part()?;
                let d = self.frac_part()?;
                Some(Expr::Div(Box::new(n), Box::new(d)))
            }
            "sqrt" => {
                let index = if self.peek() == Some(&Tok::Op('[')) {
                    Some(self.group()?)
                } else {
                    None
                };
                let x = match (self.peek()?, self.dialect) {
                    (Tok::Op('{'), _) => self.group()?,
                    (Tok::Op('('), Dialect::Reader) => self.group()?,
                    (Tok::Num(_), Dialect::Reader) => num(&self.split_num(usize::MAX)?)?,
                    (Tok::Letter(l), Dialect::Reader) => {
                        let l = *l;
                        self.pos += 1;
                        self.letter(l)
                    }
                    _ => return None,
                };
                Some(match index {
                    Some(n) => Expr::Call(Func::Root, vec![n, x]),
                    None => Expr::Call(Func::Sqrt, vec![x]),
                })
            }
            "pi" => Some(match self.dialect {
                Dialect::Reader => Expr::Pi,
                Dialect::Sympy => Expr::Sym("pi".into()),
            }),
            "infty" => Some(Expr::Infinity),
            _ if self.dialect == Dialect::Sympy => {
                // Any other command is a symbol of its name (`\text`, `\pm`, `\circ`, Greek).
                let sub = self.subscript();
                Some(Expr::Sym(match sub {
                    Some(s) => format!("\\{name}_{s}"),
                    None => format!("\\{name}"),
                }))
            }
            "alpha" | "beta" | "gamma" | "delta" | "theta" | "phi" | "lambda" | "mu" | "sigma" | "omega"
            | "tau" | "rho" | "epsilon" | "varepsilon" | "varphi" | "psi" | "chi" | "eta" | "zeta" | "xi"
            | "nu" | "kappa" => Some(Expr::Sym(format!("\\{name}"))),
            _ => None,
        }
    }

    /// A `\frac` argument: a braced expression, or a single digit or letter.
    fn frac_part(&mut self) -> Option<Expr> {
        match self.peek()?.clone() {
            Tok::Op('{') => self.group(),
            Tok::Num(t) if !t.contains('.') => num(&self.split_num(1)?),
            Tok::Letter(l) => {
                self.pos += 1;
                Some(self.letter(l))
            }
            _ => None,
        }
    }

    /// A function's argument: `\sin x`, `\sin(x)`, `\sin^2 x`, `\log_{2} 8`, `\log_2 8`.
    fn function(&mut self, f: Func) -> Option<Expr> {
        let base = if f == Func::Log && self.eat_op('_') {
            Some(match self.peek()?.clone() {
                Tok::Op('{') => self.group()?,
                Tok::Num(_) => num(&self.split_num(1)?)?,
                Tok::Letter(l) => {
                    self.pos += 1;
                    self.letter(l)
                }
                _ => return None,
            })
        } else {
            None
        };
        let power = if self.eat_op('^') {
            Some(self.exponent()?)
        } else {
            None
        };
        let arg = if matches!(self.peek(), Some(Tok::Op('('))) {
            self.group()?
        } else {
            // Without brackets the argument is a product of factors (`\sin 2x`).
            let mut factors = vec![self.power()?];
            while self.starts_factor() && !matches!(self.peek(), Some(Tok::Cmd(c)) if is_function(c)) {
                let save = self.pos;
                match self.power() {
                    Some(p) => factors.push(p),
                    None => {
                        self.pos = save;
                        break;
                    }
                }
            }
            if factors.len() == 1 {
                factors.remove(0)
            } else {
                Expr::Mul(factors)
            }
        };
        let call = match (f, base) {
            (Func::Log, Some(b)) => Expr::Call(Func::Log, vec![b, arg]),
            // `\log x` is the natural logarithm in both dialects (sympy's reading).
            (Func::Log, None) => Expr::Call(Func::Ln, vec![arg]),
            (f, _) => Expr::Call(f, vec![arg]),
        };
        Some(match power {
            Some(p) => Expr::Pow(Box::new(call), Box::new(p)),
            None => call,
        })
    }
}

fn is_function(name: &str) -> bool {
    matches!(
        name,
        "sin" | "cos" | "tan" | "cot" | "sec" | "csc" | "arcsin" | "arccos" | "arctan" | "ln" | "exp" | "log"
    )
}
