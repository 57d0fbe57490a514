//! The fate of a `filling` batch near or past its window (behaviour §5).
//!
//! This is the only place the tier rules live. The store fetches the facts a
//! decision needs (quantities, whether the window has closed on the database's
//! clock, whether the nearing-target event was already sent) and applies the
//! decided actions in bulk; it never re-decides.

use serde::Serialize;

use super::fill::Fill;

/// At or above this fill a batch is confirmed, window open or closed.
pub const CONFIRM_AT: i64 = 75;
/// At or above this fill, with the window closed, a batch waits for an admin.
pub const REVIEW_AT: i64 = 50;
/// At or above this fill, window open, operators are told the batch is close.
pub const NEARING_AT: i64 = 60;

/// What the database says about one candidate batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub current_quantity: i64,
    pub target_quantity: i64,
    /// `window_closes_at <= now()` on the database's clock.
    pub window_closed: bool,
    /// `batch.nearing_target` was already sent for this batch.
    pub nearing_notified: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `target_quantity <= 0`: reported, never touched.
    Skipped,
    Confirm(Fill),
    NeedsReview(Fill),
    Cancel(Fill),
    /// Window open and fill >= 60 %: reported; the event is written the first time only.
    NearingTarget {
        fill: Fill,
        first_time: bool,
    },
    /// Nothing to report or write.
    Nothing(Fill),
}

impl Action {
    /// Whether applying this action writes to the database.
    pub fn writes(&self) -> bool {
        match self {
            Action::Confirm(_) | Action::NeedsReview(_) | Action::Cancel(_) => true,
            Action::NearingTarget { first_time, .. } => *first_time,
            Action::Skipped | Action::Nothing(_) => false,
        }
    }

    /// What a report says of this action (`results[].action` on the wire),
    /// or `None` when the action is not reported.
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            Action::Skipped => Some(Outcome::Skipped),
            Action::Confirm(_) => Some(Outcome::Confirmed),
            Action::NeedsReview(_) => Some(Outcome::NeedsReview),
            Action::Cancel(_) => Some(Outcome::Cancelled),
            Action::NearingTarget { .. } => Some(Outcome::NearingTarget),
            Action::Nothing(_) => None,
        }
    }

    pub fn fill(&self) -> Option<Fill> {
        match *self {
            Action::Skipped => None,
            Action::Confirm(f)
            | Action::NeedsReview(f)
            | Action::Cancel(f)
            | Action::Nothing(f)
            | Action::NearingTarget { fill: f, .. } => Some(f),
        }
    }
}

/// A reported action, by its wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Confirmed,
    NeedsReview,
    Cancelled,
    NearingTarget,
    Skipped,
    /// The decided writes failed for a reason in the batch's data (a
    /// constraint, someone else's trigger); the batch stays `filling` and is
    /// tried again on the next run.
    Failed,
}

impl Outcome {
    /// The fixed message a report of this outcome carries, if any.
    pub fn message(self) -> Option<&'static str> {
        match self {
            Outcome::Skipped => Some(SKIPPED_MESSAGE),
            Outcome::NeedsReview => Some(REVIEW_MESSAGE),
            Outcome::NearingTarget => Some(NEARING_MESSAGE),
            Outcome::Confirmed | Outcome::Cancelled | Outcome::Failed => None,
        }
    }
}

pub const REVIEW_MESSAGE: &str = "Batch 50-75% filled, window closed";
pub const NEARING_MESSAGE: &str = "Batch nearing target - consider promotion";
pub const SKIPPED_MESSAGE: &str = "invalid target_quantity";

/// First match wins, in the order of the behaviour §5 table.
pub fn decide(c: &Candidate) -> Action {
    let Ok(fill) = Fill::new(c.current_quantity, c.target_quantity) else {
        return Action::Skipped;
    };
    if fill.at_least(CONFIRM_AT) {
        Action::Confirm(fill)
    } else if c.window_closed && fill.at_least(REVIEW_AT) {
        Action::NeedsReview(fill)
    } else if c.window_closed {
        Action::Cancel(fill)
    } else if fill.at_least(NEARING_AT) {
        Action::NearingTarget {
            fill,
            first_time: !c.nearing_notified,
        }
    } else {
        Action::Nothing(fill)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Kind {
        Skipped,
        Confirm,
        Review,
        Cancel,
        Nearing { first_time: bool },
        Nothing,
    }

    fn kind(a: Action) -> Kind {
        match a {
            Action::Skipped => Kind::Skipped,
            Action::Confirm(_) => Kind::Confirm,
            Action::NeedsReview(_) => Kind::Review,
            Action::Cancel(_) => Kind::Cancel,
            Action::NearingTarget { first_time, .. } => Kind::Nearing { first_time },
            Action::Nothing(_) => Kind::Nothing,
        }
    }

    #[test]
    fn outcomes_have_their_wire_names() {
        let names: Vec<String> = [
            Outcome::Confirmed,
            Outcome::NeedsReview,
            Outcome::Cancelled,
            Outcome::NearingTarget,
            Outcome::Skipped,
            Outcome::Failed,
        ]
        .iter()
        .map(|o| {
            serde_json::to_value(o)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
        assert_eq!(
            names,
            [
                "confirmed",
                "needs_review",
                "cancelled",
                "nearing_target",
                "skipped",
                "failed"
            ]
        );
    }

    #[test]
    fn decision_table() {
        use Kind::*;
        // (current, target, window_closed, nearing_notified, expected, writes)
        let cases = [
            (10, 0, true, false, Skipped, false),
            (10, -1, false, false, Skipped, false),
            (150, 200, false, false, Confirm, true),
            (150, 200, true, false, Confirm, true),
            (200, 200, true, true, Confirm, true),
            (149, 200, true, false, Review, true),
            (100, 200, true, false, Review, true),
            (99, 200, true, false, Cancel, true),
            (0, 200, true, false, Cancel, true),
            (149, 200, false, false, Nearing { first_time: true }, true),
            (120, 200, false, false, Nearing { first_time: true }, true),
            (120, 200, false, true, Nearing { first_time: false }, false),
            (119, 200, false, false, Nothing, false),
            (0, 200, false, false, Nothing, false),
            (3, 5, false, false, Nearing { first_time: true }, true), // exactly 60 %
            (3, 4, true, false, Confirm, true),                       // exactly 75 %
            (1, 2, true, false, Review, true),                        // exactly 50 %
        ];
        for (current, target, closed, notified, expected, writes) in cases {
            let c = Candidate {
                current_quantity: current,
                target_quantity: target,
                window_closed: closed,
                nearing_notified: notified,
            };
            let action = decide(&c);
            assert_eq!(action.writes(), writes, "{c:?}");
            assert_eq!(kind(action), expected, "{c:?}");
        }
    }
}
