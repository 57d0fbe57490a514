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
    match req.decision {
        Decision::Approve => {
            let orders = batches::confirm(&sql, &moved).await?;
            let id = orders.get(&req.batch_id).copied();
            result.supplier_order_id = Some(id.ok_or_else(|| {
                ApiError::Internal("approved batch has no supplier order".into())
            })?);
        }
        Decision::Reject => {
            let counts = batches::cancel(&sql, &moved, ctx.principal.user_id()).await?;
            result.orders_cancelled = Some(counts.get(&req.batch_id).copied().unwrap_or(0));
        }
    }
    tx.commit().await.map_err(StoreError::from)?;
    tracing::info!(batchId = %req.batch_id, decision = ?req.decision, note = req.note.as_deref().unwrap_or(""), "batch reviewed");
    let mut results = Results::default();
    results.push(result);
    Ok(results.into_response(1, false, false))
}
