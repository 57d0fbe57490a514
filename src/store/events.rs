//! SQL for the outbox (`batch_events`, behaviour §10): leasing due rows for
//! delivery, marking what EventBridge did with them, putting set-aside rows
//! back in line, and how much is pending.
//!
//! Every statement here runs alone (autocommit): a claim and a mark are each
//! one short transaction, so no transaction and no row lock is ever open
//! while a `PutEvents` call is in flight. The rows' lease (`leased_until`)
//! keeps other publishers off them meanwhile; its value doubles as the
//! claim's token, so a publisher whose lease ran out never undoes another's.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::types::Type;
use uuid::Uuid;

use super::sql::named;
use super::{Sql, StoreError};

/// One outbox row, as a claim leased it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub event_type: String,
    pub batch_id: Uuid,
    pub order_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub payload: Value,
    /// Refusals so far.
    pub attempts: i32,
    /// The lease this claim took: also its token.
    pub lease: DateTime<Utc>,
}

/// The rows a claim may take.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// Only rows with a greater id (the cursor of one delivery run).
    pub after: i64,
    pub limit: i64,
    /// Only these rows (the events a job just wrote); `None`: any.
    pub only: Option<&'a [i64]>,
    pub lease: Duration,
}

/// Leases up to `limit` due rows in `id` order, in one statement: pending
/// (not published, not set aside), due (`next_attempt_at` passed), and not
/// leased by another publisher (or its lease ran out). `SKIP LOCKED`: a row
/// another claim is leasing at this instant is left to it, and the lease is
/// re-checked on the row's newest version, so no row is leased twice.
pub async fn claim(sql: &Sql<'_>, c: Claim<'_>) -> Result<Vec<OutboxRow>, StoreError> {
    let filter = match c.only {
        Some(_) => "AND id = ANY(:only::int8[])",
        None => "AND :only::int8[] IS NULL",
    };
    let ids: Option<Vec<i64>> = c.only.map(<[i64]>::to_vec);
    let lease_ms = i64::try_from(c.lease.as_millis()).unwrap_or(i64::MAX);
    let (text, params) = named(
        &format!(
            "WITH due AS (
                 SELECT id FROM batch_events
                  WHERE published_at IS NULL AND publish_error IS NULL
                    AND next_attempt_at <= now()
                    AND (leased_until IS NULL OR leased_until <= now())
                    AND id > :after {filter}
                  ORDER BY id
                  LIMIT :limit
                    FOR UPDATE SKIP LOCKED)
             UPDATE batch_events e
                SET leased_until = now() + :lease_ms * interval '1 millisecond'
               FROM due
              WHERE e.id = due.id
             RETURNING e.id, e.event_type, e.batch_id, e.order_id, e.created_at, e.payload,
                       e.publish_attempts, e.leased_until"
        ),
        &[
            ("after", &c.after, Type::INT8),
            ("limit", &c.limit, Type::INT8),
            ("only", &ids, Type::INT8_ARRAY),
            ("lease_ms", &lease_ms, Type::INT8),
        ],
    )?;
    let rows = sql.query(&text, &params).await?;
    let mut out: Vec<OutboxRow> = rows
        .iter()
        .map(|r| OutboxRow {
            id: r.get(0),
            event_type: r.get(1),
            batch_id: r.get(2),
            order_id: r.get(3),
            created_at: r.get(4),
            payload: r.get(5),
            attempts: r.get(6),
            lease: r.get(7),
        })
        .collect();
    // RETURNING keeps no order.
    out.sort_by_key(|r| r.id);
    Ok(out)
}

/// What one `PutEvents` call's rows come to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Marks {
    /// Accepted: published.
    pub accepted: Vec<i64>,
    /// Refused (or never sendable): one more attempt counted, and either due
    /// again after a delay or set aside with the reason.
    pub refused: Vec<Refusal>,
    /// Not known to have arrived (the call failed whole, or was never made):
    /// their lease is given back, no attempt counted.
    pub released: Vec<Leased>,
}

/// A row and the lease its claim took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leased {
    pub id: i64,
    pub lease: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub row: Leased,
    /// When it may be tried again, from now (ignored when set aside).
    pub retry_in: Duration,
    /// `Some`: set aside, with this reason.
    pub set_aside: Option<String>,
}

impl Marks {
    pub fn is_empty(&self) -> bool {
        self.accepted.is_empty() && self.refused.is_empty() && self.released.is_empty()
    }

    /// Adds `other`'s rows to these (several calls' marks in one statement).
    pub fn append(&mut self, mut other: Marks) {
        self.accepted.append(&mut other.accepted);
        self.refused.append(&mut other.refused);
        self.released.append(&mut other.released);
    }
}

/// Marks one call's rows in one statement. Accepted rows are published
/// whoever holds them now (EventBridge has them); refusals and releases touch
/// only rows still under this claim's lease.
pub async fn mark(sql: &Sql<'_>, m: &Marks) -> Result<(), StoreError> {
    if m.is_empty() {
        return Ok(());
    }
    let refused_ids: Vec<i64> = m.refused.iter().map(|r| r.row.id).collect();
    let refused_leases: Vec<DateTime<Utc>> = m.refused.iter().map(|r| r.row.lease).collect();
    let delays_ms: Vec<i64> = m
        .refused
        .iter()
        .map(|r| i64::try_from(r.retry_in.as_millis()).unwrap_or(i64::MAX))
        .collect();
    let errors: Vec<Option<String>> = m.refused.iter().map(|r| r.set_aside.clone()).collect();
    let released_ids: Vec<i64> = m.released.iter().map(|r| r.id).collect();
    let released_leases: Vec<DateTime<Utc>> = m.released.iter().map(|r| r.lease).collect();
    let (text, params) = named(
        "WITH accepted AS (
             UPDATE batch_events SET published_at = now(), leased_until = NULL
              WHERE id = ANY(:accepted::int8[]) AND published_at IS NULL
             RETURNING 1),
         refused AS (
             UPDATE batch_events e
                SET publish_attempts = e.publish_attempts + 1,
                    next_attempt_at = now() + r.delay_ms * interval '1 millisecond',
                    publish_error = r.error,
                    leased_until = NULL
               FROM unnest(:refused::int8[], :refused_leases::timestamptz[], :delays_ms::int8[],
                           :errors::text[]) AS r(id, lease, delay_ms, error)
              WHERE e.id = r.id AND e.published_at IS NULL AND e.leased_until = r.lease
             RETURNING 1),
         released AS (
             UPDATE batch_events e SET leased_until = NULL
               FROM unnest(:released::int8[], :released_leases::timestamptz[]) AS r(id, lease)
              WHERE e.id = r.id AND e.published_at IS NULL AND e.leased_until = r.lease
             RETURNING 1)
         SELECT (SELECT count(*) FROM accepted), (SELECT count(*) FROM refused),
                (SELECT count(*) FROM released)",
        &[
            ("accepted", &m.accepted, Type::INT8_ARRAY),
            ("refused", &refused_ids, Type::INT8_ARRAY),
            ("refused_leases", &refused_leases, Type::TIMESTAMPTZ_ARRAY),
            ("delays_ms", &delays_ms, Type::INT8_ARRAY),
            ("errors", &errors, Type::TEXT_ARRAY),
            ("released", &released_ids, Type::INT8_ARRAY),
            ("released_leases", &released_leases, Type::TIMESTAMPTZ_ARRAY),
        ],
    )?;
    sql.execute(&text, &params).await
}

/// Puts every set-aside row (unpublished, `publish_error` set) back in line:
/// no error, no attempts, due now. Returns how many.
pub async fn requeue_set_aside(sql: &Sql<'_>) -> Result<u64, StoreError> {
    let row = sql
        .query_one(
            "WITH back AS (
                 UPDATE batch_events
                    SET publish_error = NULL, publish_attempts = 0, next_attempt_at = now(),
                        leased_until = NULL
                  WHERE published_at IS NULL AND publish_error IS NOT NULL
                 RETURNING 1)
             SELECT count(*) FROM back",
            &[],
        )
        .await?;
    let n: i64 = row.get(0);
    Ok(n.max(0) as u64)
}

/// Rows pending (not published, not set aside — due or not), and the age in
/// seconds of the first of them in `id` order (0 when none). Both read the
/// pending index only (and one row).
pub async fn backlog(sql: &Sql<'_>) -> Result<(u64, u64), StoreError> {
    let row = sql
        .query_one(
            "SELECT (SELECT count(*) FROM batch_events
                      WHERE published_at IS NULL AND publish_error IS NULL),
                    COALESCE((SELECT extract(epoch FROM now() - created_at)::int8 FROM batch_events
                               WHERE published_at IS NULL AND publish_error IS NULL
                               ORDER BY id LIMIT 1), 0)",
            &[],
        )
        .await?;
    let count: i64 = row.get(0);
    let age: i64 = row.get(1);
    Ok((count.max(0) as u64, age.max(0) as u64))
}
