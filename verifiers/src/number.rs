//! Exact numbers for answer comparison: integers, decimals, fractions and percents as rationals,
//! so `18.0` equals `18` and `0.5` equals `1/2` without floating-point doubt.

/// A reduced fraction `num / den` with `den > 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rational {
    num: i128,
    den: i128,
}

fn gcd(a: i128, b: i128) -> i128 {
    let (mut a, mut b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl Rational {
    /// `num / den`, reduced; `None` when `den` is 0.
    pub fn new(num: i128, den: i128) -> Option<Self> {
        if den == 0 {
            return None;
        }
        let g = gcd(num, den).max(1);
        let sign = if den < 0 { -1 } else { 1 };
        Some(Self {
            num: sign * num / g,
            den: sign * den / g,
        })
    }

    /// An integer.
    pub fn int(n: i128) -> Self {
        Self { num: n, den: 1 }
    }

    /// `self / other`.
    pub fn div(self, other: Self) -> Option<Self> {
        Self::new(self.num.checked_mul(other.den)?, self.den.checked_mul(other.num)?)
    }

    /// `self + other`.
    pub fn add(self, other: Self) -> Option<Self> {
        let num = self
            .num
            .checked_mul(other.den)?
            .checked_add(other.num.checked_mul(self.den)?)?;
        Self::new(num, self.den.checked_mul(other.den)?)
    }

    /// `self * other`.
    pub fn mul(self, other: Self) -> Option<Self> {
        Self::new(self.num.checked_mul(other.num)?, self.den.checked_mul(other.den)?)
    }

    /// The numerator (carrying the sign) and the positive denominator, reduced.
    pub fn parts(self) -> (i128, i128) {
        (self.num, self.den)
    }

    /// The nearest `f64`.
    pub fn to_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }

    /// Negation.
    pub fn neg(self) -> Self {
        Self {
            num: -self.num,
            den: self.den,
        }
    }

    /// A plain decimal: optional sign, digits, optional fraction part (`-12`, `3.50`, `.5`),
    /// with an optional exponent (`1.5e3`). Thousands separators must be removed first.
    pub fn parse_decimal(s: &str) -> Option<Self> {
        let s = s.trim();
        let (mantissa, exp) = match s.split_once(['e', 'E']) {
            Some((m, e)) => (m, e.parse::<i32>().ok()?),
            None => (s, 0),
        };
        let (neg, digits) = match mantissa.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, mantissa.strip_prefix('+').unwrap_or(mantissa)),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if int.is_empty() && frac.is_empty() || !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
            return None;
        }
        if int.len() + frac.len() > 30 || exp.abs() > 30 {
            return None;
        }
        let all: i128 = format!("{int}{frac}").parse().ok()?;
        let scale = frac.len() as i32 - exp;
        let r = if scale >= 0 {
            Self::new(all, 10i128.checked_pow(scale as u32)?)?
        } else {
            Self::int(all.checked_mul(10i128.checked_pow((-scale) as u32)?)?)
        };
        Some(if neg { r.neg() } else { r })
    }
}

impl std::fmt::Display for Rational {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact() {
        assert_eq!(Rational::parse_decimal("18.0"), Some(Rational::int(18)));
        assert_eq!(Rational::parse_decimal("-3"), Some(Rational::int(-3)));
        assert_eq!(Rational::parse_decimal(".5"), Rational::new(1, 2));
        assert_eq!(Rational::parse_decimal("1.5e3"), Some(Rational::int(1500)));
        assert_eq!(Rational::parse_decimal("2.5E-1"), Rational::new(1, 4));
        assert_eq!(Rational::parse_decimal("1,000"), None);
        assert_eq!(Rational::parse_decimal("abc"), None);
        assert_eq!(Rational::parse_decimal("."), None);
        assert_eq!(
            Rational::parse_decimal("99999999999999999999999999999999999999"),
            None
        );
        assert_eq!(Rational::new(6, -4), Rational::new(-3, 2));
        assert_eq!(
            Rational::int(1).add(Rational::new(1, 3).unwrap()),
            Rational::new(4, 3)
        );
    }
}
