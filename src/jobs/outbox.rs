//! Delivering the outbox (behaviour §10): pending `batch_events` rows go to an
//! [`EventSink`] — EventBridge in production ([`crate::eventbridge`]) — and
//! are marked published once accepted. Jobs know the sink only by this port.
//!
//! One transaction per claim of at most [`CLAIM`] rows: claim them in `id`
//! order (`FOR UPDATE SKIP LOCKED`: concurrent publishers never hold one row
//! at once), send them 10 per call, in order, mark the accepted ones, commit.
//! The row locks are held for those few calls only. A crash after a send and
//! before the commit leaves the rows pending: they are sent again later, so
//! delivery is at least once and consumers de-duplicate on `eventId`.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::Deadline;
use crate::domain::Delivery;
use crate::store::events::{self, OutboxRow};
use crate::store::{Db, StoreError};

/// Rows claimed per transaction.
pub const CLAIM: i64 = 50;
/// Entries per call (EventBridge's `PutEvents` limit).
pub const PER_CALL: usize = 10;

/// How the sink answered for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryOutcome {
    Accepted,
    /// Refused this time (throttled, an internal failure): stays pending.
    Retry(String),
    /// Can never be delivered (too large): set aside with the reason.
    Undeliverable(String),
}

/// The whole call failed (unreachable, throttled, timed out): nothing sent is
/// known to be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

pub type SendResult<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<EntryOutcome>, SinkError>> + Send + 'a>>;

/// Where delivered events go.
pub trait EventSink: Send + Sync {
    /// Sends at most [`PER_CALL`] events, in order; one outcome per event.
    fn send<'a>(&'a self, events: &'a [OutboxEvent]) -> SendResult<'a>;
}

/// An outbox row as consumers receive it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    pub id: i64,
    pub event_type: String,
    pub detail: Value,
}

impl From<OutboxRow> for OutboxEvent {
    /// `Detail` of behaviour §10: `eventId`, `eventType`, `batchId`, `orderId`
    /// (or null), `occurredAt` (RFC 3339), `payload`.
    fn from(row: OutboxRow) -> Self {
        OutboxEvent {
            id: row.id,
            detail: json!({
                "eventId": row.id,
                "eventType": row.event_type,
                "batchId": row.batch_id,
                "orderId": row.order_id,
                "occurredAt": row.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "payload": row.payload,
            }),
            event_type: row.event_type,
        }
    }
}

/// Which pending rows to deliver.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every pending row, oldest first.
    All,
    /// Only these (the events a job just wrote).
    Only(&'a [i64]),
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

/// Delivers pending rows until none is left, the limit, the budget or the
/// deadline is reached, or the sink fails a whole call (it is then left alone
/// until the next run). Database errors are returned; sink errors are counted.
pub async fn deliver(
    db: &Db,
    sink: &dyn EventSink,
    scope: Scope<'_>,
    bounds: Bounds,
) -> Result<Delivery, StoreError> {
    let started = Instant::now();
    let mut out = Delivery::default();
    let mut client = db.get().await?;
    let mut left = bounds.limit;
    while left > 0 && !bounds.deadline.reached() {
        if started.elapsed() >= bounds.budget {
            break;
        }
        let tx = db.begin(&mut client).await?;
        let sql = db.sql(&tx);
        let only = match scope {
            Scope::All => None,
            Scope::Only(ids) => Some(ids),
        };
        let want = CLAIM.min(i64::try_from(left).unwrap_or(CLAIM));
        let rows = events::claim_pending(&sql, want, only).await?;
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
                                out.failed += 1;
                                tracing::warn!(eventId = event.id, code = %code, "EventBridge refused an event; it stays pending");
                            }
                            EntryOutcome::Undeliverable(reason) => {
                                out.failed += 1;
                                tracing::error!(eventId = event.id, reason = %reason, "an event can never be delivered; set aside");
                                events::mark_undeliverable(&sql, event.id, &reason).await?;
                            }
                        }
                    }
                }
                Err(e) => {
                    out.failed += chunk.len() as u64;
                    tracing::warn!(error = %e, events = chunk.len(), "could not deliver events; they stay pending for a later run");
                    sink_failed = true;
                    break;
                }
            }
        }
        events::mark_published(&sql, &accepted).await?;
        crate::store::commit(tx).await?;
        out.published += accepted.len() as u64;
        left = left.saturating_sub(claimed as u64);
        if sink_failed || (claimed as i64) < want {
            break;
        }
    }
    let (pending, oldest) = events::pending(&db.sql_client(&client)).await?;
    out.pending = pending;
    out.oldest_pending_secs = oldest;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_has_the_documented_fields() {
        let row = OutboxRow {
            id: 42,
            event_type: "order.refund_requested".into(),
            batch_id: uuid::Uuid::nil(),
            order_id: None,
            created_at: chrono::DateTime::from_timestamp(1_764_400_000, 5_000_000).unwrap(),
            payload: json!({"amount": 125.5}),
        };
        let e = OutboxEvent::from(row);
        assert_eq!(e.id, 42);
        assert_eq!(e.event_type, "order.refund_requested");
        assert_eq!(
            e.detail,
            json!({"eventId": 42, "eventType": "order.refund_requested",
                   "batchId": "00000000-0000-0000-0000-000000000000", "orderId": null,
                   "occurredAt": "2025-11-29T07:06:40.005Z", "payload": {"amount": 125.5}})
        );
    }
}
