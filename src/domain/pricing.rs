//! What a buyer pays for one unit in a batch, and what they save (behaviour §6 step 4).
//!
//! Decimal arithmetic throughout, rounded half away from zero. Unit prices are
//! rounded before any total is taken (a total is a rounded unit price times the
//! quantity), and the buyer price is the *unrounded* factory price times the
//! markup, rounded once, so the two roundings never compound.

use rust_decimal::{Decimal, RoundingStrategy};

use super::fill::Fill;

/// Premium per extra style when the supplier's terms name none.
pub const DEFAULT_PREMIUM_PERCENT: Decimal = Decimal::from_parts(5, 0, 0, false, 0);
/// Markups by fill before the order.
pub const MARKUP_NEARLY_FULL: Decimal = Decimal::from_parts(115, 0, 0, false, 2);
pub const MARKUP_STANDARD: Decimal = Decimal::from_parts(120, 0, 0, false, 2);
pub const MARKUP_EARLY: Decimal = Decimal::from_parts(125, 0, 0, false, 2);
/// A batch at or above this fill gets the small markup…
pub const NEARLY_FULL_AT: i64 = 80;
/// …and one below this fill (a brand-new batch included) the large one.
pub const EARLY_BELOW: i64 = 30;
/// What one unit would cost a buyer ordering alone, as a multiple of the base price.
pub const SOLO_FACTOR: Decimal = Decimal::from_parts(15, 0, 0, false, 1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceInput {
    pub unit_price_base: Decimal,
    /// The batch supplier's `complexity_premium_percent`; `None` means 5.
    pub premium_percent: Option<Decimal>,
    /// Distinct styles in the batch counting this order's.
    pub style_count: i64,
    /// The batch's fill before this order.
    pub fill_before: Fill,
    pub quantity: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub complexity_multiplier: Decimal,
    pub markup: Decimal,
    pub factory_price: Decimal,
    pub buyer_price: Decimal,
    pub solo_order_price: Decimal,
    pub unit_margin: Decimal,
    pub total_margin: Decimal,
    pub savings_per_unit: Decimal,
    pub savings_total: Decimal,
    pub savings_percentage: Decimal,
}

pub fn round_to(value: Decimal, places: u32) -> Decimal {
    value.round_dp_with_strategy(places, RoundingStrategy::MidpointAwayFromZero)
}

pub fn markup(fill_before: &Fill) -> Decimal {
    if fill_before.at_least(NEARLY_FULL_AT) {
        MARKUP_NEARLY_FULL
    } else if !fill_before.at_least(EARLY_BELOW) {
        MARKUP_EARLY
    } else {
        MARKUP_STANDARD
    }
}

pub fn quote(input: &PriceInput) -> Quote {
    let premium = input.premium_percent.unwrap_or(DEFAULT_PREMIUM_PERCENT);
    let extra_styles = Decimal::from((input.style_count - 1).max(0));
    let complexity_multiplier = Decimal::ONE + extra_styles * premium / Decimal::ONE_HUNDRED;
    let unrounded_factory = input.unit_price_base * complexity_multiplier;
    let markup = markup(&input.fill_before);
    let factory_price = round_to(unrounded_factory, 2);
    let buyer_price = round_to(unrounded_factory * markup, 2);
    let solo_order_price = round_to(input.unit_price_base * SOLO_FACTOR, 2);
    let quantity = Decimal::from(input.quantity);
    let unit_margin = buyer_price - factory_price;
    let savings_per_unit = solo_order_price - buyer_price;
    let savings_percentage = if solo_order_price.is_zero() {
        Decimal::ZERO
    } else {
        round_to(
            savings_per_unit / solo_order_price * Decimal::ONE_HUNDRED,
            1,
        )
    };
    Quote {
        complexity_multiplier,
        markup,
        factory_price,
        buyer_price,
        solo_order_price,
        unit_margin,
        total_margin: unit_margin * quantity,
        savings_per_unit,
        savings_total: savings_per_unit * quantity,
        savings_percentage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn constants_are_what_they_say() {
        assert_eq!(DEFAULT_PREMIUM_PERCENT, d("5"));
        assert_eq!(MARKUP_NEARLY_FULL, d("1.15"));
        assert_eq!(MARKUP_STANDARD, d("1.20"));
        assert_eq!(MARKUP_EARLY, d("1.25"));
        assert_eq!(SOLO_FACTOR, d("1.5"));
    }

    #[test]
    fn markup_by_fill_before_at_exact_boundaries() {
        let cases = [
            (0, 200, "1.25"),   // brand-new batch
            (59, 200, "1.25"),  // 29.5 %
            (60, 200, "1.20"),  // exactly 30 %
            (159, 200, "1.20"), // 79.5 %
            (160, 200, "1.15"), // exactly 80 %
            (4, 5, "1.15"),     // 80 % of an odd target
            (3, 10, "1.20"),    // 30 % exactly
        ];
        for (current, target, expected) in cases {
            let fill = Fill::new(current, target).unwrap();
            assert_eq!(markup(&fill), d(expected), "{current}/{target}");
        }
    }

    /// Worked examples: (unit, premium, styles, current, target, qty) →
    /// (factory, buyer, solo, unit margin, total margin, savings/unit, savings total, savings %).
    #[test]
    fn worked_examples() {
        #[allow(clippy::type_complexity)]
        let cases: [(&str, Option<&str>, i64, i64, i64, i64, [&str; 8]); 7] = [
            // behaviour §6's example: 10.00 base, 2 styles at 5 %, fill 62.5 % → 1.20.
            (
                "10.00",
                Some("5"),
                2,
                125,
                200,
                50,
                [
                    "10.50", "12.60", "15.00", "2.10", "105.00", "2.40", "120.00", "16.0",
                ],
            ),
            // A brand-new batch: one style, markup 1.25.
            (
                "8.50",
                Some("5.00"),
                1,
                0,
                200,
                50,
                [
                    "8.50", "10.63", "12.75", "2.13", "106.50", "2.12", "106.00", "16.6",
                ],
            ),
            // Three styles on 8.50: 9.35 factory, fill 65 % → 1.20.
            (
                "8.50",
                Some("5.00"),
                3,
                130,
                200,
                50,
                [
                    "9.35", "11.22", "12.75", "1.87", "93.50", "1.53", "76.50", "12.0",
                ],
            ),
            // Half-cent factory price rounds away from zero: 8.925 → 8.93; the buyer
            // price comes from the unrounded 8.925 × 1.20 = 10.71.
            (
                "8.50",
                Some("5.00"),
                2,
                130,
                200,
                20,
                [
                    "8.93", "10.71", "12.75", "1.78", "35.60", "2.04", "40.80", "16.0",
                ],
            ),
            // The supplier's own premium (7.5 %) and the 1.15 markup at ≥ 80 %.
            (
                "12.00",
                Some("7.50"),
                3,
                240,
                300,
                10,
                [
                    "13.80", "15.87", "18.00", "2.07", "20.70", "2.13", "21.30", "11.8",
                ],
            ),
            // No premium in the terms: 5 % is used.
            (
                "10.00",
                None,
                3,
                100,
                200,
                1,
                [
                    "11.00", "13.20", "15.00", "2.20", "2.20", "1.80", "1.80", "12.0",
                ],
            ),
            // Many styles make the batch dearer than ordering alone: negative savings.
            (
                "10.00",
                Some("10"),
                5,
                10,
                200,
                3,
                [
                    "14.00", "17.50", "15.00", "3.50", "10.50", "-2.50", "-7.50", "-16.7",
                ],
            ),
        ];
        for (unit, premium, styles, current, target, qty, expected) in cases {
            let q = quote(&PriceInput {
                unit_price_base: d(unit),
                premium_percent: premium.map(d),
                style_count: styles,
                fill_before: Fill::new(current, target).unwrap(),
                quantity: qty,
            });
            let got = [
                q.factory_price,
                q.buyer_price,
                q.solo_order_price,
                q.unit_margin,
                q.total_margin,
                q.savings_per_unit,
                q.savings_total,
                q.savings_percentage,
            ];
            let want = expected.map(d);
            assert_eq!(
                got, want,
                "{unit} {premium:?} styles={styles} {current}/{target} x{qty}"
            );
        }
    }

    #[test]
    fn a_free_base_price_does_not_divide_by_zero() {
        let q = quote(&PriceInput {
            unit_price_base: Decimal::ZERO,
            premium_percent: None,
            style_count: 1,
            fill_before: Fill::new(0, 10).unwrap(),
            quantity: 1,
        });
        assert_eq!(q.savings_percentage, Decimal::ZERO);
    }
}
