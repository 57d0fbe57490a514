//! `migrate` (behaviour §4): applies the embedded migrations. Only direct
//! invocations may run it; `make migrate` runs the same code from the binary.

use serde::Serialize;

use super::{Access, BoxFuture, Job, JobContext, Report, Run};
use crate::error::ApiError;
use crate::store::migrations::{self, MigrateError};

pub const JOB: Job = Job {
    name: "migrate",
    access: Access::Trusted,
    plain_fields: &[],
    parse: |_, _| Ok(Box::new(MigrateRequest)),
};

/// `migrate` takes no data.
#[derive(Debug)]
pub struct MigrateRequest;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrateResponse {
    pub success: bool,
    pub applied: Vec<String>,
    pub already_applied: usize,
    /// What the operator must read (behaviour §4.3): tables the public API
    /// roles reach with row-level security off, and every grant or policy
    /// letting them write what money is computed from. Also logged, each as
    /// a WARNING.
    pub warnings: Vec<String>,
}

impl Run for MigrateRequest {
    fn run<'a>(
        self: Box<Self>,
        ctx: &'a JobContext<'a>,
    ) -> BoxFuture<'a, Result<Report, ApiError>> {
        Box::pin(async move { Report::answer(run(ctx).await?) })
    }
}

/// Runs as the owner: on `MIGRATE_SECRET_ID`'s connections when it is set.
pub async fn run(ctx: &JobContext<'_>) -> Result<MigrateResponse, ApiError> {
    let conn = ctx.migrate_db.get().await?;
    let timeouts = migrations::Timeouts {
        statement: ctx.settings.migrate_statement_timeout,
        lock: ctx.settings.migrate_lock_timeout,
    };
    let report = migrations::run(&conn, timeouts)
        .await
        .map_err(|e| match e {
            // The operator's to fix, and theirs to read: the message names the
            // migration and says what to do (no SQL, no secret).
            changed @ MigrateError::Changed { .. } => ApiError::Conflict(changed.to_string()),
            MigrateError::Store(e) => e.into(),
        })?;
    Ok(MigrateResponse {
        success: true,
        applied: report.applied,
        already_applied: report.already_applied,
        warnings: report.warnings,
    })
}
