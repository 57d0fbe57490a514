//! The jobs of behaviour §1, one file each. Every job parses its `data` into a
//! validated request (400 on the first bad field), then runs it. Jobs know
//! nothing of AWS: the event adapter hands them a principal, a deadline and
//! the database, and shapes whatever they answer.

pub mod input;
pub mod migrate;
pub mod orchestrate;
pub mod outbox;
pub mod process_order;
pub mod publish_events;
pub mod review_batch;

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::auth::Principal;
use crate::configuration::Settings;
use crate::domain::{Counts, Delivery};
use crate::error::ApiError;
use crate::store::{Db, StoreError};
use crate::telemetry::phases::{timed, Phase};
use input::Data;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobType {
    Orchestrate,
    ProcessOrder,
    ReviewBatch,
    Migrate,
    PublishEvents,
}

impl JobType {
    pub fn parse(raw: Option<&Value>) -> Result<Self, ApiError> {
        match raw.and_then(Value::as_str) {
            Some("orchestrate") => Ok(JobType::Orchestrate),
            Some("process-order") => Ok(JobType::ProcessOrder),
            Some("review-batch") => Ok(JobType::ReviewBatch),
            Some("migrate") => Ok(JobType::Migrate),
            Some("publish-events") => Ok(JobType::PublishEvents),
            _ => Err(ApiError::BadRequest("Invalid job type".into())),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            JobType::Orchestrate => "orchestrate",
            JobType::ProcessOrder => "process-order",
            JobType::ReviewBatch => "review-batch",
            JobType::Migrate => "migrate",
            JobType::PublishEvents => "publish-events",
        }
    }
}

/// Whether `principal` may run `job` at all (§3). Authentication says who
/// the caller is; this is the jobs' own rule. Buyer-for-another-buyer is
/// checked by process-order, which knows the `buyerId`.
pub fn authorize(job: JobType, principal: &Principal) -> Result<(), ApiError> {
    let allowed = match (job, principal) {
        (_, Principal::Trusted) => true,
        (JobType::Migrate, _) => {
            return Err(ApiError::Forbidden(
                "migrate is accepted only by direct invocation".into(),
            ))
        }
        (_, Principal::Admin { .. }) => true,
        (JobType::ProcessOrder, Principal::Buyer { .. }) => true,
        (JobType::ProcessOrder, Principal::Anonymous) => {
            return Err(ApiError::Forbidden(
                "Anonymous users may not place orders".into(),
            ))
        }
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "This role may not run {}",
            job.as_str()
        )))
    }
}

/// When the invocation must stop starting new work: the Lambda deadline less
/// `DEADLINE_MARGIN_MS`, so the answer still goes out before the timeout.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    stop_at: Option<Instant>,
}

impl Deadline {
    pub fn new(deadline: Option<Instant>, margin: Duration) -> Self {
        Deadline {
            stop_at: deadline.map(|d| d.checked_sub(margin).unwrap_or(d)),
        }
    }

    pub fn reached(&self) -> bool {
        self.stop_at.is_some_and(|t| Instant::now() >= t)
    }
}

/// What a job gets to work with.
pub struct JobContext<'a> {
    pub db: &'a Db,
    pub settings: &'a Settings,
    pub principal: &'a Principal,
    pub deadline: Deadline,
    /// Where the outbox is delivered; `None` when `EVENT_BUS_NAME` is unset.
    pub events: Option<&'a dyn outbox::EventSink>,
}

/// One request, validated.
#[derive(Debug)]
pub enum Job {
    Orchestrate(orchestrate::OrchestrateRequest),
    ProcessOrder(process_order::ProcessOrderRequest),
    ReviewBatch(review_batch::ReviewBatchRequest),
    Migrate,
    PublishEvents(publish_events::PublishEventsRequest),
}

impl Job {
    /// Authorizes `job_type` for the principal, then validates `data`.
    pub fn parse(
        job_type: JobType,
        data: Option<&Value>,
        principal: &Principal,
    ) -> Result<Self, ApiError> {
        authorize(job_type, principal)?;
        let data = Data::new(data)?;
        Ok(match job_type {
            JobType::Orchestrate => {
                Job::Orchestrate(orchestrate::OrchestrateRequest::parse(&data)?)
            }
            JobType::ReviewBatch => {
                Job::ReviewBatch(review_batch::ReviewBatchRequest::parse(&data)?)
            }
            JobType::Migrate => Job::Migrate,
            JobType::PublishEvents => {
                Job::PublishEvents(publish_events::PublishEventsRequest::parse(&data)?)
            }
            JobType::ProcessOrder => {
                Job::ProcessOrder(process_order::ProcessOrderRequest::parse(&data, principal)?)
            }
        })
    }

    /// Runs the job; a job that wrote events then delivers them (behaviour
    /// §10), within a budget, after its commit. Delivery never changes the
    /// job's answer: a failure is logged and counted, and a later
    /// `publish-events` run delivers what is left.
    pub async fn run(self, ctx: &JobContext<'_>) -> Result<JobOutput, ApiError> {
        match self {
            Job::Orchestrate(req) => {
                let dry_run = req.dry_run;
                let out = JobOutput::of_batches(orchestrate::run(req, ctx).await?)?;
                Ok(if dry_run {
                    out
                } else {
                    out.delivered(ctx, outbox::Scope::All, ctx.settings.publish_budget)
                        .await
                })
            }
            Job::ReviewBatch(req) => {
                let out = JobOutput::of_batches(review_batch::run(req, ctx).await?)?;
                Ok(out
                    .delivered(ctx, outbox::Scope::All, ctx.settings.publish_budget)
                    .await)
            }
            Job::ProcessOrder(req) => {
                let (body, event) = process_order::run(req, ctx).await?;
                let counts = Counts {
                    orders_placed: u64::from(event.is_some()),
                    ..Counts::default()
                };
                let out = JobOutput {
                    body,
                    counts,
                    delivery: None,
                };
                Ok(match event {
                    // Only the order's own event, so a backlog never slows a buyer down.
                    Some(id) => {
                        out.delivered(
                            ctx,
                            outbox::Scope::Only(&[id]),
                            ctx.settings.order_publish_budget,
                        )
                        .await
                    }
                    None => out,
                })
            }
            Job::Migrate => Ok(JobOutput {
                body: to_value(migrate::run(ctx).await?)?,
                counts: Counts::default(),
                delivery: None,
            }),
            Job::PublishEvents(req) => {
                let (body, delivery) = publish_events::run(req, ctx).await?;
                Ok(JobOutput {
                    body: to_value(body)?,
                    counts: Counts::default(),
                    delivery: Some(delivery),
                })
            }
        }
    }
}

/// A job's answer, and what it did for the summary log line and the metrics.
pub struct JobOutput {
    pub body: Value,
    pub counts: Counts,
    /// What delivering the outbox did, when it was tried.
    pub delivery: Option<Delivery>,
}

impl JobOutput {
    fn of_batches(resp: orchestrate::OrchestrateResponse) -> Result<Self, ApiError> {
        // A dry run did nothing, whatever it reports.
        let counts = if resp.dry_run {
            Counts::default()
        } else {
            resp.summary
        };
        Ok(JobOutput {
            body: to_value(resp)?,
            counts,
            delivery: None,
        })
    }

    /// Delivers pending events after the job committed, when delivery is on.
    async fn delivered(
        mut self,
        ctx: &JobContext<'_>,
        scope: outbox::Scope<'_>,
        budget: Duration,
    ) -> Self {
        let Some(sink) = ctx.events else {
            return self;
        };
        let bounds = outbox::Bounds {
            limit: u64::MAX,
            budget,
            deadline: ctx.deadline,
        };
        match timed(Phase::Publish, outbox::deliver(ctx.db, sink, scope, bounds)).await {
            Ok(delivery) => self.delivery = Some(delivery),
            Err(e) => {
                tracing::warn!(error = %e, "could not deliver events after the job; a later run will");
            }
        }
        self
    }
}

fn to_value(v: impl serde::Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::Internal(format!("serialize response: {e}")))
}

/// The store's failures as callers see them: outages are 503 with the
/// store's own words; everything else is a 500 whose detail only the logs get.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e.outage() {
            Some(reason) => {
                if matches!(e, StoreError::Db(_)) {
                    tracing::error!(error = %e, "database unavailable");
                }
                ApiError::Unavailable(format!("Database unavailable: {reason}"))
            }
            None => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for ApiError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn authorization_table() {
        let admin = Principal::Admin { user_id: None };
        let buyer = Principal::Buyer {
            user_id: Uuid::nil(),
        };
        // (job, principal, allowed)
        let cases = [
            (JobType::Orchestrate, Principal::Trusted, true),
            (JobType::Migrate, Principal::Trusted, true),
            (JobType::Orchestrate, admin.clone(), true),
            (JobType::ReviewBatch, admin.clone(), true),
            (JobType::ProcessOrder, admin.clone(), true),
            (JobType::Migrate, admin.clone(), false),
            (JobType::Orchestrate, buyer.clone(), false),
            (JobType::ReviewBatch, buyer.clone(), false),
            (JobType::ProcessOrder, buyer.clone(), true),
            (JobType::Migrate, buyer, false),
            (JobType::ProcessOrder, Principal::NoRole, false),
            (JobType::ProcessOrder, Principal::Anonymous, false),
            (JobType::Orchestrate, Principal::Anonymous, false),
        ];
        for (job, p, allowed) in cases {
            let got = authorize(job, &p);
            assert_eq!(got.is_ok(), allowed, "{job:?} {p:?}");
            if let Err(e) = got {
                assert_eq!(e.status(), 403);
            }
        }
    }

    #[test]
    fn store_failures_map_to_503_or_a_hidden_500() {
        let down: ApiError =
            StoreError::Unavailable("could not connect to the database".into()).into();
        assert_eq!(down.status(), 503);
        assert_eq!(
            down.to_string(),
            "Database unavailable: could not connect to the database"
        );
        let bug: ApiError = StoreError::Unexpected("no row").into();
        assert_eq!(bug.status(), 500);
        assert_eq!(bug.to_string(), "Internal error");
    }
}
