//! Numeric LaTeX for answer comparison: a small evaluator of numbers, `+ - * /`, implicit
//! products, `^`, `\\frac{}{}`, `\\sqrt{}`, `\\sqrt[n]{}`, `\\pi` and brackets. Values stay exact
//! rationals while only rational arithmetic is needed, and become reals (f64) otherwise.

use crate::math::MAX_DEPTH;
use crate::number::Rational;

/// A number: exact while only rational arithmetic was needed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value {
    Exact(Rational),
    Real(f64),
}

impl Value {
    pub(crate) fn to_f64(self) -> f64 {
        match self {
            Value::Real(x) => x,
            Value::Exact(r) => {
                let s = r.to_string();
                match s.split_once('/') {
                    Some((n, d)) => {
                        n.parse::<f64>().unwrap_or(f64::NAN) / d.parse::<f64>().unwrap_or(f64::NAN)
                    }
                    None => s.parse().unwrap_or(f64::NAN),
                }
            }
        }
    }

    fn combine(
        self,
        other: Value,
        exact: impl Fn(Rational, Rational) -> Option<Rational>,
        real: impl Fn(f64, f64) -> f64,
    ) -> Value {
        if let (Value::Exact(a), Value::Exact(b)) = (self, other) {
            if let Some(r) = exact(a, b) {
                return Value::Exact(r);
            }
        }
        Value::Real(real(self.to_f64(), other.to_f64()))
    }
}

/// A small evaluator of numeric LaTeX: numbers, `+ - * /`, implicit products, `^`,
/// `\frac{}{}`, `\sqrt{}`, `\sqrt[n]{}`, `\pi`, brackets. Anything else (a variable) is `None`.
pub(crate) struct Eval<'a> {
    s: &'a [u8],
    i: usize,
    depth: usize,
}

impl<'a> Eval<'a> {
    /// The value of a whole string, or `None` when any of it is not numeric.
    pub(crate) fn value(s: &'a str) -> Option<Value> {
        let mut e = Eval {
            s: s.as_bytes(),
            i: 0,
            depth: 0,
        };
        let v = e.expr()?;
        (e.i == e.s.len()).then_some(v)
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, t: &str) -> bool {
        if self.s[self.i..].starts_with(t.as_bytes()) {
            self.i += t.len();
            true
        } else {
            false
        }
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    fn expr(&mut self) -> Option<Value> {
        self.enter()?;
        let mut v = self.term()?;
        loop {
            if self.eat("+") {
                v = v.combine(self.term()?, Rational::add, |a, b| a + b);
            } else if self.eat("-") {
                v = v.combine(self.term()?, |a, b| a.add(b.neg()), |a, b| a - b);
            } else {
                break;
            }
        }
        self.depth -= 1;
        Some(v)
    }

    fn term(&mut self) -> Option<Value> {
        let mut v = self.unary()?;
        loop {
            if self.eat("*") {
                v = v.combine(self.unary()?, mul, |a, b| a * b);
            } else if self.eat("/") {
                v = v.combine(self.unary()?, Rational::div, |a, b| a / b);
            } else if matches!(self.peek(), Some(b'0'..=b'9' | b'(' | b'{' | b'\\'))
                && !self.s[self.i..].starts_with(b"\\end")
            {
                // Implicit product: `2\sqrt{3}`, `3\pi`, `2(4)`; a digit after `\frac{..}{..}`
                // is a mixed number's whole part only before the fraction (handled in `atom`).
                v = v.combine(self.power()?, mul, |a, b| a * b);
            } else {
                break;
            }
        }
        Some(v)
    }

    fn unary(&mut self) -> Option<Value> {
        if self.eat("-") {
            self.enter()?;
            let v = self.unary()?;
            self.depth -= 1;
            return Some(match v {
                Value::Exact(r) => Value::Exact(r.neg()),
                Value::Real(x) => Value::Real(-x),
            });
        }
        self.eat("+");
        self.power()
    }

    fn power(&mut self) -> Option<Value> {
        let base = self.atom()?;
        if !self.eat("^") {
            return Some(base);
        }
        self.enter()?;
        let exp = if self.peek() == Some(b'{') {
            self.group()?
        } else {
            self.digit_atom()?
        };
        self.depth -= 1;
        Some(pow(base, exp))
    }

    fn group(&mut self) -> Option<Value> {
        let (open, close) = match self.peek()? {
            b'{' => ("{", "}"),
            b'(' => ("(", ")"),
            b'[' => ("[", "]"),
            _ => return None,
        };
        self.eat(open);
        let v = self.expr()?;
        self.eat(close).then_some(v)
    }

    fn digit_atom(&mut self) -> Option<Value> {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).ok()?;
        Rational::parse_decimal(text).map(Value::Exact)
    }

    fn number(&mut self) -> Option<Value> {
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9' | b'.' | b',')) {
            self.i += 1;
        }
        let text: String = std::str::from_utf8(&self.s[start..self.i]).ok()?.replace(',', "");
        let n = Rational::parse_decimal(&text)?;
        // A mixed number: `2\frac{1}{3}` is 2 + 1/3.
        if self.s[self.i..].starts_with(b"\\frac") && !text.contains('.') {
            let frac = self.atom()?;
            return Some(Value::Exact(n).combine(frac, Rational::add, |a, b| a + b));
        }
        Some(Value::Exact(n))
    }

    fn atom(&mut self) -> Option<Value> {
        self.enter()?;
        let v = match self.peek()? {
            b'0'..=b'9' | b'.' => self.number(),
            b'{' | b'(' | b'[' => self.group(),
            _ if self.eat("\\frac") => {
                let n = self.group()?;
                let d = self.group()?;
                Some(n.combine(d, Rational::div, |a, b| a / b))
            }
            _ if self.eat("\\sqrt") => {
                let index = if self.peek() == Some(b'[') {
                    self.group()?.to_f64()
                } else {
                    2.0
                };
                let x = if self.peek() == Some(b'{') {
                    self.group()?
                } else {
                    self.digit_atom()?
                };
                Some(root(x, index))
            }
            _ if self.eat("\\pi") => Some(Value::Real(std::f64::consts::PI)),
            _ => None,
        };
        self.depth -= 1;
        v
    }
}

fn mul(a: Rational, b: Rational) -> Option<Rational> {
    let (x, y) = (a.to_string(), b.to_string());
    let parse = |s: &str| -> Option<(i128, i128)> {
        match s.split_once('/') {
            Some((n, d)) => Some((n.parse().ok()?, d.parse().ok()?)),
            None => Some((s.parse().ok()?, 1)),
        }
    };
    let ((an, ad), (bn, bd)) = (parse(&x)?, parse(&y)?);
    Rational::new(an.checked_mul(bn)?, ad.checked_mul(bd)?)
}

fn pow(base: Value, exp: Value) -> Value {
    if let (Value::Exact(b), Value::Exact(e)) = (base, exp) {
        if let Ok(k) = e.to_string().parse::<i32>() {
            if k.unsigned_abs() <= 64 {
                let mut acc = Some(Rational::int(1));
                for _ in 0..k.unsigned_abs() {
                    acc = acc.and_then(|a| mul(a, b));
                }
                let acc = if k < 0 {
                    acc.and_then(|a| Rational::int(1).div(a))
                } else {
                    acc
                };
                if let Some(r) = acc {
                    return Value::Exact(r);
                }
            }
        }
    }
    Value::Real(base.to_f64().powf(exp.to_f64()))
}

fn root(x: Value, index: f64) -> Value {
    let v = x.to_f64();
    let r = if index == 2.0 {
        v.sqrt()
    } else {
        v.signum() * v.abs().powf(1.0 / index)
    };
    // Perfect roots stay exact: \sqrt{16} = 4.
    if r.fract() == 0.0 && r.abs() < 1e15 {
        if let Value::Exact(_) = x {
            return Value::Exact(Rational::int(r as i128));
        }
    }
    Value::Real(r)
}
