//! `review-batch` (behaviour §7): an admin approves or rejects a batch that
//! orchestrate held in `needs_review`. Approve is orchestrate's confirm, reject
//! its cancel; both go through the same store functions, in one transaction
//! that holds the batch row locked from the status check to the commit.

use std::collections::HashMap;

use tokio_postgres::error::SqlState;
use uuid::Uuid;

use super::input::Data;
use super::orchestrate::{BatchResult, OrchestrateResponse, Results};
use super::{Access, BoxFuture, Job, JobContext, Report, Run};
use crate::domain::{Action, BatchStatus, Fill};
use crate::error::ApiError;
use crate::outbox::{Ask, Scope};
use crate::store::batches::{self, Move};
use crate::store::{StoreError, Tx};

pub const JOB: Job = Job {
    name: "review-batch",
    access: Access::Admins,
    plain_fields: &["batchId", "decision"],
    parse: |data, _| Ok(Box::new(ReviewBatchRequest::parse(data)?)),
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Reject,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewBatchRequest {
    pub batch_id: Uuid,
    pub decision: Decision,
    pub note: Option<String>,
}

pub const MAX_NOTE_CHARS: usize = 2000;

impl ReviewBatchRequest {
    pub fn parse(data: &Data) -> Result<Self, ApiError> {
        let batch_id = data.req_uuid("batchId")?;
        let decision = match data.req_str("decision", 16)? {
            "approve" => Decision::Approve,
            "reject" => Decision::Reject,
            _ => {
                return Err(ApiError::BadRequest(
                    "decision must be \"approve\" or \"reject\"".into(),
                ))
            }
        };
        let note = data.opt_str("note", MAX_NOTE_CHARS)?.map(str::to_owned);
        Ok(ReviewBatchRequest {
            batch_id,
            decision,
            note,
        })
    }
}

impl Run for ReviewBatchRequest {
    /// Counts the one decision and asks for every pending event to be delivered.
    fn run<'a>(
        self: Box<Self>,
        ctx: &'a JobContext<'a>,
    ) -> BoxFuture<'a, Result<Report, ApiError>> {
        Box::pin(async move {
            let resp = run(*self, ctx).await?;
            let summary = resp.summary;
            Ok(Report::answer(resp)?.counted(summary).delivering(Ask {
                scope: Scope::All,
                budget: ctx.settings.publish_budget,
            }))
        })
    }
}

/// Cancels the batch on the admin's word. The admin goes into the history
/// rows' `changed_by` — unless the live schema's foreign key refuses them (it
/// references `auth.users`, where an admin with a valid token may be missing:
/// deleted, or from another issuer): then, under a savepoint, the cancel runs
/// again with `changed_by` NULL. The admin's id is in the notes and the event
/// either way.
async fn reject(
    tx: Tx<'_>,
    moved: &[Move],
    admin: Option<Uuid>,
) -> Result<HashMap<Uuid, i64>, StoreError> {
    if admin.is_none() {
        return batches::cancel(&tx, moved, None, false).await;
    }
    let attributed = tx
        .savepoint(|sp| async move { batches::cancel(&sp, moved, admin, true).await })
        .await;
    match attributed {
        Ok(counts) => Ok(counts),
        Err(e)
            if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION)
                && e.table() == Some("order_status_history") =>
        {
            tracing::info!("the reviewing admin is not a user the history's foreign key knows; recording changed_by NULL");
            batches::cancel(&tx, moved, admin, false).await
        }
        Err(e) => Err(e),
    }
}

pub async fn run(
    req: ReviewBatchRequest,
    ctx: &JobContext<'_>,
) -> Result<OrchestrateResponse, ApiError> {
    let req = &req;
    let conn = ctx.db.get().await?;
    let result = conn
        .transaction(|tx| async move {
            let batch = batches::lock_batch(&tx, req.batch_id)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("Batch {} not found", req.batch_id)))?;
            if batch.status != BatchStatus::NeedsReview {
                return Err(ApiError::Conflict(format!(
                    "Batch is {}, not {}",
                    batch.status,
                    BatchStatus::NeedsReview
                )));
            }
            let fill = Fill::new(batch.current_quantity, batch.target_quantity)
                .map_err(|e| ApiError::Conflict(format!("Batch has an {e}")))?;
            let moved = [Move {
                batch_id: req.batch_id,
                fill_percentage: fill.percentage(),
                note: req.note.clone(),
                loc: None,
            }];
            let action = match req.decision {
                Decision::Approve => Action::Confirm(fill),
                Decision::Reject => Action::Cancel(fill),
            };
            let mut result =
                BatchResult::of(req.batch_id, chrono::DateTime::UNIX_EPOCH, &action)
                    .ok_or_else(|| ApiError::Internal("review decision has no report".into()))?;
            let refused = |e: StoreError| -> ApiError {
                if e.outage().is_some() {
                    return e.into();
                }
                // A reason in the data (a constraint, someone else's trigger): the
                // transaction rolls back, nothing is half-written.
                ApiError::Conflict(format!(
                    "The database refused the batch's writes: {}",
                    e.data_reason()
                ))
            };
            match req.decision {
                Decision::Approve => {
                    let orders = batches::confirm(&tx, &moved).await.map_err(refused)?;
                    let id = orders.get(&req.batch_id).copied();
                    result.supplier_order_id = Some(id.ok_or_else(|| {
                        ApiError::Internal("approved batch has no supplier order".into())
                    })?);
                }
                Decision::Reject => {
                    let counts = reject(tx, &moved, ctx.principal.user_id())
                        .await
                        .map_err(refused)?;
                    result.orders_cancelled = Some(counts.get(&req.batch_id).copied().unwrap_or(0));
                }
            }
            Ok(result)
        })
        .await?;
    // The note is what an admin typed: at debug only (behaviour §9).
    tracing::info!(batchId = %req.batch_id, decision = ?req.decision, "batch reviewed");
    tracing::debug!(batchId = %req.batch_id, note = req.note.as_deref().unwrap_or(""), "review note");
    let mut results = Results::default();
    results.push(result);
    Ok(results.into_response(1, false, false))
}
