//! The statuses a batch moves through, and what a cancellation does to a
//! payment (behaviour §5, §7).
//!
//! SQL keeps the status words as literals (`batch_status = 'filling'`): the
//! partial indexes the jobs rely on are defined on them, and a bind parameter
//! would stop a prepared statement's generic plan from using those indexes.
//! The payment rule, which is a business decision rather than a state name,
//! reaches SQL as parameters from here.

use std::fmt;

/// `production_batches.batch_status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchStatus {
    Filling,
    /// Window closed between 50 % and 75 %: waits for an admin (review-batch).
    NeedsReview,
    Confirmed,
    Cancelled,
    /// Later stages the marketplace app itself moves batches to.
    InProduction,
    Completed,
    /// A value of a database this function adopted that none of the above
    /// names; kept as written, so it can be reported.
    Other(String),
}

impl BatchStatus {
    /// Reads a stored status; a NULL status is `filling` (the column's default).
    pub fn from_db(raw: Option<&str>) -> Self {
        match raw {
            None | Some("filling") => BatchStatus::Filling,
            Some("needs_review") => BatchStatus::NeedsReview,
            Some("confirmed") => BatchStatus::Confirmed,
            Some("cancelled") => BatchStatus::Cancelled,
            Some("in_production") => BatchStatus::InProduction,
            Some("completed") => BatchStatus::Completed,
            Some(other) => BatchStatus::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            BatchStatus::Filling => "filling",
            BatchStatus::NeedsReview => "needs_review",
            BatchStatus::Confirmed => "confirmed",
            BatchStatus::Cancelled => "cancelled",
            BatchStatus::InProduction => "in_production",
            BatchStatus::Completed => "completed",
            BatchStatus::Other(s) => s,
        }
    }
}

impl fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Payment statuses whose money a cancellation must give back: such an order
/// is flagged [`REFUND_PENDING`] and an `order.refund_requested` is written.
pub const REFUNDABLE_PAYMENT_STATUSES: [&str; 2] = ["paid", "partial"];

/// The payment status of a cancelled order whose money is to be given back.
pub const REFUND_PENDING: &str = "refund_pending";

/// Whether cancelling an order in `payment_status` flags a refund.
pub fn is_refundable(payment_status: &str) -> bool {
    REFUNDABLE_PAYMENT_STATUSES.contains(&payment_status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_back_as_written() {
        for (raw, status) in [
            (Some("filling"), BatchStatus::Filling),
            (None, BatchStatus::Filling),
            (Some("needs_review"), BatchStatus::NeedsReview),
            (Some("confirmed"), BatchStatus::Confirmed),
            (Some("cancelled"), BatchStatus::Cancelled),
            (Some("in_production"), BatchStatus::InProduction),
            (Some("completed"), BatchStatus::Completed),
            (Some("shipped"), BatchStatus::Other("shipped".into())),
        ] {
            assert_eq!(BatchStatus::from_db(raw), status, "{raw:?}");
            assert_eq!(status.as_str(), raw.unwrap_or("filling"));
        }
    }

    #[test]
    fn paid_and_partly_paid_orders_are_refunded() {
        // (payment status, refunded)
        for (status, refunded) in [
            ("paid", true),
            ("partial", true),
            ("pending", false),
            ("refunded", false),
            ("refund_pending", false),
            ("PAID", false),
        ] {
            assert_eq!(is_refundable(status), refunded, "{status}");
        }
    }
}
