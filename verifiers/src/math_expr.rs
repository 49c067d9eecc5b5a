//! Mathematical expressions read from answers ([`crate::latex`] parses them), and whether two
//! are equal: exactly over the rationals when both are rational, otherwise numerically at sample
//! points where every free symbol takes the same pseudo-random complex value on both sides — a
//! probabilistic identity test, which sees that `3x - 6 + x^3` is `x^3+3x-6`, `(x+1)^2` is
//! `x^2+2x+1`, `\frac{\ln 3}{\ln 2}` is `\log_2 3` and `\frac{1}{\cot x}` is `\tan x`. Bounded: a
//! tree of more than [`MAX_NODES`] nodes is not compared, and powers are bounded.

use std::collections::BTreeSet;

use crate::number::Rational;

/// Most nodes of an expression compared (pathological input stays bounded).
pub(crate) const MAX_NODES: usize = 2000;

/// A function of the answers' vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    /// `\sqrt{x}`.
    Sqrt,
    /// `\sqrt[n]{x}`: arguments `[n, x]`.
    Root,
    Sin,
    Cos,
    Tan,
    Cot,
    Sec,
    Csc,
    Asin,
    Acos,
    Atan,
    /// Natural logarithm.
    Ln,
    /// `\log_b x`: arguments `[b, x]`.
    Log,
    Exp,
    Abs,
    Factorial,
}

/// An expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    /// An exact number (decimals are exact: `0.15` is 3/20).
    Num(Rational),
    /// A free symbol (`x`, `x_1`; in the sympy dialect also `e`, `i` and `pi`).
    Sym(String),
    /// π.
    Pi,
    /// Euler's number.
    E,
    /// The imaginary unit.
    I,
    /// ∞ (never equal to anything, as sympy's `oo - oo` is `nan`).
    Infinity,
    Add(Vec<Expr>),
    Mul(Vec<Expr>),
    Neg(Box<Expr>),
    Div(Box<Expr>, Box<Expr>),
    Pow(Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
    /// A function of unknown meaning applied (sympy reads `f(x)` so): equal arguments give
    /// equal values, and nothing else is known.
    Apply(String, Box<Expr>),
}

/// A complex number for evaluation at sample points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct C64 {
    re: f64,
    im: f64,
}

impl C64 {
    const fn new(re: f64, im: f64) -> Self {
        Self { re, im }
    }
    fn real(re: f64) -> Self {
        Self::new(re, 0.0)
    }
    fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }
    fn finite(self) -> Option<Self> {
        (self.re.is_finite() && self.im.is_finite()).then_some(self)
    }
    fn add(self, o: Self) -> Self {
        Self::new(self.re + o.re, self.im + o.im)
    }
    fn mul(self, o: Self) -> Self {
        Self::new(self.re * o.re - self.im * o.im, self.re * o.im + self.im * o.re)
    }
    fn neg(self) -> Self {
        Self::new(-self.re, -self.im)
    }
    fn div(self, o: Self) -> Option<Self> {
        let d = o.re * o.re + o.im * o.im;
        (d > 1e-300).then(|| {
            Self::new(
                (self.re * o.re + self.im * o.im) / d,
                (self.im * o.re - self.re * o.im) / d,
            )
        })
    }
    fn exp(self) -> Self {
        let m = self.re.exp();
        Self::new(m * self.im.cos(), m * self.im.sin())
    }
    fn ln(self) -> Option<Self> {
        (self.abs() > 0.0).then(|| Self::new(self.abs().ln(), self.im.atan2(self.re)))
    }
    fn pow(self, e: Self) -> Option<Self> {
        // Integer powers exactly by repeated products, so (-8)^3 stays real.
        if e.im == 0.0 && e.re.fract() == 0.0 && e.re.abs() <= 64.0 {
            let mut r = Self::real(1.0);
            for _ in 0..e.re.abs() as u32 {
                r = r.mul(self);
            }
            return if e.re < 0.0 {
                Self::real(1.0).div(r)
            } else {
                Some(r)
            };
        }
        if self.abs() == 0.0 {
            return (e.re > 0.0).then_some(Self::real(0.0));
        }
        Some(self.ln()?.mul(e).exp())
    }
    fn sin(self) -> Self {
        Self::new(self.re.sin() * self.im.cosh(), self.re.cos() * self.im.sinh())
    }
    fn cos(self) -> Self {
        Self::new(self.re.cos() * self.im.cosh(), -self.re.sin() * self.im.sinh())
    }
}

impl Expr {
    /// Nodes in the tree.
    pub(crate) fn size(&self) -> usize {
        1 + match self {
            Expr::Add(v) | Expr::Mul(v) | Expr::Call(_, v) => v.iter().map(Expr::size).sum(),
            Expr::Neg(a) | Expr::Apply(_, a) => a.size(),
            Expr::Div(a, b) | Expr::Pow(a, b) => a.size() + b.size(),
            _ => 0,
        }
    }

    fn symbols(&self, out: &mut BTreeSet<String>) {
        match self {
            Expr::Sym(s) => {
                out.insert(s.clone());
            }
            Expr::Add(v) | Expr::Mul(v) | Expr::Call(_, v) => v.iter().for_each(|e| e.symbols(out)),
            Expr::Neg(a) | Expr::Apply(_, a) => a.symbols(out),
            Expr::Div(a, b) | Expr::Pow(a, b) => {
                a.symbols(out);
                b.symbols(out);
            }
            _ => {}
        }
    }

    fn has_infinity(&self) -> bool {
        match self {
            Expr::Infinity => true,
            Expr::Add(v) | Expr::Mul(v) | Expr::Call(_, v) => v.iter().any(Expr::has_infinity),
            Expr::Neg(a) | Expr::Apply(_, a) => a.has_infinity(),
            Expr::Div(a, b) | Expr::Pow(a, b) => a.has_infinity() || b.has_infinity(),
            _ => false,
        }
    }

    /// The exact value when the expression is rational (integer powers only).
    pub(crate) fn rational(&self) -> Option<Rational> {
        match self {
            Expr::Num(q) => Some(*q),
            Expr::Add(v) => v
                .iter()
                .try_fold(Rational::int(0), |acc, e| acc.add(e.rational()?)),
            Expr::Mul(v) => v
                .iter()
                .try_fold(Rational::int(1), |acc, e| acc.mul(e.rational()?)),
            Expr::Neg(a) => Some(a.rational()?.neg()),
            Expr::Div(a, b) => a.rational()?.div(b.rational()?),
            Expr::Pow(a, b) => {
                let (base, exp) = (a.rational()?, b.rational()?);
                let (k, den) = exp.parts();
                if den != 1 || k.abs() > 64 {
                    return None;
                }
                let mut r = Rational::int(1);
                for _ in 0..k.abs() {
                    r = r.mul(base)?;
                }
                if k < 0 {
                    Rational::int(1).div(r)
                } else {
                    Some(r)
                }
            }
            _ => None,
        }
    }

    /// The value with each symbol as `at` gives it; `None` where undefined or not finite.
    fn value(&self, at: &dyn Fn(&str) -> C64) -> Option<C64> {
        let v = match self {
            Expr::Num(q) => C64::real(q.to_f64()),
            Expr::Sym(s) => at(s),
            Expr::Pi => C64::real(std::f64::consts::PI),
            Expr::E => C64::real(std::f64::consts::E),
            Expr::I => C64::new(0.0, 1.0),
            Expr::Infinity => return None,
            Expr::Add(v) => v
                .iter()
                .try_fold(C64::real(0.0), |acc, e| Some(acc.add(e.value(at)?)))?,
            Expr::Mul(v) => v
                .iter()
                .try_fold(C64::real(1.0), |acc, e| Some(acc.mul(e.value(at)?)))?,
            Expr::Neg(a) => a.value(at)?.neg(),
            Expr::Div(a, b) => a.value(at)?.div(b.value(at)?)?,
            Expr::Pow(a, b) => a.value(at)?.pow(b.value(at)?)?,
            Expr::Apply(name, arg) => {
                let x = arg.value(at)?;
                // A pseudo-random function: the argument's value, rounded, picks the sample.
                let key = ((x.re * 1e6).round() as i64 as u64)
                    ^ ((x.im * 1e6).round() as i64 as u64).rotate_left(32);
                sample(name, key)
            }
            Expr::Call(f, args) => {
                let x = args.last()?.value(at)?;
                match f {
                    Func::Sqrt => x.pow(C64::real(0.5))?,
                    Func::Root => {
                        let n = args.first()?.value(at)?;
                        // A real odd root of a negative real stays real, as the answers mean.
                        if x.im == 0.0
                            && x.re < 0.0
                            && n.im == 0.0
                            && n.re.fract() == 0.0
                            && n.re as i64 % 2 != 0
                        {
                            C64::real(-(-x.re).powf(1.0 / n.re))
                        } else {
                            x.pow(C64::real(1.0).div(n)?)?
                        }
                    }
                    Func::Sin => x.sin(),
                    Func::Cos => x.cos(),
                    Func::Tan => x.sin().div(x.cos())?,
                    Func::Cot => x.cos().div(x.sin())?,
                    Func::Sec => C64::real(1.0).div(x.cos())?,
                    Func::Csc => C64::real(1.0).div(x.sin())?,
                    Func::Asin | Func::Acos | Func::Atan => {
                        if x.im != 0.0 {
                            return None;
                        }
                        C64::real(match f {
                            Func::Asin => x.re.asin(),
                            Func::Acos => x.re.acos(),
                            _ => x.re.atan(),
                        })
                    }
                    Func::Ln => x.ln()?,
                    Func::Log => x.ln()?.div(args.first()?.value(at)?.ln()?)?,
                    Func::Exp => x.exp(),
                    Func::Abs => C64::real(x.abs()),
                    Func::Factorial => {
                        if x.im != 0.0 || x.re.fract() != 0.0 || !(0.0..=30.0).contains(&x.re) {
                            return None;
                        }
                        C64::real((1..=x.re as u64).map(|k| k as f64).product())
                    }
                }
            }
        };
        v.finite()
    }
}

/// A pseudo-random complex value of modulus in [0.6, 1.9] for symbol `name` at sample `k`, the
/// same on both sides of a comparison.
fn sample(name: &str, k: u64) -> C64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 29;
    let unit = |x: u64| (x >> 11) as f64 / (1u64 << 53) as f64;
    let modulus = 0.6 + 1.3 * unit(h.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let angle = std::f64::consts::TAU * unit(h.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    C64::new(modulus * angle.cos(), modulus * angle.sin())
}

/// Whether two expressions are equal: exactly when both are rational; otherwise equal at every
/// one of five sample points (both defined at two at least, or at one when no symbol is free),
/// within 1e-9 relative. Infinity is never equal (sympy's `oo - oo` is `nan`).
pub(crate) fn same_value(a: &Expr, b: &Expr) -> bool {
    if a.size() + b.size() > MAX_NODES || a.has_infinity() || b.has_infinity() {
        return false;
    }
    if let (Some(x), Some(y)) = (a.rational(), b.rational()) {
        return x == y;
    }
    let mut names = BTreeSet::new();
    a.symbols(&mut names);
    b.symbols(&mut names);
    let mut agreed = 0;
    for k in 0..5 {
        let at = |name: &str| sample(name, k);
        match (a.value(&at), b.value(&at)) {
            (Some(x), Some(y)) => {
                if (x.add(y.neg())).abs() > 1e-9 * x.abs().max(y.abs()).max(1.0) {
                    return false;
                }
                agreed += 1;
            }
            (None, None) => {}
            _ => return false,
        }
        if names.is_empty() {
            break;
        }
    }
    agreed >= if names.is_empty() { 1 } else { 2 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(k: i128) -> Expr {
        Expr::Num(Rational::int(k))
    }
    fn x() -> Expr {
        Expr::Sym("x".into())
    }

    #[test]
    fn identities_hold_and_non_identities_do_not() {
        // (x+1)^2 = x^2 + 2x + 1
        let lhs = Expr::Pow(Box::new(Expr::Add(vec![x(), n(1)])), Box::new(n(2)));
        let rhs = Expr::Add(vec![
            Expr::Pow(Box::new(x()), Box::new(n(2))),
            Expr::Mul(vec![n(2), x()]),
            n(1),
        ]);
        assert!(same_value(&lhs, &rhs));
        let wrong = Expr::Add(vec![Expr::Pow(Box::new(x()), Box::new(n(2))), n(1)]);
        assert!(!same_value(&lhs, &wrong));
        // 0.25 = 1/4 exactly; 0.3333 is not 1/3.
        let quarter = Expr::Num(Rational::parse_decimal("0.25").unwrap());
        assert!(same_value(&quarter, &Expr::Div(Box::new(n(1)), Box::new(n(4)))));
        let third = Expr::Num(Rational::parse_decimal("0.3333").unwrap());
        assert!(!same_value(&third, &Expr::Div(Box::new(n(1)), Box::new(n(3)))));
        // e^(iπ) = -1
        let euler = Expr::Pow(Box::new(Expr::E), Box::new(Expr::Mul(vec![Expr::I, Expr::Pi])));
        assert!(same_value(&euler, &n(-1)));
        assert!(!same_value(&Expr::Infinity, &Expr::Infinity));
    }
}
