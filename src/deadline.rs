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

    /// The same deadline, brought forward to `at` when that is sooner: a job
    /// called over HTTP stops by `HTTP_BUDGET_MS`, however long Lambda would
    /// let it run (API Gateway stops waiting at 30 s).
    pub fn no_later_than(self, at: Instant) -> Self {
        Deadline {
            stop_at: Some(self.stop_at.map_or(at, |t| t.min(at))),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_brings_the_deadline_forward_never_back() {
        let now = Instant::now();
        let far = now + Duration::from_secs(600);
        assert!(Deadline::new(None, Duration::ZERO)
            .no_later_than(now)
            .reached());
        assert!(Deadline::new(Some(far), Duration::ZERO)
            .no_later_than(now)
            .reached());
        assert!(!Deadline::new(Some(far), Duration::ZERO)
            .no_later_than(far + Duration::from_secs(600))
            .reached());
        assert!(Deadline::new(Some(now), Duration::ZERO)
            .no_later_than(far)
            .reached());
    }
}
