//! `migrate` (behaviour §4): applies the embedded migrations. Only direct
//! invocations may run it; `make migrate` runs the same code from the binary.

use serde::Serialize;

use super::JobContext;
use crate::error::ApiError;
use crate::store::migrations;
use crate::telemetry::phases::{timed, Phase};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrateResponse {
    pub success: bool,
    pub applied: Vec<String>,
    pub already_applied: usize,
}

pub async fn run(ctx: &JobContext<'_>) -> Result<MigrateResponse, ApiError> {
    let mut client = ctx.db.get().await?;
    let timeouts = migrations::Timeouts {
        statement: ctx.settings.migrate_statement_timeout,
        lock: ctx.settings.migrate_lock_timeout,
    };
    let report = timed(Phase::Db, migrations::run(&mut client, timeouts)).await?;
    Ok(MigrateResponse {
        success: true,
        applied: report.applied,
        already_applied: report.already_applied,
    })
}
