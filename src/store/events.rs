//! SQL for the outbox (`batch_events`, behaviour §10): claiming pending rows
//! for delivery, marking what EventBridge accepted, and how much is pending.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::sql::named;
use super::{Sql, StoreError};

/// One outbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub event_type: String,
    pub batch_id: Uuid,
    pub order_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub payload: Value,
}

/// Locks up to `limit` pending rows in `id` order — all pending rows, or only
/// those of `only` (the events a job just wrote). `SKIP LOCKED`: rows another
/// publisher holds are left to it, so no row is ever sent by two at once.
pub async fn claim_pending(
    sql: &Sql<'_>,
    limit: i64,
    only: Option<&[i64]>,
) -> Result<Vec<OutboxRow>, StoreError> {
    let filter = match only {
        Some(_) => "AND e.id = ANY(:only::int8[])",
        None => "AND :only::int8[] IS NULL",
    };
    let ids: Option<Vec<i64>> = only.map(<[i64]>::to_vec);
    let (text, params) = named(
        &format!(
            "SELECT e.id, e.event_type, e.batch_id, e.order_id, e.created_at, e.payload
               FROM batch_events e
              WHERE e.published_at IS NULL AND e.publish_error IS NULL {filter}
              ORDER BY e.id
              LIMIT :limit
              FOR UPDATE SKIP LOCKED"
        ),
        &[
            ("limit", &limit, Type::INT8),
            ("only", &ids, Type::INT8_ARRAY),
        ],
    )?;
    let rows = sql.query(&text, &params).await?;
    Ok(rows
        .iter()
        .map(|r| OutboxRow {
            id: r.get(0),
            event_type: r.get(1),
            batch_id: r.get(2),
            order_id: r.get(3),
            created_at: r.get(4),
            payload: r.get(5),
        })
        .collect())
}

/// Marks rows EventBridge accepted.
pub async fn mark_published(sql: &Sql<'_>, ids: &[i64]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let ids = ids.to_vec();
    sql.execute(
        "UPDATE batch_events SET published_at = now() WHERE id = ANY($1::int8[])",
        &[(&ids, Type::INT8_ARRAY)],
    )
    .await
}

/// Sets a row aside that can never be delivered (larger than an EventBridge
/// entry may be): it stays unpublished, with the reason, and is not claimed
/// again — a loop that resent it forever would help no one.
pub async fn mark_undeliverable(sql: &Sql<'_>, id: i64, reason: &str) -> Result<(), StoreError> {
    sql.execute(
        "UPDATE batch_events SET publish_error = $2 WHERE id = $1",
        &[(&id, Type::INT8), (&reason, Type::TEXT)],
    )
    .await
}

/// Rows not yet published, and the age in seconds of the oldest.
pub async fn pending(sql: &Sql<'_>) -> Result<(u64, u64), StoreError> {
    let row = sql
        .query_one(
            "SELECT count(*),
                    COALESCE(extract(epoch FROM now() - min(created_at)), 0)::int8
               FROM batch_events
              WHERE published_at IS NULL",
            &[],
        )
        .await?;
    let count: i64 = row.get(0);
    let age: i64 = row.get(1);
    Ok((count.max(0) as u64, age.max(0) as u64))
}
