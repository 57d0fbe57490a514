//! `publish-events` (behaviour §10): delivers what is pending in the outbox.
//! The schedule runs it beside orchestrate, so events a job could not deliver
//! (EventBridge down, throttled, a crash) go out on the next run.

use serde::Serialize;

use super::input::Data;
use super::{Access, BoxFuture, Job, JobContext, Report, Run};
use crate::error::ApiError;
use crate::outbox::{Bounds, Scope};

pub const JOB: Job = Job {
    name: "publish-events",
    access: Access::Admins,
    plain_fields: &["limit"],
    parse: |data, _| Ok(Box::new(PublishEventsRequest::parse(data)?)),
};

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
    /// Rows are left that another run would send (it stopped at its limit,
    /// its budget — `HTTP_BUDGET_MS` over HTTP — or the deadline, or
    /// EventBridge refused some).
    pub has_more: bool,
}

impl Run for PublishEventsRequest {
    /// Delivery is this job's work: it reports what delivering did itself.
    fn run<'a>(
        self: Box<Self>,
        ctx: &'a JobContext<'a>,
    ) -> BoxFuture<'a, Result<Report, ApiError>> {
        Box::pin(async move {
            let bounds = Bounds {
                limit: self.limit.max(0) as u64,
                budget: ctx.settings.publish_job_budget,
                deadline: ctx.deadline,
            };
            let delivery = match ctx.outbox.deliver(&Scope::All, bounds).await? {
                Some(delivery) => delivery,
                None => ctx.outbox.pending().await?,
            };
            let answer = PublishEventsResponse {
                success: true,
                published: delivery.published,
                failed: delivery.failed,
                pending: delivery.pending,
                delivery_enabled: ctx.outbox.enabled(),
                has_more: ctx.outbox.enabled() && delivery.pending > 0,
            };
            Ok(Report::answer(answer)?.delivered(delivery))
        })
    }
}
