//! The jobs of SPEC §1, one file each. Every job parses its `data` into a
//! validated request (400 on the first bad field), then runs it. Jobs know
//! nothing of AWS: the event adapter hands them a principal, a deadline and
//! the database, and shapes whatever they answer.

pub mod input;
pub mod migrate;
pub mod orchestrate;
pub mod process_order;
pub mod review_batch;

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::auth::{authorize, Principal};
use crate::configuration::Settings;
use crate::error::ApiError;
use crate::store::Db;
use crate::telemetry::metrics::JobCounts;
use input::Data;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobType {
    Orchestrate,
    ProcessOrder,
    ReviewBatch,
    Migrate,
}

impl JobType {
    pub fn parse(raw: Option<&Value>) -> Result<Self, ApiError> {
        match raw.and_then(Value::as_str) {
            Some("orchestrate") => Ok(JobType::Orchestrate),
            Some("process-order") => Ok(JobType::ProcessOrder),
            Some("review-batch") => Ok(JobType::ReviewBatch),
            Some("migrate") => Ok(JobType::Migrate),
            _ => Err(ApiError::BadRequest("Invalid job type".into())),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            JobType::Orchestrate => "orchestrate",
            JobType::ProcessOrder => "process-order",
            JobType::ReviewBatch => "review-batch",
            JobType::Migrate => "migrate",
        }
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
}

/// One request, validated.
#[derive(Debug)]
pub enum Job {
    Orchestrate(orchestrate::OrchestrateRequest),
    ProcessOrder(process_order::ProcessOrderRequest),
    ReviewBatch(review_batch::ReviewBatchRequest),
    Migrate,
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
            JobType::ProcessOrder => {
                Job::ProcessOrder(process_order::ProcessOrderRequest::parse(&data, principal)?)
            }
        })
    }

    pub async fn run(self, ctx: &JobContext<'_>) -> Result<JobOutput, ApiError> {
        match self {
            Job::Orchestrate(req) => JobOutput::of_batches(orchestrate::run(req, ctx).await?),
            Job::ReviewBatch(req) => JobOutput::of_batches(review_batch::run(req, ctx).await?),
            Job::ProcessOrder(req) => {
                let (body, placed) = process_order::run(req, ctx).await?;
                let counts = JobCounts {
                    orders_placed: u64::from(placed),
                    ..JobCounts::default()
                };
                Ok(JobOutput { body, counts })
            }
            Job::Migrate => Ok(JobOutput {
                body: to_value(migrate::run(ctx).await?)?,
                counts: JobCounts::default(),
            }),
        }
    }
}

/// A job's answer, and what it did for the summary log line and the metrics.
pub struct JobOutput {
    pub body: Value,
    pub counts: JobCounts,
}

impl JobOutput {
    fn of_batches(resp: orchestrate::OrchestrateResponse) -> Result<Self, ApiError> {
        // A dry run did nothing, whatever it reports.
        let counts = if resp.dry_run {
            JobCounts::default()
        } else {
            JobCounts::from(resp.summary)
        };
        Ok(JobOutput {
            body: to_value(resp)?,
            counts,
        })
    }
}

fn to_value(v: impl serde::Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::Internal(format!("serialize response: {e}")))
}
