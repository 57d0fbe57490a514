//! `publish-events` (behaviour §10): delivers what is pending in the outbox.
//! The schedule runs it beside orchestrate, so events a job could not deliver
//! (EventBridge down, throttled, a crash) go out on the next run. With
//! `retrySetAside` it first puts every set-aside event back in line (an
//! operator's call, once the cause is fixed).

use serde::Serialize;

use super::input::Data;
use super::{Access, BoxFuture, Job, JobContext, Report, Run};
use crate::error::ApiError;
use crate::outbox::{Bounds, Scope};

pub const JOB: Job = Job {
    name: "publish-events",
    access: Access::Admins,
    plain_fields: &["limit", "retrySetAside"],
    parse: |data, _| Ok(Box::new(PublishEventsRequest::parse(data)?)),
};

pub const DEFAULT_LIMIT: i64 = 1000;
pub const MAX_LIMIT: i64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishEventsRequest {
    pub limit: i64,
    /// Put set-aside events back in line before delivering.
    pub retry_set_aside: bool,
}

impl PublishEventsRequest {
    pub fn parse(data: &Data) -> Result<Self, ApiError> {
        Ok(PublishEventsRequest {
            limit: data
                .opt_int("limit", 1, MAX_LIMIT)?
                .unwrap_or(DEFAULT_LIMIT),
            retry_set_aside: data.opt_bool("retrySetAside")?.unwrap_or(false),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishEventsResponse {
    pub success: bool,
    pub published: u64,
    pub failed: u64,
    /// Events this run set aside (refused `PUBLISH_MAX_ATTEMPTS` times, or too large).
    pub set_aside: u64,
    /// Pending after this run (set-aside events are not pending).
    pub pending: u64,
    /// `false` when `EVENT_BUS_NAME` is unset: nothing is sent.
    pub delivery_enabled: bool,
    /// Rows are left that another run would send (it stopped at its limit,
    /// its budget — `HTTP_BUDGET_MS` over HTTP — or the deadline, or
    /// EventBridge refused some).
    pub has_more: bool,
    /// With `retrySetAside`: how many set-aside events were put back in line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requeued: Option<u64>,
}

impl Run for PublishEventsRequest {
    /// Delivery is this job's work: it reports what delivering did itself.
    fn run<'a>(
        self: Box<Self>,
        ctx: &'a JobContext<'a>,
    ) -> BoxFuture<'a, Result<Report, ApiError>> {
        Box::pin(async move {
            let requeued = if self.retry_set_aside {
                Some(ctx.outbox.requeue_set_aside().await?)
            } else {
                None
            };
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
                set_aside: delivery.set_aside,
                pending: delivery.backlog.unwrap_or_default().pending,
                delivery_enabled: ctx.outbox.enabled(),
                has_more: ctx.outbox.enabled() && delivery.backlog.unwrap_or_default().pending > 0,
                requeued,
            };
            Ok(Report::answer(answer)?.delivered(delivery))
        })
    }
}
