//! The outbox (behaviour §10): pending `batch_events` rows go to an
//! [`EventSink`] — EventBridge in production ([`crate::eventbridge`]) — and
//! are marked published once accepted. Jobs write their events in their own
//! transactions (the store's statements do) and only *ask* for delivery (an
//! [`Ask`] in their report); the job runner hands the ask to [`Outbox`] after
//! the commit, the same way for every job. `publish-events`, whose work is
//! delivery, calls [`Outbox::deliver`] itself.
//!
//! **Never holding the database.** A run leases due rows in one short
//! statement ([`events::claim`]: `leased_until`, committed at once), sends
//! them, and marks the rows of calls that came back in another
//! ([`events::mark`]; one at a time, so calls that come back together share
//! a statement and a commit, and a lane never waits for its mark). No
//! transaction and no row lock is open while a call is in flight, so a slow
//! or hung EventBridge pins no pooler session and holds back no vacuum. A
//! crash between a send and its mark leaves the rows leased; once the lease
//! runs out they are sent again: delivery is at least once, and consumers
//! de-duplicate on `eventId`.
//!
//! **Never stalling.** A refused entry is marked with one more attempt and a
//! next-attempt time ([`crate::domain::retry`]); the claim only takes due
//! rows, and a run reads forward from a cursor, so a refused row never comes
//! back ahead of the rows behind it, and is not sent twice in one run. Refused
//! `PUBLISH_MAX_ATTEMPTS` times it is set aside. A call that fails whole
//! (unreachable, timed out, throttled after the SDK's one retry) burns no
//! attempt — EventBridge said nothing about the entries — and ends the run:
//! every row it had leased is given back, and a later run tries again.
//!
//! **Keeping up.** Up to `PUBLISH_CONCURRENCY` calls are in flight at once,
//! one per lane. A row's lane is chosen by its batch, so the rows of one
//! batch go through one lane, in `id` order, one call at a time: within one
//! run no two calls carrying one batch's rows are ever in flight together.
//! A refused row is retried later, so it can reach EventBridge after later
//! rows of its batch (and EventBridge itself promises no order to its
//! targets). Each row is in one call at a time and marked once.

mod sink;

pub use sink::{EntryOutcome, EventSink, OutboxEvent, SendResult, SinkError, PER_CALL};

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::deadline::Deadline;
use crate::domain::retry::{after_refusal, AfterRefusal};
use crate::domain::{Backlog, Delivery};
use crate::store::events::{self, Claim, Leased, Marks, Refusal};
use crate::store::{Db, Sql, StoreError};
use crate::telemetry::phases::{timed, Phase};

/// A lease is never shorter than this.
pub const MIN_LEASE: Duration = Duration::from_secs(60);

/// Which pending rows to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every due row, oldest first; the run reports the backlog left.
    All,
    /// Only these (the events a job just wrote); the backlog is neither
    /// read nor counted (the buyer's path).
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

/// How delivery runs (behaviour §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Most `PutEvents` calls in flight at once (`PUBLISH_CONCURRENCY`).
    pub concurrency: usize,
    /// Refusals after which a row is set aside (`PUBLISH_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// The longest one call may take, its SDK retry included (`PUBLISH_CALL_TIMEOUT_MS`).
    pub call_timeout: Duration,
}

impl Policy {
    /// How long a claim leases its rows: four calls' time at least, so that
    /// in practice only a crash lets a lease run out.
    pub fn lease(&self) -> Duration {
        MIN_LEASE.max(self.call_window().saturating_mul(4))
    }

    /// A row is sent only while its lease outlasts the call by this much;
    /// otherwise it is given back unsent.
    fn call_window(&self) -> Duration {
        self.call_timeout + Duration::from_secs(2)
    }

    /// Rows claimed at a time: two calls' worth per lane.
    fn claim_size(&self) -> usize {
        self.concurrency.max(1) * PER_CALL * 2
    }
}

/// The outbox as one invocation sees it: the database, where events go
/// (`None` when `EVENT_BUS_NAME` is unset: rows stay in the table), and how.
#[derive(Clone, Copy)]
pub struct Outbox<'a> {
    db: &'a Db,
    sink: Option<&'a dyn EventSink>,
    policy: Policy,
}

impl<'a> Outbox<'a> {
    pub fn new(db: &'a Db, sink: Option<&'a dyn EventSink>, policy: Policy) -> Self {
        Outbox { db, sink, policy }
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

    /// Delivers due rows of `scope` within `bounds` (its time is the
    /// invocation's `publishMs`); `None` when delivery is off.
    pub async fn deliver(
        &self,
        scope: &Scope,
        bounds: Bounds,
    ) -> Result<Option<Delivery>, StoreError> {
        let Some(sink) = self.sink else {
            return Ok(None);
        };
        let conn = self.db.get().await?;
        let run = Run::new(conn.sql(), sink, scope, bounds, self.policy);
        timed(Phase::Publish, run.deliver()).await.map(Some)
    }

    /// How many rows are pending and the age of the oldest, delivering nothing.
    pub async fn pending(&self) -> Result<Delivery, StoreError> {
        let conn = self.db.get().await?;
        Ok(Delivery {
            backlog: Some(backlog(&conn.sql()).await?),
            ..Delivery::default()
        })
    }

    /// Puts every set-aside row back in line (`retrySetAside`): how many.
    pub async fn requeue_set_aside(&self) -> Result<u64, StoreError> {
        let conn = self.db.get().await?;
        let n = events::requeue_set_aside(&conn.sql()).await?;
        tracing::info!(requeued = n, "set-aside events put back in line");
        Ok(n)
    }
}

async fn backlog(sql: &Sql<'_>) -> Result<Backlog, StoreError> {
    let (pending, oldest_pending_secs) = events::backlog(sql).await?;
    Ok(Backlog {
        pending,
        oldest_pending_secs,
    })
}

/// A leased row waiting in its lane.
struct InLine {
    event: OutboxEvent,
    leased: Leased,
    /// Refusals before this run.
    attempts: i32,
    /// When its lease runs out, by this process's clock (measured from before
    /// the claim was sent, so never later than the database's).
    lease_ends: Instant,
}

/// What one call's answer comes to: counts, and the marks to write.
#[derive(Debug, Default, PartialEq)]
struct Judged {
    published: u64,
    failed: u64,
    set_aside: u64,
    /// The call failed whole: stop the run.
    call_failed: bool,
    marks: Marks,
}

/// A call in flight: its rows, and what the sink answered.
type Call<'r> = Pin<Box<dyn Future<Output = (Vec<InLine>, SendAnswer)> + Send + 'r>>;
type SendAnswer = Result<Vec<EntryOutcome>, SinkError>;
/// A mark statement in flight.
type Marking<'r> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'r>>;

/// What finished while the run waited.
enum Finished {
    Call(Vec<InLine>, SendAnswer),
    Marked(Result<(), StoreError>),
}

/// One delivery run: claims, lanes, calls in flight, and one mark statement
/// at a time for whatever calls have come back (so a lane sends its next
/// call without waiting for its last one's mark, and marks of calls that come
/// back together share one statement and one commit).
struct Run<'r> {
    sql: Sql<'r>,
    sink: &'r dyn EventSink,
    only: Option<&'r [i64]>,
    count_backlog: bool,
    bounds: Bounds,
    policy: Policy,
    started: Instant,
    lanes: Vec<VecDeque<InLine>>,
    calls: Vec<Option<Call<'r>>>,
    marking: Option<Marking<'r>>,
    /// Marks waiting for the next statement.
    to_mark: Marks,
    /// Rows still to claim (the limit).
    left: u64,
    /// The claim cursor: the last id claimed in this run.
    after: i64,
    /// No due row is left past the cursor.
    drained: bool,
    /// Time is up, or a call failed whole: start no call.
    stopping: bool,
    out: Delivery,
}

impl<'r> Run<'r> {
    fn new(
        sql: Sql<'r>,
        sink: &'r dyn EventSink,
        scope: &'r Scope,
        bounds: Bounds,
        policy: Policy,
    ) -> Self {
        let lanes = policy.concurrency.max(1);
        let (only, count_backlog) = match scope {
            Scope::All => (None, true),
            Scope::Only(ids) => (Some(ids.as_slice()), false),
        };
        Run {
            sql,
            sink,
            only,
            count_backlog,
            bounds,
            policy,
            started: Instant::now(),
            lanes: (0..lanes).map(|_| VecDeque::new()).collect(),
            calls: (0..lanes).map(|_| None).collect(),
            marking: None,
            to_mark: Marks::default(),
            left: bounds.limit,
            after: 0,
            drained: false,
            stopping: false,
            out: Delivery::default(),
        }
    }

    /// Time left: the budget, the deadline, whichever ends first.
    fn time_left(&self) -> Duration {
        let budget = self.bounds.budget.saturating_sub(self.started.elapsed());
        match self.bounds.deadline.remaining() {
            Some(d) => budget.min(d),
            None => budget,
        }
    }

    async fn deliver(mut self) -> Result<Delivery, StoreError> {
        let result = self.run().await;
        // Calls still in flight (only after an error) are dropped: their rows
        // stay leased until the lease runs out. Whatever waits to be marked,
        // and every row leased and not sent, is written now, error or not.
        self.calls.iter_mut().for_each(|c| *c = None);
        self.marking = None;
        let unsent: Vec<Leased> = self
            .lanes
            .iter_mut()
            .flat_map(|l| l.drain(..))
            .map(|r| r.leased)
            .collect();
        self.to_mark.released.extend(unsent);
        if !self.to_mark.is_empty() {
            let last = events::mark(&self.sql, &self.to_mark).await;
            if result.is_ok() {
                last?;
            }
        }
        result?;
        if self.count_backlog {
            self.out.backlog = Some(backlog(&self.sql).await?);
        }
        Ok(self.out)
    }

    async fn run(&mut self) -> Result<(), StoreError> {
        loop {
            if self.time_left().is_zero() {
                self.stopping = true;
            }
            self.refill().await?;
            self.start_calls();
            if self.marking.is_none() && !self.to_mark.is_empty() {
                let marks = std::mem::take(&mut self.to_mark);
                let sql = self.sql;
                self.marking = Some(Box::pin(async move { events::mark(&sql, &marks).await }));
            }
            if self.marking.is_none() && self.calls.iter().all(Option::is_none) {
                // Nothing in flight, nothing started, nothing to mark: done.
                return Ok(());
            }
            match next_finished(&mut self.calls, &mut self.marking).await {
                Finished::Marked(result) => result?,
                Finished::Call(rows, answer) => {
                    let judged = judge(&rows, answer, self.policy.max_attempts);
                    self.out.published += judged.published;
                    self.out.failed += judged.failed;
                    self.out.set_aside += judged.set_aside;
                    if judged.call_failed {
                        self.stopping = true;
                    }
                    self.to_mark.append(judged.marks);
                }
            }
        }
    }

    /// Claims more rows when the lanes run short: fewer than one call's
    /// worth per lane is waiting, or a lane sits idle with nothing to send
    /// (the waiting rows all belong to a few batches) while not too many wait.
    async fn refill(&mut self) -> Result<(), StoreError> {
        if self.stopping || self.drained || self.left == 0 {
            return Ok(());
        }
        let lanes = self.lanes.len();
        let queued: usize = self.lanes.iter().map(VecDeque::len).sum();
        let idle = (0..lanes).any(|i| self.calls[i].is_none() && self.lanes[i].is_empty());
        let short = queued < lanes * PER_CALL || (idle && queued < lanes * PER_CALL * 4);
        if !short {
            return Ok(());
        }
        let want = (self.policy.claim_size() as u64).min(self.left);
        let lease = self.policy.lease();
        let sent_at = Instant::now();
        let rows = events::claim(
            &self.sql,
            Claim {
                after: self.after,
                limit: want as i64,
                only: self.only,
                lease,
            },
        )
        .await?;
        if (rows.len() as u64) < want {
            self.drained = true;
        }
        self.left = self.left.saturating_sub(rows.len() as u64);
        let lanes = self.lanes.len() as u128;
        for row in rows {
            self.after = self.after.max(row.id);
            let lane = (row.batch_id.as_u128() % lanes) as usize;
            let leased = Leased {
                id: row.id,
                lease: row.lease,
            };
            let attempts = row.attempts;
            self.lanes[lane].push_back(InLine {
                event: OutboxEvent::from(row),
                leased,
                attempts,
                lease_ends: sent_at + lease,
            });
        }
        Ok(())
    }

    /// Starts a call on every idle lane that has rows (or, when stopping,
    /// gives its rows back).
    fn start_calls(&mut self) {
        let window = self.policy.call_window();
        let time_left = self.time_left();
        for lane in 0..self.lanes.len() {
            if self.calls[lane].is_some() || self.lanes[lane].is_empty() {
                continue;
            }
            if self.stopping {
                let unsent = self.lanes[lane].drain(..).map(|r| r.leased);
                self.to_mark.released.extend(unsent);
                continue;
            }
            let take = self.lanes[lane].len().min(PER_CALL);
            let now = Instant::now();
            let mut rows = Vec::with_capacity(take);
            for row in self.lanes[lane].drain(..take) {
                if row.lease_ends > now + window {
                    rows.push(row);
                } else {
                    // Its lease would run out mid-call: another publisher
                    // could send it too. Given back unsent.
                    self.to_mark.released.push(row.leased);
                }
            }
            if !rows.is_empty() {
                let sink = self.sink;
                self.calls[lane] = Some(Box::pin(async move {
                    let events: Vec<OutboxEvent> = rows.iter().map(|r| r.event.clone()).collect();
                    let answer = match tokio::time::timeout(time_left, sink.send(&events)).await {
                        Ok(answer) => answer,
                        Err(_) => Err(SinkError("timed out within the delivery budget".into())),
                    };
                    (rows, answer)
                }));
            }
        }
    }
}

/// The first call or mark in flight to finish; its slot is emptied.
async fn next_finished(
    calls: &mut [Option<Call<'_>>],
    marking: &mut Option<Marking<'_>>,
) -> Finished {
    std::future::poll_fn(|cx| {
        if let Some(mark) = marking {
            if let Poll::Ready(result) = mark.as_mut().poll(cx) {
                *marking = None;
                return Poll::Ready(Finished::Marked(result));
            }
        }
        for slot in calls.iter_mut() {
            if let Some(call) = slot {
                if let Poll::Ready((rows, answer)) = call.as_mut().poll(cx) {
                    *slot = None;
                    return Poll::Ready(Finished::Call(rows, answer));
                }
            }
        }
        Poll::Pending
    })
    .await
}

/// What the sink's answer to one call means for each of its rows.
fn judge(rows: &[InLine], answer: SendAnswer, max_attempts: u32) -> Judged {
    let mut j = Judged::default();
    let outcomes = match answer {
        Ok(outcomes) if outcomes.len() == rows.len() => outcomes,
        failed => {
            // Nothing is known of any entry: no attempt is counted, the
            // leases are given back, and the run stops.
            match failed {
                Err(e) => tracing::warn!(error = %e, events = rows.len(),
                    "could not deliver events; they stay pending for a later run"),
                Ok(_) => tracing::warn!(
                    events = rows.len(),
                    "the sink's answer does not match its entries; they stay pending"
                ),
            }
            j.failed = rows.len() as u64;
            j.call_failed = true;
            j.marks.released = rows.iter().map(|r| r.leased).collect();
            return j;
        }
    };
    // The first refusal's code, when some entries are to be tried again.
    let mut retried: Option<String> = None;
    for (row, outcome) in rows.iter().zip(outcomes) {
        let id = row.leased.id;
        let reason = match outcome {
            EntryOutcome::Accepted => {
                j.published += 1;
                j.marks.accepted.push(id);
                continue;
            }
            EntryOutcome::Retry(code) => {
                j.failed += 1;
                let refusals = u32::try_from(row.attempts.max(0))
                    .unwrap_or(0)
                    .saturating_add(1);
                match after_refusal(refusals, max_attempts, id) {
                    AfterRefusal::RetryIn(delay) => {
                        tracing::debug!(eventId = id, code = %code, refusals,
                            retryInMs = delay.as_millis() as u64,
                            "EventBridge refused an event; it is tried again later");
                        retried.get_or_insert(code);
                        j.marks.refused.push(Refusal {
                            row: row.leased,
                            retry_in: delay,
                            set_aside: None,
                        });
                        continue;
                    }
                    AfterRefusal::SetAside => {
                        format!("EventBridge refused it {refusals} times (last: {code})")
                    }
                }
            }
            EntryOutcome::Undeliverable(reason) => {
                j.failed += 1;
                reason
            }
        };
        tracing::error!(eventId = id, reason = %reason, "an event is set aside; it is not delivered until retrySetAside");
        j.set_aside += 1;
        j.marks.refused.push(Refusal {
            row: row.leased,
            retry_in: Duration::ZERO,
            set_aside: Some(reason),
        });
    }
    if let Some(code) = retried {
        tracing::warn!(refused = j.failed - j.set_aside, entries = rows.len(), code = %code,
            "EventBridge refused entries; they are tried again later");
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(id: i64, attempts: i32) -> InLine {
        let lease = chrono::DateTime::from_timestamp(1_764_400_000, 0).unwrap();
        InLine {
            event: OutboxEvent {
                id,
                event_type: "batch.confirmed".into(),
                detail: json!({"eventId": id}),
            },
            leased: Leased { id, lease },
            attempts,
            lease_ends: Instant::now() + MIN_LEASE,
        }
    }

    fn refused(code: &str) -> EntryOutcome {
        EntryOutcome::Retry(code.into())
    }

    #[test]
    fn each_answer_comes_to_one_mark_per_row() {
        let rows = [row(1, 0), row(2, 0), row(3, 9), row(4, 3), row(5, 0)];
        let answer = Ok(vec![
            EntryOutcome::Accepted,
            refused("ThrottlingException"),
            refused("InternalFailure"),
            refused("ThrottlingException"),
            EntryOutcome::Undeliverable("too large".into()),
        ]);
        let j = judge(&rows, answer, 10);
        assert_eq!(
            (j.published, j.failed, j.set_aside, j.call_failed),
            (1, 4, 2, false)
        );
        assert_eq!(j.marks.accepted, vec![1]);
        assert!(j.marks.released.is_empty());
        let by_id: Vec<(i64, Option<&str>)> = j
            .marks
            .refused
            .iter()
            .map(|r| (r.row.id, r.set_aside.as_deref()))
            .collect();
        assert_eq!(
            by_id,
            vec![
                (2, None),
                (
                    3,
                    Some("EventBridge refused it 10 times (last: InternalFailure)")
                ),
                (4, None),
                (5, Some("too large")),
            ]
        );
        // The backoff grows with the refusals the row already had.
        let delay = |id: i64| {
            j.marks
                .refused
                .iter()
                .find(|r| r.row.id == id)
                .unwrap()
                .retry_in
        };
        assert!(delay(2) <= Duration::from_secs(1), "{:?}", delay(2));
        assert!(delay(4) >= Duration::from_secs(4), "{:?}", delay(4));
    }

    #[test]
    fn a_call_that_failed_whole_counts_no_refusal_and_gives_the_leases_back() {
        let rows = [row(7, 2), row(8, 0)];
        for answer in [
            Err(SinkError("timed out".into())),
            // An answer for other entries than were sent says nothing either.
            Ok(vec![EntryOutcome::Accepted]),
        ] {
            let j = judge(&rows, answer, 10);
            assert_eq!(
                (j.published, j.failed, j.set_aside, j.call_failed),
                (0, 2, 0, true)
            );
            assert!(j.marks.accepted.is_empty() && j.marks.refused.is_empty());
            assert_eq!(
                j.marks.released,
                vec![rows[0].leased, rows[1].leased],
                "no attempt burned"
            );
        }
    }

    #[test]
    fn leases_outlast_every_call_their_rows_may_wait_for() {
        let policy = |ms: u64| Policy {
            concurrency: 8,
            max_attempts: 10,
            call_timeout: Duration::from_millis(ms),
        };
        assert_eq!(policy(5000).lease(), Duration::from_secs(60));
        assert_eq!(policy(30_000).lease(), Duration::from_secs(128));
        for ms in [200, 1000, 5000, 60_000] {
            let p = policy(ms);
            assert!(p.lease() >= p.call_window() * 4, "{ms}");
        }
        assert_eq!(policy(5000).claim_size(), 160);
    }
}
