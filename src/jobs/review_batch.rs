//! `review-batch` (behaviour §7): an admin approves or rejects a batch that
//! orchestrate held in `needs_review`. Approve is orchestrate's confirm, reject
//! its cancel; both go through the same store functions, in one transaction
//! that holds the batch row locked from the status check to the commit.

use uuid::Uuid;

use super::input::Data;
use super::orchestrate::{BatchResult, OrchestrateResponse, Results};
use super::JobContext;
use crate::domain::{Action, Fill};
use crate::error::ApiError;
use crate::store::batches::{self, Move};
use crate::store::StoreError;
use tokio_postgres::error::SqlState;

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

/// Cancels the batch on the admin's word. The admin goes into the history
/// rows' `changed_by` — unless the live schema's foreign key refuses them (it
/// references `auth.users`, where an admin with a valid token may be missing:
/// deleted, or from another issuer): then, under a savepoint, the cancel runs
/// again with `changed_by` NULL. The admin's id is in the notes and the event
/// either way.
async fn reject(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &crate::store::Sql<'_, '_>,
    moved: &[Move],
    admin: Option<Uuid>,
) -> Result<std::collections::HashMap<Uuid, i64>, StoreError> {
    if admin.is_none() {
        return batches::cancel(sql, moved, None, false).await;
    }
    crate::store::run_in(tx, "SAVEPOINT bp_reject").await?;
    match batches::cancel(sql, moved, admin, true).await {
        Ok(counts) => Ok(counts),
        Err(e)
            if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION)
                && e.table() == Some("order_status_history") =>
        {
            tracing::info!("the reviewing admin is not a user the history's foreign key knows; recording changed_by NULL");
            crate::store::run_in(tx, "ROLLBACK TO SAVEPOINT bp_reject").await?;
            batches::cancel(sql, moved, admin, false).await
        }
        Err(e) => Err(e),
    }
}

pub async fn run(
    req: ReviewBatchRequest,
    ctx: &JobContext<'_>,
) -> Result<OrchestrateResponse, ApiError> {
    let mut client = ctx.db.get().await?;
    let tx = ctx.db.begin(&mut client).await?;
    let sql = ctx.db.sql(&tx);
    let batch = batches::lock_batch(&sql, req.batch_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("Batch {} not found", req.batch_id)))?;
    if batch.status != "needs_review" {
        return Err(ApiError::Conflict(format!(
            "Batch is {}, not needs_review",
            batch.status
        )));
    }
    let fill = Fill::new(batch.current_quantity, batch.target_quantity)
        .map_err(|e| ApiError::Conflict(format!("Batch has an {e}")))?;
    let moved = [Move {
        batch_id: req.batch_id,
        fill_percentage: fill.percentage(),
        note: req.note.clone(),
    }];
    let action = match req.decision {
        Decision::Approve => Action::Confirm(fill),
        Decision::Reject => Action::Cancel(fill),
    };
    let mut result = BatchResult::of(req.batch_id, chrono::DateTime::UNIX_EPOCH, &action)
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
            let orders = batches::confirm(&sql, &moved).await.map_err(refused)?;
            let id = orders.get(&req.batch_id).copied();
            result.supplier_order_id = Some(id.ok_or_else(|| {
                ApiError::Internal("approved batch has no supplier order".into())
            })?);
        }
        Decision::Reject => {
            let counts = reject(&tx, &sql, &moved, ctx.principal.user_id())
                .await
                .map_err(refused)?;
            result.orders_cancelled = Some(counts.get(&req.batch_id).copied().unwrap_or(0));
        }
    }
    crate::store::commit(tx).await?;
    tracing::info!(batchId = %req.batch_id, decision = ?req.decision, note = req.note.as_deref().unwrap_or(""), "batch reviewed");
    let mut results = Results::default();
    results.push(result);
    Ok(results.into_response(1, false, false))
}
