//! Exact sums of square roots, `Σ qᵢ·√mᵢ` with rational `qᵢ` and distinct square-free integers
//! `mᵢ ≥ 1`: the form every answer built from integers, fractions and square roots with
//! `+ − × ÷` and integer powers reduces to. The form is canonical (terms sorted by radicand, no
//! zero coefficient), so two answers are equal exactly when their forms are: `\frac{1}{\sqrt{2}}`
//! is `\frac{\sqrt{2}}{2}`, `\frac{1}{1+\sqrt{2}}` is `\sqrt{2}-1`. Division rationalises the
//! denominator one prime at a time, multiplying by the conjugate that negates the terms whose
//! radicand contains the prime.
//!
//! Not exact here (the caller falls back to floating point): an overflow of `i128`
//! arithmetic, a radicand above 10¹² (too large to factor by trial division), more than 64
//! terms, square roots of irrational values (nested radicals such as `\sqrt{1+\sqrt{2}}`), and
//! roots other than square roots.

use crate::number::Rational;

const MAX_TERMS: usize = 64;
const MAX_RADICAND: u128 = 1_000_000_000_000;

/// An exact sum of rational multiples of square roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Surd {
    terms: Vec<(u128, Rational)>,
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn smallest_prime_factor(m: u128) -> u128 {
    (2..)
        .take_while(|p| p * p <= m)
        .find(|p| m.is_multiple_of(*p))
        .unwrap_or(m)
}

/// `x = s²·f` with `f` square-free, for `x ≤ MAX_RADICAND`.
fn square_free_split(mut x: u128) -> Option<(u128, u128)> {
    if x > MAX_RADICAND {
        return None;
    }
    let (mut s, mut f, mut p) = (1, 1, 2);
    while p * p <= x {
        let mut k = 0;
        while x.is_multiple_of(p) {
            x /= p;
            k += 1;
        }
        s *= p.pow(k / 2);
        if k % 2 == 1 {
            f *= p;
        }
        p += 1;
    }
    Some((s, f * x))
}

fn int(n: u128) -> Option<Rational> {
    Some(Rational::int(i128::try_from(n).ok()?))
}

impl Surd {
    /// A rational number.
    pub(crate) fn rational(q: Rational) -> Self {
        let terms = if q == Rational::int(0) {
            Vec::new()
        } else {
            vec![(1, q)]
        };
        Self { terms }
    }

    /// The value as a rational, when it has no irrational part.
    pub(crate) fn as_rational(&self) -> Option<Rational> {
        match self.terms.as_slice() {
            [] => Some(Rational::int(0)),
            [(1, q)] => Some(*q),
            _ => None,
        }
    }

    fn from_terms(mut terms: Vec<(u128, Rational)>) -> Option<Self> {
        terms.sort_by_key(|t| t.0);
        let mut out: Vec<(u128, Rational)> = Vec::with_capacity(terms.len());
        for (m, q) in terms {
            match out.last_mut() {
                Some((last, sum)) if *last == m => *sum = sum.add(q)?,
                _ => out.push((m, q)),
            }
        }
        out.retain(|t| t.1 != Rational::int(0));
        (out.len() <= MAX_TERMS).then_some(Self { terms: out })
    }

    /// `self + other`.
    pub(crate) fn add(&self, other: &Self) -> Option<Self> {
        Self::from_terms(self.terms.iter().chain(&other.terms).copied().collect())
    }

    /// `-self`.
    pub(crate) fn neg(&self) -> Self {
        Self {
            terms: self.terms.iter().map(|&(m, q)| (m, q.neg())).collect(),
        }
    }

    /// `self · other`: `√m·√n = g·√(m/g · n/g)` with `g = gcd(m, n)`.
    pub(crate) fn mul(&self, other: &Self) -> Option<Self> {
        let mut terms = Vec::with_capacity(self.terms.len() * other.terms.len());
        for &(m, a) in &self.terms {
            for &(n, b) in &other.terms {
                let g = gcd(m, n);
                let radicand = (m / g).checked_mul(n / g)?;
                if radicand > MAX_RADICAND {
                    return None;
                }
                terms.push((radicand, a.mul(b)?.mul(int(g)?)?));
            }
        }
        Self::from_terms(terms)
    }

    /// `1 / self`; `None` for zero.
    pub(crate) fn recip(&self) -> Option<Self> {
        let mut num = Self::rational(Rational::int(1));
        let mut den = self.clone();
        loop {
            match den.terms.as_slice() {
                [] => return None,
                &[(m, q)] => {
                    // 1 / (q·√m) = √m / (q·m)
                    let inverse = Rational::int(1).div(q.mul(int(m)?)?)?;
                    return num.mul(&Self {
                        terms: vec![(m, inverse)],
                    });
                }
                terms => {
                    // Two or more distinct radicands, so one exceeds 1; (A + B)(A − B) = A² − B²
                    // has no term with the prime p when B holds exactly the terms with p.
                    let p = smallest_prime_factor(terms.iter().map(|t| t.0).max()?);
                    let conjugate = Self {
                        terms: terms
                            .iter()
                            .map(|&(m, q)| (m, if m % p == 0 { q.neg() } else { q }))
                            .collect(),
                    };
                    num = num.mul(&conjugate)?;
                    den = den.mul(&conjugate)?;
                }
            }
        }
    }

    /// `self ^ k` for `|k| ≤ 64`.
    pub(crate) fn pow(&self, k: i64) -> Option<Self> {
        if k.unsigned_abs() > 64 {
            return None;
        }
        let mut acc = Self::rational(Rational::int(1));
        for _ in 0..k.unsigned_abs() {
            acc = acc.mul(self)?;
        }
        if k < 0 {
            acc.recip()
        } else {
            Some(acc)
        }
    }

    /// `√self` for a non-negative rational: `√(n/d) = s/d·√f` where `n·d = s²·f`.
    pub(crate) fn sqrt(&self) -> Option<Self> {
        let (n, d) = self.as_rational()?.parts();
        if n <= 0 {
            return (n == 0).then(|| Self::rational(Rational::int(0)));
        }
        let (s, f) = square_free_split(u128::try_from(n).ok()?.checked_mul(u128::try_from(d).ok()?)?)?;
        let coefficient = int(s)?.div(int(u128::try_from(d).ok()?)?)?;
        Self::from_terms(vec![(f, coefficient)])
    }

    /// The nearest `f64` (for comparing with answers that are not exact).
    pub(crate) fn to_f64(&self) -> f64 {
        self.terms
            .iter()
            .map(|&(m, q)| q.to_f64() * (m as f64).sqrt())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(n: i128, d: i128) -> Surd {
        Surd::rational(Rational::new(n, d).unwrap())
    }

    fn root(n: i128) -> Surd {
        q(n, 1).sqrt().unwrap()
    }

    #[test]
    fn canonical_forms_make_equal_values_equal() {
        // √8 = 2√2, √(1/2) = √2/2 = 1/√2
        assert_eq!(root(8), q(2, 1).mul(&root(2)).unwrap());
        assert_eq!(q(1, 2).sqrt().unwrap(), root(2).mul(&q(1, 2)).unwrap());
        assert_eq!(root(2).recip().unwrap(), q(1, 2).sqrt().unwrap());
        // 1/(1+√2) = √2 − 1
        let one_plus = q(1, 1).add(&root(2)).unwrap();
        assert_eq!(one_plus.recip().unwrap(), root(2).add(&q(-1, 1)).unwrap());
        // (√2 + √3)² = 5 + 2√6; 1/(√2+√3+√5) times itself back is 1.
        let s = root(2).add(&root(3)).unwrap();
        assert_eq!(
            s.pow(2).unwrap(),
            q(5, 1).add(&q(2, 1).mul(&root(6)).unwrap()).unwrap()
        );
        let t = s.add(&root(5)).unwrap();
        assert_eq!(t.mul(&t.recip().unwrap()).unwrap(), q(1, 1));
        assert_eq!(root(2).mul(&root(2)).unwrap().as_rational(), Rational::new(2, 1));
        assert_eq!(root(16).as_rational(), Rational::new(4, 1));
        assert!((t.to_f64() - (2f64.sqrt() + 3f64.sqrt() + 5f64.sqrt())).abs() < 1e-12);
    }

    #[test]
    fn what_is_not_exact_says_so() {
        assert_eq!(q(0, 1).recip(), None);
        assert_eq!(q(-4, 1).sqrt(), None);
        assert_eq!(root(2).add(&q(1, 1)).unwrap().sqrt(), None);
        assert_eq!(root(2).pow(65), None);
        // A prime radicand above 10^12 is not factored.
        assert_eq!(q(1_000_000_000_039, 1).sqrt(), None);
    }
}
