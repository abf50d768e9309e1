//! Exact money: integer picodollars (10⁻¹² USD).
//!
//! Every catalog price per million tokens with up to six decimals (`$0.005`, `$0.0375`) is a whole
//! number of picodollars per token, so a request's cost is an exact integer product and a ledger
//! sum is an exact integer sum. Floats appear only when a figure is shown to a person or a
//! Prometheus counter.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Sub};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Picodollars in one US dollar.
pub const PICO_PER_USD: i128 = 1_000_000_000_000;

/// An exact amount of US dollars.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Money(i128);

impl Money {
    pub const ZERO: Money = Money(0);

    pub const fn from_pico(pico: i128) -> Money {
        Money(pico)
    }

    /// The amount in picodollars.
    pub const fn pico(self) -> i128 {
        self.0
    }

    /// The amount in nanodollars, rounded half away from zero (for stores that keep nanodollars).
    pub fn nano_rounded(self) -> i128 {
        let q = self.0 / 1000;
        let r = self.0 % 1000;
        if r >= 500 {
            q + 1
        } else if r <= -500 {
            q - 1
        } else {
            q
        }
    }

    /// An approximation for display and metrics only; never add these up.
    pub fn as_usd_f64(self) -> f64 {
        self.0 as f64 / PICO_PER_USD as f64
    }

    /// `self × n`, saturating instead of overflowing.
    pub fn times(self, n: u64) -> Money {
        Money(self.0.saturating_mul(i128::from(n)))
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        Money(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Money {
    fn add_assign(&mut self, rhs: Money) {
        *self = *self + rhs;
    }
}

impl Sub for Money {
    type Output = Money;
    fn sub(self, rhs: Money) -> Money {
        Money(self.0.saturating_sub(rhs.0))
    }
}

impl Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, Add::add)
    }
}

/// Dollars with as many decimals as needed and no trailing zeros: `0.000123`, `12`, `-0.5`.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / PICO_PER_USD as u128;
        let frac = abs % PICO_PER_USD as u128;
        if frac == 0 {
            return write!(f, "{sign}{whole}");
        }
        // The 12 decimals without trailing zeros: the zeros divided off, the rest printed at
        // the width left (no intermediate string; cost headers are written on every response).
        let (mut frac, mut width) = (frac, 12);
        while frac % 10 == 0 {
            frac /= 10;
            width -= 1;
        }
        write!(f, "{sign}{whole}.{frac:0width$}")
    }
}

/// A string that is not a decimal dollar amount with at most 12 decimals.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a dollar amount with at most 12 decimal places")]
pub struct ParseMoneyError(pub String);

impl FromStr for Money {
    type Err = ParseMoneyError;

    fn from_str(s: &str) -> Result<Money, ParseMoneyError> {
        let err = || ParseMoneyError(s.to_owned());
        let t = s.trim();
        let (neg, t) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t.strip_prefix('+').unwrap_or(t)),
        };
        let (whole, frac) = match t.split_once('.') {
            Some((w, f)) => (w, f),
            None => (t, ""),
        };
        if (whole.is_empty() && frac.is_empty())
            || frac.len() > 12
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(err());
        }
        let whole: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| err())?
        };
        let mut frac_pico: i128 = 0;
        for (i, b) in frac.bytes().enumerate() {
            frac_pico += i128::from(b - b'0') * 10i128.pow(11 - i as u32);
        }
        let pico = whole
            .checked_mul(PICO_PER_USD)
            .and_then(|w| w.checked_add(frac_pico))
            .ok_or_else(err)?;
        Ok(Money(if neg { -pico } else { pico }))
    }
}

impl Money {
    /// Converts a float as a person typed it (its shortest decimal form), exactly.
    pub fn from_f64_decimal(v: f64) -> Result<Money, ParseMoneyError> {
        if !v.is_finite() {
            return Err(ParseMoneyError(v.to_string()));
        }
        format!("{v}").parse()
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Money, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Str(String),
            Int(i64),
            Float(f64),
        }
        let parsed = match Raw::deserialize(d)? {
            Raw::Str(s) => s.parse(),
            Raw::Int(i) => Ok(Money(i128::from(i) * PICO_PER_USD)),
            Raw::Float(f) => Money::from_f64_decimal(f),
        };
        parsed.map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, display: &str) {
        let m: Money = input.parse().unwrap();
        assert_eq!(m.to_string(), display, "{input}");
        assert_eq!(m.to_string().parse::<Money>().unwrap(), m);
    }

    #[test]
    fn parse_and_display() {
        check("0", "0");
        check("0.15", "0.15");
        check("1.750000", "1.75");
        check("0.000000000001", "0.000000000001");
        check("12", "12");
        check("-0.5", "-0.5");
        check(".25", "0.25");
        assert!("0.0000000000001".parse::<Money>().is_err());
        assert!("1e-3".parse::<Money>().is_err());
        assert!("abc".parse::<Money>().is_err());
        assert!(".".parse::<Money>().is_err());
    }

    #[test]
    fn floats_convert_exactly() {
        assert_eq!(
            Money::from_f64_decimal(0.175).unwrap().pico(),
            175_000_000_000
        );
        assert_eq!(
            Money::from_f64_decimal(0.1).unwrap().pico(),
            100_000_000_000
        );
    }

    #[test]
    fn sums_are_exact_where_floats_are_not() {
        let tenth: Money = "0.1".parse().unwrap();
        let total: Money = std::iter::repeat_n(tenth, 10).sum();
        assert_eq!(total, "1".parse().unwrap());
        let float_total: f64 = std::iter::repeat_n(0.1f64, 10).sum();
        assert_ne!(float_total, 1.0);
    }

    #[test]
    fn nano_rounding() {
        assert_eq!(Money::from_pico(1499).nano_rounded(), 1);
        assert_eq!(Money::from_pico(1500).nano_rounded(), 2);
        assert_eq!(Money::from_pico(-1500).nano_rounded(), -2);
    }
}
