//! `orchestrate` (behaviour §5): decides the fate of `filling` batches near or past
//! their window.
//!
//! Work goes a chunk at a time, one transaction per chunk, with a fixed number
//! of round trips per chunk whatever its size:
//!
//! 1. `BEGIN`;
//! 2. one `SELECT … FOR UPDATE SKIP LOCKED` takes the next chunk of candidates
//!    that may need a write, checking each again under its lock; rows another
//!    orchestrator holds are skipped and left to it, so no batch is acted on
//!    twice. The chunks come from slabs read in `(window_closes_at, id)` order
//!    and taken in id order (see [`act_on_may_write`] for why); each batch is
//!    looked for where its slab found it, and by id only if it moved since
//!    (`batches::lock_candidates_at`);
//! 3. Rust decides every row ([`crate::domain::tier::decide`]);
//! 4. up to four apply statements (confirm, review, cancel, nearing), pipelined
//!    on the connection so they cost about one round trip together; each finds
//!    its batches where step 2 locked them (`batches::Move::loc`);
//! 5. `COMMIT`.
//!
//! Up to `ORCHESTRATE_CONNECTIONS` chunks (default 2) go at once, each on its
//! own connection ([`act_on_may_write`]).
//!
//! Batches that need a write are taken first, so a small `limit` is never spent
//! on batches that are only reported. The rest (reported or merely counted) are
//! read afterwards without locks. A run stops starting chunks when the Lambda
//! deadline, less `DEADLINE_MARGIN_MS`, is reached, and says `hasMore`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

use super::input::Data;
use super::{Access, BoxFuture, Job, JobContext, Report, Run};
use crate::domain::tier::{decide, Action, Outcome};
use crate::domain::Counts;
use crate::error::ApiError;
use crate::outbox::{Ask, Scope};
use crate::store::batches::{self, CandidateRow, Cursor, Move, Scan, ScanQuery, SlabEntry};
use crate::store::{Conn, Sql, StoreError};

pub const JOB: Job = Job {
    name: "orchestrate",
    access: Access::Admins,
    plain_fields: &["dryRun", "limit"],
    parse: |data, _| Ok(Box::new(OrchestrateRequest::parse(data)?)),
};

/// Largest `limit` accepted; a run over more batches goes through `hasMore`.
pub const MAX_LIMIT: i64 = 1_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrchestrateRequest {
    pub dry_run: bool,
    /// Most candidates to evaluate; `None` is no cap but the deadline.
    pub limit: Option<i64>,
}

impl OrchestrateRequest {
    pub fn parse(data: &Data) -> Result<Self, ApiError> {
        Ok(OrchestrateRequest {
            dry_run: data.opt_bool("dryRun")?.unwrap_or(false),
            limit: data.opt_int("limit", 1, MAX_LIMIT)?,
        })
    }
}

impl Run for OrchestrateRequest {
    /// A real run counts what it did and asks for every pending event to be
    /// delivered; a dry run did nothing, whatever it reports, and asks nothing.
    fn run<'a>(
        self: Box<Self>,
        ctx: &'a JobContext<'a>,
    ) -> BoxFuture<'a, Result<Report, ApiError>> {
        Box::pin(async move {
            let resp = run(*self, ctx).await?;
            let (dry_run, summary) = (resp.dry_run, resp.summary);
            let report = Report::answer(resp)?;
            Ok(if dry_run {
                report
            } else {
                report.counted(summary).delivering(Ask {
                    scope: Scope::All,
                    budget: ctx.settings.publish_budget,
                })
            })
        })
    }
}

/// Most results one answer lists. A Lambda answer is at most 6 MB and a run
/// over a million batches must not hold a million results in memory; past this
/// the answer lists the first ones (by window, then id), says
/// `resultsTruncated`, and `processed` and `summary` still count them all.
/// `batch_events` has every one.
pub const MAX_LISTED_RESULTS: usize = 1000;

/// The orchestrate response; review-batch answers in the same shape.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrchestrateResponse {
    pub success: bool,
    /// Batches reported (acted on, nearing target or skipped).
    pub processed: u64,
    pub evaluated: u64,
    pub has_more: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    pub results: Vec<BatchResult>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub results_truncated: bool,
    /// Counts of every reported batch, listed or not.
    pub summary: Counts,
}

/// Collects results with memory bounded by [`MAX_LISTED_RESULTS`], whatever N.
pub struct Results {
    kept: Vec<BatchResult>,
    summary: Counts,
    processed: u64,
}

impl Default for Results {
    fn default() -> Self {
        Results {
            kept: Vec::with_capacity(MAX_LISTED_RESULTS),
            summary: Counts::default(),
            processed: 0,
        }
    }
}

impl Results {
    pub fn push(&mut self, r: BatchResult) {
        self.processed += 1;
        let orders_cancelled = r.orders_cancelled.unwrap_or(0).max(0) as u64;
        self.summary.record(r.action, orders_cancelled);
        self.kept.push(r);
        if self.kept.len() >= 2 * MAX_LISTED_RESULTS {
            self.keep_first();
        }
    }

    /// Adds the results collected apart (another connection's chunks): the
    /// answer still lists the first ones of them all.
    fn absorb(&mut self, other: Results) {
        self.processed += other.processed;
        self.summary.add(&other.summary);
        self.kept.extend(other.kept);
        if self.kept.len() >= 2 * MAX_LISTED_RESULTS {
            self.keep_first();
        }
    }

    fn keep_first(&mut self) {
        self.kept.sort_by_key(|r| r.order_key);
        self.kept.truncate(MAX_LISTED_RESULTS);
    }

    pub fn into_response(
        mut self,
        evaluated: u64,
        has_more: bool,
        dry_run: bool,
    ) -> OrchestrateResponse {
        self.keep_first();
        OrchestrateResponse {
            success: true,
            processed: self.processed,
            evaluated,
            has_more,
            dry_run,
            results_truncated: self.processed > self.kept.len() as u64,
            results: self.kept,
            summary: self.summary,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResult {
    pub batch_id: Uuid,
    pub action: Outcome,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::float_option"
    )]
    pub fill_percentage: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supplier_order_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orders_cancelled: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<&'static str>,
    /// Why a `failed` batch's writes were refused (the database's words, short).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Results are listed by window, then id.
    #[serde(skip)]
    pub order_key: (DateTime<Utc>, Uuid),
}

impl BatchResult {
    /// The report line of a decided action, or `None` when docs/behaviour.md reports nothing.
    pub fn of(batch_id: Uuid, window_closes_at: DateTime<Utc>, action: &Action) -> Option<Self> {
        let outcome = action.outcome()?;
        Some(BatchResult {
            batch_id,
            action: outcome,
            fill_percentage: action.fill().map(|f| f.percentage()),
            supplier_order_id: None,
            orders_cancelled: (outcome == Outcome::Cancelled).then_some(0),
            message: outcome.message(),
            error: None,
            order_key: (window_closes_at, batch_id),
        })
    }
}

impl BatchResult {
    /// A batch whose writes the database refused.
    pub fn failed(batch_id: Uuid, window_closes_at: DateTime<Utc>, error: String) -> Self {
        BatchResult {
            batch_id,
            action: Outcome::Failed,
            fill_percentage: None,
            supplier_order_id: None,
            orders_cancelled: None,
            message: None,
            error: Some(error),
            order_key: (window_closes_at, batch_id),
        }
    }
}

pub async fn run(
    req: OrchestrateRequest,
    ctx: &JobContext<'_>,
) -> Result<OrchestrateResponse, ApiError> {
    let chunk_size = ctx.settings.orchestrate_chunk_size;
    let lookahead_hours = ctx.settings.orchestrate_lookahead_hours;
    let mut budget = req.limit.unwrap_or(i64::MAX);
    let conn = ctx.db.get().await?;
    let mut tally = Tally::default();

    // Pass 1: batches that may need a write, locked, a chunk per transaction.
    let (cut_short, cursor) = if req.dry_run {
        preview_may_write(&conn, ctx, &mut budget, &mut tally).await?
    } else {
        act_on_may_write(&conn, ctx, &mut budget, &mut tally).await?
    };
    let mut has_more = match cut_short {
        CutShort::No => false,
        CutShort::WithinSlab => true,
        CutShort::Between => batches::more_may_write(&conn.sql(), lookahead_hours, cursor).await?,
    };

    // Pass 2: the remaining candidates need no write; they are read, reported
    // where docs/behaviour.md reports them, and counted.
    if matches!(cut_short, CutShort::No) {
        let mut cursor: Option<Cursor> = None;
        while budget > 0 && !ctx.deadline.reached() {
            let query = ScanQuery {
                scan: Scan::ReportOnly,
                lookahead_hours,
                after: cursor,
                limit: chunk_size.min(budget),
            };
            let rows = batches::candidates(&conn.sql(), &query).await?;
            let mut taken = 0;
            for row in &rows {
                if tally.nearing_now.contains(&row.id) {
                    continue;
                }
                taken += 1;
                let action = decide(&row.facts);
                if action.writes() {
                    // The scan and the decision disagree only if the batch changed
                    // between the passes; the next run acts on it.
                    tracing::warn!(batch_id = %row.id, ?action, "batch needs a write after the write pass");
                    has_more = true;
                    continue;
                }
                if let Some(r) = BatchResult::of(row.id, row.window_closes_at, &action) {
                    tally.results.push(r);
                }
            }
            tally.evaluated += taken;
            budget -= taken as i64;
            cursor = rows.last().map(CandidateRow::cursor).or(cursor);
            if (rows.len() as i64) < query.limit {
                break;
            }
        }
    }

    Ok(tally
        .results
        .into_response(tally.evaluated, has_more, req.dry_run))
}

/// What a run's chunks added up to, on one connection or gathered from all.
#[derive(Default)]
struct Tally {
    results: Results,
    /// Candidates taken (and decided).
    evaluated: u64,
    /// Batches told they are nearing their target: they stay `filling`, and
    /// pass 2 must not report them twice.
    nearing_now: HashSet<Uuid>,
}

impl Tally {
    /// A committed plan: its results, and the batches it told they near
    /// their target.
    fn record(&mut self, plan: Plan, applied: &Applied) -> Result<(), ApiError> {
        self.nearing_now
            .extend(plan.nearing.iter().map(|m| m.batch_id));
        plan.finish(
            &applied.supplier_orders,
            &applied.cancelled,
            false,
            &mut self.results,
        )
    }

    fn absorb(&mut self, other: Tally) {
        self.results.absorb(other.results);
        self.evaluated += other.evaluated;
        self.nearing_now.extend(other.nearing_now);
    }
}

/// Where pass 1 stopped, when it stopped before the work ran out.
enum CutShort {
    No,
    /// Between slabs (or chunks of a dry run): the cursor says where.
    Between,
    /// Inside a slab: some of its batches were not taken.
    WithinSlab,
}

/// A slab is this many chunks (100,000 batches at the default chunk size)...
pub const SLAB_CHUNKS: i64 = 100;
/// ...and at most this many batches: its ids and locations (24 bytes each)
/// are all the memory it costs, whatever N.
pub const MAX_SLAB: i64 = 100_000;

/// Pass 1 of a real run. Candidates that may write are read a slab at a time
/// in window order, without locks, and each slab is then taken a chunk at a
/// time **in id order**, each chunk locked and checked again.
///
/// Why id order: a chunk's writes probe and insert into every index keyed by
/// the batch id (the batches' key, contributions, supplier orders and events
/// by batch). In window order a chunk's ids are random, so at a million
/// batches each chunk touched pages all over indexes larger than Postgres'
/// shared buffers, and the chunks evicted each other's pages (BENCHMARKS.md).
/// In id order a chunk covers one narrow range of each of those indexes and
/// the next chunk the range beside it. Which batches a run takes, and what it
/// does to each, do not change; only the order within a slab does.
///
/// A slab's chunks are dealt to up to `ORCHESTRATE_CONNECTIONS` connections
/// (the run's own and spare ones of the pool, [`spare_connections`]), each
/// taking the next chunk when its last one is committed: the database works
/// on that many chunks at once. Chunks are disjoint and each is locked in its
/// own transaction, so this is what two orchestrators running side by side
/// already do (behaviour §5), without their contention for the same rows.
async fn act_on_may_write(
    conn: &Conn,
    ctx: &JobContext<'_>,
    budget: &mut i64,
    tally: &mut Tally,
) -> Result<(CutShort, Option<Cursor>), ApiError> {
    let chunk_size = ctx.settings.orchestrate_chunk_size.max(1);
    let slab_size = (chunk_size * SLAB_CHUNKS).min(MAX_SLAB).max(chunk_size);
    let lookahead_hours = ctx.settings.orchestrate_lookahead_hours;
    let mut cursor: Option<Cursor> = None;
    // Asked for once, when a slab first has more than one chunk.
    let mut spares: Option<Vec<Conn>> = None;
    loop {
        if *budget <= 0 || ctx.deadline.reached() {
            return Ok((CutShort::Between, cursor));
        }
        // The slab never holds more than the budget, so its chunks need no
        // budget check of their own: together they take at most the slab.
        let limit = slab_size.min(*budget);
        let slab = batches::may_write_slab(&conn.sql(), lookahead_hours, cursor, limit).await?;
        cursor = slab.last.or(cursor);
        let last_slab = (slab.entries.len() as i64) < limit;
        let deal = Deal::new(slab.entries.chunks(chunk_size as usize).collect());
        if deal.chunks.len() > 1 && spares.is_none() {
            spares = Some(spare_connections(ctx).await);
        }
        let conns = std::iter::once(conn).chain(spares.iter().flatten());
        let shares = join_all(conns.map(|c| share(c, &deal, ctx, lookahead_hours))).await;
        let before = tally.evaluated;
        let mut failure = None;
        for share in shares {
            match share {
                Ok(t) => tally.absorb(t),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        *budget -= (tally.evaluated - before) as i64;
        if deal.cut_short.load(Ordering::Relaxed) {
            return Ok((CutShort::WithinSlab, cursor));
        }
        if last_slab {
            return Ok((CutShort::No, cursor));
        }
    }
}

/// Up to `ORCHESTRATE_CONNECTIONS` - 1 more connections for a run, as many as
/// the pool has free now (`DB_POOL_SIZE` bounds it; none is waited for).
async fn spare_connections(ctx: &JobContext<'_>) -> Vec<Conn> {
    let wanted = ctx
        .settings
        .orchestrate_connections
        .min(ctx.settings.pool_size)
        .saturating_sub(1);
    let mut spares = Vec::with_capacity(wanted);
    while spares.len() < wanted {
        match ctx.db.spare().await {
            Some(c) => spares.push(c),
            None => break,
        }
    }
    spares
}

/// A slab's chunks, dealt one at a time, in order, to whichever connection
/// is free.
struct Deal<'s> {
    chunks: Vec<&'s [SlabEntry]>,
    next: AtomicUsize,
    /// A connection's chunk failed: no more are dealt.
    stopped: AtomicBool,
    /// The deadline came with chunks left undealt.
    cut_short: AtomicBool,
}

impl<'s> Deal<'s> {
    fn new(chunks: Vec<&'s [SlabEntry]>) -> Self {
        Deal {
            chunks,
            next: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            cut_short: AtomicBool::new(false),
        }
    }

    /// The next chunk, unless they are all dealt, one failed, or the
    /// deadline is `reached`.
    fn next(&self, reached: bool) -> Option<&'s [SlabEntry]> {
        if self.stopped.load(Ordering::Relaxed) {
            return None;
        }
        if reached {
            if self.next.load(Ordering::Relaxed) < self.chunks.len() {
                self.cut_short.store(true, Ordering::Relaxed);
            }
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        self.chunks.get(i).copied()
    }
}

/// One connection's part of a slab: chunks taken from `deal` until none is
/// left. On an error no further chunk is dealt to anyone; the chunks other
/// connections are working on finish (each is its own transaction).
async fn share(
    conn: &Conn,
    deal: &Deal<'_>,
    ctx: &JobContext<'_>,
    lookahead_hours: i32,
) -> Result<Tally, ApiError> {
    let mut tally = Tally::default();
    while let Some(chunk) = deal.next(ctx.deadline.reached()) {
        if let Err(e) = act_chunk(conn, chunk, lookahead_hours, &mut tally).await {
            deal.stopped.store(true, Ordering::Relaxed);
            return Err(e);
        }
    }
    Ok(tally)
}

/// Pass 1 of a dry run: the same candidates, in window order, no locks.
async fn preview_may_write(
    conn: &Conn,
    ctx: &JobContext<'_>,
    budget: &mut i64,
    tally: &mut Tally,
) -> Result<(CutShort, Option<Cursor>), ApiError> {
    let mut cursor: Option<Cursor> = None;
    loop {
        if *budget <= 0 || ctx.deadline.reached() {
            return Ok((CutShort::Between, cursor));
        }
        let query = ScanQuery {
            scan: Scan::MayWrite,
            lookahead_hours: ctx.settings.orchestrate_lookahead_hours,
            after: cursor,
            limit: ctx.settings.orchestrate_chunk_size.min(*budget),
        };
        let (taken, last) = preview_chunk(&conn.sql(), &query, &mut tally.results).await?;
        tally.evaluated += taken as u64;
        *budget -= taken as i64;
        cursor = last.or(cursor);
        if (taken as i64) < query.limit {
            return Ok((CutShort::No, cursor));
        }
    }
}

/// The moves of one chunk, grouped by action.
#[derive(Default)]
struct Plan {
    confirm: Vec<Move>,
    review: Vec<Move>,
    cancel: Vec<Move>,
    nearing: Vec<Move>,
    reports: Vec<BatchResult>,
}

/// What applying a plan returned: supplier order ids and cancelled counts.
struct Applied {
    supplier_orders: HashMap<Uuid, Uuid>,
    cancelled: HashMap<Uuid, i64>,
}

impl Plan {
    fn of(rows: &[CandidateRow]) -> Self {
        let mut plan = Plan::default();
        for row in rows {
            let action = decide(&row.facts);
            let target = match action {
                Action::Confirm(_) => Some(&mut plan.confirm),
                Action::NeedsReview(_) => Some(&mut plan.review),
                Action::Cancel(_) => Some(&mut plan.cancel),
                Action::NearingTarget {
                    first_time: true, ..
                } => Some(&mut plan.nearing),
                _ => None,
            };
            if let (Some(target), Some(fill)) = (target, action.fill()) {
                target.push(Move {
                    batch_id: row.id,
                    fill_percentage: fill.percentage(),
                    note: None,
                    loc: row.loc,
                });
            }
            plan.reports
                .extend(BatchResult::of(row.id, row.window_closes_at, &action));
        }
        plan
    }

    fn cancel_ids(&self) -> Vec<Uuid> {
        self.cancel.iter().map(|m| m.batch_id).collect()
    }

    /// Fills in what the writes returned: supplier order ids and cancelled counts.
    fn finish(
        self,
        supplier_orders: &HashMap<Uuid, Uuid>,
        cancelled: &HashMap<Uuid, i64>,
        dry_run: bool,
        out: &mut Results,
    ) -> Result<(), ApiError> {
        for mut r in self.reports {
            match r.action {
                Outcome::Confirmed if !dry_run => {
                    r.supplier_order_id =
                        Some(*supplier_orders.get(&r.batch_id).ok_or_else(|| {
                            ApiError::Internal(format!("batch {} was not confirmed", r.batch_id))
                        })?);
                }
                Outcome::Cancelled => {
                    r.orders_cancelled = Some(cancelled.get(&r.batch_id).copied().unwrap_or(0));
                }
                Outcome::Confirmed
                | Outcome::NeedsReview
                | Outcome::NearingTarget
                | Outcome::Skipped
                | Outcome::Failed => {}
            }
            out.push(r);
        }
        Ok(())
    }

    /// The up to four apply statements, pipelined.
    async fn apply(&self, sql: &Sql<'_>) -> Result<Applied, StoreError> {
        let (supplier_orders, (), cancelled, ()) = tokio::try_join!(
            batches::confirm(sql, &self.confirm),
            batches::hold_for_review(sql, &self.review),
            batches::cancel(sql, &self.cancel, None, false),
            batches::notify_nearing(sql, &self.nearing),
        )?;
        Ok(Applied {
            supplier_orders,
            cancelled,
        })
    }

    fn log_applied(&self, evaluated: usize) {
        tracing::debug!(
            evaluated,
            confirmed = self.confirm.len(),
            needsReview = self.review.len(),
            cancelled = self.cancel.len(),
            nearingTarget = self.nearing.len(),
            "chunk applied"
        );
        for (moves, action) in [
            (&self.confirm, Outcome::Confirmed),
            (&self.review, Outcome::NeedsReview),
            (&self.cancel, Outcome::Cancelled),
            (&self.nearing, Outcome::NearingTarget),
        ] {
            for m in moves {
                tracing::debug!(batchId = %m.batch_id, ?action, fillPercentage = %m.fill_percentage, "batch decided");
            }
        }
    }
}

/// Why a chunk's transaction was rolled back.
enum ChunkError {
    /// The database failed (an outage, or a bug): the run stops.
    Store(StoreError),
    /// The chunk's writes were refused for a reason in the data.
    Refused(StoreError, Vec<CandidateRow>),
}

impl From<StoreError> for ChunkError {
    fn from(e: StoreError) -> Self {
        ChunkError::Store(e)
    }
}

/// Locks, decides and applies one chunk (part of a slab) in one
/// transaction; returns how many of them were still candidates to take.
///
/// When the chunk's writes fail for a reason in the data (a constraint,
/// someone else's trigger) rather than an outage, one bad batch must not stop
/// the rest, this run or any later one: the chunk is rolled back and taken
/// again by [`isolate`], which finds the failing batches and reports them
/// `failed`.
async fn act_chunk(
    conn: &Conn,
    chunk: &[SlabEntry],
    lookahead_hours: i32,
    tally: &mut Tally,
) -> Result<(), ApiError> {
    let chunk = conn
        .transaction(|tx| async move {
            let rows = batches::lock_candidates_at(&tx, chunk, lookahead_hours).await?;
            let plan = Plan::of(&rows);
            match plan.apply(&tx).await {
                Ok(applied) => Ok((rows, plan, applied)),
                Err(e) if e.outage().is_some() => Err(ChunkError::Store(e)),
                Err(e) => Err(ChunkError::Refused(e, rows)),
            }
        })
        .await;
    match chunk {
        Ok((rows, plan, applied)) => {
            plan.log_applied(rows.len());
            tally.evaluated += rows.len() as u64;
            tally.record(plan, &applied)
        }
        Err(ChunkError::Store(e)) => Err(e.into()),
        Err(ChunkError::Refused(e, rows)) => {
            tracing::warn!(error = %e, batches = rows.len(), "a chunk's writes failed; isolating the failing batches");
            let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
            tally.evaluated += rows.len() as u64;
            isolate(conn, &ids, lookahead_hours, tally).await
        }
    }
}

/// Applies the batches `ids` (a chunk whose writes failed) in one transaction,
/// in ever smaller groups, each under a savepoint: a group that fails is
/// rolled back to its savepoint and split in two, until each failing batch is
/// alone. Those are reported `failed` with the database's reason and stay
/// `filling`; every other batch is decided as usual. The rows stay locked
/// from the re-take to the commit, so the decisions cannot go stale.
async fn isolate(
    conn: &Conn,
    ids: &[Uuid],
    lookahead_hours: i32,
    tally: &mut Tally,
) -> Result<(), ApiError> {
    let (done, failed) = conn
        .transaction(|tx| async move {
            // By id, not by location: the chunk may have failed because a
            // batch was not where it was locked (see `batches::Move::loc`).
            let rows: Vec<CandidateRow> = batches::lock_candidates_by_id(&tx, ids, lookahead_hours)
                .await?
                .into_iter()
                .map(|r| CandidateRow { loc: None, ..r })
                .collect();
            let mut groups: Vec<&[CandidateRow]> = vec![&rows[..]];
            let mut done: Vec<(Plan, Applied)> = Vec::new();
            let mut failed: Vec<(CandidateRow, String)> = Vec::new();
            while let Some(group) = groups.pop() {
                let plan = Plan::of(group);
                let applied = tx
                    .savepoint(|sp| async move {
                        let applied = plan.apply(&sp).await?;
                        Ok::<_, StoreError>((plan, applied))
                    })
                    .await;
                match applied {
                    Ok(applied) => done.push(applied),
                    Err(e) if e.outage().is_some() => return Err(e),
                    Err(e) => match group {
                        [one] => failed.push((*one, e.data_reason())),
                        _ => {
                            let (a, b) = group.split_at(group.len() / 2);
                            groups.push(b);
                            groups.push(a);
                        }
                    },
                }
            }
            Ok::<_, StoreError>((done, failed))
        })
        .await?;
    for (plan, applied) in done {
        plan.log_applied(plan.reports.len());
        tally.record(plan, &applied)?;
    }
    for (row, reason) in failed {
        tracing::warn!(batchId = %row.id, reason = %reason, "batch failed; it stays filling and is tried again next run");
        tally
            .results
            .push(BatchResult::failed(row.id, row.window_closes_at, reason));
    }
    Ok(())
}

/// A dry run of one chunk: the same decisions, no locks, no writes.
async fn preview_chunk(
    client: &Sql<'_>,
    query: &ScanQuery,
    out: &mut Results,
) -> Result<(usize, Option<Cursor>), ApiError> {
    let rows = batches::candidates(client, query).await?;
    let plan = Plan::of(&rows);
    let counts = batches::live_order_counts(client, &plan.cancel_ids()).await?;
    plan.finish(&HashMap::new(), &counts, true, out)?;
    Ok((rows.len(), rows.last().map(CandidateRow::cursor)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Fill;

    fn result(n: u128, action: Action) -> BatchResult {
        let id = Uuid::from_u128(n);
        let at = DateTime::from_timestamp(n as i64, 0).unwrap_or(DateTime::UNIX_EPOCH);
        let mut r = BatchResult::of(id, at, &action).expect("reported");
        if matches!(action, Action::Cancel(_)) {
            r.orders_cancelled = Some(2);
        }
        r
    }

    #[test]
    fn results_keep_the_first_listed_and_count_all() {
        let fill = Fill::new(10, 200).unwrap();
        let mut results = Results::default();
        // Pushed out of order: the answer lists the earliest windows.
        for n in (0..2500u128).rev() {
            let action = if n % 2 == 0 {
                Action::Cancel(fill)
            } else {
                Action::Confirm(fill)
            };
            results.push(result(n, action));
        }
        let resp = results.into_response(3000, false, false);
        assert_eq!(resp.processed, 2500);
        assert!(resp.results_truncated);
        assert_eq!(resp.results.len(), MAX_LISTED_RESULTS);
        assert_eq!(resp.results[0].batch_id, Uuid::from_u128(0));
        assert_eq!(
            resp.results[MAX_LISTED_RESULTS - 1].batch_id,
            Uuid::from_u128(999)
        );
        let counts = resp.summary;
        assert_eq!(
            (counts.cancelled, counts.confirmed, counts.orders_cancelled),
            (1250, 1250, 2500)
        );
    }

    #[test]
    fn results_gathered_from_two_connections_list_the_first_of_both() {
        let fill = Fill::new(10, 200).unwrap();
        // Two connections' chunks: the even and the odd windows.
        let (mut a, mut b) = (Results::default(), Results::default());
        for n in 0..1500u128 {
            let into = if n % 2 == 0 { &mut a } else { &mut b };
            into.push(result(n, Action::Cancel(fill)));
        }
        a.absorb(b);
        let resp = a.into_response(1500, false, false);
        assert_eq!(resp.processed, 1500);
        assert_eq!(resp.summary.cancelled, 1500);
        assert_eq!(resp.summary.orders_cancelled, 3000);
        assert!(resp.results_truncated);
        let listed: Vec<Uuid> = resp.results.iter().map(|r| r.batch_id).collect();
        let first: Vec<Uuid> = (0..MAX_LISTED_RESULTS as u128)
            .map(Uuid::from_u128)
            .collect();
        assert_eq!(listed, first);
    }

    fn entries(n: usize) -> Vec<SlabEntry> {
        (0..n)
            .map(|i| SlabEntry {
                id: Uuid::from_u128(i as u128),
                loc: batches::Tid {
                    block: 0,
                    offset: i as u16,
                },
            })
            .collect()
    }

    #[test]
    fn a_deal_gives_each_chunk_once_in_order() {
        let slab = entries(5);
        let deal = Deal::new(slab.chunks(2).collect());
        let firsts: Vec<u128> = std::iter::from_fn(|| deal.next(false))
            .map(|c| c[0].id.as_u128())
            .collect();
        assert_eq!(firsts, [0, 2, 4]);
        assert_eq!(deal.next(false), None, "nothing is dealt twice");
        assert_eq!(deal.next(true), None);
        assert!(
            !deal.cut_short.load(Ordering::Relaxed),
            "a deadline after the last chunk cuts nothing short"
        );
    }

    #[test]
    fn a_deal_stops_at_the_deadline_or_a_failure() {
        let slab = entries(6);
        let deal = Deal::new(slab.chunks(2).collect());
        assert!(deal.next(false).is_some());
        assert_eq!(deal.next(true), None);
        assert!(
            deal.cut_short.load(Ordering::Relaxed),
            "chunks were left undealt"
        );

        let deal = Deal::new(slab.chunks(2).collect());
        assert!(deal.next(false).is_some());
        deal.stopped.store(true, Ordering::Relaxed);
        assert_eq!(deal.next(false), None, "no chunk after a failure");
        assert!(!deal.cut_short.load(Ordering::Relaxed));
    }
}
