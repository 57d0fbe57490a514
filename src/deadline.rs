//! When an invocation must stop starting new work.

use std::time::{Duration, Instant};

/// The Lambda deadline less `DEADLINE_MARGIN_MS`, so the answer still goes
/// out before the timeout. Jobs check it between units of work; delivery
/// checks it between claims.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    stop_at: Option<Instant>,
}

impl Deadline {
    pub fn new(deadline: Option<Instant>, margin: Duration) -> Self {
        Deadline {
            stop_at: deadline.map(|d| d.checked_sub(margin).unwrap_or(d)),
        }
    }

    pub fn reached(&self) -> bool {
        self.stop_at.is_some_and(|t| Instant::now() >= t)
    }

    /// Time left before it is reached; `None` when there is no deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.stop_at
            .map(|t| t.saturating_duration_since(Instant::now()))
    }
}
