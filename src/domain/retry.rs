//! What happens to an event EventBridge refused (behaviour §10): it is tried
//! again later, after a capped exponential backoff with jitter, and set aside
//! once it has been refused `PUBLISH_MAX_ATTEMPTS` times.
//!
//! The delay is counted from the database's clock (`next_attempt_at = now() +
//! delay`); this module only says how long. The jitter is drawn from the
//! event's id and its refusal count, not from a random source: what jitter is
//! for is that rows refused together (one throttled call) come due at
//! different times, and a hash of the id spreads them just as well while
//! keeping the rule a pure, testable function.

use std::time::Duration;

/// The delay after the first refusal (before jitter).
pub const FIRST_DELAY: Duration = Duration::from_secs(1);
/// No delay is longer than this (before jitter).
pub const MAX_DELAY: Duration = Duration::from_secs(300);

/// What to do with an event EventBridge just refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRefusal {
    /// Try it again no sooner than this from now.
    RetryIn(Duration),
    /// It has been refused `max_attempts` times: set it aside.
    SetAside,
}

/// `refusals` counts this refusal too (1 after the first). With jitter the
/// delay is between half and all of `min(MAX_DELAY, FIRST_DELAY × 2^(refusals−1))`.
pub fn after_refusal(refusals: u32, max_attempts: u32, event_id: i64) -> AfterRefusal {
    if refusals >= max_attempts {
        return AfterRefusal::SetAside;
    }
    let doublings = refusals.saturating_sub(1).min(20);
    let full = FIRST_DELAY.saturating_mul(1u32 << doublings).min(MAX_DELAY);
    let half = full / 2;
    let jitter = unit(event_id, refusals);
    AfterRefusal::RetryIn(half + half.mul_f64(jitter))
}

/// A number in [0, 1) from the id and the refusal count (splitmix64).
fn unit(event_id: i64, refusals: u32) -> f64 {
    let mut z = (event_id as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(refusals));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_sets_aside_at_the_limit() {
        // (refusals, max attempts, shortest and longest delay in seconds) — None: set aside.
        type Case = (u32, u32, Option<(f64, f64)>);
        let cases: &[Case] = &[
            (1, 10, Some((0.5, 1.0))),
            (2, 10, Some((1.0, 2.0))),
            (3, 10, Some((2.0, 4.0))),
            (4, 10, Some((4.0, 8.0))),
            (8, 10, Some((64.0, 128.0))),
            (9, 10, Some((128.0, 256.0))),
            (10, 10, None),
            (11, 10, None),
            (10, 20, Some((150.0, 300.0))),
            (19, 20, Some((150.0, 300.0))),
            (20, 20, None),
            (1, 1, None),
            (1, 2, Some((0.5, 1.0))),
            (u32::MAX - 1, u32::MAX, Some((150.0, 300.0))),
        ];
        for &(refusals, max, expected) in cases {
            for id in [1, 2, 50, 99_999, i64::MAX, -7] {
                let got = after_refusal(refusals, max, id);
                match expected {
                    None => assert_eq!(got, AfterRefusal::SetAside, "{refusals}/{max}"),
                    Some((lo, hi)) => match got {
                        AfterRefusal::RetryIn(d) => assert!(
                            d >= secs(lo) && d <= secs(hi),
                            "{refusals}/{max} id {id}: {d:?} not in {lo}..={hi} s"
                        ),
                        AfterRefusal::SetAside => panic!("{refusals}/{max}: set aside too early"),
                    },
                }
            }
        }
    }

    #[test]
    fn rows_refused_together_come_due_at_different_times() {
        let delays: std::collections::BTreeSet<Duration> = (1..=100)
            .map(|id| match after_refusal(3, 10, id) {
                AfterRefusal::RetryIn(d) => d,
                AfterRefusal::SetAside => panic!("not yet"),
            })
            .collect();
        assert!(delays.len() > 90, "{} distinct delays", delays.len());
        // The same row and count always get the same delay: the rule is pure.
        assert_eq!(after_refusal(3, 10, 42), after_refusal(3, 10, 42));
    }
}
