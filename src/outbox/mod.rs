//! The outbox (behaviour §10): pending `batch_events` rows go to an
//! [`EventSink`] — EventBridge in production ([`crate::eventbridge`]) — and
//! are marked published once accepted. Jobs write their events in their own
//! transactions (the store's statements do) and only *ask* for delivery (an
//! [`Ask`] in their report); the job runner hands the ask to [`Outbox`] after
//! the commit, the same way for every job. `publish-events`, whose work is
//! delivery, calls [`Outbox::deliver`] itself.
//!
//! One transaction per claim of at most [`CLAIM`] rows: claim them in `id`
//! order (`FOR UPDATE SKIP LOCKED`: concurrent publishers never hold one row
//! at once), send them 10 per call, in order, mark the accepted ones, commit.
//! The row locks are held for those few calls only. A crash after a send and
//! before the commit leaves the rows pending: they are sent again later, so
//! delivery is at least once and consumers de-duplicate on `eventId`.

mod sink;

pub use sink::{EntryOutcome, EventSink, OutboxEvent, SendResult, SinkError, PER_CALL};

use std::time::{Duration, Instant};

use crate::deadline::Deadline;
use crate::domain::Delivery;
use crate::store::events;
use crate::store::{Db, StoreError};
use crate::telemetry::phases::{timed, Phase};

/// Rows claimed per transaction.
pub const CLAIM: i64 = 50;

/// Which pending rows to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every pending row, oldest first.
    All,
    /// Only these (the events a job just wrote).
    Only(Vec<i64>),
}

/// What a job asks to be delivered once it has committed, and for how long
/// delivery may go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ask {
    pub scope: Scope,
    pub budget: Duration,
}

/// How long delivery may go on.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Most rows to deliver.
    pub limit: u64,
    /// Time budget from the start of delivery.
    pub budget: Duration,
    /// The invocation's deadline (less its margin).
    pub deadline: Deadline,
}

/// The outbox as one invocation sees it: the database, and where events go
/// (`None` when `EVENT_BUS_NAME` is unset: rows stay in the table).
#[derive(Clone, Copy)]
pub struct Outbox<'a> {
    db: &'a Db,
    sink: Option<&'a dyn EventSink>,
}

impl<'a> Outbox<'a> {
    pub fn new(db: &'a Db, sink: Option<&'a dyn EventSink>) -> Self {
        Outbox { db, sink }
    }

    /// Whether events leave the table at all.
    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// Delivers what a job asked for after its commit, within its budget and
    /// the deadline. Never fails the job: a database error is logged, and a
    /// later `publish-events` run delivers what is left. `None` when delivery
    /// is off or could not run.
    pub async fn after_job(&self, ask: Ask, deadline: Deadline) -> Option<Delivery> {
        let bounds = Bounds {
            limit: u64::MAX,
            budget: ask.budget,
            deadline,
        };
        match self.deliver(&ask.scope, bounds).await {
            Ok(delivery) => delivery,
            Err(e) => {
                tracing::warn!(error = %e, "could not deliver events after the job; a later run will");
                None
            }
        }
    }

    /// Delivers pending rows of `scope` within `bounds` (its time is the
    /// invocation's `publishMs`); `None` when delivery is off.
    pub async fn deliver(
        &self,
        scope: &Scope,
        bounds: Bounds,
    ) -> Result<Option<Delivery>, StoreError> {
        let Some(sink) = self.sink else {
            return Ok(None);
        };
        timed(Phase::Publish, deliver(self.db, sink, scope, bounds))
            .await
            .map(Some)
    }

    /// How many rows are pending and the age of the oldest, delivering nothing.
    pub async fn pending(&self) -> Result<Delivery, StoreError> {
        let conn = self.db.get().await?;
        let (pending, oldest) = events::pending(&conn.sql()).await?;
        Ok(Delivery {
            pending,
            oldest_pending_secs: oldest,
            ..Delivery::default()
        })
    }
}

/// What one claim did.
struct Claimed {
    rows: usize,
    published: u64,
    sink_failed: bool,
}

/// Delivers pending rows until none is left, the limit, the budget or the
/// deadline is reached, or the sink fails a whole call (it is then left alone
/// until the next run). Database errors are returned; sink errors are counted.
async fn deliver(
    db: &Db,
    sink: &dyn EventSink,
    scope: &Scope,
    bounds: Bounds,
) -> Result<Delivery, StoreError> {
    let started = Instant::now();
    let mut out = Delivery::default();
    let conn = db.get().await?;
    let mut left = bounds.limit;
    let only = match scope {
        Scope::All => None,
        Scope::Only(ids) => Some(ids.as_slice()),
    };
    while left > 0 && !bounds.deadline.reached() {
        if started.elapsed() >= bounds.budget {
            break;
        }
        let want = CLAIM.min(i64::try_from(left).unwrap_or(CLAIM));
        let failed = &mut out.failed;
        let claimed = conn
            .transaction(|tx| async move {
                let rows = events::claim_pending(&tx, want, only).await?;
                let claimed = rows.len();
                let batch: Vec<OutboxEvent> = rows.into_iter().map(OutboxEvent::from).collect();
                let mut accepted = Vec::new();
                let mut sink_failed = false;
                for chunk in batch.chunks(PER_CALL) {
                    let remaining = bounds.budget.saturating_sub(started.elapsed());
                    let answer = match tokio::time::timeout(remaining, sink.send(chunk)).await {
                        Ok(answer) => answer,
                        Err(_) => Err(SinkError("timed out within the delivery budget".into())),
                    };
                    match answer {
                        Ok(outcomes) => {
                            for (event, outcome) in chunk.iter().zip(outcomes) {
                                match outcome {
                                    EntryOutcome::Accepted => accepted.push(event.id),
                                    EntryOutcome::Retry(code) => {
                                        *failed += 1;
                                        tracing::warn!(eventId = event.id, code = %code, "EventBridge refused an event; it stays pending");
                                    }
                                    EntryOutcome::Undeliverable(reason) => {
                                        *failed += 1;
                                        tracing::error!(eventId = event.id, reason = %reason, "an event can never be delivered; set aside");
                                        events::mark_undeliverable(&tx, event.id, &reason).await?;
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            *failed += chunk.len() as u64;
                            tracing::warn!(error = %e, events = chunk.len(), "could not deliver events; they stay pending for a later run");
                            sink_failed = true;
                            break;
                        }
                    }
                }
                events::mark_published(&tx, &accepted).await?;
                Ok::<_, StoreError>(Claimed {
                    rows: claimed,
                    published: accepted.len() as u64,
                    sink_failed,
                })
            })
            .await?;
        out.published += claimed.published;
        left = left.saturating_sub(claimed.rows as u64);
        if claimed.sink_failed || (claimed.rows as i64) < want {
            break;
        }
    }
    let (pending, oldest) = events::pending(&conn.sql()).await?;
    out.pending = pending;
    out.oldest_pending_secs = oldest;
    Ok(out)
}
