//! What a job did, counted once: the orchestrate answer's `summary`, the
//! summary log line and the EMF metrics all read this one type.

use serde::Serialize;

use super::tier::Outcome;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub confirmed: u64,
    pub needs_review: u64,
    pub cancelled: u64,
    pub nearing_target: u64,
    pub skipped: u64,
    /// Batches whose writes failed (behaviour §4.3); only orchestrate has them.
    pub failed: u64,
    pub orders_cancelled: u64,
    /// process-order's count; batch answers never carry it.
    #[serde(skip_serializing_if = "is_zero")]
    pub orders_placed: u64,
}

impl Counts {
    /// Counts one reported batch. The match is exhaustive: a new outcome
    /// does not compile until it is counted somewhere.
    pub fn record(&mut self, outcome: Outcome, orders_cancelled: u64) {
        let slot = match outcome {
            Outcome::Confirmed => &mut self.confirmed,
            Outcome::NeedsReview => &mut self.needs_review,
            Outcome::Cancelled => &mut self.cancelled,
            Outcome::NearingTarget => &mut self.nearing_target,
            Outcome::Skipped => &mut self.skipped,
            Outcome::Failed => &mut self.failed,
        };
        *slot += 1;
        self.orders_cancelled += orders_cancelled;
    }

    /// Adds counts made apart (a run's chunks on another connection).
    /// Destructured: a new count does not compile until it is added here.
    pub fn add(&mut self, other: &Counts) {
        let Counts {
            confirmed,
            needs_review,
            cancelled,
            nearing_target,
            skipped,
            failed,
            orders_cancelled,
            orders_placed,
        } = *other;
        self.confirmed += confirmed;
        self.needs_review += needs_review;
        self.cancelled += cancelled;
        self.nearing_target += nearing_target;
        self.skipped += skipped;
        self.failed += failed;
        self.orders_cancelled += orders_cancelled;
        self.orders_placed += orders_placed;
    }
}

/// What delivering the outbox did in one invocation (behaviour §10), for the
/// summary line and the metrics — never part of a job's answer, which is the
/// same with delivery on, off or failing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Events EventBridge accepted (and that are now marked published).
    pub published: u64,
    /// Events tried and not accepted: refused entries, or a call that failed.
    pub failed: u64,
    /// Events set aside by this invocation: refused `PUBLISH_MAX_ATTEMPTS`
    /// times, or too large to send.
    pub set_aside: u64,
    /// What is left, when the delivery read it: only deliveries of the whole
    /// outbox do (publish-events, orchestrate, review-batch), never the
    /// buyer's path.
    pub backlog: Option<Backlog>,
}

/// The outbox's pending rows after a delivery (set-aside rows are not pending).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Rows still unpublished and not set aside.
    pub pending: u64,
    /// Age in seconds of the first of them in `id` order (0 when none).
    pub oldest_pending_secs: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_own_counter() {
        let mut c = Counts::default();
        for (o, cancelled) in [
            (Outcome::Confirmed, 0),
            (Outcome::NeedsReview, 0),
            (Outcome::NeedsReview, 0),
            (Outcome::Cancelled, 4),
            (Outcome::NearingTarget, 0),
            (Outcome::Skipped, 0),
            (Outcome::Failed, 0),
        ] {
            c.record(o, cancelled);
        }
        let expected = Counts {
            confirmed: 1,
            needs_review: 2,
            cancelled: 1,
            nearing_target: 1,
            skipped: 1,
            failed: 1,
            orders_cancelled: 4,
            orders_placed: 0,
        };
        assert_eq!(c, expected);
        let wire = serde_json::to_value(c).unwrap();
        assert_eq!(
            wire,
            serde_json::json!({"confirmed": 1, "needsReview": 2, "cancelled": 1,
                               "nearingTarget": 1, "skipped": 1, "failed": 1, "ordersCancelled": 4}),
            "the summary keeps its wire names and has no ordersPlaced"
        );
    }

    #[test]
    fn counts_made_apart_add_up_field_by_field() {
        let a = Counts {
            confirmed: 1,
            needs_review: 2,
            cancelled: 3,
            nearing_target: 4,
            skipped: 5,
            failed: 6,
            orders_cancelled: 7,
            orders_placed: 8,
        };
        let b = Counts {
            confirmed: 10,
            needs_review: 20,
            cancelled: 30,
            nearing_target: 40,
            skipped: 50,
            failed: 60,
            orders_cancelled: 70,
            orders_placed: 80,
        };
        let mut sum = a;
        sum.add(&b);
        assert_eq!(
            sum,
            Counts {
                confirmed: 11,
                needs_review: 22,
                cancelled: 33,
                nearing_target: 44,
                skipped: 55,
                failed: 66,
                orders_cancelled: 77,
                orders_placed: 88,
            }
        );
        sum.add(&Counts::default());
        assert_eq!(sum.failed, 66, "adding nothing changes nothing");
    }
}
