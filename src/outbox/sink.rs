//! The port delivery goes through: anything that can take a few events at a
//! time and say, per event, whether it took it. [`crate::eventbridge`] is the
//! production adapter; the tests have their own misbehaving ones.

use std::future::Future;
use std::pin::Pin;

use serde_json::{json, Value};

use crate::store::events::OutboxRow;

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
            attempts: 0,
            lease: chrono::DateTime::from_timestamp(1_764_400_060, 0).unwrap(),
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
