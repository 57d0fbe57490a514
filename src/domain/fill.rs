//! How full a batch is, compared exactly.
//!
//! The original compared `current / target * 100 >= 75` in floating point, where
//! 0.75 is exact but 0.6 is not. Here every threshold is an integer percentage and
//! the comparison is the cross-multiplication `current * 100 >= pct * target`, so
//! a batch at exactly 60 % is at 60 %.

use rust_decimal::{Decimal, RoundingStrategy};

/// `target_quantity <= 0`: the fill of such a batch is undefined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid target_quantity")]
pub struct InvalidTarget;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    current: i64,
    target: i64,
}

impl Fill {
    pub fn new(current: i64, target: i64) -> Result<Self, InvalidTarget> {
        if target <= 0 {
            return Err(InvalidTarget);
        }
        Ok(Fill { current, target })
    }

    /// `fill >= pct`, exactly. Quantities are Postgres `int4`, so the products fit in i64.
    pub fn at_least(&self, pct: i64) -> bool {
        i128::from(self.current) * 100 >= i128::from(pct) * i128::from(self.target)
    }

    /// The fill in percent, rounded half away from zero to 2 decimals, for
    /// reports only; trailing zeros dropped (`78.5`, `45`), as it is written.
    pub fn percentage(&self) -> Decimal {
        (Decimal::from(self.current) * Decimal::ONE_HUNDRED / Decimal::from(self.target))
            .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
            .normalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn thresholds_are_exact() {
        // (current, target, pct, expected)
        let cases = [
            (150, 200, 75, true),
            (149, 200, 75, false),
            (3, 5, 60, true), // 0.6 is not exact in binary floating point
            (120, 200, 60, true),
            (119, 200, 60, false),
            (100, 200, 50, true),
            (99, 200, 50, false),
            (1, 3, 34, false), // 33.33 %
            (0, 200, 0, true),
            (7, 7, 100, true),
            (300, 200, 75, true), // over-filled legacy rows still count as full
        ];
        for (current, target, pct, expected) in cases {
            let fill = Fill::new(current, target).unwrap();
            assert_eq!(fill.at_least(pct), expected, "{current}/{target} >= {pct}%");
        }
    }

    #[test]
    fn zero_or_negative_target_is_invalid() {
        assert_eq!(Fill::new(10, 0), Err(InvalidTarget));
        assert_eq!(Fill::new(10, -5), Err(InvalidTarget));
    }

    #[test]
    fn percentage_rounds_half_away_from_zero_to_two_places() {
        let cases = [
            (157, 200, "78.5"),
            (1, 3, "33.33"),
            (2, 3, "66.67"),
            (1, 8, "12.5"),    // 12.5 exactly
            (1, 1600, "0.06"), // 0.0625 -> 0.06
            (1, 800, "0.13"),  // 0.125 -> 0.13 (half away from zero)
            (0, 200, "0"),
        ];
        for (current, target, expected) in cases {
            let got = Fill::new(current, target).unwrap().percentage();
            assert_eq!(
                got,
                Decimal::from_str(expected).unwrap(),
                "{current}/{target}"
            );
        }
    }
}
