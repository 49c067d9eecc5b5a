//! Numeric LaTeX for answer comparison: a small evaluator of numbers, `+ - * /`, implicit
//! products, `^`, `\\frac{}{}`, `\\sqrt{}`, `\\sqrt[n]{}`, `\\pi` and brackets. Values stay exact
//! ([`Surd`]: rationals and sums of square roots) while only that arithmetic is needed, and
//! become reals (f64) otherwise (`\\pi`, cube roots, nested radicals, overflow).

use crate::math_equiv::MAX_DEPTH;
use crate::number::Rational;
use crate::surd::Surd;

/// A number: exact while only rational arithmetic and square roots were needed.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Exact(Surd),
    Real(f64),
}

impl Value {
    pub(crate) fn to_f64(&self) -> f64 {
        match self {
            Value::Real(x) => *x,
            Value::Exact(s) => s.to_f64(),
        }
    }

    fn rational(q: Rational) -> Self {
        Value::Exact(Surd::rational(q))
    }

    fn combine(
        self,
        other: Value,
        exact: impl Fn(&Surd, &Surd) -> Option<Surd>,
        real: impl Fn(f64, f64) -> f64,
    ) -> Value {
        if let (Value::Exact(a), Value::Exact(b)) = (&self, &other) {
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
                v = v.combine(self.term()?, Surd::add, |a, b| a + b);
            } else if self.eat("-") {
                v = v.combine(self.term()?, |a, b| a.add(&b.neg()), |a, b| a - b);
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
                v = v.combine(self.unary()?, Surd::mul, |a, b| a * b);
            } else if self.eat("/") {
                v = v.combine(self.unary()?, divide, |a, b| a / b);
            } else if matches!(self.peek(), Some(b'0'..=b'9' | b'(' | b'{' | b'\\'))
                && !self.s[self.i..].starts_with(b"\\end")
            {
                // Implicit product: `2\sqrt{3}`, `3\pi`, `2(4)`; a digit after `\frac{..}{..}`
                // is a mixed number's whole part only before the fraction (handled in `atom`).
                v = v.combine(self.power()?, Surd::mul, |a, b| a * b);
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
                Value::Exact(s) => Value::Exact(s.neg()),
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
        Rational::parse_decimal(text).map(Value::rational)
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
            return Some(Value::rational(n).combine(frac, Surd::add, |a, b| a + b));
        }
        Some(Value::rational(n))
    }

    fn atom(&mut self) -> Option<Value> {
        self.enter()?;
        let v = match self.peek()? {
            b'0'..=b'9' | b'.' => self.number(),
            b'{' | b'(' | b'[' => self.group(),
            _ if self.eat("\\frac") => {
                let n = self.group()?;
                let d = self.group()?;
                Some(n.combine(d, divide, |a, b| a / b))
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

fn divide(a: &Surd, b: &Surd) -> Option<Surd> {
    a.mul(&b.recip()?)
}

/// `base ^ exp`, exact for an integer exponent, or a half-integer one on a rational base.
fn pow(base: Value, exp: Value) -> Value {
    if let (Value::Exact(b), Value::Exact(e)) = (&base, &exp) {
        let (num, den) = e.as_rational().map_or((0, 0), Rational::parts);
        let exact = match (i64::try_from(num), den) {
            (Ok(k), 1) => b.pow(k),
            (Ok(k), 2) => b.sqrt().and_then(|r| r.pow(k)),
            _ => None,
        };
        if let Some(v) = exact {
            return Value::Exact(v);
        }
    }
    Value::Real(base.to_f64().powf(exp.to_f64()))
}

fn root(x: Value, index: f64) -> Value {
    if let Value::Exact(s) = &x {
        if index == 2.0 {
            if let Some(r) = s.sqrt() {
                return Value::Exact(r);
            }
        }
    }
    let v = x.to_f64();
    let r = if index == 2.0 {
        v.sqrt()
    } else {
        v.signum() * v.abs().powf(1.0 / index)
    };
    // Perfect roots of rationals stay exact: \sqrt[3]{8} = 2.
    if r.fract() == 0.0 && r.abs() < 1e15 {
        if let Value::Exact(s) = &x {
            if s.as_rational().is_some() {
                return Value::rational(Rational::int(r as i128));
            }
        }
    }
    Value::Real(r)
}
