//! `publish-events` (behaviour §10): delivers what is pending in the outbox.
//! The schedule runs it beside orchestrate, so events a job could not deliver
//! (EventBridge down, throttled, a crash) go out on the next run.

use serde::Serialize;

use super::input::Data;
use super::outbox::{self, Bounds, Scope};
use super::JobContext;
use crate::domain::Delivery;
use crate::error::ApiError;
use crate::store::events;
use crate::telemetry::phases::{timed, Phase};

pub const DEFAULT_LIMIT: i64 = 1000;
pub const MAX_LIMIT: i64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishEventsRequest {
    pub limit: i64,
}

impl PublishEventsRequest {
    pub fn parse(data: &Data) -> Result<Self, ApiError> {
        Ok(PublishEventsRequest {
            limit: data
                .opt_int("limit", 1, MAX_LIMIT)?
                .unwrap_or(DEFAULT_LIMIT),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishEventsResponse {
    pub success: bool,
    pub published: u64,
    pub failed: u64,
    pub pending: u64,
    /// `false` when `EVENT_BUS_NAME` is unset: nothing is sent.
    pub delivery_enabled: bool,
}

pub async fn run(
    req: PublishEventsRequest,
    ctx: &JobContext<'_>,
) -> Result<(PublishEventsResponse, Delivery), ApiError> {
    let delivery = match ctx.events {
        Some(sink) => {
            let bounds = Bounds {
                limit: req.limit.max(0) as u64,
                budget: ctx.settings.publish_job_budget,
                deadline: ctx.deadline,
            };
            timed(
                Phase::Publish,
                outbox::deliver(ctx.db, sink, Scope::All, bounds),
            )
            .await?
        }
        None => {
            let client = ctx.db.get().await?;
            let (pending, oldest) = events::pending(&ctx.db.sql_client(&client)).await?;
            Delivery {
                pending,
                oldest_pending_secs: oldest,
                ..Delivery::default()
            }
        }
    };
    Ok((
        PublishEventsResponse {
            success: true,
            published: delivery.published,
            failed: delivery.failed,
            pending: delivery.pending,
            delivery_enabled: ctx.events.is_some(),
        },
        delivery,
    ))
}
