//! SQL for the batch lifecycle: fetching orchestrate candidates a chunk at a
//! time, and applying decided actions to many batches in one statement each.
//!
//! The apply statements take parallel arrays (`UNNEST`) and do every write of an
//! action — status, supplier order, order cancellations, history, events — in
//! one statement built from data-modifying CTEs, so a chunk of any size costs
//! the same few round trips.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use super::sql::{named, Param};
use super::{Sql, StoreError};
use crate::domain::status::{BatchStatus, REFUNDABLE_PAYMENT_STATUSES, REFUND_PENDING};
use crate::domain::terms::DEFAULT_LEAD_TIME_DAYS;
use crate::domain::tier::{Candidate, CONFIRM_AT, NEARING_AT};

/// A batch is an orchestrate candidate while filling and within the look-ahead.
const IS_CANDIDATE: &str = "b.batch_status = 'filling' AND b.window_closes_at < now() + make_interval(hours => :lookahead_hours)";

/// After the keyset cursor (`:after_at`, `:after_id`), or from the start. Two
/// texts rather than `:after_at IS NULL OR …`: statements are prepared, and a
/// generic plan cannot fold that OR away — it would scan every candidate for
/// every chunk.
fn after_cursor(c: Option<Cursor>) -> &'static str {
    match c {
        Some(_) => "(b.window_closes_at, b.id) > (:after_at::timestamptz, :after_id::uuid)",
        None => "(:after_at::timestamptz IS NULL AND :after_id::uuid IS NULL)",
    }
}

/// Narrows candidates to those whose decision may write, so a small `limit` is
/// spent on work rather than on batches that are only reported. The thresholds
/// come from the domain as parameters (`:confirm_at`, `:nearing_at`); the
/// decision itself is still made in Rust on every fetched row. It must stay
/// the exact complement of `Action::writes()`; `tests/api/tier_filter.rs`
/// proves it over generated facts, every 50/60/75 % boundary and target <= 0
/// included.
const MAY_WRITE: &str = "(b.target_quantity > 0 AND (
        b.window_closes_at <= now()
     OR COALESCE(b.current_quantity, 0)::int8 * 100 >= b.target_quantity::int8 * :confirm_at
     OR (COALESCE(b.current_quantity, 0)::int8 * 100 >= b.target_quantity::int8 * :nearing_at
         AND b.nearing_target_notified_at IS NULL)))";

/// What a decision needs of a candidate row, read by [`candidate_row`].
const CANDIDATE_COLUMNS: &str = "b.id, b.window_closes_at, COALESCE(b.current_quantity, 0)::int8,
        b.target_quantity::int8, b.window_closes_at <= now(), b.nearing_target_notified_at IS NOT NULL";

/// An order that a cancellation still has to cancel.
const ORDER_IS_LIVE: &str =
    "o.status IS DISTINCT FROM 'cancelled' AND o.workflow_status IS DISTINCT FROM 'cancelled'";

/// What every keyset scan of candidates binds by name: the thresholds, the
/// look-ahead and the cursor (`:confirm_at`, `:nearing_at`, `:lookahead_hours`,
/// `:after_at`, `:after_id`).
struct Keyset {
    lookahead_hours: i32,
    after_at: Option<DateTime<Utc>>,
    after_id: Option<Uuid>,
}

impl Keyset {
    fn new(lookahead_hours: i32, after: Option<Cursor>) -> Self {
        Keyset {
            lookahead_hours,
            after_at: after.map(|c| c.window_closes_at),
            after_id: after.map(|c| c.id),
        }
    }

    /// `sql` with these parameters and `more` bound.
    fn bind<'p>(
        &'p self,
        sql: &str,
        more: &[(&str, &'p (dyn ToSql + Sync), Type)],
    ) -> Result<(String, Vec<Param<'p>>), StoreError> {
        let mut list: Vec<(&str, &'p (dyn ToSql + Sync), Type)> = vec![
            ("confirm_at", &CONFIRM_AT, Type::INT8),
            ("nearing_at", &NEARING_AT, Type::INT8),
            ("lookahead_hours", &self.lookahead_hours, Type::INT4),
            ("after_at", &self.after_at, Type::TIMESTAMPTZ),
            ("after_id", &self.after_id, Type::UUID),
        ];
        list.extend(more.iter().cloned());
        named(sql, &list)
    }
}

/// Which candidates a scan returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Candidates whose decision may write (taken first, and locked).
    MayWrite,
    /// The rest: reported or only counted.
    ReportOnly,
}

/// Keyset position: candidates are walked in `(window_closes_at, id)` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub window_closes_at: DateTime<Utc>,
    pub id: Uuid,
}

#[derive(Debug, Clone, Copy)]
pub struct CandidateRow {
    pub id: Uuid,
    pub window_closes_at: DateTime<Utc>,
    pub facts: Candidate,
    /// Where the row lies, when this transaction holds it locked
    /// ([`lock_candidates_by_id`]); `None` for an unlocked read.
    pub loc: Option<Tid>,
}

/// Where a row version lies in its table (`ctid`). Only a row this
/// transaction holds locked keeps it until the commit: nobody else can update
/// it meanwhile, so the apply statements may find it there ([`Move::loc`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tid {
    pub block: u32,
    pub offset: u16,
}

impl Tid {
    /// Reads Postgres' text form of a `tid`, `(block,offset)`.
    pub fn parse(text: &str) -> Option<Tid> {
        let (block, offset) = text.strip_prefix('(')?.strip_suffix(')')?.split_once(',')?;
        Some(Tid {
            block: block.parse().ok()?,
            offset: offset.parse().ok()?,
        })
    }
}

impl std::fmt::Display for Tid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({},{})", self.block, self.offset)
    }
}

impl CandidateRow {
    pub fn cursor(&self) -> Cursor {
        Cursor {
            window_closes_at: self.window_closes_at,
            id: self.id,
        }
    }
}

pub struct ScanQuery {
    pub scan: Scan,
    pub lookahead_hours: i32,
    pub after: Option<Cursor>,
    pub limit: i64,
}

/// One page of candidates in keyset order, unlocked (a dry run, and the
/// report-only pass).
pub async fn candidates(client: &Sql<'_>, q: &ScanQuery) -> Result<Vec<CandidateRow>, StoreError> {
    let filter = match q.scan {
        Scan::MayWrite => MAY_WRITE.to_owned(),
        Scan::ReportOnly => format!("NOT {MAY_WRITE}"),
    };
    let after = after_cursor(q.after);
    let sql = format!(
        "SELECT {CANDIDATE_COLUMNS}
           FROM production_batches b
          WHERE {IS_CANDIDATE} AND {after} AND {filter}
          ORDER BY b.window_closes_at, b.id
          LIMIT :limit"
    );
    let keyset = Keyset::new(q.lookahead_hours, q.after);
    let (sql, params) = keyset.bind(&sql, &[("limit", &q.limit, Type::INT8)])?;
    let rows = client.query(&sql, &params).await?;
    Ok(rows.iter().map(candidate_row).collect())
}

/// A slab of candidates that may need a write, read by [`may_write_slab`].
#[derive(Debug)]
pub struct Slab {
    /// The slab's batches, sorted by id, each with where its row lay when
    /// the slab was read ([`lock_candidates_at`] looks there first).
    pub entries: Vec<SlabEntry>,
    /// Where the slab ends in keyset order: the next slab starts after it.
    pub last: Option<Cursor>,
}

/// One batch of a slab: its id, and where its row lay when the slab was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlabEntry {
    pub id: Uuid,
    pub loc: Tid,
}

/// The next slab: up to `limit` candidates that may need a write after
/// `after`, in keyset order, unlocked. Orchestrate then takes it a chunk at a
/// time in id order with [`lock_candidates_at`], which checks each row
/// again under its lock.
pub async fn may_write_slab(
    client: &Sql<'_>,
    lookahead_hours: i32,
    after: Option<Cursor>,
    limit: i64,
) -> Result<Slab, StoreError> {
    let sql = format!(
        "SELECT b.window_closes_at, b.id, b.ctid::text
           FROM production_batches b
          WHERE {IS_CANDIDATE} AND {after} AND {MAY_WRITE}
          ORDER BY b.window_closes_at, b.id
          LIMIT :limit",
        after = after_cursor(after)
    );
    let keyset = Keyset::new(lookahead_hours, after);
    let (sql, params) = keyset.bind(&sql, &[("limit", &limit, Type::INT8)])?;
    // Folded as the rows arrive: a slab of 100,000 keys is 2.4 MB of ids and
    // locations, where the rows themselves would be ten times that.
    let empty = Ok(Slab {
        entries: Vec::new(),
        last: None,
    });
    let slab = client
        .fold(&sql, &params, empty, |acc, r| {
            let Ok(slab) = acc else { return };
            let key = Cursor {
                window_closes_at: r.get(0),
                id: r.get(1),
            };
            let Some(loc) = Tid::parse(r.get(2)) else {
                *acc = Err(StoreError::Unexpected("a ctid that does not parse"));
                return;
            };
            slab.entries.push(SlabEntry { id: key.id, loc });
            slab.last = Some(key);
        })
        .await?;
    let mut slab = slab?;
    slab.entries.sort_unstable_by_key(|e| e.id);
    Ok(slab)
}

/// A chunk of a slab ([`may_write_slab`]), locked (`SKIP LOCKED`) and checked
/// again, in keyset order: the candidates among its batches that may still
/// need a write. A row another orchestrator holds, or that stopped being a
/// candidate since the slab was read, is left out.
///
/// Each row is looked for first where the slab found it (a TID scan, the id
/// checked too): no descent of the batches' key, and no pruning of the heap
/// page on the way, which an index fetch does and which, repeated by every
/// chunk that touches a page, was a measurable part of a million-batch run
/// (BENCHMARKS.md). A row that is not there any more (updated since the slab
/// was read, by a buyer's order say) is looked for again by id, in a second
/// statement that runs only when some are missing; rows the first statement
/// skipped as locked or no longer candidates are among them and are left out
/// again, so the result is what [`lock_candidates_by_id`] gives.
pub async fn lock_candidates_at(
    client: &Sql<'_>,
    chunk: &[SlabEntry],
    lookahead_hours: i32,
) -> Result<Vec<CandidateRow>, StoreError> {
    let locs: Vec<String> = chunk.iter().map(|e| e.loc.to_string()).collect();
    let ids: Vec<Uuid> = chunk.iter().map(|e| e.id).collect();
    let mut rows = lock_found(
        client,
        "FROM unnest(:locs::text[]::tid[], :ids::uuid[]) AS i(loc, id)
           JOIN production_batches b ON b.ctid = i.loc
          WHERE b.id = i.id",
        lookahead_hours,
        &[
            ("locs", &locs, Type::TEXT_ARRAY),
            ("ids", &ids, Type::UUID_ARRAY),
        ],
    )
    .await?;
    if rows.len() < chunk.len() {
        let found: HashSet<Uuid> = rows.iter().map(|r| r.id).collect();
        let missing: Vec<Uuid> = ids.into_iter().filter(|id| !found.contains(id)).collect();
        rows.extend(lock_candidates_by_id(client, &missing, lookahead_hours).await?);
        rows.sort_unstable_by_key(|r| (r.window_closes_at, r.id));
    }
    Ok(rows)
}

/// The candidates among `ids` that may still need a write, locked
/// (`SKIP LOCKED`), in keyset order, found by key: the batches of a chunk
/// that were not where the slab found them ([`lock_candidates_at`]), or a
/// chunk taken again after its writes failed, to find the batch that failed
/// them. A row another orchestrator holds, or that stopped being a
/// candidate since the slab was read, is left out.
pub async fn lock_candidates_by_id(
    client: &Sql<'_>,
    ids: &[Uuid],
    lookahead_hours: i32,
) -> Result<Vec<CandidateRow>, StoreError> {
    let ids = ids.to_vec();
    lock_found(
        client,
        "FROM production_batches b WHERE b.id = ANY(:ids::uuid[])",
        lookahead_hours,
        &[("ids", &ids, Type::UUID_ARRAY)],
    )
    .await
}

/// The one lock statement of both ways to find a chunk's batches: the rows
/// `find` (a `FROM … WHERE …` naming the batches `b`, its parameters in
/// `more`) yields that are still candidates that may need a write, in keyset
/// order, locked (`SKIP LOCKED`), each with where it lies.
async fn lock_found(
    client: &Sql<'_>,
    find: &str,
    lookahead_hours: i32,
    more: &[(&str, &(dyn ToSql + Sync), Type)],
) -> Result<Vec<CandidateRow>, StoreError> {
    let sql = format!(
        "SELECT {CANDIDATE_COLUMNS}, b.ctid::text
           {find} AND {IS_CANDIDATE} AND {MAY_WRITE}
          ORDER BY b.window_closes_at, b.id
          FOR UPDATE OF b SKIP LOCKED"
    );
    let mut list: Vec<(&str, &(dyn ToSql + Sync), Type)> = vec![
        ("confirm_at", &CONFIRM_AT, Type::INT8),
        ("nearing_at", &NEARING_AT, Type::INT8),
        ("lookahead_hours", &lookahead_hours, Type::INT4),
    ];
    list.extend(more.iter().cloned());
    let (sql, params) = named(&sql, &list)?;
    let rows = client.query(&sql, &params).await?;
    rows.iter()
        .map(|r| {
            let loc =
                Tid::parse(r.get(6)).ok_or(StoreError::Unexpected("a ctid that does not parse"))?;
            Ok(CandidateRow {
                loc: Some(loc),
                ..candidate_row(r)
            })
        })
        .collect()
}

fn candidate_row(r: &tokio_postgres::Row) -> CandidateRow {
    CandidateRow {
        id: r.get(0),
        window_closes_at: r.get(1),
        facts: Candidate {
            current_quantity: r.get(2),
            target_quantity: r.get(3),
            window_closed: r.get(4),
            nearing_notified: r.get(5),
        },
        loc: None,
    }
}

/// Whether any candidate that may need a write lies after `after` (for `hasMore`).
pub async fn more_may_write(
    client: &Sql<'_>,
    lookahead_hours: i32,
    after: Option<Cursor>,
) -> Result<bool, StoreError> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM production_batches b
                         WHERE {IS_CANDIDATE} AND {after} AND {MAY_WRITE})",
        after = after_cursor(after)
    );
    let keyset = Keyset::new(lookahead_hours, after);
    let (sql, params) = keyset.bind(&sql, &[])?;
    let row = client.query_one(&sql, &params).await?;
    Ok(row.get(0))
}

/// One batch to move, with its fill (for events and history) and an optional note.
#[derive(Debug, Clone)]
pub struct Move {
    pub batch_id: Uuid,
    pub fill_percentage: Decimal,
    pub note: Option<String>,
    /// Where the batch's row lies, when the caller locked it with
    /// [`lock_candidates_by_id`] in this transaction: the statement then
    /// finds it there (a TID scan) instead of by its key: no second descent
    /// of the key and no second look at (and pruning of) the heap page, a
    /// tenth of the apply statements' buffer accesses at a million batches
    /// (BENCHMARKS.md).
    pub loc: Option<Tid>,
}

/// The moves as the parallel arrays an apply statement unnests.
struct Columns {
    ids: Vec<Uuid>,
    fills: Vec<Decimal>,
    notes: Vec<Option<String>>,
    /// Every move's location, or `None` when one has none: one statement
    /// finds all its batches the same way.
    locs: Option<Vec<String>>,
}

impl Columns {
    fn of(moves: &[Move]) -> Self {
        Columns {
            ids: moves.iter().map(|m| m.batch_id).collect(),
            fills: moves.iter().map(|m| m.fill_percentage).collect(),
            notes: moves.iter().map(|m| m.note.clone()).collect(),
            locs: moves.iter().map(|m| m.loc.map(|l| l.to_string())).collect(),
        }
    }

    /// Exactly the batches found by their locations must have moved. The
    /// caller locked and checked each one, so one that did not was moved by
    /// something else in this transaction (a trigger, say) and is no longer
    /// where it was locked; and a ctid is unique only within one table, so on
    /// a partitioned `production_batches` a location could also name a row of
    /// another partition, and more would move. Either is an error, never a
    /// silent skip or a stray write: the statement's writes roll back with
    /// the chunk, which is then taken again by id (orchestrate's `isolate`).
    fn all_moved(&self, moved: usize) -> Result<(), StoreError> {
        match self.locs {
            Some(_) if moved != self.ids.len() => Err(StoreError::Unexpected(
                "a locked batch was not where it was locked",
            )),
            _ => Ok(()),
        }
    }

    /// `sql` with its `{input}` (the CTE `input`, one row `i` per move) and
    /// `{find}` (the condition that finds move `i`'s batch `b`) filled in,
    /// and the moves and `more` bound.
    fn bind<'p>(
        &'p self,
        sql: &str,
        more: &[(&str, &'p (dyn ToSql + Sync), Type)],
    ) -> Result<(String, Vec<Param<'p>>), StoreError> {
        let (input, find) = match self.locs {
            Some(_) => (
                "input AS (SELECT * FROM unnest(:ids::uuid[], :fills::numeric[], :notes::text[], :locs::text[]::tid[])
                                      AS i(batch_id, fill, note, loc))",
                "b.ctid = i.loc",
            ),
            None => (
                "input AS (SELECT * FROM unnest(:ids::uuid[], :fills::numeric[], :notes::text[])
                                      AS i(batch_id, fill, note))",
                "b.id = i.batch_id",
            ),
        };
        let sql = sql.replace("{input}", input).replace("{find}", find);
        let mut list: Vec<(&str, &'p (dyn ToSql + Sync), Type)> = vec![
            ("ids", &self.ids, Type::UUID_ARRAY),
            ("fills", &self.fills, Type::NUMERIC_ARRAY),
            ("notes", &self.notes, Type::TEXT_ARRAY),
        ];
        if let Some(locs) = &self.locs {
            list.push(("locs", locs, Type::TEXT_ARRAY));
        }
        list.extend(more.iter().cloned());
        named(&sql, &list)
    }
}

/// Confirms batches: status, start date, one supplier order each, `batch.confirmed`.
/// Returns batch id → supplier order id. The caller holds the batch rows locked.
///
/// A batch that already has a supplier order linked to it (a legacy order of
/// the original function, linked by migration 0008) keeps that one: no second
/// order is made, and the event says `reusedSupplierOrder`. New orders carry
/// `target_date` = today + the supplier's `lead_time_days` (its MOU terms;
/// [`DEFAULT_LEAD_TIME_DAYS`] when it has none), which the live app's capacity trigger books.
///
/// Which batches already have one is found by the unique `batch_id` key
/// itself (`ON CONFLICT DO NOTHING`), not by reading `supplier_orders` first:
/// that table grows by every chunk of a run, while a prepared statement's
/// generic plan keeps the size it saw when it was made — as a join it became a
/// scan of the whole table per chunk. `supplier_orders` is read only in a
/// chunk where a batch met an existing order (rare: legacy links). A batch
/// that ends up with no order at all (another writer's order, committed while
/// this statement ran, that its snapshot cannot see) fails the statement, so
/// the chunk is retried batch by batch.
pub async fn confirm(client: &Sql<'_>, moves: &[Move]) -> Result<HashMap<Uuid, Uuid>, StoreError> {
    if moves.is_empty() {
        return Ok(HashMap::new());
    }
    let c = Columns::of(moves);
    let (sql, params) = c.bind(
            "WITH {input}, moved AS (
                 UPDATE production_batches b
                    SET batch_status = 'confirmed', actual_start_date = current_date, updated_at = now()
                   FROM input i
                  WHERE {find} AND b.batch_status IN ('filling', 'needs_review')
              RETURNING b.id, b.supplier_id, b.target_quantity, b.product_category, b.unit_price_base,
                        i.fill, i.note
             ), made AS (
                 INSERT INTO supplier_orders
                        (order_number, supplier_id, batch_id, product_type, quantity,
                         buyer_price, supplier_price, status, target_date)
                 -- The contributions' sum by an index probe per batch: as a join
                 -- to an aggregate, the generic plan re-ran the aggregate per row.
                 -- The terms are one row per supplier, a small table: joined.
                 SELECT 'BATCH-' || m.id, m.supplier_id, m.id, m.product_category, m.target_quantity,
                        COALESCE((SELECT sum(c.quantity * c.buyer_price_per_unit)
                                    FROM batch_contributions c WHERE c.batch_id = m.id), 0),
                        m.unit_price_base * m.target_quantity, 'pending',
                        current_date + COALESCE(mt.lead_time_days, :default_lead_time_days)
                   FROM moved m LEFT JOIN supplier_mou_terms mt ON mt.supplier_id = m.supplier_id
                 ON CONFLICT (batch_id) DO NOTHING
              RETURNING id, batch_id, quantity, buyer_price, supplier_price, false AS reused
             ), linked AS MATERIALIZED (
                 -- Batches whose insert met the unique batch_id key: they have an order already.
                 SELECT m.id FROM moved m WHERE NOT EXISTS (SELECT 1 FROM made WHERE made.batch_id = m.id)
             ), existing AS (
                 SELECT so.id, so.batch_id, so.quantity, so.buyer_price, so.supplier_price, true AS reused
                   FROM supplier_orders so
                  WHERE EXISTS (SELECT 1 FROM linked)
                    AND so.batch_id = ANY (ARRAY(SELECT id FROM linked))
             ), so AS (
                 SELECT * FROM made UNION ALL SELECT * FROM existing
             ), events AS (
                 INSERT INTO batch_events (batch_id, event_type, payload)
                 SELECT so.batch_id, 'batch.confirmed', jsonb_strip_nulls(jsonb_build_object(
                            'supplierOrderId', so.id, 'fillPercentage', m.fill,
                            'quantity', so.quantity, 'supplierPrice', so.supplier_price,
                            'buyerPrice', so.buyer_price, 'note', m.note,
                            'reusedSupplierOrder', CASE WHEN so.reused THEN true END))
                   FROM so JOIN moved m ON m.id = so.batch_id
             )
             SELECT m.id, so.id FROM moved m LEFT JOIN so ON so.batch_id = m.id",
            &[("default_lead_time_days", &DEFAULT_LEAD_TIME_DAYS, Type::INT4)],
        )?;
    let rows = client.query(&sql, &params).await?;
    c.all_moved(rows.len())?;
    rows.iter()
        .map(|r| {
            let order: Option<Uuid> = r.get(1);
            order
                .map(|order| (r.get(0), order))
                .ok_or(StoreError::Unexpected(
                    "a confirmed batch has no supplier order",
                ))
        })
        .collect()
}

/// Holds batches for an admin: status `needs_review`, `batch.needs_review`.
pub async fn hold_for_review(client: &Sql<'_>, moves: &[Move]) -> Result<(), StoreError> {
    if moves.is_empty() {
        return Ok(());
    }
    let c = Columns::of(moves);
    let (sql, params) = c.bind(
        "WITH {input}, moved AS (
             UPDATE production_batches b
                SET batch_status = 'needs_review', updated_at = now()
               FROM input i
              WHERE {find} AND b.batch_status = 'filling'
          RETURNING b.id, i.fill, b.current_quantity, b.target_quantity, b.window_closes_at
         ), events AS (
             INSERT INTO batch_events (batch_id, event_type, payload)
             SELECT id, 'batch.needs_review', jsonb_build_object(
                        'fillPercentage', fill, 'currentQuantity', current_quantity,
                        'targetQuantity', target_quantity, 'windowClosesAt', window_closes_at)
               FROM moved
         )
         SELECT count(*) FROM moved",
        &[],
    )?;
    let moved: i64 = client.query_one(&sql, &params).await?.get(0);
    c.all_moved(moved as usize)
}

/// Cancels batches and every live order in them: statuses, refund flags on paid
/// or partly paid orders, one history row per order, and the events
/// `batch.cancelled`, `order.cancelled`, `order.refund_requested`.
/// Returns batch id → orders cancelled. `reviewer` is the admin who rejected
/// the batch, if any: named in the notes and the `batch.cancelled` payload,
/// and recorded as `changed_by` when `reviewer_in_history` (a live schema's
/// `changed_by` references `auth.users`, where a valid admin may be missing).
pub async fn cancel(
    client: &Sql<'_>,
    moves: &[Move],
    reviewer: Option<Uuid>,
    reviewer_in_history: bool,
) -> Result<HashMap<Uuid, i64>, StoreError> {
    let changed_by = reviewer.filter(|_| reviewer_in_history);
    if moves.is_empty() {
        return Ok(HashMap::new());
    }
    let c = Columns::of(moves);
    let sql = format!(
        "WITH {{input}}, moved AS (
             UPDATE production_batches b
                SET batch_status = 'cancelled', updated_at = now()
               FROM input i
              WHERE {{find}} AND b.batch_status IN ('filling', 'needs_review')
          RETURNING b.id, i.fill, i.note
         ), pairs AS MATERIALIZED (
             -- Driven by the input ids through the (batch_id, order_id) index;
             -- `moved` keeps only the batches the status guard let through.
             -- The refund is the order's contribution to the batch, never
             -- `orders.buyer_price`, which buyers can edit (behaviour §4.3).
             SELECT c.order_id, c.batch_id, c.quantity * c.buyer_price_per_unit AS amount
               FROM batch_contributions c
              WHERE c.batch_id = ANY(:ids::uuid[]) AND c.batch_id IN (SELECT id FROM moved)
         ), locked AS (
             -- FOR UPDATE returns the newest version of each order, so the history
             -- and refund events below see the payment status as it is now.
             SELECT o.id, o.ctid AS loc, o.workflow_status, o.payment_status
               FROM orders o
              WHERE o.id = ANY (ARRAY(SELECT order_id FROM pairs))
                AND {ORDER_IS_LIVE}
                FOR UPDATE OF o
         ), targets AS (
             -- An order belongs to one batch; if legacy data put it in two, the
             -- lowest batch id of this statement takes it.
             SELECT DISTINCT ON (l.id) l.id, l.loc, l.workflow_status, l.payment_status, p.amount,
                    m.id AS batch_id, m.fill, m.note
               FROM locked l
               JOIN pairs p ON p.order_id = l.id
               JOIN moved m ON m.id = p.batch_id
              ORDER BY l.id, m.id
         ), cancelled AS (
             UPDATE orders o
                SET status = 'cancelled',
                    workflow_status = 'cancelled',
                    payment_status = CASE WHEN t.payment_status = ANY(:refundable::text[])
                                          THEN :refund_pending::text ELSE t.payment_status END,
                    updated_at = now()
               FROM targets t
              -- Where `locked` found it (its newest version, locked by this
              -- statement, so it cannot have moved): no second descent of the
              -- key. The id too: a ctid is unique only within one table, and a
              -- partitioned orders table has many.
              WHERE o.ctid = t.loc AND o.id = t.id
          RETURNING o.id
         ), history AS (
             INSERT INTO order_status_history (order_id, old_status, new_status, changed_by, notes)
             SELECT t.id, t.workflow_status, 'cancelled', :changed_by::uuid,
                    'Batch ' || t.batch_id || ' cancelled at ' || t.fill || '% filled'
                    || COALESCE(' by admin ' || :reviewer::uuid, '') || COALESCE(': ' || t.note, '')
               FROM targets t
         ), counts AS (
             SELECT m.id, count(t.id) AS cancelled
               FROM moved m LEFT JOIN targets t ON t.batch_id = m.id
              GROUP BY m.id
         ), events AS (
             -- One INSERT so that ids follow the order written here: each batch's
             -- `batch.cancelled` before the order events it caused.
             INSERT INTO batch_events (batch_id, order_id, event_type, payload)
             SELECT m.id, NULL::uuid, 'batch.cancelled', jsonb_strip_nulls(jsonb_build_object(
                        'fillPercentage', m.fill, 'ordersCancelled', n.cancelled, 'note', m.note,
                        'reviewedBy', :reviewer::uuid))
               FROM moved m JOIN counts n ON n.id = m.id
             UNION ALL
             SELECT t.batch_id, t.id, 'order.cancelled', jsonb_strip_nulls(jsonb_build_object(
                        'previousWorkflowStatus', t.workflow_status, 'note', t.note))
               FROM targets t
             UNION ALL
             SELECT t.batch_id, t.id, 'order.refund_requested', jsonb_build_object(
                        'amount', t.amount, 'previousPaymentStatus', t.payment_status)
               FROM targets t
              WHERE t.payment_status = ANY(:refundable::text[])
         )
         -- Every locked order was updated: anything else would be a lost write.
         SELECT n.id, n.cancelled, (SELECT count(*) FROM cancelled) = (SELECT count(*) FROM targets)
           FROM counts n"
    );
    let refundable: &[&str] = &REFUNDABLE_PAYMENT_STATUSES;
    let (sql, params) = c.bind(
        &sql,
        &[
            ("changed_by", &changed_by, Type::UUID),
            ("reviewer", &reviewer, Type::UUID),
            ("refundable", &refundable, Type::TEXT_ARRAY),
            ("refund_pending", &REFUND_PENDING, Type::TEXT),
        ],
    )?;
    let rows = client.query(&sql, &params).await?;
    c.all_moved(rows.len())?;
    if rows.iter().any(|r| !r.get::<_, bool>(2)) {
        return Err(StoreError::Unexpected(
            "a locked order to cancel was not where it was locked",
        ));
    }
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Writes `batch.nearing_target` for batches that have none yet and marks them
/// notified. The partial unique index makes "at most once per batch" hold even
/// across racing runs.
pub async fn notify_nearing(client: &Sql<'_>, moves: &[Move]) -> Result<(), StoreError> {
    if moves.is_empty() {
        return Ok(());
    }
    let c = Columns::of(moves);
    let (sql, params) = c.bind(
        "WITH {input}, marked AS (
             UPDATE production_batches b SET nearing_target_notified_at = now()
               FROM input i WHERE {find} AND b.nearing_target_notified_at IS NULL
             RETURNING b.id
         ), events AS (
             INSERT INTO batch_events (batch_id, event_type, payload)
             SELECT i.batch_id, 'batch.nearing_target', jsonb_build_object('fillPercentage', i.fill)
               FROM input i
             ON CONFLICT (batch_id) WHERE event_type = 'batch.nearing_target' DO NOTHING
         )
         SELECT count(*) FROM marked",
        &[],
    )?;
    let marked: i64 = client.query_one(&sql, &params).await?.get(0);
    c.all_moved(marked as usize)
}

/// For a dry run: how many live orders each batch's cancellation would cancel.
pub async fn live_order_counts(
    client: &Sql<'_>,
    batch_ids: &[Uuid],
) -> Result<HashMap<Uuid, i64>, StoreError> {
    if batch_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT c.batch_id, count(DISTINCT o.id)
           FROM batch_contributions c JOIN orders o ON o.id = c.order_id
          WHERE c.batch_id = ANY(:batch_ids) AND {ORDER_IS_LIVE}
          GROUP BY c.batch_id"
    );
    let (sql, params) = named(&sql, &[("batch_ids", &batch_ids, Type::UUID_ARRAY)])?;
    let rows = client.query(&sql, &params).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// A batch as review-batch sees it, locked until the transaction ends.
#[derive(Debug, Clone)]
pub struct LockedBatch {
    pub status: BatchStatus,
    pub current_quantity: i64,
    pub target_quantity: i64,
}

pub async fn lock_batch(
    client: &Sql<'_>,
    batch_id: Uuid,
) -> Result<Option<LockedBatch>, StoreError> {
    let row = client
        .query_opt(
            "SELECT batch_status, COALESCE(current_quantity, 0)::int8,
                    target_quantity::int8
               FROM production_batches WHERE id = $1 FOR UPDATE",
            &[(&batch_id, Type::UUID)],
        )
        .await?;
    Ok(row.map(|r| LockedBatch {
        status: BatchStatus::from_db(r.get(0)),
        current_quantity: r.get(1),
        target_quantity: r.get(2),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tid_reads_and_prints_as_postgres_writes_it() {
        let tid = |block, offset| Some(Tid { block, offset });
        for (text, want) in [
            ("(0,1)", tid(0, 1)),
            ("(17242,58)", tid(17242, 58)),
            ("(4294967295,65535)", tid(u32::MAX, u16::MAX)),
            ("(1,70000)", None),
            ("(-1,2)", None),
            ("(1,2", None),
            ("1,2", None),
            ("(a,1)", None),
            ("(1;2)", None),
            ("", None),
        ] {
            assert_eq!(Tid::parse(text), want, "{text}");
            if let Some(t) = want {
                assert_eq!(t.to_string(), text);
            }
        }
    }
}
